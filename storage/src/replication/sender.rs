//! The sync worker of one peer: connects to the peer's storage port, introduces itself with
//! REPORT_SERVER_ID (the answer carries the peer's data generation), then replays the binlog
//! from the peer's mark, one record at a time, through [`plan::RecordSync`]. The cursor only
//! moves once the peer confirmed a record (or the record was skipped), so after a crash or a
//! lost connection on either side the worker resumes where it stopped; records replayed twice
//! are harmless to the receiver.
//!
//! A peer that is down or busy (still copying files, status 16) is retried with a backoff of
//! 0.5 s doubling to 2 s (0.5 s while it is busy). A peer whose disk is full (status 28) is
//! offered the refused record again every 5 s: replication pauses there and resumes once the
//! peer has room. An idle connection sends ACTIVE_TEST every `keepalive`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fdfs_proto::cmd::Command;
use fdfs_proto::conn::Connection;
use fdfs_proto::file_id::LogicalName;
use fdfs_proto::status;
use fdfs_proto::sync_msg::{
    self, SyncDelete, SyncFilePrefix, SyncRangePrefix, SyncTruncate, SyncTwoNames, SYNC_PROBE,
};
use fdfs_proto::tracker_msg::storage_status;
use fdfs_proto::{Header, ProtoError};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpStream;
use tracing::{debug, error, info, warn};

use super::binlog::{BinlogReader, Position};
use super::mark::{self, Mark};
use super::plan::{sidecar_name, Local, Outcome, RecordSync, Request, Snapshot, Step};
use super::record::{Op, Record};
use super::{binlog_now, Peer, Replication};
use crate::store::{LocalFile, StoreError, IO_BUFFER};

const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Short: a restarted peer waits (a few seconds at most) for our connection before it asks
/// to be ACTIVE again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A peer still copying files is asked again this often.
const BUSY_RETRY: Duration = Duration::from_millis(500);
/// A peer without room for a record (status 28) is offered it again this often: its disk
/// fills and frees in minutes, not milliseconds, and each try may carry the whole file.
const FULL_RETRY: Duration = Duration::from_secs(5);
/// Files at least this big are probed before their content is sent.
const PROBE_MIN: u64 = 64 * 1024;
/// The mark is saved after this many records or this much time, whichever comes first.
const MARK_EVERY_RECORDS: u64 = 200;
const MARK_EVERY: Duration = Duration::from_secs(1);
/// How often a worker logs its progress while it is behind.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(30);

type SyncConn = Connection<TcpStream>;

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("peer is not in the member list")]
    NoAddress,
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("peer is busy copying files from its source")]
    Busy,
    #[error("peer refused record {seq} with status {status} ({})", status::describe(*status))]
    Refused { seq: u64, status: u8 },
    #[error("local file changed while being sent: {0}")]
    LocalChanged(String),
    #[error("binlog: {0}")]
    Binlog(io::Error),
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    #[error("cluster authentication failed: {0}")]
    Auth(#[from] fdfs_proto::auth::AuthError),
}

