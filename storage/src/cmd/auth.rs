//! Cluster-secret enforcement on the storage port (`fdfs_proto::auth`).
//!
//! With `cluster_secret` set, the replication commands — REPORT_SERVER_ID (9), the sync
//! pushes (16, 17, 18, 19, 25, 35, 37, 40) and the file-list pull (FETCH_FILE_LIST, 86) — are
//! refused with EACCES (13) and the connection closed unless the peer has proved the secret
//! on this connection with AUTH_CHALLENGE/AUTH_PROOF. A process without the secret can then
//! neither push files into this storage nor list its files for a copy. Client commands are
//! unaffected. Without a secret the two auth commands are unknown commands (EINVAL, close).

use std::sync::LazyLock;

use fdfs_proto::auth::{ClusterSecret, Purpose};
use fdfs_proto::cmd::Command;
use fdfs_proto::server::{self, reject, ConnInfo, Flow, ServerConn, WarnLimiter};
use fdfs_proto::{status, Header, ProtoError};
use tracing::{debug, warn};

use super::{linger, Ctx};

/// One WARN a minute for each kind of refusal a hostile peer can trigger at will; the rest
/// at DEBUG.
static UNAUTHENTICATED_WARNINGS: LazyLock<WarnLimiter> = LazyLock::new(WarnLimiter::default);
static AUTH_WARNINGS: LazyLock<WarnLimiter> = LazyLock::new(WarnLimiter::default);

/// Commands only a peer storage sends.
pub(super) fn sync_only(command: Command) -> bool {
    use Command::*;
    matches!(
        command,
        ReportServerId
            | SyncCreateFile
            | SyncDeleteFile
            | SyncUpdateFile
            | SyncCreateLink
            | SyncAppendFile
            | SyncModifyFile
            | SyncTruncateFile
            | SyncRenameFile
            | SyncSrcReq
    )
}

/// Serves the auth commands and refuses unauthenticated sync commands; `None` lets the
/// request through to the command handlers.
pub(super) async fn guard(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
    command: Command,
    info: &ConnInfo,
) -> Option<Result<Flow, ProtoError>> {
    let secret = ctx.repl.config().cluster_secret.as_ref();
    match command {
        Command::AuthChallenge | Command::AuthProof => {
            let Some(secret) = secret else {
                return Some(reject(conn).await);
            };
            Some(authenticate(ctx, conn, header, secret, info).await)
        }
        _ if secret.is_some() && sync_only(command) && !info.is_authenticated() => {
            ctx.metrics.refused("not_authenticated");
            match UNAUTHENTICATED_WARNINGS.check() {
                Some(suppressed) => warn!(
                    peer = %info.peer,
                    ?command,
                    suppressed,
                    "sync command before proving the cluster secret: refused"
                ),
                None => debug!(peer = %info.peer, ?command, "unauthenticated sync command refused"),
            }
            crate::stats::note_status(status::EACCES);
            Some(refuse(conn).await)
        }
        _ => None,
    }
}

/// EACCES, then a lingering close: the request body was not read.
async fn refuse(conn: &mut ServerConn) -> Result<Flow, ProtoError> {
    conn.send_response(status::EACCES, &[]).await?;
    linger(conn).await;
    Ok(Flow::Close)
}

async fn authenticate(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
    secret: &ClusterSecret,
    info: &ConnInfo,
) -> Result<Flow, ProtoError> {
    match server::authenticate(conn, header, secret, Purpose::Sync, info).await? {
        Ok(()) => {
            debug!(peer = %info.peer, "peer proved the cluster secret");
            Ok(Flow::Continue)
        }
        Err(err) => {
            ctx.metrics.refused("auth_failed");
            match AUTH_WARNINGS.check() {
                Some(suppressed) => warn!(
                    peer = %info.peer,
                    error = %err,
                    suppressed,
                    "peer failed cluster authentication (wrong or missing cluster_secret?), closing"
                ),
                None => {
                    debug!(peer = %info.peer, error = %err, "peer failed cluster authentication")
                }
            }
            Ok(Flow::Close)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_commands_are_the_protected_ones() {
        for code in [9u8, 16, 17, 18, 19, 25, 35, 37, 40, 86] {
            let command = Command::try_from(code).unwrap();
            assert!(sync_only(command), "{command:?}");
        }
        for client in [
            Command::UploadFile,
            Command::DownloadFile,
            Command::DeleteFile,
            Command::QueryFileInfo,
            Command::AppendFile,
            Command::ActiveTest,
        ] {
            assert!(!sync_only(client), "{client:?}");
        }
    }
}
