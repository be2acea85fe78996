//! Storage commands (F): one module per command, each parsing its body with `fdfs_proto`
//! types and calling the disk layer. Errors become a status byte in [`status_of`] only.
//!
//! Connection rules (A.4, O.2): an EINVAL answer closes the connection (the stream may be out
//! of sync); other errors keep it open when the request body was fully consumed, and close it
//! otherwise.

mod append;
mod auth;
mod delete;
mod download;
mod get_metadata;
mod modify;
mod query_file_info;
mod regenerate;
mod scrub;
mod set_metadata;
mod sync;
mod truncate;
mod upload;
mod upload_slave;

use std::future::Future;
use std::sync::Arc;

use fdfs_proto::cmd::Command;
use fdfs_proto::file_id::LogicalName;
use fdfs_proto::server::{reject, ConnInfo, Flow, ServerConn, Service};
use fdfs_proto::status;
use fdfs_proto::{Header, ProtoError};
use tracing::{debug, warn};

use crate::replication::record::Op;
use crate::replication::{binlog::Ticket, ReplError, Replication};
use crate::store::{Store, StoreError};
use crate::tracker_link::Members;

/// What every command handler may use.
#[derive(Debug)]
pub struct Ctx {
    pub group: String,
    /// Largest non-streamed request body.
    pub buff_size: u64,
    /// Send large download bodies with sendfile(2) (config `sendfile`).
    pub sendfile: bool,
    /// Bound of each network read or write inside a request.
    pub network_timeout: std::time::Duration,
    pub store: Arc<Store>,
    pub members: Arc<Members>,
    pub repl: Arc<Replication>,
    pub stats: Arc<crate::stats::Stats>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub scrub: Arc<crate::scrub::Scrubber>,
    /// Who may send SCRUB (config `admin_hosts`).
    pub admin_hosts: fdfs_proto::server::AdminHosts,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("group {got:?} is not this storage's group {ours:?}")]
    WrongGroup { got: String, ours: String },
    #[error("replication: {0}")]
    Repl(#[from] ReplError),
}

/// The one place where errors become FastDFS status bytes (A.6).
pub fn status_of(err: &CmdError) -> u8 {
    match err {
        CmdError::Proto(err) => err.status(),
        CmdError::WrongGroup { .. } => status::EINVAL,
        // the change is stored here, but not as the client asked: never a false success
        CmdError::Repl(ReplError::Binlog(_)) => status::EIO,
        CmdError::Repl(ReplError::NotConfirmed { .. }) => status::ETIMEDOUT,
        CmdError::Store(err) if err.is_no_space() => status::ENOSPC,
        CmdError::Store(err) => match err {
            StoreError::NotFound => status::ENOENT,
            StoreError::NotRegularFile => status::EISDIR,
            StoreError::Invalid(_) => status::EINVAL,
            StoreError::NoSpace => status::ENOSPC,
            StoreError::Exists | StoreError::NameCollision => status::EEXIST,
            StoreError::NameBusy | StoreError::PathBusy { .. } => status::EBUSY,
            StoreError::ShortBody { .. } | StoreError::Body(_) | StoreError::Corrupt(_) => {
                status::EIO
            }
            StoreError::Io { source, .. } => status::from_io(source),
        },
    }
}

/// The storage's request handler.
#[derive(Debug)]
pub struct StorageService {
    ctx: Arc<Ctx>,
}

impl StorageService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        StorageService { ctx }
    }
}

impl Service for StorageService {
    fn call<'a>(
        &'a self,
        conn: &'a mut ServerConn,
        header: Header,
        info: &'a ConnInfo,
    ) -> impl Future<Output = Result<Flow, ProtoError>> + Send + 'a {
        counted(&self.ctx, conn, header, info)
    }

    fn disconnected(&self, info: &ConnInfo) {
        self.ctx.stats.connection_closed(info.peer);
        self.ctx
            .metrics
            .connections_open(self.ctx.stats.connections_open());
    }
}

