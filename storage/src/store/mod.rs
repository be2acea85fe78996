//! The disk layer: store paths, data directories, file writes, reads, deletes and metadata.
//!
//! It knows nothing of sockets: new content arrives as an `AsyncRead`, reads hand out open
//! files. Every path is derived from a validated [`LogicalName`] whose store path index is
//! checked against the configured paths, so no request can reach outside `<store>/data/XX/YY/`.
//! New files are written under `<store>/data/.tmp/` and only linked under their final name once
//! complete (and fsynced, or for small ones journaled: see `journal`), so a partial file is
//! never visible under a valid name.

mod appender;
mod block_append;
mod count;
mod dirsync;
mod distribute;
mod gate;
mod health;
mod journal;
mod layout;
mod locks;
mod metadata;
mod recent;
mod replica;
mod slave_mark;
mod small_writer;
mod space;
mod write;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fdfs_proto::file_id::LogicalName;
use fdfs_proto::name::NameFields;
use fdfs_proto::tracker_msg::PathUsage;
use fdfs_proto::units::ReservedSpace;
use tokio::fs::File;
use tokio_util::sync::CancellationToken;

pub use count::FileCounts;
pub use distribute::{DistState, DistributeMode, Distributor};
pub use gate::{IoSlot, DEFAULT_MAX_IO_PER_PATH};
pub use health::{PathState, PROBE_TIMEOUT};
pub use journal::{JournalStats, Replayed};
pub use locks::{FileGuard, FileLocks};
pub use replica::{recorded_content, Applied, CopyContent, LocalCopy, LocalFile};
pub use space::disk_usage;
pub use write::{BeforeChange, BeforeLink, NewFile, NoHook};

/// Size of the buffer used to stream file content to and from disk.
pub const IO_BUFFER: usize = 128 * 1024;
/// Name of the temp directory inside `<store>/data/`. Base names cannot start with a dot, so
/// nothing in it is reachable through a logical name.
pub const TMP_DIR: &str = ".tmp";
/// Largest metadata sidecar we read back.
const MAX_SIDECAR: u64 = 16 << 20;

/// Everything that can go wrong in the disk layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("file not found")]
    NotFound,
    #[error("not a regular file")]
    NotRegularFile,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("no space left above the reserved space")]
    NoSpace,
    #[error("file already exists")]
    Exists,
    #[error("could not generate a unique file name")]
    NameCollision,
    /// Like NameCollision, for slave uploads and regenerated names (H.7: EBUSY there).
    #[error("could not generate a unique file name, busy")]
    NameBusy,
    #[error("request body ended after {got} of {expected} bytes")]
    ShortBody { expected: u64, got: u64 },
    #[error("reading request body: {0}")]
    Body(#[source] io::Error),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    /// The file on disk does not match what its name records (size, CRC32).
    #[error("stored file is damaged: {0}")]
    Corrupt(String),
    /// Every disk slot of the store path stayed taken for the whole wait (its disk hangs or
    /// is overloaded; see `gate`).
    #[error("store path {index} is busy: every disk slot stayed taken")]
    PathBusy { index: u8 },
}

impl StoreError {
    /// Whether the disk ran out of room: no space above the reserve, or the file system
    /// refused to grow a file (ENOSPC, a quota's EDQUOT, or EFBIG past a file size limit).
    /// Clients hear 28 for all of them.
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::NoSpace => true,
            StoreError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
            ),
            _ => false,
        }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> StoreError {
        move |source| StoreError::Io { context, source }
    }

    /// For errors about the target file itself: a missing file (or a missing directory on
    /// its path) is [`StoreError::NotFound`].
    pub(crate) fn file(context: &'static str) -> impl FnOnce(io::Error) -> StoreError {
        move |source| {
            if source.kind() == io::ErrorKind::NotFound
                || source.raw_os_error() == Some(libc::ENOTDIR)
            {
                StoreError::NotFound
            } else if source.raw_os_error() == Some(libc::EISDIR) {
                StoreError::NotRegularFile
            } else {
                StoreError::Io { context, source }
            }
        }
    }
}

