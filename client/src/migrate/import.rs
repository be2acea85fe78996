//! `fdfs import`: uploads a directory tree and records old path → file ID.
//!
//! Order of events per file, so that a crash at any point never leaves the map pointing at a
//! missing file: upload, then commit the mapping (in a batch with whatever else finished
//! meanwhile), then delete the file ID it superseded (kept in the map's trash table until
//! deleted, retried by the next run). A crash can leave the uploads finished but not yet
//! committed stored but unmapped: at most about three times `concurrency` files (those in
//! flight, those queued for the commit, and the batch being committed).

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::crc::CrcReader;
use super::key::{key_for, normalize_prefix};
use super::map::{Entry, MigrationMap, Record, Snapshot};
use super::MigrateError;
use crate::client::{decode_name, ext_from_path};
use crate::{Client, ClientError, FileKind, UploadOptions};

/// What to import and how.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The old document root (or a part of it).
    pub dir: PathBuf,
    /// URL path of `dir` on the old server, e.g. `/upload/`.
    pub prefix: String,
    /// Uploads at once.
    pub concurrency: usize,
    /// Upload into this group (default: the tracker chooses).
    pub group: Option<String>,
    /// Print a progress line on stderr.
    pub progress: bool,
}

/// What an import did.
#[derive(Clone, Debug, Default)]
pub struct ImportReport {
    /// Regular files found below the directory.
    pub found: u64,
    /// Uploaded for the first time.
    pub uploaded: u64,
    /// Uploaded again because size or mtime changed.
    pub reuploaded: u64,
    /// Already imported and unchanged.
    pub skipped: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Superseded file IDs deleted from the cluster.
    pub deleted: u64,
    /// Files that could not be imported, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// Names no URL can carry (not UTF-8), left out.
    pub unnamed: Vec<PathBuf>,
}

/// One file of the tree.
struct Found {
    path: PathBuf,
    key: String,
    size: u64,
    mtime_ns: i64,
}

