//! The receiving side of replication (L.4): REPORT_SERVER_ID (9), SYNC_CREATE_FILE (16),
//! SYNC_DELETE_FILE (17), SYNC_UPDATE_FILE (18), SYNC_CREATE_LINK (19), SYNC_APPEND_FILE (25),
//! SYNC_MODIFY_FILE (35), SYNC_TRUNCATE_FILE (37), SYNC_RENAME_FILE (40), and the file list
//! (FETCH_FILE_LIST, fdfs-rs) a copying peer reads.
//!
//! Answers: 0 applied, 17 already there, 2 cannot start here (the sender then sends the whole
//! file). While this storage is still copying the group's files it answers 16 (busy) and
//! closes: pushes must wait until the copy is complete. Replicated changes are not written to
//! our own binlog: every storage pushes its own changes to every peer.

use fdfs_proto::cmd::Command;
use fdfs_proto::file_id::LogicalName;
use fdfs_proto::server::{reject, Flow, ServerConn};
use fdfs_proto::sync_msg::{
    self, FileListRequest, SyncDelete, SyncFilePrefix, SyncRangePrefix, SyncTruncate, SyncTwoNames,
    FILE_LIST_WITH_SLAVES, SYNC_PROBE, SYNC_SLAVE,
};
use fdfs_proto::{status, Header, ProtoError};
use tokio::io::AsyncReadExt;
use tracing::{debug, error, warn};

use super::{check_group, respond, small_body, status_of, CmdError, Ctx};
use crate::store::{Applied, StoreError, IO_BUFFER};

fn code(applied: Applied) -> u8 {
    match applied {
        Applied::Done => status::OK,
        Applied::Have => status::EEXIST,
        Applied::Missing => status::ENOENT,
    }
}

/// Answers a sync request that was fully read.
async fn answer(
    conn: &mut ServerConn,
    result: Result<Applied, CmdError>,
) -> Result<Flow, ProtoError> {
    match result {
        Ok(applied) => {
            crate::stats::note_status(code(applied));
            conn.send_response(code(applied), &[]).await?;
            Ok(Flow::Continue)
        }
        Err(err) => respond(conn, Err(err), true).await,
    }
}

/// Refuses pushes while our own data is still being copied; the connection closes, since
/// the body (if any) is left unread.
async fn busy(conn: &mut ServerConn) -> Result<Flow, ProtoError> {
    crate::stats::note_status(status::EBUSY);
    conn.send_response(status::EBUSY, &[]).await?;
    Ok(Flow::Close)
}

fn name(text: &str) -> Result<LogicalName, CmdError> {
    let name = LogicalName::parse(text)?;
    crate::stats::note_file(&name);
    Ok(name)
}