/// Runs blocking file-system work off the async threads.
pub(crate) async fn blocking<T, F>(context: &'static str, work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(StoreError::io(context)),
        Err(join) => Err(StoreError::Io {
            context,
            source: io::Error::other(join.to_string()),
        }),
    }
}

/// How the store is laid out and behaves; built from the config.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub base_path: PathBuf,
    /// Store paths in index order (never empty).
    pub store_paths: Vec<PathBuf>,
    pub subdir_count: u32,
    /// Numeric storage id written into every new name (H.2).
    pub server_id: u32,
    pub fsync: bool,
    pub distribute: DistributeMode,
    pub reserved: ReservedSpace,
    /// Slave files as symbolic links to an ordinary file (I.4).
    pub slave_use_link: bool,
    /// Blocking disk calls in flight per store path, at most (`store_path_max_io`).
    pub max_io_per_path: usize,
    /// How long a request waits for a disk slot before it is answered EBUSY.
    pub io_wait: std::time::Duration,
    /// With fsync on, new ordinary files up to this size are made durable through the store
    /// path's journal (group commit, see `journal`); 0: each file is synced on its own.
    pub journal_max_file: u64,
    /// How long the journal collects entries in a segment before sealing and checkpointing
    /// it: what a start after a crash may have to replay.
    pub journal_checkpoint: std::time::Duration,
}

/// One data root `Mxx`.
#[derive(Debug)]
struct StorePath {
    /// `<store_path>/data`
    data: PathBuf,
    /// `<store_path>/data/.tmp`
    tmp: PathBuf,
    health: Arc<health::PathHealth>,
    space: space::SpaceCache,
    /// Group commit of small new files (fsync on, `journal_max_file` > 0).
    journal: Option<journal::Journal>,
    /// Writes small files in batches on one thread (fsync off).
    small_writer: Option<small_writer::SmallWriter>,
}

/// What `stat` says about a stored file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Current size (of the link target for a link).
    pub size: u64,
    /// Modification time in unix seconds (of the link itself for a link).
    pub mtime: u64,
}

#[derive(Debug)]
pub struct Store {
    options: StoreOptions,
    paths: Vec<StorePath>,
    next_path: AtomicUsize,
    distributor: Arc<Distributor>,
    locks: FileLocks,
    /// Stored files per store path (see [`FileCounts`]).
    counts: Arc<FileCounts>,
    /// Disk slots of each store path, in index order (see `gate`).
    gates: Vec<gate::IoGate>,
    /// Group commit of directory fsyncs (see `dirsync`).
    dirs: Arc<dirsync::DirSyncer>,
    /// The last small files written, for the sync senders (see `recent`).
    recent: recent::RecentFiles,
    /// Uploads found in the journals at start, until the binlog records them again.
    replayed_uploads: std::sync::Mutex<Vec<LogicalName>>,
    /// The journal segments replayed at start, removed by [`Store::finish_replay`].
    replayed_segments: std::sync::Mutex<Vec<PathBuf>>,
}

