//! STORAGE_BEAT (83): heartbeat with disk usage; the reply always carries the member list.

use std::net::SocketAddr;
use std::time::Instant;

use fdfs_proto::tracker_msg::{BeatReply, BeatRequest};

use super::CmdError;
use crate::cluster::BeatError;
use crate::service::Tracker;

/// A count and 256 store paths of {total, free}.
pub const MAX_BODY_LEN: usize = 8 + 256 * 16;

pub fn handle(tracker: &Tracker, body: &[u8], peer: SocketAddr) -> Result<Vec<u8>, CmdError> {
    let mut cluster = tracker.cluster();
    // Only a joined connection may beat; that is checked before the body is looked at.
    if cluster.session(peer).is_none() {
        return Err(BeatError::NotJoined.into());
    }
    let request = BeatRequest::decode(body)?;
    let members = cluster.beat(peer, request.paths, Instant::now())?;
    Ok(BeatReply {
        members: Some(members),
    }
    .encode())
}