/// Runs one request and counts it (stat block, metrics, access log).
async fn counted(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
    info: &ConnInfo,
) -> Result<Flow, ProtoError> {
    ctx.stats.connection_seen(info.peer);
    ctx.metrics.connections_open(ctx.stats.connections_open());
    let Ok(command) = Command::try_from(header.cmd) else {
        return reject(conn).await;
    };
    // cluster-secret authentication and what it guards (before any stats: not a FastDFS op)
    if let Some(flow) = auth::guard(ctx, conn, header, command, info).await {
        return flow;
    }
    // operator commands: refused like the tracker's DELETE_STORAGE, not counted as requests
    if admin_only(command) && !ctx.admin_hosts.allows(info) {
        ctx.metrics.refused("admin_hosts");
        return ctx
            .admin_hosts
            .refuse(conn, header, command, info, ctx.buff_size)
            .await;
    }
    let started = std::time::Instant::now();
    let (result, outcome) = crate::stats::scoped(dispatch(ctx, conn, header, command)).await;
    let outcome = crate::stats::Outcome {
        // a request answered by `reject` (or cut short by the connection) is a failure
        status: Some(outcome.status.unwrap_or(if result.is_ok() {
            status::EINVAL
        } else {
            status::EIO
        })),
        ..outcome
    };
    let body_len = u64::try_from(header.pkg_len).unwrap_or(0);
    ctx.stats.record(command, outcome, body_len);
    ctx.metrics
        .request(command, outcome, body_len, started.elapsed(), info);
    result
}

/// Commands only the hosts in `admin_hosts` may send: a scrub reads every stored file.
fn admin_only(command: Command) -> bool {
    matches!(command, Command::Scrub)
}

async fn dispatch(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
    command: Command,
) -> Result<Flow, ProtoError> {
    debug!(cmd = ?command, len = header.pkg_len, "request");
    match command {
        Command::UploadFile => upload::handle(ctx, conn, header, false).await,
        Command::UploadAppenderFile => upload::handle(ctx, conn, header, true).await,
        Command::DownloadFile => download::handle(ctx, conn, header).await,
        Command::DeleteFile => small(ctx, conn, header, |body| delete::handle(ctx, body)).await,
        Command::SetMetadata => {
            small(ctx, conn, header, |body| set_metadata::handle(ctx, body)).await
        }
        Command::GetMetadata => {
            small(ctx, conn, header, |body| get_metadata::handle(ctx, body)).await
        }
        Command::QueryFileInfo => {
            let flags = header.status;
            small(ctx, conn, header, |body| {
                query_file_info::handle(ctx, body, flags)
            })
            .await
        }
        Command::UploadSlaveFile => upload_slave::handle(ctx, conn, header).await,
        Command::AppendFile => append::handle(ctx, conn, header).await,
        Command::ModifyFile => modify::handle(ctx, conn, header).await,
        Command::TruncateFile => small(ctx, conn, header, |body| truncate::handle(ctx, body)).await,
        Command::RegenerateAppenderFilename => {
            small(ctx, conn, header, |body| regenerate::handle(ctx, body)).await
        }
        Command::ReportServerId
        | Command::SyncCreateFile
        | Command::SyncUpdateFile
        | Command::SyncDeleteFile
        | Command::SyncCreateLink
        | Command::SyncAppendFile
        | Command::SyncModifyFile
        | Command::SyncTruncateFile
        | Command::SyncRenameFile => sync::handle(ctx, conn, header, command).await,
        // FETCH_FILE_LIST (fdfs_proto::sync_msg)
        Command::SyncSrcReq => sync::file_list(ctx, conn, header).await,
        Command::Scrub => small(ctx, conn, header, |body| scrub::handle(ctx, body)).await,
        _ => {
            debug!(cmd = header.cmd, "command not served by a storage");
            reject(conn).await
        }
    }
}

/// Runs a command whose whole body fits `buff_size`: reads it, handles it, answers.
async fn small<F, Fut>(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
    handler: F,
) -> Result<Flow, ProtoError>
where
    F: FnOnce(Vec<u8>) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, CmdError>>,
{
    let body = match small_body(ctx, conn, header).await? {
        Ok(body) => body,
        Err(flow) => return Ok(flow),
    };
    let result = handler(body).await;
    respond(conn, result, true).await
}

/// Reads a non-streamed body; a request (header and body) of `buff_size` or more is answered
/// with 22 and the connection closes (`Err(flow)`), as FastDFS's buffer of that size
/// refuses it (A.5).
async fn small_body(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
) -> Result<Result<Vec<u8>, Flow>, ProtoError> {
    let len = header.body_len()?;
    if len.saturating_add(fdfs_proto::HEADER_LEN as u64) >= ctx.buff_size {
        debug!(
            len,
            max = ctx.buff_size,
            "request body larger than buff_size"
        );
        return reject(conn).await.map(Err);
    }
    Ok(Ok(conn.read_body(len, ctx.buff_size).await?))
}