impl Store {
    /// Prepares every store path (`data/`, crash sweep of `.tmp`) and loads the directory
    /// round-robin position. The `XX/YY` directories come from [`Store::create_subdirs`].
    pub async fn open(options: StoreOptions) -> Result<Store, StoreError> {
        if options.store_paths.is_empty() || options.store_paths.len() > 256 {
            return Err(StoreError::Invalid(format!(
                "{} store paths (1..=256 allowed)",
                options.store_paths.len()
            )));
        }
        let mut paths = Vec::with_capacity(options.store_paths.len());
        let (mut replayed_uploads, mut replayed_segments) = (Vec::new(), Vec::new());
        for (index, root) in options.store_paths.iter().enumerate() {
            let root = root.clone();
            let journal_max = (options.fsync && options.journal_max_file > 0)
                .then_some(options.journal_max_file.min(write::SMALL_BODY));
            let checkpoint = options.journal_checkpoint;
            let prepared = blocking("preparing store path", move || {
                let mut prepared = layout::prepare_store_path(&root)?;
                // what a crash left in the journal is replayed even when it is off now
                let replayed = match journal_max {
                    Some(max_file) => {
                        let (journal, replayed) = journal::Journal::open(
                            &prepared.data,
                            &prepared.tmp,
                            index as u8,
                            max_file,
                            checkpoint,
                        )?;
                        prepared.journal = Some(journal);
                        replayed
                    }
                    None => journal::replay_leftover(&prepared.data, &prepared.tmp, index as u8)?,
                };
                if !replayed.segments.is_empty() {
                    tracing::info!(
                        path = %root.display(),
                        entries = replayed.entries,
                        restored = replayed.restored,
                        removed = replayed.removed,
                        "replayed the journal"
                    );
                }
                Ok((prepared, replayed))
            })
            .await?;
            let mut prepared = prepared;
            if !options.fsync {
                prepared.0.small_writer = Some(
                    small_writer::SmallWriter::start(index as u8)
                        .map_err(StoreError::io("starting the small-file writer"))?,
                );
            }
            paths.push(prepared.0);
            replayed_uploads.extend(prepared.1.uploads);
            replayed_segments.extend(prepared.1.segments);
        }
        let state_path = distribute::state_path(&options.base_path);
        let (mode, count) = (options.distribute, options.subdir_count);
        let base = options.base_path.join("data");
        let distributor = blocking("loading distribution state", move || {
            std::fs::create_dir_all(&base)?;
            Distributor::load(state_path, mode, count)
        })
        .await?;
        let gates = (0..paths.len())
            .map(|index| gate::IoGate::new(index as u8, options.max_io_per_path, options.io_wait))
            .collect();
        Ok(Store {
            counts: Arc::new(FileCounts::new(paths.len())),
            gates,
            options,
            paths,
            next_path: AtomicUsize::new(0),
            distributor: Arc::new(distributor),
            locks: FileLocks::default(),
            dirs: Arc::default(),
            recent: recent::RecentFiles::new(recent::RECENT_BYTES, recent::RECENT_MAX_FILE),
            replayed_uploads: std::sync::Mutex::new(replayed_uploads),
            replayed_segments: std::sync::Mutex::new(replayed_segments),
        })
    }