/// Imports `options.dir` into the cluster and `map`.
pub async fn import(
    client: &Client,
    map: &MigrationMap,
    options: &ImportOptions,
) -> Result<ImportReport, MigrateError> {
    let prefix = normalize_prefix(&options.prefix)?;
    let _lock = ImportLock::acquire(map.path())?;
    let mut report = ImportReport::default();

    // superseded files a previous run committed but did not get to delete
    let trash = blocking({
        let map = map.clone();
        move || map.trash()
    })
    .await??;
    report.deleted += purge(client, map, trash).await?;

    let dir = options.dir.clone();
    let walk_prefix = prefix.clone();
    let (files, unnamed) = blocking(move || walk(&dir, &walk_prefix)).await??;
    report.found = files.len() as u64 + unnamed.len() as u64;
    report.unnamed = unnamed;
    let snapshot = blocking({
        let map = map.clone();
        move || {
            let mut snapshot = Snapshot::new();
            snapshot.refresh(&map).map(|_| snapshot)
        }
    })
    .await??;

    let mut todo = Vec::new();
    for file in files {
        match snapshot.get(&file.key) {
            Some(entry) if entry.size == file.size && entry.mtime_ns == file.mtime_ns => {
                report.skipped += 1;
            }
            previous => {
                let superseded = previous.map(|entry| entry.file_id.clone());
                todo.push((file, superseded));
            }
        }
    }
    drop(snapshot);
    tracing::info!(
        files = report.found,
        to_upload = todo.len(),
        skipped = report.skipped,
        "import planned"
    );

    let progress = Progress::new(options.progress, report.found, report.skipped);
    let concurrency = options.concurrency.max(1);
    // a short queue: uploads done but not yet committed are what a crash leaves unmapped
    let (tx, rx) = mpsc::channel::<Record>(concurrency);
    let writer = tokio::spawn(commit_loop(client.clone(), map.clone(), rx));

    let mut tasks = JoinSet::new();
    let mut pending = todo.into_iter();
    let upload_options = UploadOptions {
        group: options.group.clone(),
        ..UploadOptions::default()
    };
    loop {
        while tasks.len() < concurrency {
            let Some((file, superseded)) = pending.next() else {
                break;
            };
            let client = client.clone();
            let options = upload_options.clone();
            tasks.spawn(async move {
                let result = upload_one(&client, &file, &options).await;
                (file, superseded, result)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (file, superseded, result) =
            joined.map_err(|err| MigrateError::Task(err.to_string()))?;
        match result {
            Ok(entry) => {
                report.bytes += entry.size;
                if superseded.is_some() {
                    report.reuploaded += 1;
                } else {
                    report.uploaded += 1;
                }
                progress.add(entry.size);
                let record = Record {
                    path: file.key,
                    entry,
                    superseded,
                };
                if tx.send(record).await.is_err() {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(path = %file.path.display(), error = %err, "import failed");
                progress.fail();
                report.failed.push((file.path, err.to_string()));
            }
        }
    }
    drop(tx);
    let deleted = writer
        .await
        .map_err(|err| MigrateError::Task(err.to_string()))??;
    report.deleted += deleted;
    progress.finish();
    Ok(report)
}

/// Uploads one file, hashing it on the way; the entry records the size and mtime it had
/// when opened.
async fn upload_one(
    client: &Client,
    file: &Found,
    options: &UploadOptions,
) -> Result<Entry, ClientError> {
    let (opened, size) = crate::client::open_local(&file.path).await?;
    let meta = opened.metadata().await?;
    let mtime_ns = mtime_ns(&meta);
    let mut options = options.clone();
    options.ext = ext_from_path(&file.path).unwrap_or_default();
    let mut reader = CrcReader::new(opened);
    let id = client.upload_reader(&mut reader, size, &options).await?;
    let crc32 = reader.crc32();
    // the storage names a normal file after the CRC it computed: both sides must agree
    if let Ok((FileKind::Normal, fields)) = decode_name(&id) {
        if fields.crc32 != crc32 || fields.file_size() != size {
            let _ = client.delete(&id).await;
            return Err(ClientError::input(
                "upload",
                format!(
                    "the storage stored {} bytes with CRC32 {:08x}, sent {size} with {crc32:08x} (file changed while read?)",
                    fields.file_size(),
                    fields.crc32
                ),
            ));
        }
    }
    Ok(Entry {
        file_id: id.to_string(),
        size,
        mtime_ns,
        crc32,
    })
}

/// Commits records as they come, in batches of what queued up meanwhile; deletes superseded
/// files once their replacement is committed. Returns how many it deleted.
async fn commit_loop(
    client: Client,
    map: MigrationMap,
    mut rx: mpsc::Receiver<Record>,
) -> Result<u64, MigrateError> {
    let mut deleted = 0;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        let superseded: Vec<String> = batch
            .iter()
            .filter_map(|record| record.superseded.clone())
            .filter(|old| !batch.iter().any(|r| &r.entry.file_id == old))
            .collect();
        let batch = Arc::new(batch);
        blocking({
            let map = map.clone();
            let batch = batch.clone();
            move || map.commit(&batch)
        })
        .await??;
        tracing::debug!(records = batch.len(), "map batch committed");
        deleted += purge(&client, &map, superseded).await?;
    }
    Ok(deleted)
}

/// Deletes superseded files (already gone counts as done) and forgets them.
async fn purge(client: &Client, map: &MigrationMap, ids: Vec<String>) -> Result<u64, MigrateError> {
    let mut done = Vec::new();
    for id in ids {
        let parsed = match crate::parse_file_id(&id) {
            Ok(parsed) => parsed,
            Err(_) => {
                done.push(id);
                continue;
            }
        };
        match client.delete(&parsed).await {
            Ok(()) | Err(ClientError::NotFound) => done.push(id),
            Err(err) => {
                tracing::warn!(%id, error = %err, "cannot delete a superseded file; the next import retries")
            }
        }
    }
    let count = done.len() as u64;
    blocking({
        let map = map.clone();
        move || map.clear_trash(&done)
    })
    .await??;
    Ok(count)
}

/// Regular files below `dir` (symbolic links to files followed, to directories not, which
/// keeps cycles out), and the paths whose names are not UTF-8.
fn walk(dir: &Path, prefix: &str) -> Result<(Vec<Found>, Vec<PathBuf>), MigrateError> {
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| MigrateError::Io {
            action,
            path,
            source,
        }
    };
    let root_meta = std::fs::metadata(dir).map_err(io_err("read", dir))?;
    if !root_meta.is_dir() {
        return Err(MigrateError::Io {
            action: "import",
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
        });
    }
    let mut files = Vec::new();
    let mut unnamed = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let entries = std::fs::read_dir(&current).map_err(io_err("list", &current))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list", &current))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(io_err("stat", &path))?;
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => continue,
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "skipping an unreadable entry");
                    continue;
                }
            };
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            match key_for(prefix, relative) {
                Some(key) => files.push(Found {
                    key,
                    size: meta.len(),
                    mtime_ns: mtime_ns(&meta),
                    path,
                }),
                None => unnamed.push(path),
            }
        }
    }
    files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((files, unnamed))
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    match meta.modified() {
        Ok(time) => match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
        },
        Err(_) => 0,
    }
}

