//! Copying the group's files from a source peer (L.7, L.9), for a new storage or one whose
//! store path was wiped. Pull-based: for each store path, fetch the source's file list
//! (FETCH_FILE_LIST) into `<sync dir>/pull.list`, then download every file we do not hold
//! with the same size and mtime (DOWNLOAD_FILE), then make the links. Progress (store path,
//! offset in the list) is saved, so a restart resumes where it stopped.
//!
//! Meanwhile this storage refuses pushes from its peers (REPORT_SERVER_ID answers 16): they
//! replay their whole binlogs once the copy is done, so a delete can never arrive before the
//! copy of the file it deletes.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fdfs_proto::conn::Connection;
use fdfs_proto::file_id::LogicalName;
use fdfs_proto::storage_msg::DownloadRequest;
use fdfs_proto::sync_msg::{
    FileListEntry, FileListRequest, FETCH_FILE_LIST, FILE_LIST_MAX_LINE, FILE_LIST_WITH_SLAVES,
};
use fdfs_proto::tracker_msg::storage_status;
use fdfs_proto::{cmd::Command, status, Header, ProtoError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::state::Phase;
use super::Replication;
use crate::store::{LocalFile, StoreError};

/// Consecutive failures after which another source is asked for.
const MAX_FAILURES: u32 = 5;
/// How long a source may be missing from the member list or not ACTIVE.
const SOURCE_WAIT: Duration = Duration::from_secs(30);
const SAVE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error("source {0} is not an ACTIVE member")]
    SourceGone(String),
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("stopped")]
    Stopped,
    #[error("cluster authentication failed: {0}")]
    Auth(#[from] fdfs_proto::auth::AuthError),
}

fn list_path(repl: &Replication) -> PathBuf {
    repl.config().sync_dir.join("pull.list")
}