/// Runs until the peer leaves the group or the storage stops.
pub async fn run(repl: Arc<Replication>, peer: Arc<Peer>) {
    let dir = repl.config().sync_dir.clone();
    let id = peer.id.clone();
    let mut mark = {
        let dir = dir.clone();
        let id = id.clone();
        match tokio::task::spawn_blocking(move || mark::load(&dir, &id)).await {
            Ok(Ok(mark)) => mark,
            other => {
                warn!(peer = %peer.id, result = ?other.map(|r| r.map(|_| ())), "cannot read mark file, starting from the beginning");
                Mark::default()
            }
        }
    };
    peer.update(|s| {
        s.generation = mark.peer_generation;
        s.acked_seq = mark.acked_seq;
        s.synced_timestamp = mark.watermark;
        s.synced_records = mark.synced_records;
        s.skipped_records = mark.skipped_records;
    });
    let mut backoff = MIN_BACKOFF;
    let mut failures = 0u32;
    // the peer refused a record for want of space, and has not taken one since
    let mut paused_full = false;
    loop {
        if peer.stop.is_cancelled() {
            break;
        }
        let acked_before = mark.acked_seq;
        let result = session(&repl, &peer, &mut mark).await;
        if paused_full && mark.acked_seq != acked_before {
            info!(peer = %id, seq = mark.acked_seq, "peer has room again: replication resumed");
            paused_full = false;
        }
        peer.update(|s| s.connected = false);
        save_mark(&repl, &id, &mark).await;
        if peer.stop.is_cancelled() {
            break;
        }
        let progressed = match &result {
            Ok(progressed) => *progressed,
            Err(_) => false,
        };
        if progressed {
            backoff = MIN_BACKOFF;
            failures = 0;
        }
        if let Err(err) = &result {
            if !matches!(err, SyncError::Busy) {
                peer.sync_failed();
            }
            failures += 1;
            peer.update(|s| s.last_error = Some(err.to_string()));
            // one warning per outage; the rest at debug level
            match err {
                SyncError::Busy => debug!(peer = %id, "peer is still copying files, waiting"),
                SyncError::Refused {
                    seq,
                    status: status::ENOSPC,
                } => {
                    if !paused_full {
                        warn!(peer = %id, seq, retry_every = ?FULL_RETRY, "peer has no space left: replication to it paused");
                    }
                    paused_full = true;
                }
                _ if failures == 1 => {
                    warn!(peer = %id, error = %err, retry_in = ?backoff, "sync with peer failed")
                }
                _ => debug!(peer = %id, error = %err, retry_in = ?backoff, "sync with peer failed"),
            }
            note_pending(&repl, &peer, &mark).await;
        }
        let pause = match &result {
            Err(SyncError::Busy) => BUSY_RETRY,
            // the cursor stays on the refused record: replication resumes there
            Err(SyncError::Refused {
                status: status::ENOSPC,
                ..
            }) => FULL_RETRY,
            _ => backoff,
        };
        tokio::select! {
            _ = peer.stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    save_mark(&repl, &id, &mark).await;
    debug!(peer = %id, "sync worker stopped");
}

async fn save_mark(repl: &Replication, id: &str, mark: &Mark) {
    let dir = repl.config().sync_dir.clone();
    let (id, mark) = (id.to_string(), mark.clone());
    let saved = tokio::task::spawn_blocking(move || mark::save(&dir, &id, &mark)).await;
    if !matches!(saved, Ok(Ok(()))) {
        warn!(?saved, "cannot save a sync mark file");
    }
}

/// Records how old the first unconfirmed record is (for "seconds behind") while the peer is
/// unreachable.
async fn note_pending(repl: &Replication, peer: &Peer, mark: &Mark) {
    let end = repl.binlog().committed().end;
    let mut reader = BinlogReader::new(repl.binlog().dir(), mark.position());
    if let Ok(Some((record, _))) = reader.next(end).await {
        peer.update(|s| {
            s.oldest_pending.get_or_insert(record.timestamp);
        });
    }
}

/// The peer's address and status from the member list.
fn locate(repl: &Replication, id: &str) -> Option<(String, u8)> {
    repl.members()
        .all()
        .into_iter()
        .find(|m| m.id == id && !m.ip.is_empty() && m.port > 0)
        .map(|m| (format!("{}:{}", m.ip, m.port), m.status))
}

async fn timed<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, ProtoError>>,
) -> Result<T, SyncError> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SyncError::Timeout),
    }
}

/// Sends a request and returns the status of the answer (whose body is dropped).
async fn exchange(
    conn: &mut SyncConn,
    header: Header,
    body: &[u8],
    limit: Duration,
) -> Result<u8, SyncError> {
    timed(limit, async {
        conn.send(header, body).await?;
        answer(conn).await
    })
    .await
}

async fn answer(conn: &mut SyncConn) -> Result<u8, ProtoError> {
    match conn.read_response_header().await {
        Ok(len) => {
            conn.discard(len).await?;
            Ok(status::OK)
        }
        Err(ProtoError::Status { status }) => Ok(status),
        Err(err) => Err(err),
    }
}

