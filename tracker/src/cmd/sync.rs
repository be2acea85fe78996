//! Replication commands of storages (K.2, fdfs-rs bodies): SYNC_DEST_REQ (87), CHANGE_STATUS
//! (59) and SYNC_REPORT (89), all on a joined report connection.

use std::net::SocketAddr;
use std::time::Instant;

use fdfs_proto::sync_msg::{self, SyncReason, SyncReport, SyncSource};
use fdfs_proto::tracker_msg::BeatReply;

use super::CmdError;
use crate::service::{unix_now, Tracker};

pub const DEST_BODY_LEN: usize = 1;
pub const STATUS_BODY_LEN: usize = 1;
pub const REPORT_MAX_LEN: usize = SyncReport::MAX_LEN;

pub fn sync_dest(tracker: &Tracker, body: &[u8], peer: SocketAddr) -> Result<Vec<u8>, CmdError> {
    let reason = SyncReason::decode(body)?;
    let source = tracker.cluster().sync_dest(peer, reason, unix_now())?;
    Ok(SyncSource::encode(source.as_ref()))
}

pub fn change_status(
    tracker: &Tracker,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Vec<u8>, CmdError> {
    let status = sync_msg::decode_status(body)?;
    tracker.cluster().change_status(peer, status)?;
    Ok(Vec::new())
}

/// Answered like a beat (K.4), with the group's member list: a storage reports before its
/// first beat and needs the list to know which peers to wait for.
pub fn report(tracker: &Tracker, body: &[u8], peer: SocketAddr) -> Result<Vec<u8>, CmdError> {
    let report = SyncReport::decode(body)?;
    let mut cluster = tracker.cluster();
    cluster.sync_report(peer, &report, Instant::now(), unix_now())?;
    let members = cluster
        .session(peer)
        .and_then(|key| cluster.group(&key.group))
        .map(|group| group.members());
    Ok(BeatReply { members }.encode())
}