    /// Creates the missing `data/XX/YY/` directories of every store path (I.1), several
    /// workers at a time. Meant to run in the background at start-up: writes create a missing
    /// directory themselves, so uploads need not wait for it. Returns early once `stop` is
    /// cancelled.
    pub async fn create_subdirs(&self, stop: &CancellationToken) -> Result<(), StoreError> {
        const WORKERS: u32 = 4;
        let mut tasks = tokio::task::JoinSet::new();
        for path in &self.paths {
            for first in 0..WORKERS {
                let data = path.data.clone();
                let count = self.options.subdir_count;
                let stop = stop.clone();
                tasks.spawn_blocking(move || {
                    layout::create_subdirs(&data, count, first, WORKERS, &|| stop.is_cancelled())
                });
            }
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.unwrap_or_else(|join| Err(io::Error::other(join.to_string())));
            if let Err(err) = result {
                first_error.get_or_insert(StoreError::io("creating data directories")(err));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Counts the stored files of every store path, one path after the other (meant to run
    /// in the background at start-up; the store keeps the counts up to date afterwards).
    /// Returns early once `stop` is cancelled.
    pub async fn count_files(&self, stop: &CancellationToken) -> Result<(), StoreError> {
        for (index, path) in self.paths.iter().enumerate() {
            let counts = self.counts.clone();
            let data = path.data.clone();
            let stop = stop.clone();
            blocking("counting files", move || {
                counts.walk(index as u8, &data, &|| stop.is_cancelled())
            })
            .await?;
        }
        Ok(())
    }

    /// Stored files of each store path, in index order; `None` while still being counted.
    pub fn file_counts(&self) -> Vec<Option<u64>> {
        self.counts.counts()
    }

    /// Waits for a disk slot of store path `index` (see `gate`), for callers that make disk
    /// calls with `tokio::fs`: hold it across those calls, and across nothing else.
    pub async fn io_slot(&self, index: u8) -> Result<IoSlot, StoreError> {
        self.store_path(index)?;
        self.gates[usize::from(index)].slot().await
    }

    /// Runs blocking disk work for store path `index` on the blocking pool, holding one of
    /// the path's slots until the work returns (also when the caller stopped waiting).
    pub(crate) async fn on_path<T, F>(
        &self,
        index: u8,
        context: &'static str,
        work: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.io_slot(index).await?;
        on_slot(slot, context, work).await
    }

    /// Runs `work`, a small file's write without syncs, on store path `index`'s small-file
    /// writer when it has one (fsync off), else on the blocking pool; holding an IO slot
    /// either way.
    pub(crate) async fn on_small_writer<T, F>(
        &self,
        index: u8,
        context: &'static str,
        work: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let writer = self
            .paths
            .get(usize::from(index))
            .and_then(|path| path.small_writer.as_ref());
        match writer {
            Some(writer) => {
                let slot = self.io_slot(index).await?;
                writer
                    .run(context, move || {
                        let _slot = slot;
                        work()
                    })
                    .await
            }
            None => self.on_path(index, context, work).await,
        }
    }

    /// Whether small files just written are kept in memory for the sync senders (see
    /// `recent`): worth it only while the group has another storage.
    pub fn keep_recent_files(&self, keep: bool) {
        self.recent.set_wanted(keep);
    }

    /// Disk slots in use per store path, in index order.
    pub fn io_in_use(&self) -> Vec<usize> {
        self.gates.iter().map(gate::IoGate::in_use).collect()
    }

    /// Requests answered EBUSY for want of a disk slot, per store path.
    pub fn io_refused(&self) -> Vec<u64> {
        self.gates.iter().map(gate::IoGate::refused).collect()
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    pub fn store_path_count(&self) -> usize {
        self.paths.len()
    }

    /// The gate every change of the set of stored files goes through (see [`FileCounts`]).
    pub(crate) fn counts(&self) -> Arc<FileCounts> {
        self.counts.clone()
    }

    /// Directory fsyncs shared between concurrent changes (see `dirsync`), for blocking work.
    pub(crate) fn dirs(&self) -> Arc<dirsync::DirSyncer> {
        self.dirs.clone()
    }

    pub fn locks(&self) -> &FileLocks {
        &self.locks
    }

    pub fn distribution(&self) -> DistState {
        self.distributor.current()
    }

    /// Saves the round-robin position (on shutdown).
    pub async fn save_state(&self) -> Result<(), StoreError> {
        let distributor = self.distributor.clone();
        blocking("saving distribution state", move || distributor.save()).await
    }

    /// Total and free bytes of every store path, in index order. A bad store path reports
    /// nothing (0 and 0), so the trackers send no uploads there.
    pub async fn usage(&self) -> Vec<PathUsage> {
        let mut out = Vec::with_capacity(self.paths.len());
        for index in 0..self.paths.len() {
            match self.path_usage(index as u8).await {
                Ok(Some(usage)) => out.push(usage),
                Ok(None) => out.push(PathUsage::default()),
                Err(err) => {
                    tracing::warn!(path = %self.paths[index].data.display(), error = %err, "cannot read disk usage");
                    out.push(PathUsage::default());
                }
            }
        }
        out
    }

    /// statvfs of a healthy store path (`None` for a bad one), bounded by
    /// [`PROBE_TIMEOUT`]: a path that takes longer is marked bad.
    async fn path_usage(&self, index: u8) -> Result<Option<PathUsage>, StoreError> {
        let path = self.store_path(index)?;
        if path.health.is_bad() {
            return Ok(None);
        }
        let data = path.data.clone();
        let read = self.on_path(index, "statvfs", move || {
            disk_usage(&data).map_err(StoreError::io("statvfs"))
        });
        match tokio::time::timeout(PROBE_TIMEOUT, read).await {
            Ok(result) => {
                let usage = self.note_result(index, result)?;
                path.space.store(usage);
                Ok(Some(usage))
            }
            Err(_) => {
                self.mark_bad(
                    index,
                    format!("statvfs did not finish within {PROBE_TIMEOUT:?}"),
                );
                Ok(None)
            }
        }
    }

    /// The on-disk path of a logical name; the store path index must exist (else 22).
    /// Test hook: switch the slave-as-symlink mode of an open store.
    #[cfg(test)]
    pub(crate) fn set_slave_use_link(&mut self, on: bool) {
        self.options.slave_use_link = on;
    }

    pub fn resolve(&self, name: &LogicalName) -> Result<PathBuf, StoreError> {
        let root = self.store_path(name.store_path())?;
        Ok(root.data.join(name.data_relative_path()))
    }

    fn store_path(&self, index: u8) -> Result<&StorePath, StoreError> {
        self.paths.get(usize::from(index)).ok_or_else(|| {
            StoreError::Invalid(format!(
                "store path index {index} >= store path count {}",
                self.paths.len()
            ))
        })
    }

    /// What each store path keeps free: its share of `reserved_storage_space` (J.3).
    fn path_reserve(&self) -> ReservedSpace {
        self.options.reserved.per_path(self.paths.len())
    }

    /// Whether store path `index` keeps more than its reserved space after `size` more bytes
    /// (never for a bad path).
    async fn has_room(&self, index: u8, size: u64) -> Result<bool, StoreError> {
        if self.space_admits(index, size) {
            return Ok(true);
        }
        let Some(usage) = self.path_usage(index).await? else {
            return Ok(false);
        };
        Ok(match usage.free_bytes.checked_sub(size) {
            Some(left) => self.path_reserve().has_room(usage.total_bytes, left),
            None => false,
        })
    }

    /// Whether the remembered free space of store path `index` has room for `size` more
    /// bytes with plenty to spare (counting them as used); `false` means "check with
    /// [`Store::has_room`]".
    fn space_admits(&self, index: u8, size: u64) -> bool {
        self.store_path(index).is_ok_and(|path| {
            !path.health.is_bad() && path.space.admits(size, &self.path_reserve())
        })
    }

    /// The store path for a new file: the requested one, or round robin over paths with
    /// room (a bad path has none: see `health`). A requested path without room is
    /// [`StoreError::NoSpace`].
    pub async fn choose_store_path(&self, wanted: Option<u8>, size: u64) -> Result<u8, StoreError> {
        if let Some(index) = wanted {
            self.store_path(index)?;
            return if self.has_room(index, size).await? {
                Ok(index)
            } else {
                Err(StoreError::NoSpace)
            };
        }
        let count = self.paths.len();
        let start = self.next_path.fetch_add(1, Ordering::Relaxed);
        for step in 0..count {
            let index = ((start + step) % count) as u8;
            // a path whose disk fails is skipped, not the end of the upload
            match self.has_room(index, size).await {
                Ok(true) => return Ok(index),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(store_path = index, error = %err, "cannot check free space, trying the next store path");
                }
            }
        }
        Err(StoreError::NoSpace)
    }

    /// Opens a stored regular file for reading; returns it with its current size.
    pub async fn open_read(&self, name: &LogicalName) -> Result<(File, u64), StoreError> {
        let opened = self.open_read_unchecked(name).await;
        self.note_result(name.store_path(), opened)
    }

    async fn open_read_unchecked(&self, name: &LogicalName) -> Result<(File, u64), StoreError> {
        let (file, size) = self.open_read_std_unchecked(name).await?;
        Ok((File::from_std(file), size))
    }

    /// [`Store::open_read`] giving a std file, for callers that read it without the blocking
    /// pool when they can (page-cache reads, sendfile).
    pub async fn open_read_std(
        &self,
        name: &LogicalName,
    ) -> Result<(std::fs::File, u64), StoreError> {
        let opened = self.open_read_std_unchecked(name).await;
        self.note_result(name.store_path(), opened)
    }

    /// Opens and stats in one trip to the blocking pool: an open can wait for the disk, and
    /// a hung store path must not stall the server threads (and with them the other paths).
    async fn open_read_std_unchecked(
        &self,
        name: &LogicalName,
    ) -> Result<(std::fs::File, u64), StoreError> {
        let path = self.resolve(name)?;
        // a hot file opens without waiting for the disk, on this thread (see nowait)
        if let Some((file, meta)) = crate::nowait::open_cached(&path) {
            return Ok((file, meta.len()));
        }
        let (file, meta) = self
            .on_path(name.store_path(), "opening file", move || {
                let file = std::fs::File::open(&path).map_err(StoreError::file("opening file"))?;
                let meta = file.metadata().map_err(StoreError::file("opening file"))?;
                Ok((file, meta))
            })
            .await?;
        if !meta.is_file() {
            return Err(StoreError::NotRegularFile);
        }
        Ok((file, meta.len()))
    }

    /// Size and mtime of a stored file (F.7: size of a link's target, mtime of the link).
    pub async fn stat(&self, name: &LogicalName) -> Result<FileStat, StoreError> {
        let path = self.resolve(name)?;
        let (own, target) = self
            .on_path(name.store_path(), "reading file status", move || {
                let own = std::fs::symlink_metadata(&path)
                    .map_err(StoreError::file("reading file status"))?;
                let target = if own.file_type().is_symlink() {
                    std::fs::metadata(&path)
                        .map_err(StoreError::file("reading link target status"))?
                } else {
                    own.clone()
                };
                Ok((own, target))
            })
            .await?;
        if !target.is_file() {
            return Err(StoreError::NotRegularFile);
        }
        Ok(FileStat {
            size: target.len(),
            mtime: unix_seconds(&own),
        })
    }

    /// CRC32 of the whole current content of a stored file.
    pub async fn content_crc(&self, name: &LogicalName) -> Result<u32, StoreError> {
        let (mut file, _) = self.open_read_std(name).await?;
        self.on_path(name.store_path(), "computing crc32", move || {
            let mut hasher = crc32fast::Hasher::new();
            let mut buf = vec![0u8; IO_BUFFER];
            loop {
                let n = io::Read::read(&mut file, &mut buf)
                    .map_err(StoreError::io("computing crc32"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Ok(hasher.finalize())
        })
        .await
    }

    /// Deletes a file and its metadata sidecar (F.4). A slave stored as a symbolic link into
    /// this store path also loses its target.
    pub async fn delete(&self, name: &LogicalName) -> Result<(), StoreError> {
        let path = self.resolve(name)?;
        let data = self.store_path(name.store_path())?.data.clone();
        let _guard = self.locks.lock(&name.to_string()).await;
        let index = name.store_path();
        // a file the journal may restore at the next start is journaled as gone first
        let journaled = match self.journal(index).filter(|journal| journal.may_hold(name)) {
            Some(journal) => Some(journal.append_gone(name).await?),
            None => None,
        };
        // so is the ordinary file a slave stored as a link points to, which goes with it
        let target_journaled = match self.journal(index) {
            Some(journal) if recorded_content(name).is_none() => {
                match self.link_target_in(index, &path).await {
                    Some(target) if journal.may_hold(&target) => {
                        Some(journal.append_gone(&target).await?)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let fsync = self.options.fsync && journaled.is_none();
        let dirs = self.dirs();
        let counts = self.counts.clone();
        let slot = self.io_slot(index).await?;
        self.recent.forget(&name.to_string());
        let removed_target = blocking_file(slot, "deleting file", move || {
            let mut removed_target = None;
            let _journaled = (journaled, target_journaled);
            let change = counts.begin(index);
            let note = |path: &Path| {
                if let Some(change) = &change {
                    change.note(path, -1);
                }
            };
            // The sidecar goes first: a kill between the two removals then leaves the file,
            // which a retried or redone delete finds, rather than a sidecar no delete finds.
            let sidecar = metadata::sidecar_path(&path);
            match std::fs::remove_file(&sidecar) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?;
                std::fs::remove_file(&path)?;
                note(&path);
                // only follow links that stay inside this store path (I.4 uses absolute ones)
                if target.is_absolute() && target.starts_with(&data) {
                    match std::fs::remove_file(&target) {
                        Ok(()) => {
                            note(&target);
                            removed_target = Some(target);
                        }
                        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                        Err(_) => {}
                    }
                }
            } else if meta.is_file() {
                std::fs::remove_file(&path)?;
                note(&path);
            } else {
                return Err(io::Error::from_raw_os_error(libc::EISDIR));
            }
            drop(change);
            if fsync {
                if let Some(dir) = path.parent() {
                    dirs.sync(dir)?;
                }
            }
            Ok(removed_target)
        })
        .await?;
        if let Some(target) = removed_target.and_then(|target| self.logical_of_path(&target)) {
            self.recent.forget(&target);
        }
        Ok(())
    }

    /// The name fields of a stored file's name (the 27 characters of its base name).
    pub fn name_fields(name: &LogicalName) -> Result<NameFields, StoreError> {
        let encoded = name
            .base()
            .get(..fdfs_proto::name::ENCODED_LEN)
            .ok_or_else(|| StoreError::Invalid("file name too short".into()))?;
        NameFields::decode(encoded).map_err(|err| StoreError::Invalid(err.to_string()))
    }

    fn tmp_dir(&self, index: u8) -> Result<&Path, StoreError> {
        Ok(&self.store_path(index)?.tmp)
    }

    /// The stored file the symbolic link at `path` points to, when it is one inside store
    /// path `index` (a slave stored as a link).
    async fn link_target_in(&self, index: u8, path: &Path) -> Option<LogicalName> {
        let target = tokio::fs::read_link(path).await.ok()?;
        let text = self.logical_of_path(&target)?;
        LogicalName::parse(&text)
            .ok()
            .filter(|name| name.store_path() == index)
    }

    /// The journal of store path `index`, when it has one.
    fn journal(&self, index: u8) -> Option<&journal::Journal> {
        self.paths.get(usize::from(index))?.journal.as_ref()
    }

    /// The last journal checkpoint of every store path, at a clean stop: the next start then
    /// has nothing to replay. Waits at most `grace` for changes in flight.
    pub async fn close_journals(&self, grace: std::time::Duration) {
        for (index, path) in self.paths.iter().enumerate() {
            let Some(journal) = &path.journal else {
                continue;
            };
            match tokio::task::spawn_blocking(journal.close(grace))
                .await
                .unwrap_or_else(|join| Err(io::Error::other(join.to_string())))
            {
                Ok(true) => {}
                Ok(false) if !journal.stats().healthy => tracing::warn!(
                    index,
                    "the journal failed earlier: its segments are replayed at the next start"
                ),
                Ok(false) => tracing::warn!(
                    index,
                    "changes still in flight: the journal is replayed at the next start"
                ),
                Err(err) => {
                    tracing::warn!(index, error = %err, "last journal checkpoint failed: it is replayed at the next start")
                }
            }
        }
    }

    /// Has `hook` run before every journal checkpoint (see [`journal::Journal::before_checkpoint`]).
    pub fn before_journal_checkpoints(&self, hook: journal::BeforeCheckpoint) {
        for path in &self.paths {
            if let Some(journal) = &path.journal {
                journal.before_checkpoint(hook.clone());
            }
        }
    }

    /// The uploads the journals held at start (see [`Replayed::uploads`]), once.
    pub fn take_replayed_uploads(&self) -> Vec<LogicalName> {
        std::mem::take(
            &mut self
                .replayed_uploads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Removes the journal segments replayed at start: call once the uploads of
    /// [`Store::take_replayed_uploads`] are recorded (until then a crash replays them again).
    pub async fn finish_replay(&self) -> Result<(), StoreError> {
        let segments = std::mem::take(
            &mut *self
                .replayed_segments
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if segments.is_empty() {
            return Ok(());
        }
        blocking("removing replayed journal segments", move || {
            // per directory: each store path has its own journal
            let mut by_dir: std::collections::BTreeMap<PathBuf, Vec<PathBuf>> = Default::default();
            for path in segments {
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                by_dir.entry(dir).or_default().push(path);
            }
            by_dir
                .values()
                .try_for_each(|segments| journal::remove_replayed(segments))
        })
        .await
    }

    /// What each store path's journal has done, in index order (`None`: no journal).
    pub fn journal_stats(&self) -> Vec<Option<JournalStats>> {
        self.paths
            .iter()
            .map(|path| path.journal.as_ref().map(journal::Journal::stats))
            .collect()
    }
}

/// Runs blocking work that holds `slot` (see [`Store::on_path`]) until it returns.
pub(crate) async fn on_slot<T, F>(
    slot: IoSlot,
    context: &'static str,
    work: F,
) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let run = move || {
        let _slot = slot;
        work()
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::Io {
            context,
            source: io::Error::other(join.to_string()),
        }),
    }
}

/// Like [`on_slot`], but io errors about the target file map to NotFound / NotRegularFile.
pub(crate) async fn blocking_file<T, F>(
    slot: IoSlot,
    context: &'static str,
    work: F,
) -> Result<T, StoreError>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let run = move || {
        let _slot = slot;
        work()
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(result) => result.map_err(StoreError::file(context)),
        Err(join) => Err(StoreError::Io {
            context,
            source: io::Error::other(join.to_string()),
        }),
    }
}

pub(crate) fn unix_seconds(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Gives the symbolic link at `path` itself (not its target) the mtime `mtime`, leaving its
/// access time alone (blocking). QUERY_FILE_INFO reports a link's own mtime, so a slave stored
/// as a link shows this time. `File::set_modified` cannot do it: opening a link opens its
/// target.
pub(crate) fn set_link_mtime(path: &Path, mtime: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: libc::time_t::from(mtime),
            tv_nsec: 0,
        },
    ];
    // SAFETY: c_path is a valid NUL-terminated string and times an array of two timespecs,
    // both alive for the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub async fn store_in(dir: &Path, paths: usize, subdirs: u32) -> Store {
        let store = open_store_in(dir, paths, subdirs).await;
        store
            .create_subdirs(&CancellationToken::new())
            .await
            .unwrap();
        store
    }

    pub async fn open_store_in(dir: &Path, paths: usize, subdirs: u32) -> Store {
        let store_paths = if paths == 1 {
            vec![dir.to_path_buf()]
        } else {
            (0..paths).map(|i| dir.join(format!("p{i}"))).collect()
        };
        Store::open(StoreOptions {
            base_path: dir.to_path_buf(),
            store_paths,
            subdir_count: subdirs,
            server_id: 100_001,
            fsync: true,
            distribute: DistributeMode::RoundRobin { rotate_count: 100 },
            reserved: ReservedSpace::Bytes(0),
            slave_use_link: false,
            max_io_per_path: DEFAULT_MAX_IO_PER_PATH,
            io_wait: std::time::Duration::from_secs(30),
            journal_max_file: 64 * 1024,
            journal_checkpoint: std::time::Duration::from_secs(1),
        })
        .await
        .unwrap()
    }
}