/// One connection's life. `Ok(true)` when at least one record was confirmed.
async fn session(repl: &Replication, peer: &Peer, mark: &mut Mark) -> Result<bool, SyncError> {
    let limit = repl.config().network_timeout;
    let (addr, peer_status) = locate(repl, &peer.id).ok_or(SyncError::NoAddress)?;
    if matches!(
        peer_status,
        storage_status::OFFLINE | storage_status::INIT | storage_status::WAIT_SYNC
    ) {
        // nobody answers, or it is about to copy everything anyway: try once in a while
        debug!(peer = %peer.id, status = storage_status::name(peer_status), "peer not ready");
    }
    let stream = tokio::select! {
        _ = peer.stop.cancelled() => return Ok(false),
        connected = tokio::time::timeout(limit, TcpStream::connect(&addr)) => match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(SyncError::Connect(err)),
            Err(_) => return Err(SyncError::Timeout),
        },
    };
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(stream);
    // the receiver proves the secret before anything of ours goes out
    let secret = repl.config().cluster_secret.as_ref();
    super::authenticate(&mut conn, secret, fdfs_proto::auth::Purpose::Sync, limit).await?;
    let id_body = sync_msg::encode_server_id(&repl.config().self_id);
    let reply = timed(
        limit,
        conn.call(Command::ReportServerId.code(), &id_body, 64),
    )
    .await;
    let generation = match reply {
        Ok(body) => sync_msg::decode_generation(&body)?.unwrap_or(0),
        Err(SyncError::Proto(ProtoError::Status { status })) if status == status::EBUSY => {
            return Err(SyncError::Busy)
        }
        Err(err) => return Err(err),
    };
    if generation != mark.peer_generation {
        if mark.peer_generation != 0 || mark.acked_seq != 0 {
            info!(peer = %peer.id, old = mark.peer_generation, new = generation, "peer has new data: replaying the whole binlog to it");
        }
        mark.restart(generation);
        save_mark(repl, &peer.id, mark).await;
        peer.update(|s| {
            s.generation = generation;
            s.acked_seq = 0;
            s.synced_timestamp = 0;
            s.oldest_pending = None;
        });
    }
    peer.update(|s| {
        s.connected = true;
        s.connected_at = Some(std::time::Instant::now());
        s.last_error = None;
    });
    info!(peer = %peer.id, %addr, seq = mark.acked_seq, "sync connection up");

    let mut reader = BinlogReader::new(repl.binlog().dir(), mark.position());
    let mut committed = repl.binlog().subscribe();
    let mut progressed = false;
    let mut unsaved = 0u64;
    let mut last_save = Instant::now();
    let mut last_log = Instant::now();
    let mut last_sent = Instant::now();
    loop {
        let end = committed.borrow_and_update().end;
        let next = reader.next(end).await.map_err(SyncError::Binlog)?;
        let Some((record, after)) = next else {
            // caught up
            if unsaved > 0 {
                save_mark(repl, &peer.id, mark).await;
                unsaved = 0;
                last_save = Instant::now();
            }
            let (watermark, seq) = repl.binlog().watermark_now();
            if mark.acked_seq >= seq {
                peer.update(|s| {
                    s.synced_timestamp = s.synced_timestamp.max(watermark);
                    s.oldest_pending = None;
                });
            }
            let idle = repl.config().keepalive.saturating_sub(last_sent.elapsed());
            tokio::select! {
                _ = peer.stop.cancelled() => return Ok(progressed),
                changed = committed.changed() => {
                    if changed.is_err() {
                        return Ok(progressed);
                    }
                }
                _ = tokio::time::sleep(idle) => {
                    let status = exchange(&mut conn, Header::request(Command::ActiveTest.code(), 0), &[], limit).await?;
                    if status != status::OK {
                        return Err(SyncError::Refused { seq: 0, status });
                    }
                    last_sent = Instant::now();
                }
                // refresh the caught-up watermark now and then while idle
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        if peer.stop.is_cancelled() {
            return Ok(progressed);
        }
        peer.update(|s| {
            s.oldest_pending.get_or_insert(record.timestamp);
        });
        let outcome = sync_record(repl, &mut conn, &record).await?;
        last_sent = Instant::now();
        match &outcome {
            Outcome::Skipped(reason) => {
                debug!(peer = %peer.id, seq = record.seq, name = record.op.name(), reason, "record skipped")
            }
            _ => debug!(peer = %peer.id, seq = record.seq, ?outcome, "record synced"),
        }
        advance(mark, &record, after, &outcome);
        let synced_records = mark.synced_records;
        let skipped_records = mark.skipped_records;
        peer.update(|s| {
            s.acked_seq = record.seq;
            s.synced_timestamp = s.synced_timestamp.max(record.watermark);
            s.oldest_pending = None;
            s.synced_records = synced_records;
            s.skipped_records = skipped_records;
        });
        repl.notify_acks();
        progressed = true;
        unsaved += 1;
        if unsaved >= MARK_EVERY_RECORDS || last_save.elapsed() >= MARK_EVERY {
            save_mark(repl, &peer.id, mark).await;
            unsaved = 0;
            last_save = Instant::now();
        }
        if last_log.elapsed() >= PROGRESS_LOG_EVERY {
            let committed_seq = repl.binlog().committed().seq;
            let behind = committed_seq.saturating_sub(record.seq);
            info!(
                peer = %peer.id,
                seq = record.seq,
                file = after.index,
                offset = after.offset,
                records_behind = behind,
                seconds_behind = binlog_now().saturating_sub(record.timestamp),
                "sync progress"
            );
            last_log = Instant::now();
        }
    }
}

/// Moves the mark past a finished record.
fn advance(mark: &mut Mark, record: &Record, after: Position, outcome: &Outcome) {
    mark.binlog_index = after.index;
    mark.binlog_offset = after.offset;
    mark.acked_seq = record.seq;
    mark.watermark = mark.watermark.max(record.watermark);
    match outcome {
        Outcome::Skipped(_) => mark.skipped_records += 1,
        _ => mark.synced_records += 1,
    }
}

fn parse(name: &str) -> Result<LogicalName, SyncError> {
    LogicalName::parse(name).map_err(SyncError::Proto)
}

fn local(file: LocalFile) -> Local {
    match file {
        LocalFile::Missing => Local::Missing,
        LocalFile::File { size, mtime } => Local::File { size, mtime },
        LocalFile::Link { target } => Local::Link { target },
    }
}

/// What we hold for a record: its name, that name's sidecar, and the other name of a link
/// (its target) or of a rename (the old name).
async fn snapshot(repl: &Replication, op: &Op) -> Result<Snapshot, SyncError> {
    let store = repl.store();
    let main = store.local_file(&parse(op.name())?).await?;
    let sidecar = match LogicalName::parse(&sidecar_name(op.name())) {
        Ok(name) => store.local_file(&name).await?,
        Err(_) => LocalFile::Missing,
    };
    let other = match (op, &main) {
        (Op::Link { target, .. }, _) => store.local_file(&parse(target)?).await?,
        (_, LocalFile::Link { target }) => store.local_file(&parse(target)?).await?,
        (Op::Rename { old, .. }, _) => store.local_file(&parse(old)?).await?,
        _ => LocalFile::Missing,
    };
    Ok(Snapshot {
        main: local(main),
        sidecar: local(sidecar),
        other: local(other),
    })
}

/// Replays one record to the peer.
async fn sync_record(
    repl: &Replication,
    conn: &mut SyncConn,
    record: &Record,
) -> Result<Outcome, SyncError> {
    // a file that changes while it is being sent is looked at again, a few times
    let mut attempts = 0;
    loop {
        attempts += 1;
        let local = snapshot(repl, &record.op).await?;
        let (mut sync, mut step) = RecordSync::start(record.clone(), local, PROBE_MIN);
        let result = loop {
            match step {
                Step::Send(request) => match send(repl, conn, &request).await {
                    Ok(status) => step = sync.on_reply(status),
                    Err(err) => break Err(err),
                },
                Step::Done(outcome) => break Ok(outcome),
                Step::Failed {
                    status,
                    retry: true,
                } => {
                    break Err(SyncError::Refused {
                        seq: record.seq,
                        status,
                    })
                }
                Step::Failed {
                    status,
                    retry: false,
                } => {
                    error!(
                        seq = record.seq,
                        name = record.op.name(),
                        status,
                        reason = status::describe(status),
                        "peer refused a record for good, skipping it"
                    );
                    break Ok(Outcome::Skipped("refused by the peer"));
                }
            }
        };
        match result {
            Err(SyncError::LocalChanged(what)) if attempts < 3 => {
                debug!(seq = record.seq, %what, "file changed before it could be sent, looking again");
            }
            other => return other,
        }
    }
}

/// Sends one request (streaming content from the local file) and returns the answer status.
async fn send(repl: &Replication, conn: &mut SyncConn, request: &Request) -> Result<u8, SyncError> {
    let limit = repl.config().network_timeout;
    let group = repl.config().group.clone();
    match request {
        Request::Create {
            name,
            size,
            mtime,
            probe: true,
        } => {
            let prefix = SyncFilePrefix {
                name_len: name.len() as u64,
                file_size: *size,
                timestamp: *mtime,
                group,
            };
            let mut body = prefix.encode();
            body.extend_from_slice(name.as_bytes());
            let header = Header {
                pkg_len: body.len() as i64,
                cmd: Command::SyncCreateFile.code(),
                status: SYNC_PROBE,
            };
            exchange(conn, header, &body, limit).await
        }
        Request::Create { name, .. } | Request::Update { name, .. } => {
            let cmd = if matches!(request, Request::Create { .. }) {
                Command::SyncCreateFile
            } else {
                Command::SyncUpdateFile
            };
            send_whole(repl, conn, cmd, name).await
        }
        Request::Append {
            name,
            offset,
            length,
            ..
        }
        | Request::Modify {
            name,
            offset,
            length,
            ..
        } => {
            let cmd = if matches!(request, Request::Append { .. }) {
                Command::SyncAppendFile
            } else {
                Command::SyncModifyFile
            };
            send_range(repl, conn, cmd, name, *offset, *length).await
        }
        Request::Delete { name, timestamp } => {
            let body = SyncDelete {
                timestamp: *timestamp,
                group,
                name: name.clone(),
            }
            .encode();
            let header = Header::request(Command::SyncDeleteFile.code(), body.len() as u64);
            exchange(conn, header, &body, limit).await
        }
        Request::Link {
            name,
            target,
            timestamp,
        }
        | Request::Rename {
            name,
            old: target,
            timestamp,
        } => {
            let cmd = if matches!(request, Request::Link { .. }) {
                Command::SyncCreateLink
            } else {
                Command::SyncRenameFile
            };
            let body = SyncTwoNames {
                timestamp: *timestamp,
                group,
                first: name.clone(),
                second: target.clone(),
            }
            .encode();
            exchange(
                conn,
                Header::request(cmd.code(), body.len() as u64),
                &body,
                limit,
            )
            .await
        }
        Request::Truncate {
            name,
            old_size,
            new_size,
            timestamp,
        } => {
            // the file's mtime after the truncate is what the peer should show
            let mtime = match repl.store().local_file(&parse(name)?).await? {
                LocalFile::File { mtime, .. } => mtime,
                _ => *timestamp,
            };
            let body = SyncTruncate {
                old_size: *old_size,
                new_size: *new_size,
                timestamp: mtime,
                group,
                name: name.clone(),
            }
            .encode();
            let header = Header::request(Command::SyncTruncateFile.code(), body.len() as u64);
            exchange(conn, header, &body, limit).await
        }
    }
}

/// Opens a local file for sending; returns it with its current size and mtime.
async fn open_local(
    repl: &Replication,
    name: &str,
) -> Result<(tokio::fs::File, u64, u32), SyncError> {
    let logical = parse(name)?;
    let (file, _) = match repl.store().open_read(&logical).await {
        Ok(opened) => opened,
        Err(StoreError::NotFound) => {
            return Err(SyncError::LocalChanged(format!("{name} disappeared")))
        }
        Err(err) => return Err(err.into()),
    };
    let meta = file
        .metadata()
        .await
        .map_err(|err| SyncError::Store(StoreError::io("reading file status")(err)))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as u32);
    Ok((file, meta.len(), mtime))
}