/// Runs blocking map work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, MigrateError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| MigrateError::Task(err.to_string()))
}

/// One import per map at a time: an exclusive lock on `<map>.lock`, released on drop (and
/// by the kernel if the process dies).
struct ImportLock {
    _file: std::fs::File,
}

impl ImportLock {
    fn acquire(map: &Path) -> Result<Self, MigrateError> {
        let mut name = map.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| MigrateError::Io {
                action: "create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| MigrateError::Io {
                action: "open",
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock(2) on a descriptor we own.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            return Err(MigrateError::Locked(map.to_path_buf()));
        }
        Ok(ImportLock { _file: file })
    }
}

/// The progress line on stderr, redrawn at most every 200 ms.
struct Progress {
    enabled: bool,
    total: u64,
    done: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    skipped: u64,
    started: Instant,
    last: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(enabled: bool, total: u64, skipped: u64) -> Self {
        Progress {
            enabled,
            total,
            done: AtomicU64::new(skipped),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skipped,
            started: Instant::now(),
            last: std::sync::Mutex::new(Instant::now() - Duration::from_secs(1)),
        }
    }

    fn add(&self, bytes: u64) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.draw(false);
    }

    fn fail(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.draw(false);
    }

    fn finish(&self) {
        self.draw(true);
        if self.enabled {
            eprintln!();
        }
    }

    fn draw(&self, force: bool) {
        if !self.enabled {
            return;
        }
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.elapsed() < Duration::from_millis(200) {
                return;
            }
            *last = Instant::now();
        }
        let done = self.done.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let percent = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rimport: {done}/{} files ({percent:.0}%), {} skipped, {} failed, {:.1} MB at {:.1} MB/s ",
            self.total,
            self.skipped,
            self.failed.load(Ordering::Relaxed),
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs
        );
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_finds_nested_and_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b c/ü")).unwrap();
        std::fs::write(root.join("top.jpg"), b"1").unwrap();
        std::fs::write(root.join("a/b c/ü/图 片.png"), b"22").unwrap();
        std::fs::write(root.join("a/x"), b"333").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("a/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("top.jpg"), root.join("link.jpg")).unwrap();
        use std::os::unix::ffi::OsStrExt;
        std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad-\xe9")), b"x").unwrap();
        let (files, unnamed) = walk(root, "/up/").unwrap();
        let keys: Vec<_> = files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/up/a/b c/ü/图 片.png",
                "/up/a/x",
                "/up/link.jpg",
                "/up/top.jpg"
            ]
        );
        assert_eq!(files[1].size, 3);
        assert_eq!(unnamed.len(), 1);
        assert!(walk(&root.join("top.jpg"), "/").is_err());
    }

    #[test]
    fn one_import_per_map() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("m.redb");
        let first = ImportLock::acquire(&map).unwrap();
        assert!(matches!(
            ImportLock::acquire(&map),
            Err(MigrateError::Locked(_))
        ));
        drop(first);
        ImportLock::acquire(&map).unwrap();
    }
}
