//! The storage's operation counters (the stat block of E.3), sent to every tracker in each
//! BEAT and kept across restarts in `<base_path>/data/storage_counters.toml` (next to the
//! distribution state of `storage_stat.toml`, which the store rewrites on its own schedule).
//!
//! Every request goes through [`crate::cmd`]'s dispatcher, which opens an [`Outcome`] scope
//! (a task-local) for it; handlers note the status they answered and the bytes they moved
//! there, and the dispatcher hands the finished outcome to [`Stats::record`]. Counters count
//! operations where this storage was the source (E.3): replicated changes only show in the
//! sync byte counters and `last_sync_update`. File open/read/write counts are per request
//! (one open and one read or write per file request), not per system call.

use std::cell::Cell;
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fdfs_proto::cmd::Command;
use fdfs_proto::stat::StatBlock;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// File under `<base_path>/data/` holding the counters.
pub const STAT_FILE: &str = "storage_counters.toml";
/// How often changed counters are written out (and once more at shutdown).
pub const SAVE_INTERVAL: Duration = Duration::from_secs(3);

/// Fields that describe the running process or are set by the tracker: never persisted.
const NOT_PERSISTED: [&str; 5] = [
    "connection_current_count",
    "connection_max_count",
    "connection_alloc_count",
    "last_synced_timestamp",
    "last_heart_beat_time",
];

/// What one request did, as noted by its handler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Status byte answered; `None` when the handler never answered (connection error or
    /// a rejected request).
    pub status: Option<u8>,
    /// Payload bytes received (uploads, appends, ...) or sent (downloads).
    pub bytes: Option<u64>,
    /// The file the request named (or created), for the access log.
    pub file: Option<FileNote>,
}

/// A logical name (`M00/XX/YY/name`) kept inline, so that an [`Outcome`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FileNote {
    len: u8,
    bytes: [u8; fdfs_proto::MAX_NAME_LEN],
}

impl FileNote {
    /// `None` for a name longer than any valid logical name.
    pub fn new(name: &str) -> Option<FileNote> {
        let len = u8::try_from(name.len()).ok()?;
        let mut bytes = [0; fdfs_proto::MAX_NAME_LEN];
        bytes
            .get_mut(..name.len())?
            .copy_from_slice(name.as_bytes());
        Some(FileNote { len, bytes })
    }