/// SYNC_CREATE_FILE / SYNC_UPDATE_FILE with the whole current content.
async fn send_whole(
    repl: &Replication,
    conn: &mut SyncConn,
    cmd: Command,
    name: &str,
) -> Result<u8, SyncError> {
    let (file, size, mtime) = open_local(repl, name).await?;
    let prefix = SyncFilePrefix {
        name_len: name.len() as u64,
        file_size: size,
        timestamp: mtime,
        group: repl.config().group.clone(),
    };
    let mut head = Header::request(cmd.code(), (SyncFilePrefix::LEN + name.len()) as u64 + size)
        .encode()
        .to_vec();
    head.extend_from_slice(&prefix.encode());
    head.extend_from_slice(name.as_bytes());
    stream_request(repl, conn, head, file, size).await
}

/// SYNC_APPEND_FILE / SYNC_MODIFY_FILE with the current bytes of the range.
async fn send_range(
    repl: &Replication,
    conn: &mut SyncConn,
    cmd: Command,
    name: &str,
    offset: u64,
    length: u64,
) -> Result<u8, SyncError> {
    let (mut file, size, mtime) = open_local(repl, name).await?;
    if size < offset.saturating_add(length) {
        return Err(SyncError::LocalChanged(format!("{name} is shorter now")));
    }
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|err| SyncError::Store(StoreError::io("seeking in file")(err)))?;
    let prefix = SyncRangePrefix {
        name_len: name.len() as u64,
        offset,
        length,
        timestamp: mtime,
        group: repl.config().group.clone(),
    };
    let mut head = Header::request(
        cmd.code(),
        (SyncRangePrefix::LEN + name.len()) as u64 + length,
    )
    .encode()
    .to_vec();
    head.extend_from_slice(&prefix.encode());
    head.extend_from_slice(name.as_bytes());
    stream_request(repl, conn, head, file, length).await
}

