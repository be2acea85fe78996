//! STORAGE_JOIN (81): a storage opens its report connection (K.1, K.3 with fdfs-rs's body).

use std::net::SocketAddr;
use std::time::Instant;

use fdfs_proto::tracker_msg::{JoinReply, JoinRequest};

use super::CmdError;
use crate::service::Tracker;

pub const BODY_LEN: usize = JoinRequest::LEN;

pub fn handle(tracker: &Tracker, body: &[u8], peer: SocketAddr) -> Result<Vec<u8>, CmdError> {
    let request = JoinRequest::decode(body)?;
    let status = tracker
        .cluster()
        .join(peer, &request, Instant::now())
        .inspect_err(|err| {
            tracing::warn!(%peer, group = %request.group, id = request.storage_id, error = %err, "join refused");
        })?;
    Ok(JoinReply {
        status,
        // the copy source of a new or recovering storage is named by SYNC_DEST_REQ (87)
        sync_source_id: String::new(),
    }
    .encode())
}