    pub fn as_str(&self) -> &str {
        // built from a `&str` and cut at its end
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for FileNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

tokio::task_local! {
    static OUTCOME: Cell<Outcome>;
}

/// Runs `work` (one request) with a fresh outcome scope and returns what it noted.
pub async fn scoped<F: std::future::Future>(work: F) -> (F::Output, Outcome) {
    OUTCOME
        .scope(Cell::new(Outcome::default()), async move {
            let out = work.await;
            (out, OUTCOME.with(Cell::get))
        })
        .await
}

/// Notes the status answered to the current request (ignored outside a request scope).
pub fn note_status(status: u8) {
    let _ = OUTCOME.try_with(|cell| {
        let mut outcome = cell.get();
        outcome.status = Some(status);
        cell.set(outcome);
    });
}

/// Notes the payload size of the current request (ignored outside a request scope).
pub fn note_bytes(bytes: u64) {
    let _ = OUTCOME.try_with(|cell| {
        let mut outcome = cell.get();
        outcome.bytes = Some(bytes);
        cell.set(outcome);
    });
}

/// Notes the file the current request names or created (ignored outside a request scope).
pub fn note_file(name: &fdfs_proto::file_id::LogicalName) {
    let Some(note) = FileNote::new(&name.to_string()) else {
        return;
    };
    let _ = OUTCOME.try_with(|cell| {
        let mut outcome = cell.get();
        outcome.file = Some(note);
        cell.set(outcome);
    });
}

/// Which counters a command moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Upload,
    Append,
    Modify,
    Truncate,
    SetMeta,
    Delete,
    Download,
    GetMeta,
    SyncIn,
    Other,
}

fn kind_of(command: Command) -> Kind {
    match command {
        Command::UploadFile | Command::UploadAppenderFile | Command::UploadSlaveFile => {
            Kind::Upload
        }
        Command::AppendFile => Kind::Append,
        Command::ModifyFile => Kind::Modify,
        Command::TruncateFile => Kind::Truncate,
        Command::SetMetadata => Kind::SetMeta,
        Command::DeleteFile => Kind::Delete,
        Command::DownloadFile => Kind::Download,
        Command::GetMetadata => Kind::GetMeta,
        Command::SyncCreateFile
        | Command::SyncUpdateFile
        | Command::SyncDeleteFile
        | Command::SyncCreateLink
        | Command::SyncAppendFile
        | Command::SyncModifyFile
        | Command::SyncTruncateFile
        | Command::SyncRenameFile => Kind::SyncIn,
        _ => Kind::Other,
    }
}

/// Adds one request to `block`. `body_len` is the request's body length, used as the byte
/// count when the handler noted none.
pub fn apply(block: &mut StatBlock, command: Command, outcome: Outcome, body_len: u64, now: i64) {
    let ok = outcome.status == Some(0);
    // body_len is what the client announced (up to i64::MAX, refused unread): counters
    // saturate rather than overflow on it
    let bytes = i64::try_from(outcome.bytes.unwrap_or(body_len)).unwrap_or(i64::MAX);
    let succ = i64::from(ok);
    macro_rules! count {
        ($total:ident, $success:ident) => {{
            block.$total = block.$total.saturating_add(1);
            block.$success = block.$success.saturating_add(succ);
        }};
    }
    macro_rules! bytes {
        ($total:ident, $success:ident) => {{
            block.$total = block.$total.saturating_add(bytes);
            if ok {
                block.$success = block.$success.saturating_add(bytes);
            }
        }};
    }
    let kind = kind_of(command);
    match kind {
        Kind::Upload => {
            count!(total_upload_count, success_upload_count);
            bytes!(total_upload_bytes, success_upload_bytes);
        }
        Kind::Append => {
            count!(total_append_count, success_append_count);
            bytes!(total_append_bytes, success_append_bytes);
        }
        Kind::Modify => {
            count!(total_modify_count, success_modify_count);
            bytes!(total_modify_bytes, success_modify_bytes);
        }
        Kind::Truncate => count!(total_truncate_count, success_truncate_count),
        Kind::SetMeta => count!(total_set_meta_count, success_set_meta_count),
        Kind::Delete => count!(total_delete_count, success_delete_count),
        Kind::Download => {
            count!(total_download_count, success_download_count);
            // a failed download sent nothing
            let sent = if ok { bytes } else { 0 };
            block.total_download_bytes = block.total_download_bytes.saturating_add(sent);
            block.success_download_bytes = block.success_download_bytes.saturating_add(sent);
        }
        Kind::GetMeta => count!(total_get_meta_count, success_get_meta_count),
        Kind::SyncIn => {
            bytes!(total_sync_in_bytes, success_sync_in_bytes);
            if ok {
                block.last_sync_update = now;
            }
        }
        Kind::Other => {}
    }
    if matches!(
        kind,
        Kind::Upload | Kind::Append | Kind::Modify | Kind::Download
    ) {
        count!(total_file_open_count, success_file_open_count);
    }
    if matches!(kind, Kind::Upload | Kind::Append | Kind::Modify) {
        count!(total_file_write_count, success_file_write_count);
    }
    if kind == Kind::Download {
        count!(total_file_read_count, success_file_read_count);
    }
    if ok
        && matches!(
            kind,
            Kind::Upload
                | Kind::Append
                | Kind::Modify
                | Kind::Truncate
                | Kind::SetMeta
                | Kind::Delete
        )
    {
        block.last_source_update = now;
    }
}

/// The live counters of one storage.
#[derive(Debug)]
pub struct Stats {
    block: Mutex<StatBlock>,
    /// Connections that sent at least one request and are still open.
    open: Mutex<HashSet<SocketAddr>>,
    dirty: AtomicBool,
    path: PathBuf,
}

fn unix_now() -> i64 {
    crate::clock::unix_now()
}

impl Stats {
    /// Loads the counters saved under `base_path` (zeros the first time).
    pub fn load(base_path: &Path) -> io::Result<Stats> {
        let dir = base_path.join("data");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(STAT_FILE);
        let mut block = StatBlock::default();
        if let Some(saved) =
            crate::persist::read_toml::<std::collections::BTreeMap<String, i64>>(&path)?
        {
            for (name, value) in saved {
                if NOT_PERSISTED.contains(&name.as_str()) {
                    continue;
                }
                block.set(&name, value).map_err(|err| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {err}", path.display()),
                    )
                })?;
            }
        }
        Ok(Stats {
            block: Mutex::new(block),
            open: Mutex::new(HashSet::new()),
            dirty: AtomicBool::new(false),
            path,
        })
    }

    /// The counters now (what the next BEAT carries).
    pub fn snapshot(&self) -> StatBlock {
        *self.block.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one finished request.
    pub fn record(&self, command: Command, outcome: Outcome, body_len: u64) {
        let now = unix_now();
        let mut block = self.block.lock().unwrap_or_else(PoisonError::into_inner);
        apply(&mut block, command, outcome, body_len, now);
        drop(block);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Bytes this storage pushed to a peer (replication sender).
    pub fn sync_out(&self, bytes: u64, ok: bool) {
        let mut block = self.block.lock().unwrap_or_else(PoisonError::into_inner);
        block.total_sync_out_bytes += bytes as i64;
        if ok {
            block.success_sync_out_bytes += bytes as i64;
        }
        drop(block);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// A request arrived on the connection from `peer`; its first one counts the connection.
    pub fn connection_seen(&self, peer: SocketAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.insert(peer) {
            let current = open.len() as i32;
            drop(open);
            let mut block = self.block.lock().unwrap_or_else(PoisonError::into_inner);
            block.connection_alloc_count = block.connection_alloc_count.saturating_add(1);
            block.connection_current_count = current;
            block.connection_max_count = block.connection_max_count.max(current);
        }
    }

    /// The connection from `peer` closed.
    pub fn connection_closed(&self, peer: SocketAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.remove(&peer) {
            let current = open.len() as i32;
            drop(open);
            self.block
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .connection_current_count = current;
        }
    }

    /// Connections open now.
    pub fn connections_open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Writes the counters out (temp + rename), whether changed or not (blocking).
    pub fn save(&self) -> io::Result<()> {
        self.dirty.store(false, Ordering::Relaxed);
        let block = self.snapshot();
        let map: std::collections::BTreeMap<&str, i64> = block
            .fields()
            .into_iter()
            .filter(|(name, _)| !NOT_PERSISTED.contains(name))
            .collect();
        let text = toml::to_string(&map).map_err(io::Error::other)?;
        // no fsync: losing the last seconds of counters in a power cut is acceptable
        crate::persist::write_atomic(&self.path, text.as_bytes(), false)
    }

    /// Saves changed counters every [`SAVE_INTERVAL`] until `stop`, then once more.
    pub async fn run_saver(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let stopped = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(SAVE_INTERVAL) => false,
            };
            if stopped || self.dirty.load(Ordering::Relaxed) {
                let stats = self.clone();
                match tokio::task::spawn_blocking(move || stats.save()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => warn!(error = %err, "cannot save the stat file"),
                    Err(err) => warn!(error = %err, "stat file task failed"),
                }
            }
            if stopped {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: u64) -> Outcome {
        Outcome {
            status: Some(0),
            bytes: Some(bytes),
            ..Outcome::default()
        }
    }

    /// A refused request announcing a huge body (hostile client) must not overflow the byte
    /// counters: this panicked the debug build (tests/integration/hostile.rs).
    #[test]
    fn huge_announced_lengths_saturate() {
        let mut block = StatBlock::default();
        let refused = Outcome {
            status: Some(28),
            ..Outcome::default()
        };
        for _ in 0..3 {
            apply(&mut block, Command::UploadFile, refused, u64::MAX, 100);
            apply(
                &mut block,
                Command::AppendFile,
                refused,
                i64::MAX as u64,
                100,
            );
        }
        assert_eq!(block.total_upload_bytes, i64::MAX);
        assert_eq!(block.total_append_bytes, i64::MAX);
        assert_eq!(block.total_upload_count, 3);
    }

    #[test]
    fn counts_success_and_failure() {
        let mut block = StatBlock::default();
        apply(&mut block, Command::UploadFile, ok(10), 25, 100);
        apply(
            &mut block,
            Command::UploadFile,
            Outcome {
                status: Some(28),
                bytes: Some(7),
                ..Outcome::default()
            },
            22,
            101,
        );
        apply(&mut block, Command::DownloadFile, ok(10), 30, 102);
        apply(&mut block, Command::DeleteFile, Outcome::default(), 30, 103);
        assert_eq!(block.total_upload_count, 2);
        assert_eq!(block.success_upload_count, 1);
        assert_eq!(block.total_upload_bytes, 17);
        assert_eq!(block.success_upload_bytes, 10);
        assert_eq!(block.success_download_count, 1);
        assert_eq!(block.success_download_bytes, 10);
        assert_eq!(block.total_delete_count, 1);
        assert_eq!(block.success_delete_count, 0);
        assert_eq!(block.last_source_update, 100);
        assert_eq!(block.success_file_open_count, 2);
        assert_eq!(block.total_file_open_count, 3);
    }

    #[test]
    fn sync_counts_bytes_not_operations() {
        let mut block = StatBlock::default();
        apply(
            &mut block,
            Command::SyncCreateFile,
            Outcome {
                status: Some(0),
                bytes: None,
                ..Outcome::default()
            },
            500,
            7,
        );
        assert_eq!(block.success_sync_in_bytes, 500);
        assert_eq!(block.last_sync_update, 7);
        assert_eq!(block.total_upload_count, 0);
        assert_eq!(block.last_source_update, 0);
    }

    #[test]
    fn persisted_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::load(dir.path()).unwrap();
        stats.record(Command::UploadFile, ok(5), 20);
        stats.connection_seen("127.0.0.1:5000".parse().unwrap());
        stats.save().unwrap();
        let again = Stats::load(dir.path()).unwrap();
        let block = again.snapshot();
        assert_eq!(block.success_upload_count, 1);
        assert_eq!(block.success_upload_bytes, 5);
        // process facts start over
        assert_eq!(block.connection_current_count, 0);
        assert!(dir.path().join("data").join(STAT_FILE).exists());
    }

    #[test]
    fn connections_counted_once_per_peer() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::load(dir.path()).unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        stats.connection_seen(a);
        stats.connection_seen(a);
        stats.connection_seen(b);
        stats.connection_closed(a);
        let block = stats.snapshot();
        assert_eq!(block.connection_alloc_count, 2);
        assert_eq!(block.connection_current_count, 1);
        assert_eq!(block.connection_max_count, 2);
        assert_eq!(stats.connections_open(), 1);
    }

    #[test]
    fn file_notes_hold_any_logical_name() {
        let longest = "x".repeat(fdfs_proto::MAX_NAME_LEN);
        assert_eq!(FileNote::new(&longest).unwrap().as_str(), longest);
        assert_eq!(FileNote::new("").unwrap().as_str(), "");
        assert!(FileNote::new(&format!("{longest}x")).is_none());
    }

    #[tokio::test]
    async fn scope_collects_notes() {
        let ((), outcome) = scoped(async {
            note_bytes(9);
            note_status(0);
        })
        .await;
        assert_eq!(outcome, ok(9));
        let name =
            fdfs_proto::file_id::LogicalName::parse("M00/00/0A/wKgBAAAAAAAAAAAAAAAAAAAAAAA.txt")
                .unwrap();
        let ((), outcome) = scoped(async { note_file(&name) }).await;
        assert_eq!(
            outcome.file.map(|f| f.as_str().to_string()),
            Some(name.to_string())
        );
        // outside a scope, notes are ignored
        note_status(1);
    }
}