/// Writes `head`, then `count` bytes of `file` with a bounded buffer, then reads the answer.
/// A file that ends early cannot deliver the announced length: the connection is given up.
async fn stream_request(
    repl: &Replication,
    conn: &mut SyncConn,
    head: Vec<u8>,
    mut file: tokio::fs::File,
    count: u64,
) -> Result<u8, SyncError> {
    // a generous limit for the whole transfer: at least 1 MiB/s
    let limit = repl.config().network_timeout + Duration::from_secs(count >> 20);
    let answered = timed(limit, async {
        let chunk = IO_BUFFER.min(usize::try_from(count).unwrap_or(IO_BUFFER));
        let mut buf = head;
        let head_len = buf.len();
        buf.resize(head_len + chunk, 0);
        let mut start = head_len;
        let mut remaining = count;
        loop {
            let want = chunk.min(usize::try_from(remaining).unwrap_or(chunk));
            let mut filled = 0;
            while filled < want {
                let n = file.read(&mut buf[start + filled..start + want]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled < want {
                return Err(ProtoError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                )));
            }
            conn.write_all(&buf[..start + filled]).await?;
            remaining -= filled as u64;
            start = 0;
            if remaining == 0 {
                break;
            }
        }
        conn.flush().await?;
        answer(conn).await
    })
    .await;
    // content pushed to a peer, successfully when it stored it (E.3 sync out bytes)
    repl.stats()
        .sync_out(count, matches!(answered, Ok(status::OK)));
    answered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, watermark: u32) -> Record {
        Record {
            seq,
            timestamp: 100,
            watermark,
            op: Op::Create {
                name: "M00/00/00/abcdefgh".into(),
            },
        }
    }

    #[test]
    fn the_cursor_moves_past_finished_records_only_forward() {
        let mut mark = Mark::default();
        let after = Position {
            index: 0,
            offset: 80,
        };
        advance(&mut mark, &record(1, 50), after, &Outcome::Applied);
        assert_eq!(
            (mark.position(), mark.acked_seq, mark.watermark),
            (after, 1, 50)
        );
        let later = Position {
            index: 1,
            offset: 40,
        };
        // a record with an older watermark (written while an older change was still open)
        // does not move the watermark back
        advance(&mut mark, &record(2, 40), later, &Outcome::Skipped("gone"));
        assert_eq!(
            (mark.position(), mark.acked_seq, mark.watermark),
            (later, 2, 50)
        );
        assert_eq!((mark.synced_records, mark.skipped_records), (1, 1));
        advance(
            &mut mark,
            &record(3, 60),
            Position {
                index: 1,
                offset: 90,
            },
            &Outcome::AlreadyThere,
        );
        assert_eq!(
            (mark.acked_seq, mark.watermark, mark.synced_records),
            (3, 60, 2)
        );
    }
}
