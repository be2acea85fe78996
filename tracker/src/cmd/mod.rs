//! One module per group of tracker commands. Each handler turns a request body (already read
//! and bounded by [`max_body`]) into a reply body or a [`CmdError`], whose status byte is
//! decided in [`CmdError::status`] only.

use std::net::SocketAddr;

use fdfs_proto::cmd::Command;
use fdfs_proto::ProtoError;

use crate::cluster::{BeatError, DeleteError, JoinError};
use crate::select::SelectError;
use crate::service::Tracker;

mod beat;
mod delete;
mod join;
mod list;
mod parameter;
mod query_fetch;
mod query_store;

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
        QueryStoreWithoutGroupOne | QueryStoreWithoutGroupAll | ParameterReq | ListAllGroups => 0,
        ListOneGroup | DeleteGroup => list::GROUP_BODY_LEN,
        ListStorage | DeleteStorage => list::LIST_STORAGE_MAX_BODY_LEN,
        QueryStoreWithGroupOne | QueryStoreWithGroupAll => query_store::GROUP_BODY_LEN,
        QueryFetchOne | QueryFetchAll | QueryUpdate => query_fetch::MAX_BODY_LEN,
        StorageJoin => join::BODY_LEN,
        StorageBeat => beat::MAX_BODY_LEN,
        _ => return None,
    };
    Some(max as u64)
}

/// Runs a command whose body has been read; `peer` identifies the connection.
pub fn handle(
    tracker: &Tracker,
    command: Command,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Vec<u8>, CmdError> {
    use Command::*;
    match command {
        QueryStoreWithoutGroupOne => query_store::handle(tracker, body, false, false),
        QueryStoreWithGroupOne => query_store::handle(tracker, body, true, false),
        QueryStoreWithoutGroupAll => query_store::handle(tracker, body, false, true),
        QueryStoreWithGroupAll => query_store::handle(tracker, body, true, true),
        QueryFetchOne => query_fetch::fetch(tracker, body, false),
        QueryFetchAll => query_fetch::fetch(tracker, body, true),
        QueryUpdate => query_fetch::update(tracker, body),
        ParameterReq => parameter::handle(tracker, body),
        StorageJoin => join::handle(tracker, body, peer),
        StorageBeat => beat::handle(tracker, body, peer),
        ListOneGroup => list::list_one_group(tracker, body),
        ListAllGroups => list::list_all_groups(tracker, body),
        ListStorage => list::list_storage(tracker, body),
        DeleteStorage => delete::delete_storage(tracker, body),
        DeleteGroup => delete::delete_group(tracker, body),
        other => Err(ProtoError::invalid(
            "command",
            format!("{other:?} is not served by the tracker"),
        )
        .into()),
    }
}