/// Answers a handled request. `consumed` tells whether the whole request body was read.
async fn respond(
    conn: &mut ServerConn,
    result: Result<Vec<u8>, CmdError>,
    consumed: bool,
) -> Result<Flow, ProtoError> {
    match result {
        Ok(body) => {
            crate::stats::note_status(status::OK);
            conn.send_response(status::OK, &body).await?;
            Ok(Flow::Continue)
        }
        Err(err) => {
            let code = status_of(&err);
            crate::stats::note_status(code);
            match code {
                status::ENOENT | status::EEXIST => {
                    debug!(status = code, error = %err, "request failed")
                }
                status::EINVAL => debug!(error = %err, "invalid request"),
                _ => warn!(status = code, error = %err, "request failed"),
            }
            conn.send_response(code, &[]).await?;
            if !consumed {
                linger(conn).await;
                return Ok(Flow::Close);
            }
            Ok(if code == status::EINVAL {
                Flow::Close
            } else {
                Flow::Continue
            })
        }
    }
}

/// Lingering close after answering a request whose body was not read: clients send the whole
/// body before reading the reply, and closing with unread bytes in the socket makes the kernel
/// send a reset that can destroy the reply before the client reads it. So the write side is
/// shut (the client sees our answer, then EOF) and what the client still sends is read and
/// dropped, bounded in bytes and time.
async fn linger(conn: &mut ServerConn) {
    const LINGER_BYTES: u64 = 64 << 20;
    const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
    if conn.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER_TIME, conn.discard(LINGER_BYTES)).await;
}

/// Records a client's change, made already, in the binlog at `timestamp` (the file's mtime
/// after it) and, with `write_ack = all`, waits for the peers before the client hears success.
async fn replicate(ctx: &Ctx, ticket: Ticket, timestamp: u32, op: Op) -> Result<(), CmdError> {
    ctx.repl.commit(ticket, timestamp, op).await?;
    Ok(())
}

/// Records each new file (or new name of a renamed one) in the binlog just before it appears
/// under its name (see [`crate::store::BeforeLink`]); keeps the records from the sync workers
/// until dropped.
struct RecordCreate<'a> {
    ctx: &'a Ctx,
    /// `Some(old)`: the new name is `old` renamed (REGENERATE), not a new file.
    renamed_from: Option<String>,
    ticket: Option<Ticket>,
    /// Sequence number of the last record, 0 before the first.
    last: u64,
    releases: Vec<crate::replication::binlog::Release>,
}

impl<'a> RecordCreate<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        RecordCreate {
            ctx,
            renamed_from: None,
            ticket: Some(ctx.repl.ticket()),
            last: 0,
            releases: Vec::new(),
        }
    }

    /// Records the new name of `old` as a rename (REGENERATE).
    fn rename_of(ctx: &'a Ctx, old: &LogicalName) -> Self {
        RecordCreate {
            renamed_from: Some(old.to_string()),
            ..RecordCreate::new(ctx)
        }
    }

    /// The change is complete: the records go to the peers (and, with `write_ack = all`,
    /// the peers must confirm them).
    async fn finish(mut self) -> Result<(), CmdError> {
        self.releases.clear();
        if self.last > 0 {
            self.ctx.repl.confirm(self.last).await?;
        }
        Ok(())
    }
}

impl RecordCreate<'_> {
    async fn record(&mut self, name: &LogicalName, lazy: bool) -> Result<(), StoreError> {
        // the access log shows the new file
        crate::stats::note_file(name);
        let ticket = self.ticket.take().unwrap_or_else(|| self.ctx.repl.ticket());
        let op = match &self.renamed_from {
            None => Op::Create {
                name: name.to_string(),
            },
            Some(old) => Op::Rename {
                name: name.to_string(),
                old: old.clone(),
            },
        };
        let recorded = match lazy {
            false => self.ctx.repl.record(ticket, op).await,
            true => self.ctx.repl.record_lazy(ticket, op).await,
        };
        let (seq, release) = recorded.map_err(binlog_failed)?;
        self.last = seq;
        self.releases.push(release);
        Ok(())
    }
}

impl crate::store::BeforeLink for RecordCreate<'_> {
    async fn before_link(&mut self, name: &LogicalName) -> Result<(), StoreError> {
        self.record(name, false).await
    }

    async fn before_journaled_link(&mut self, name: &LogicalName) -> Result<(), StoreError> {
        self.record(name, true).await
    }
}