pub(super) async fn handle(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
    command: Command,
) -> Result<Flow, ProtoError> {
    if !ctx.repl.accepting() {
        debug!(cmd = ?command, "sync request while copying files: busy");
        return busy(conn).await;
    }
    match command {
        Command::ReportServerId => {
            let body = match small_body(ctx, conn, header).await? {
                Ok(body) => body,
                Err(flow) => return Ok(flow),
            };
            match sync_msg::decode_server_id(&body) {
                Ok(peer) => {
                    debug!(%peer, "sync connection from peer");
                    ctx.repl.pusher_connected(&peer);
                    let reply = sync_msg::encode_generation(ctx.repl.generation());
                    conn.send_response(status::OK, &reply).await?;
                    Ok(Flow::Continue)
                }
                Err(err) => respond(conn, Err(err.into()), true).await,
            }
        }
        Command::SyncCreateFile | Command::SyncUpdateFile => whole_file(ctx, conn, header).await,
        Command::SyncAppendFile | Command::SyncModifyFile => range(ctx, conn, header).await,
        Command::SyncDeleteFile => {
            let body = match small_body(ctx, conn, header).await? {
                Ok(body) => body,
                Err(flow) => return Ok(flow),
            };
            let result = async {
                let req = SyncDelete::decode(&body)?;
                check_group(ctx, &req.group)?;
                Ok(ctx.store.replica_delete(&name(&req.name)?).await?)
            }
            .await;
            answer(conn, result).await
        }
        Command::SyncCreateLink | Command::SyncRenameFile => {
            let body = match small_body(ctx, conn, header).await? {
                Ok(body) => body,
                Err(flow) => return Ok(flow),
            };
            let result = async {
                let req = SyncTwoNames::decode(&body)?;
                check_group(ctx, &req.group)?;
                let (first, second) = (name(&req.first)?, name(&req.second)?);
                Ok(if command == Command::SyncCreateLink {
                    ctx.store
                        .replica_link(&first, &second, req.timestamp)
                        .await?
                } else {
                    ctx.store.replica_rename(&first, &second).await?
                })
            }
            .await;
            answer(conn, result).await
        }
        Command::SyncTruncateFile => {
            let body = match small_body(ctx, conn, header).await? {
                Ok(body) => body,
                Err(flow) => return Ok(flow),
            };
            let result = async {
                let req = SyncTruncate::decode(&body)?;
                check_group(ctx, &req.group)?;
                Ok(ctx
                    .store
                    .replica_truncate(&name(&req.name)?, req.old_size, req.new_size, req.timestamp)
                    .await?)
            }
            .await;
            answer(conn, result).await
        }
        _ => reject(conn).await,
    }
}

/// Reads the name that follows a prefix; `Err(flow)` when the request had to be refused.
async fn read_name(
    ctx: &Ctx,
    conn: &mut ServerConn,
    group: &str,
    len: u64,
) -> Result<Result<LogicalName, Flow>, ProtoError> {
    let raw = conn.read_body(len, fdfs_proto::MAX_NAME_LEN as u64).await?;
    let parsed = std::str::from_utf8(&raw)
        .map_err(|_| CmdError::from(ProtoError::invalid("file name", "not valid text")))
        .and_then(name)
        .and_then(|n| check_group(ctx, group).map(|()| n));
    match parsed {
        Ok(name) => Ok(Ok(name)),
        // the content is left unread: the connection closes
        Err(err) => respond(conn, Err(err), false).await.map(Err),
    }
}

/// SYNC_CREATE_FILE / SYNC_UPDATE_FILE (and the content-less probe).
async fn whole_file(ctx: &Ctx, conn: &mut ServerConn, header: Header) -> Result<Flow, ProtoError> {
    let len = header.body_len()?;
    let create = header.cmd == Command::SyncCreateFile.code();
    let probe = create && header.status == SYNC_PROBE;
    if len < SyncFilePrefix::LEN as u64 {
        return reject(conn).await;
    }
    let mut raw = [0u8; SyncFilePrefix::LEN];
    conn.read_exact(&mut raw).await?;
    let Ok(prefix) = SyncFilePrefix::decode(&raw, len, probe) else {
        return reject(conn).await;
    };
    let name = match read_name(ctx, conn, &prefix.group, prefix.name_len).await? {
        Ok(name) => name,
        Err(flow) => return Ok(flow),
    };
    if probe {
        let result = async {
            let applied = ctx
                .store
                .replica_probe(&name, prefix.file_size, prefix.timestamp)
                .await?;
            // a file we would refuse for want of space is refused now, before its content is
            // sent (the sender probes every large file first, but for marked slaves)
            if applied == Applied::Missing
                && !ctx
                    .store
                    .room_for(name.store_path(), prefix.file_size)
                    .await?
            {
                return Err(StoreError::NoSpace);
            }
            Ok(applied)
        }
        .await;
        return answer(conn, result.map_err(CmdError::from)).await;
    }
    let mut body = conn.body_reader(prefix.file_size);
    let (size, mtime) = (prefix.file_size, prefix.timestamp);
    let slave = header.status == SYNC_SLAVE;
    let result = ctx
        .store
        .replica_write_as(&name, size, mtime, &mut body, create, slave)
        .await;
    let unread = body.limit();
    finish_streamed(conn, result, unread).await
}

