//! One module per group of tracker commands. Each handler turns a request body (already read
//! and bounded by [`max_body`]) into a reply body or a [`CmdError`], whose status byte is
//! decided in [`CmdError::status`] only.

use std::net::SocketAddr;

use fdfs_proto::cmd::Command;
use fdfs_proto::ProtoError;

use crate::cluster::{BeatError, DeleteError, JoinError};
use crate::select::SelectError;
use crate::service::Tracker;
use crate::sync::SyncError;

mod beat;
mod delete;
mod health;
mod join;
mod leader;
mod list;
mod parameter;
mod query_fetch;
mod query_store;
mod storage_ids;
mod sync;

pub use list::ListError;
pub use parameter::parameter_text;

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("bad request: {0}")]
    Request(#[from] ProtoError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error(transparent)]
    Beat(#[from] BeatError),
    #[error(transparent)]
    List(#[from] ListError),
    #[error(transparent)]
    Delete(#[from] DeleteError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Ids(#[from] storage_ids::IdError),
}

impl CmdError {
    /// The status byte of the reply.
    pub fn status(&self) -> u8 {
        match self {
            CmdError::Request(err) => err.status(),
            CmdError::Select(err) => err.status(),
            CmdError::Join(err) => err.status(),
            CmdError::Beat(err) => err.status(),
            CmdError::List(err) => err.status(),
            CmdError::Delete(err) => err.status(),
            CmdError::Sync(err) => err.status(),
            CmdError::Ids(err) => err.status(),
        }
    }
}

/// Fails with a length error unless the body is exactly `len` bytes.
fn expect_len(body: &[u8], len: usize, what: &'static str) -> Result<(), CmdError> {
    if body.len() != len {
        return Err(ProtoError::BadLength {
            what,
            len: body.len() as u64,
        }
        .into());
    }
    Ok(())
}

/// The largest body the tracker reads for `command`; `None` for commands it does not serve.
/// Longer bodies are skipped and answered with EINVAL.
pub fn max_body(command: Command) -> Option<u64> {
    use Command::*;
    let max = match command {
        QueryStoreWithoutGroupOne
        | QueryStoreWithoutGroupAll
        | ParameterReq
        | ListAllGroups
        | StorageHealth
        | GetLeader => 0,
        ListOneGroup | DeleteGroup => list::GROUP_BODY_LEN,
        ListStorage | DeleteStorage => list::LIST_STORAGE_MAX_BODY_LEN,
        QueryStoreWithGroupOne | QueryStoreWithGroupAll => query_store::GROUP_BODY_LEN,
        QueryFetchOne | QueryFetchAll | QueryUpdate => query_fetch::MAX_BODY_LEN,
        StorageJoin => join::BODY_LEN,
        StorageBeat => beat::MAX_BODY_LEN,
        SyncDestReq => sync::DEST_BODY_LEN,
        StorageChangeStatus => sync::STATUS_BODY_LEN,
        SyncReport => sync::REPORT_MAX_LEN,
        FetchStorageIds => storage_ids::FETCH_BODY_LEN,
        GetServerId | GetStorageStatus => storage_ids::SERVER_ID_MAX_BODY_LEN,
        _ => return None,
    };
    Some(max as u64)
}

/// Whether `command` is served by [`handle_async`] (it may talk to storages).
pub fn is_async(command: Command) -> bool {
    matches!(
        command,
        Command::QueryFetchOne | Command::QueryFetchAll | Command::QueryUpdate
    )
}

/// Runs a command that may have to ask storages before answering. The registry lock is never
/// held while waiting for them.
pub async fn handle_async(
    tracker: &Tracker,
    command: Command,
    body: &[u8],
) -> Result<Vec<u8>, CmdError> {
    query_fetch::handle(tracker, command, body).await
}

/// Runs a command whose body has been read; `peer` identifies the connection, `local` is
/// the address it reached.
pub fn handle(
    tracker: &Tracker,
    command: Command,
    body: &[u8],
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Vec<u8>, CmdError> {
    use Command::*;
    match command {
        QueryStoreWithoutGroupOne => query_store::handle(tracker, body, false, false),
        QueryStoreWithGroupOne => query_store::handle(tracker, body, true, false),
        QueryStoreWithoutGroupAll => query_store::handle(tracker, body, false, true),
        QueryStoreWithGroupAll => query_store::handle(tracker, body, true, true),
        ParameterReq => parameter::handle(tracker, body),
        StorageJoin => join::handle(tracker, body, peer),
        StorageBeat => beat::handle(tracker, body, peer),
        ListOneGroup => list::list_one_group(tracker, body),
        ListAllGroups => list::list_all_groups(tracker, body),
        ListStorage => list::list_storage(tracker, body),
        DeleteStorage => delete::delete_storage(tracker, body),
        DeleteGroup => delete::delete_group(tracker, body),
        StorageHealth => health::handle(tracker, body),
        SyncDestReq => sync::sync_dest(tracker, body, peer),
        StorageChangeStatus => sync::change_status(tracker, body, peer),
        SyncReport => sync::report(tracker, body, peer),
        FetchStorageIds => storage_ids::fetch_storage_ids(tracker, body),
        GetServerId => storage_ids::get_server_id(tracker, body, peer),
        GetStorageStatus => storage_ids::get_storage_status(tracker, body, peer),
        GetLeader => leader::get_leader(body, local),
        other => Err(ProtoError::invalid(
            "command",
            format!("{other:?} is not served by the tracker"),
        )
        .into()),
    }
}