fn binlog_failed(err: ReplError) -> StoreError {
    StoreError::Io {
        context: "writing the binlog",
        source: std::io::Error::other(err.to_string()),
    }
}

/// Records a change of an existing file (append, modify, truncate) in the binlog just before
/// it touches the file (see [`crate::store::BeforeChange`]): a kill after the change but
/// before its record would leave this storage's copy different from its peers' for good.
/// `op` makes the record from the file's length before the change.
struct RecordChange<'a, F> {
    ctx: &'a Ctx,
    ticket: Option<Ticket>,
    op: F,
    recorded: Option<(u64, crate::replication::binlog::Release)>,
}

impl<'a, F: FnMut(u64) -> Op + Send> RecordChange<'a, F> {
    fn new(ctx: &'a Ctx, op: F) -> Self {
        RecordChange {
            ctx,
            ticket: Some(ctx.repl.ticket()),
            op,
            recorded: None,
        }
    }

    /// The change is complete: its record goes to the peers (and, with `write_ack = all`,
    /// the peers must confirm it).
    async fn finish(mut self) -> Result<(), CmdError> {
        if let Some((seq, release)) = self.recorded.take() {
            drop(release);
            self.ctx.repl.confirm(seq).await?;
        }
        Ok(())
    }
}

impl<F: FnMut(u64) -> Op + Send> crate::store::BeforeChange for RecordChange<'_, F> {
    async fn before_change(&mut self, old_len: u64) -> Result<(), StoreError> {
        let ticket = self.ticket.take().unwrap_or_else(|| self.ctx.repl.ticket());
        let op = (self.op)(old_len);
        let recorded = self
            .ctx
            .repl
            .record(ticket, op)
            .await
            .map_err(binlog_failed)?;
        self.recorded = Some(recorded);
        Ok(())
    }
}

/// Refuses requests for another group (F).
fn check_group(ctx: &Ctx, group: &str) -> Result<(), CmdError> {
    if group != ctx.group {
        return Err(CmdError::WrongGroup {
            got: group.to_string(),
            ours: ctx.group.clone(),
        });
    }
    Ok(())
}

/// Reads a `len`-byte logical name that precedes a streamed body (`len` was bounded by the
/// prefix decoder). A bad name is an error for the caller to answer.
async fn read_name(
    conn: &mut ServerConn,
    len: u64,
) -> Result<Result<LogicalName, CmdError>, ProtoError> {
    let raw = conn.read_body(len, fdfs_proto::MAX_NAME_LEN as u64).await?;
    Ok(std::str::from_utf8(&raw)
        .map_err(|_| CmdError::from(ProtoError::invalid("file name", "not valid text")))
        .and_then(parse_name))
}

/// Validates a logical name (H.11); the store checks its store path index.
fn parse_name(text: &str) -> Result<LogicalName, CmdError> {
    let name = LogicalName::parse(text)?;
    crate::stats::note_file(&name);
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let cases: Vec<(CmdError, u8)> = vec![
            (StoreError::NotFound.into(), 2),
            (StoreError::NotRegularFile.into(), 21),
            (StoreError::Invalid("x".into()).into(), 22),
            (StoreError::NoSpace.into(), 28),
            (StoreError::Exists.into(), 17),
            (StoreError::NameCollision.into(), 17),
            (StoreError::NameBusy.into(), 16),
            (StoreError::PathBusy { index: 1 }.into(), 16),
            (
                CmdError::WrongGroup {
                    got: "a".into(),
                    ours: "b".into(),
                },
                22,
            ),
            (ProtoError::invalid("file name", "bad").into(), 22),
            (
                StoreError::Io {
                    context: "x",
                    source: std::io::Error::from_raw_os_error(libc::EIO),
                }
                .into(),
                5,
            ),
            (StoreError::Corrupt("x".into()).into(), 5),
        ];
        // a write that ran out of room midway answers 28 however the file system said it
        for errno in [libc::ENOSPC, libc::EDQUOT, libc::EFBIG] {
            let err = StoreError::Io {
                context: "writing file",
                source: std::io::Error::from_raw_os_error(errno),
            };
            assert_eq!(status_of(&err.into()), 28, "errno {errno}");
        }
        for (err, code) in cases {
            assert_eq!(status_of(&err), code, "{err}");
        }
    }
}