/// SYNC_APPEND_FILE / SYNC_MODIFY_FILE.
async fn range(ctx: &Ctx, conn: &mut ServerConn, header: Header) -> Result<Flow, ProtoError> {
    let len = header.body_len()?;
    let append = header.cmd == Command::SyncAppendFile.code();
    if len < SyncRangePrefix::LEN as u64 {
        return reject(conn).await;
    }
    let mut raw = [0u8; SyncRangePrefix::LEN];
    conn.read_exact(&mut raw).await?;
    let Ok(prefix) = SyncRangePrefix::decode(&raw, len) else {
        return reject(conn).await;
    };
    let name = match read_name(ctx, conn, &prefix.group, prefix.name_len).await? {
        Ok(name) => name,
        Err(flow) => return Ok(flow),
    };
    let mut body = conn.body_reader(prefix.length);
    let result = ctx
        .store
        .replica_range(
            &name,
            prefix.offset,
            prefix.length,
            prefix.timestamp,
            &mut body,
            append,
        )
        .await;
    let unread = body.limit();
    finish_streamed(conn, result, unread).await
}

/// Answers a streamed sync request: content the store did not need is read and dropped so
/// the connection stays in step; a store error with content left closes it.
async fn finish_streamed(
    conn: &mut ServerConn,
    result: Result<Applied, StoreError>,
    unread: u64,
) -> Result<Flow, ProtoError> {
    match result {
        Ok(applied) => {
            if unread > 0 {
                conn.discard(unread).await?;
            }
            crate::stats::note_status(code(applied));
            conn.send_response(code(applied), &[]).await?;
            Ok(Flow::Continue)
        }
        // content that is not what its name records: the sender's copy is damaged, and
        // sending it again cannot help, so it hears 22 and skips the record (our copy, if
        // any, stays; its own scrub or a download repairs the sender's)
        Err(err @ StoreError::Corrupt(_)) if unread == 0 => {
            error!(error = %err, "refused a damaged replicated file");
            crate::stats::note_status(status::EINVAL);
            conn.send_response(status::EINVAL, &[]).await?;
            Ok(Flow::Continue)
        }
        Err(err) => {
            let err = CmdError::from(err);
            warn!(status = status_of(&err), error = %err, "replicated change failed");
            respond(conn, Err(err), unread == 0).await
        }
    }
}

/// FETCH_FILE_LIST: the list of every file and link of one store path, streamed.
pub(super) async fn file_list(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
) -> Result<Flow, ProtoError> {
    let body = match small_body(ctx, conn, header).await? {
        Ok(body) => body,
        Err(flow) => return Ok(flow),
    };
    let request = match FileListRequest::decode(&body) {
        Ok(request) => request,
        Err(err) => return respond(conn, Err(err.into()), true).await,
    };
    if let Err(err) = check_group(ctx, &request.group) {
        return respond(conn, Err(err), true).await;
    }
    // an older storage asking cannot read `S` lines
    let slaves = header.status == FILE_LIST_WITH_SLAVES;
    let (list, len) = match ctx.store.write_file_list(request.store_path, slaves).await {
        Ok(listed) => listed,
        Err(err) => return respond(conn, Err(err.into()), true).await,
    };
    let sent = async {
        let mut file = tokio::fs::File::open(list.path()).await?;
        conn.write_all(&Header::response(status::OK, len).encode())
            .await?;
        let mut buf = vec![0u8; IO_BUFFER];
        let mut remaining = len;
        while remaining > 0 {
            let want = buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(buf.len()));
            let n = file.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(ProtoError::Closed);
            }
            conn.write_all(&buf[..n]).await?;
            remaining -= n as u64;
        }
        conn.flush().await?;
        Ok::<(), ProtoError>(())
    }
    .await;
    list.remove().await;
    debug!(
        store_path = request.store_path,
        bytes = len,
        "file list sent"
    );
    sent.map(|()| Flow::Continue)
}