/// Copies files whenever the phase is `pulling`, until `stop`.
pub async fn run(repl: Arc<Replication>, stop: CancellationToken) {
    let mut phases = repl.subscribe_phase();
    let mut failures = 0u32;
    let mut waiting_since: Option<Instant> = None;
    loop {
        let phase = phases.borrow_and_update().phase;
        if phase == Phase::Pulling {
            match copy_all(&repl, &stop).await {
                Ok(()) => {
                    failures = 0;
                    waiting_since = None;
                    info!("copy from the source finished: accepting changes from peers");
                    if let Err(err) = repl.pull_finished().await {
                        warn!(error = %err, "cannot save the copy state");
                    }
                    let _ = tokio::fs::remove_file(list_path(&repl)).await;
                    continue;
                }
                Err(PullError::Stopped) => break,
                Err(PullError::SourceGone(source)) => {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= SOURCE_WAIT {
                        warn!(%source, "copy source unavailable: asking a tracker for another");
                        waiting_since = None;
                        if let Err(err) = repl.pull_needs_new_source().await {
                            warn!(error = %err, "cannot save the copy state");
                        }
                        continue;
                    }
                }
                Err(err) => {
                    failures += 1;
                    warn!(error = %err, failures, "copying files from the source failed");
                    if failures >= MAX_FAILURES {
                        failures = 0;
                        if let Err(err) = repl.pull_needs_new_source().await {
                            warn!(error = %err, "cannot save the copy state");
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = phases.changed() => if changed.is_err() { break },
        }
    }
}

fn source_addr(repl: &Replication, source: &str) -> Result<String, PullError> {
    repl.members()
        .all()
        .into_iter()
        .find(|m| m.id == source && m.status == storage_status::ACTIVE && m.port > 0)
        .map(|m| format!("{}:{}", m.ip, m.port))
        .ok_or_else(|| PullError::SourceGone(source.to_string()))
}

pub(crate) async fn connect(
    repl: &Replication,
    addr: &str,
) -> Result<Connection<TcpStream>, PullError> {
    let limit = repl.config().network_timeout;
    let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(PullError::Connect(err)),
        Err(_) => return Err(PullError::Timeout),
    };
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(stream);
    // the source only lists its files to a peer that holds the secret, and proves it too
    let secret = repl.config().cluster_secret.as_ref();
    super::authenticate(&mut conn, secret, fdfs_proto::auth::Purpose::Sync, limit).await?;
    Ok(conn)
}

/// Copies every store path from the state's position on.
async fn copy_all(repl: &Replication, stop: &CancellationToken) -> Result<(), PullError> {
    let state = repl.local_state();
    let addr = source_addr(repl, &state.source)?;
    let mut conn = connect(repl, &addr).await?;
    let count = repl.store().store_path_count() as u32;
    let mut path = state.pull_path;
    let mut offset = state.pull_offset;
    let mut listed = state.pull_listed;
    while path < count {
        if !listed {
            fetch_list(repl, &mut conn, path as u8).await?;
            listed = true;
            offset = 0;
            repl.save_pull_progress(path, offset, listed).await?;
            info!(source = %state.source, store_path = path, "file list fetched, copying files");
        }
        copy_listed(repl, &mut conn, path, offset, stop).await?;
        path += 1;
        offset = 0;
        listed = false;
        repl.save_pull_progress(path, offset, listed).await?;
    }
    Ok(())
}

/// FETCH_FILE_LIST into `pull.list` (through a temp file and a rename).
async fn fetch_list(
    repl: &Replication,
    conn: &mut Connection<TcpStream>,
    index: u8,
) -> Result<(), PullError> {
    let limit = repl.config().network_timeout;
    let body = FileListRequest {
        group: repl.config().group.clone(),
        store_path: index,
    }
    .encode();
    let len = match tokio::time::timeout(limit, async {
        // we read `S` lines (slaves shaped like normal names)
        let header = Header {
            status: FILE_LIST_WITH_SLAVES,
            ..Header::request(FETCH_FILE_LIST, body.len() as u64)
        };
        conn.send(header, &body).await?;
        conn.read_response_header().await
    })
    .await
    {
        Ok(result) => result?,
        Err(_) => return Err(PullError::Timeout),
    };
    let path = list_path(repl);
    let tmp = path.with_extension("list.tmp");
    let mut file = tokio::fs::File::create(&tmp).await?;
    let copied = tokio::io::copy(&mut conn.body_reader(len), &mut file).await?;
    if copied != len {
        return Err(PullError::Proto(ProtoError::Closed));
    }
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, &path).await?;
    Ok(())
}

/// Goes through `pull.list` from `offset`: files first, then (second pass) links, whose
/// targets must exist.
async fn copy_listed(
    repl: &Replication,
    conn: &mut Connection<TcpStream>,
    path: u32,
    start: u64,
    stop: &CancellationToken,
) -> Result<(), PullError> {
    let list = tokio::fs::File::open(list_path(repl)).await?;
    let total = list.metadata().await?.len();
    // offsets beyond the list's length mean the second pass (links)
    for pass in 0..2u64 {
        let base = pass * total;
        if start >= base + total && total > 0 {
            continue;
        }
        let mut list = tokio::fs::File::open(list_path(repl)).await?;
        let mut offset = start.saturating_sub(base).min(total);
        list.seek(io::SeekFrom::Start(offset)).await?;
        let mut reader = tokio::io::BufReader::new(list);
        let mut line = Vec::new();
        let mut last_save = Instant::now();
        let mut copied = 0u64;
        loop {
            if stop.is_cancelled() {
                repl.save_pull_progress(path, base + offset, true).await?;
                return Err(PullError::Stopped);
            }
            line.clear();
            let n = (&mut reader)
                .take(FILE_LIST_MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            let entry = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| l.strip_suffix('\n'))
                .map(FileListEntry::parse_line);
            let entry = match entry {
                Some(Ok(entry)) => entry,
                _ => {
                    warn!(line = %String::from_utf8_lossy(&line), "bad file list line skipped");
                    continue;
                }
            };
            let done = match (pass, &entry.target) {
                (0, None) => copy_file(repl, conn, &entry).await?,
                (1, Some(target)) => link(repl, &entry.name, target, entry.mtime).await?,
                _ => false,
            };
            if done {
                copied += 1;
            }
            if last_save.elapsed() >= SAVE_EVERY {
                repl.save_pull_progress(path, base + offset, true).await?;
                last_save = Instant::now();
            }
        }
        debug!(store_path = path, pass, copied, "file list pass done");
        repl.save_pull_progress(path, base + total, true).await?;
    }
    Ok(())
}

/// Makes `name` a link to `target` with the mtime the source's link has (`mtime`, listed).
async fn link(repl: &Replication, name: &str, target: &str, mtime: u32) -> Result<bool, PullError> {
    let (Ok(name), Ok(target)) = (LogicalName::parse(name), LogicalName::parse(target)) else {
        return Ok(false);
    };
    Ok(repl.store().replica_link(&name, &target, mtime).await? == crate::store::Applied::Done)
}

/// Downloads one listed file unless we hold it with the same size and mtime.
async fn copy_file(
    repl: &Replication,
    conn: &mut Connection<TcpStream>,
    entry: &FileListEntry,
) -> Result<bool, PullError> {
    let Ok(name) = LogicalName::parse(&entry.name) else {
        return Ok(false);
    };
    if let LocalFile::File { size, mtime } = repl.store().local_file(&name).await? {
        if size == entry.size && mtime == entry.mtime {
            if entry.slave {
                // the same copy, perhaps from before the marks
                repl.store().mark_held_slave(&name).await?;
            }
            return Ok(false);
        }
    }
    let Some(len) = request_file(repl, conn, &entry.name).await? else {
        // deleted at the source since the list was made
        return Ok(false);
    };
    let mut body = conn.body_reader(len);
    let written = repl
        .store()
        .replica_write_as(&name, len, entry.mtime, &mut body, false, entry.slave)
        .await;
    if body.limit() > 0 {
        // the connection is out of step now; the caller reconnects
        return Err(written
            .err()
            .map_or(PullError::Proto(ProtoError::Closed), Into::into));
    }
    match written {
        Ok(_) => Ok(true),
        // the source's copy is damaged: not copied (a scrub there repairs it from another
        // peer, and the sync that follows brings it here)
        Err(StoreError::Corrupt(why)) => {
            warn!(file = %name, %why, "damaged file at the copy source skipped");
            Ok(false)
        }
        Err(err) => Err(err.into()),
    }
}

/// Asks the storage at the other end of `conn` for the whole content of `name`
/// (DOWNLOAD_FILE); the content, `len` bytes, follows on `conn`. `None` when it does not hold
/// the file. Also used to repair a damaged copy (`crate::scrub`).
pub(crate) async fn request_file(
    repl: &Replication,
    conn: &mut Connection<TcpStream>,
    name: &str,
) -> Result<Option<u64>, PullError> {
    let limit = repl.config().network_timeout;
    let request = DownloadRequest {
        offset: 0,
        length: 0,
        group: repl.config().group.clone(),
        name: name.to_string(),
    }
    .encode();
    match tokio::time::timeout(limit, async {
        conn.send(
            Header::request(Command::DownloadFile.code(), request.len() as u64),
            &request,
        )
        .await?;
        conn.read_response_header().await
    })
    .await
    {
        Ok(Ok(len)) => Ok(Some(len)),
        Ok(Err(ProtoError::Status {
            status: status::ENOENT,
        })) => Ok(None),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Err(PullError::Timeout),
    }
}
