//! Group commit of small new files (fsync on). Making each small file durable on its own costs
//! a file fsync and a directory fsync, several sleeps on the disk per file. Instead a small
//! ordinary file's name and content are appended to its store path's journal
//! (`data/.journal/<n>.log`), and one `fdatasync` covers every entry queued while the previous
//! one ran; the file itself is then written and linked without syncs, by the writer thread
//! right after the commit (see [`Journal::append_file_then`]). Deletes of such files
//! append a "gone" entry first, so a replay cannot bring them back.
//!
//! A segment is a zero-filled spare file, prepared ahead of time by the checkpoint thread and
//! renamed into place at the seal before: an `fdatasync` of entries written over blocks that are
//! already allocated and written skips the block allocation and inode write an append costs.
//! A replay ends a segment at its first entry that is not whole, zeros included.
//!
//! Segments are sealed after [`SEGMENT_BYTES`] or the configured checkpoint interval. Once every file of a sealed
//! segment has been written (or given up), `syncfs` of the store path's file system makes
//! them durable and the segment is removed. At start, [`Journal::open`] replays what is left:
//! a file whose copy is missing or not what its name records is written again from its entry,
//! a deleted one is removed; then the journal starts empty.
//!
//! Only ordinary files take this path: their names record size and CRC32 and their content
//! never changes, so a replay can tell a good copy (kept as it is) from a torn one.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fdfs_proto::file_id::LogicalName;
use tokio::sync::watch;

use super::block_append::BlockAppender;
use super::replica::recorded_content;
use super::StoreError;

/// Directory of the journal inside `<store>/data/` (a dot name: no logical name reaches it).
pub const JOURNAL_DIR: &str = ".journal";
/// A segment is sealed once it holds this much, or once its first entry is as old as the
/// configured checkpoint interval: both bound what a start has to replay.
const SEGMENT_BYTES: u64 = 8 << 20;
const MAGIC: u32 = 0x4644_4a31;
/// Magic, length of the rest, CRC32 of the rest.
const HEAD: usize = 12;
/// Kind, mtime, name length.
const FIXED: usize = 7;
const KIND_UPLOAD: u8 = 1;
const KIND_GONE: u8 = 2;
const KIND_COPY: u8 = 3;
/// Longest logical name an entry may carry.
const MAX_NAME: usize = 256;
/// Names of spare segments start with this (no segment name does).
const SPARE_PREFIX: &str = "spare-";
/// A spare is written to the disk this much at a time.
const SPARE_STEP: usize = 512 << 10;
/// Size of the first spare, before any segment was sealed.
const FIRST_SPARE: u64 = 1 << 20;
/// Smallest spare: a spare is sized after the segment sealed last.
const MIN_SPARE: u64 = 256 << 10;

/// The journal of one store path: a writer thread (group commit) and a checkpoint thread.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    /// Files up to this size go through the journal.
    max_file: u64,
}

/// What the journal does after a failure ([`Shared::mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Takes small files and their deletes.
    Healthy = 0,
    /// A journal write failed, then every segment was checkpointed and removed: nothing is
    /// left to replay, so files are synced on their own and deleted plainly until restart.
    Disabled = 1,
    /// Segments are kept for the next start (a checkpoint failed, or a write failed and the
    /// checkpoint after it too): new files are synced on their own, and deleting a file a
    /// kept segment may restore is refused, since its "gone" entry cannot be written.
    Broken = 2,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// The store path's `data/`, open for the whole run: `syncfs` reports a write-back error
    /// only to descriptors opened before it happened, so one opened per checkpoint could
    /// miss the error of a file written before it.
    data: File,
    /// Segments before this one were left by an earlier run; they go once their replay is
    /// complete ([`Journal::finish_replay`]), never in a checkpoint.
    first: u64,
    mode: AtomicU8,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// A segment is sealed this long after its first entry.
    seal_age: Duration,
    state: Mutex<State>,
    /// Entries were queued, or the journal closed.
    work: Condvar,
    /// Some segment has no file left in flight.
    drained: Condvar,
    durable: watch::Sender<Progress>,
    stats: Counters,
    /// Run before every checkpoint ([`Journal::before_checkpoint`]).
    before_checkpoint: std::sync::OnceLock<CheckpointHook>,
}

struct CheckpointHook(BeforeCheckpoint);

impl std::fmt::Debug for CheckpointHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointHook")
    }
}

/// Makes durable, before a checkpoint, what the caller relies on the journal's replay for
/// until then (the binlog records of the files in it).
pub type BeforeCheckpoint = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

#[derive(Debug, Default)]
struct Counters {
    entries: AtomicU64,
    commits: AtomicU64,
    checkpoints: AtomicU64,
}

/// What a journal has done since start (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Entries appended.
    pub entries: u64,
    /// `fdatasync`s that made them durable (each covering one or more entries).
    pub commits: u64,
    /// Segments made obsolete by a `syncfs`, in one or more at a time.
    pub checkpoints: u64,
    /// Taking files: `false` after a failure (files are then synced on their own).
    pub healthy: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// Entries up to this sequence number are durable.
    upto: u64,
    /// A write or sync failed: nothing more becomes durable.
    failed: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Encoded entries waiting for the writer.
    queue: Vec<u8>,
    /// Sequence number of the last queued entry.
    queued: u64,
    /// Segment new entries go to.
    segment: u64,
    /// Per segment, the entries whose file change has not finished yet.
    in_flight: HashMap<u64, usize>,
    /// Work to run on the writer thread once the queued entries are durable.
    after: AfterCommit,
    /// The next segment, zero-filled ahead of time; taken by the writer at a seal.
    spare: Option<Spare>,
    closed: bool,
}

/// A zero-filled file that becomes the next segment (see the module's documentation).
#[derive(Debug)]
struct Spare {
    path: PathBuf,
    /// Open for writing, at offset 0.
    file: File,
}

/// What the writer tells the checkpoint thread at a seal.
#[derive(Clone, Copy, Debug)]
struct Sealed {
    segment: u64,
    /// What the segment holds: the next spare is sized after it.
    bytes: u64,
}

/// [`Journal::append_upload_then`] and the like: the file change of an entry, run by the
/// writer right after the entry's commit.
#[derive(Default)]
struct AfterCommit(Vec<Box<dyn FnOnce() + Send>>);

impl std::fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AfterCommit({} jobs)", self.0.len())
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An entry made durable whose file change is under way: the segment holding it is not
/// checkpointed before this is dropped.
#[derive(Debug)]
pub struct Pending {
    shared: Arc<Shared>,
    segment: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        if let Some(count) = state.in_flight.get_mut(&self.segment) {
            *count -= 1;
            if *count == 0 {
                self.shared.drained.notify_all();
            }
        }
    }
}

/// Where a new file comes from: its entry says so, and a replay records uploads again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Uploaded here.
    Upload,
    /// A copy received from a peer.
    Copy,
}

/// What a start found in the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The segments replayed: removed by [`remove_replayed`] once the uploads are recorded.
    pub segments: Vec<PathBuf>,
    /// Entries read.
    pub entries: usize,
    /// Files written again (missing or torn).
    pub restored: usize,
    /// Files removed (deleted before the crash).
    pub removed: usize,
    /// Every file uploaded here that the journal holds (restored or found intact): an upload's
    /// entry and its binlog record are made durable at the same time, so a crash can leave
    /// the entry without the record; the caller records these again (peers take a repeated
    /// record as one they have).
    pub uploads: Vec<LogicalName>,
}

impl Journal {
    /// Replays and empties the journal of the store path whose data directory is `data`
    /// (temp files go to `tmp`), then starts its threads (blocking). `store_path` is the
    /// path's index: entries naming another are ignored. Segments are sealed `seal_age` after
    /// their first entry.
    pub fn open(
        data: &Path,
        tmp: &Path,
        store_path: u8,
        max_file: u64,
        seal_age: Duration,
    ) -> io::Result<(Journal, Replayed)> {
        let dir = data.join(JOURNAL_DIR);
        super::layout::create_if_missing(&dir)?;
        // the journal's own name is durable before anything in it is
        crate::persist::sync_dir(data)?;
        let replayed = replay_leftover(data, tmp, store_path)?;
        let first = match replayed.segments.last() {
            Some(last) => segment_number(last).map_or(1, |number| number + 1),
            None => 1,
        };
        let file = open_segment(&dir, first)?;
        let (durable, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            dir,
            data: File::open(data)?,
            first,
            mode: AtomicU8::new(Mode::Healthy as u8),
            writer: Mutex::new(None),
            checkpointer: Mutex::new(None),
            seal_age,
            state: Mutex::new(State {
                segment: first,
                ..State::default()
            }),
            work: Condvar::new(),
            drained: Condvar::new(),
            durable,
            stats: Counters::default(),
            before_checkpoint: std::sync::OnceLock::new(),
        });
        let (sealed_tx, sealed_rx) = mpsc::channel();
        let writer = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("journal-{store_path}"))
            .spawn(move || write_loop(&writer, BlockAppender::new(file), first, &sealed_tx))?;
        *shared.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        let checkpoint = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("checkpoint-{store_path}"))
            .spawn(move || checkpoint_loop(&checkpoint, &sealed_rx))?;
        *shared
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok((Journal { shared, max_file }, replayed))
    }

    pub fn stats(&self) -> JournalStats {
        let counters = &self.shared.stats;
        JournalStats {
            entries: counters.entries.load(Ordering::Relaxed),
            commits: counters.commits.load(Ordering::Relaxed),
            checkpoints: counters.checkpoints.load(Ordering::Relaxed),
            healthy: self.shared.mode() == Mode::Healthy,
        }
    }

    /// The last checkpoint, at a clean stop, as blocking work: takes no more entries and,
    /// once the changes in flight are done (waiting at most `grace`), syncs the file system
    /// and removes every segment, so the next start has nothing to replay. `false` when
    /// changes were still in flight after `grace` (the next start replays them).
    pub fn close(&self, grace: Duration) -> impl FnOnce() -> io::Result<bool> + Send + 'static {
        let shared = self.shared.clone();
        move || close(&shared, grace)
    }

    /// Has `hook` run before every checkpoint from now on (once: later calls are ignored). A
    /// checkpoint removes segments, and with them what a replay would have redone: whatever
    /// must survive a crash from then on (the binlog records of their files) must be durable
    /// first. A hook that fails fails the checkpoint (its segments are kept).
    pub fn before_checkpoint(&self, hook: BeforeCheckpoint) {
        let _ = self.shared.before_checkpoint.set(CheckpointHook(hook));
    }

    /// Whether a new ordinary file of `size` bytes goes through the journal (not after a
    /// failure: it is then synced on its own).
    pub fn takes(&self, size: u64) -> bool {
        size <= self.max_file && self.shared.mode() == Mode::Healthy
    }

    /// Whether the file `name` may have gone through the journal, so that its deletion must
    /// be journaled too (and is refused while the journal is broken).
    pub fn may_hold(&self, name: &LogicalName) -> bool {
        self.shared.mode() != Mode::Disabled
            && recorded_content(name).is_some_and(|(size, _)| size <= self.max_file)
    }

    /// Appends the upload of `name` (an ordinary file) with `content` and mtime `mtime`;
    /// returns once the entry is durable. Keep the [`Pending`] until the file is written.
    #[cfg(test)]
    pub async fn append_upload(
        &self,
        name: &LogicalName,
        mtime: u32,
        content: &[u8],
    ) -> Result<Pending, StoreError> {
        self.append(KIND_UPLOAD, name, mtime, content).await
    }

    /// Appends a new ordinary file `name` with `content` and mtime `mtime`, has the writer
    /// thread run `then` (writing the file) with `content` as soon as the entry is durable, and
    /// returns its result: one thread hand-off per small file instead of two (to the writer
    /// and to the blocking pool). `then` must not block on anything but the disk. The
    /// [`Pending`] can go at once: the file is written.
    pub async fn append_file_then<T, F>(
        &self,
        origin: Origin,
        name: &LogicalName,
        mtime: u32,
        content: Vec<u8>,
        then: F,
    ) -> Result<(Pending, T), StoreError>
    where
        F: FnOnce(Vec<u8>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let kind = match origin {
            Origin::Upload => KIND_UPLOAD,
            Origin::Copy => KIND_COPY,
        };
        let (done, result) = tokio::sync::oneshot::channel();
        {
            let mut state = lock(&self.shared.state);
            let (_, pending) = self.enqueue(&mut state, kind, name, mtime, &content)?;
            state.after.0.push(Box::new(move || {
                let value = then(content);
                // The request may have stopped waiting (its connection dropped): the pending
                // entry then goes only now, after the file change.
                let _ = done.send((pending, value));
            }));
        }
        self.shared.work.notify_one();
        // dropped unrun when the commit failed
        result.await.map_err(|_| failed())
    }

    /// Appends the deletion of `name`; returns once it is durable. Keep the [`Pending`] until
    /// the file is removed.
    pub async fn append_gone(&self, name: &LogicalName) -> Result<Pending, StoreError> {
        self.append(KIND_GONE, name, 0, &[]).await
    }

    /// Queues an entry; returns its sequence number and its [`Pending`].
    fn enqueue(
        &self,
        state: &mut State,
        kind: u8,
        name: &LogicalName,
        mtime: u32,
        content: &[u8],
    ) -> Result<(u64, Pending), StoreError> {
        if state.closed || self.shared.mode() != Mode::Healthy {
            return Err(failed());
        }
        encode(&mut state.queue, kind, &name.to_string(), mtime, content);
        state.queued += 1;
        self.shared.stats.entries.fetch_add(1, Ordering::Relaxed);
        let segment = state.segment;
        *state.in_flight.entry(segment).or_insert(0) += 1;
        let pending = Pending {
            shared: self.shared.clone(),
            segment,
        };
        Ok((state.queued, pending))
    }

    async fn append(
        &self,
        kind: u8,
        name: &LogicalName,
        mtime: u32,
        content: &[u8],
    ) -> Result<Pending, StoreError> {
        let (sequence, pending) = {
            let mut state = lock(&self.shared.state);
            self.enqueue(&mut state, kind, name, mtime, content)?
        };
        self.shared.work.notify_one();
        let mut durable = self.shared.durable.subscribe();
        let progress = durable
            .wait_for(|progress| progress.upto >= sequence || progress.failed)
            .await
            .map(|progress| *progress)
            .map_err(|_| failed())?;
        if progress.upto < sequence {
            return Err(failed());
        }
        Ok(pending)
    }
}

impl Shared {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Healthy,
            1 => Mode::Disabled,
            _ => Mode::Broken,
        }
    }

    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Release);
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.work.notify_all();
        self.shared.drained.notify_all();
    }
}

fn close(shared: &Shared, grace: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + grace;
    {
        let mut state = lock(&shared.state);
        state.closed = true;
        shared.work.notify_all();
        shared.drained.notify_all();
        while state.in_flight.values().any(|&count| count > 0) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(false);
            };
            state = shared
                .drained
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
    // the checkpoint thread ends once the writer has (its channel closes)
    for thread in [&shared.writer, &shared.checkpointer] {
        let handle = thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
    if let Some(spare) = lock(&shared.state).spare.take() {
        drop(spare.file);
        remove_if_present(&spare.path)?;
    }
    if shared.mode() == Mode::Broken {
        return Ok(false);
    }
    checkpoint(shared, u64::MAX)?;
    Ok(true)
}

fn failed() -> StoreError {
    StoreError::Io {
        context: "writing the journal",
        source: io::Error::other("the journal of this store path failed or closed"),
    }
}

fn encode(out: &mut Vec<u8>, kind: u8, name: &str, mtime: u32, content: &[u8]) {
    let rest = FIXED + name.len() + content.len();
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&(rest as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&mtime.to_be_bytes());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(content);
    let crc = crc32fast::hash(&out[start + HEAD..]);
    out[start + 8..start + HEAD].copy_from_slice(&crc.to_be_bytes());
}

/// One journaled change, as read back.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File {
        mtime: u32,
        content: Vec<u8>,
        upload: bool,
    },
    Gone,
}

/// Reads the next entry of `reader`: `None` at the end or at the first entry that is torn or
/// damaged (a crash mid-write: nothing after it was acknowledged). Every length is bounded
/// before anything is allocated.
fn read_entry(reader: &mut impl Read, max_content: usize) -> io::Result<Option<(String, Entry)>> {
    let mut head = [0u8; HEAD];
    if !read_full(reader, &mut head)? {
        return Ok(None);
    }
    let word = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let (magic, rest, crc) = (word(0), word(4) as usize, word(8));
    if magic != MAGIC || rest < FIXED || rest > FIXED + MAX_NAME + max_content {
        return Ok(None);
    }
    let mut body = vec![0u8; rest];
    if !read_full(reader, &mut body)? || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    let kind = body[0];
    let mtime = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
    let name_len = usize::from(u16::from_be_bytes([body[5], body[6]]));
    let Some(name) = body.get(FIXED..FIXED + name_len) else {
        return Ok(None);
    };
    let Ok(name) = String::from_utf8(name.to_vec()) else {
        return Ok(None);
    };
    let entry = match kind {
        KIND_UPLOAD | KIND_COPY => Entry::File {
            mtime,
            content: body.split_off(FIXED + name_len),
            upload: kind == KIND_UPLOAD,
        },
        KIND_GONE => Entry::Gone,
        _ => return Ok(None),
    };
    Ok(Some((name, entry)))
}

/// Where the last entry of a name is, found by a replay's first pass.
enum Last {
    File {
        mtime: u32,
        upload: bool,
        /// Index of the segment in the replayed list.
        segment: usize,
        /// Offset and length of the content in it.
        at: u64,
        len: u64,
    },
    Gone,
}

/// Fills `buf`; `false` when the reader ended before (a torn tail counts as the end).
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(true)
}

/// The number of the segment file at `path`.
fn segment_number(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".log")?
        .parse::<u64>()
        .ok()
}

/// The segment files of `dir`, in order.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        match segment_number(&entry.path()) {
            Some(number) => found.push((number, entry.path())),
            None if is_spare(&entry.path()) => {}
            None => {
                tracing::warn!(path = %entry.path().display(), "not a journal segment, left alone")
            }
        }
    }
    found.sort();
    Ok(found)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.log"))
}

fn is_spare(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(SPARE_PREFIX))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Removes the spares a crash left in `dir` (they hold nothing).
fn remove_spares(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_spare(&path) {
            remove_if_present(&path)?;
        }
    }
    Ok(())
}

/// Writes spare number `number` of `len` zero bytes and makes them durable (blocking).
fn prepare_spare(dir: &Path, number: u64, len: u64) -> io::Result<Spare> {
    use std::io::Seek as _;
    let path = dir.join(format!("{SPARE_PREFIX}{number}"));
    let made = (|| {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let zeros = vec![0u8; SPARE_STEP];
        let mut done = 0;
        while done < len {
            let chunk = (len - done).min(SPARE_STEP as u64);
            file.write_all(&zeros[..chunk as usize])?;
            // a step at a time to the disk: the commits beside it wait behind one step, not
            // behind the whole spare
            write_out(&file, done, chunk)?;
            done += chunk;
        }
        // its size and blocks: a commit in it then writes data only
        file.sync_data()?;
        file.rewind()?;
        drop_cached(&file);
        Ok(file)
    })();
    match made {
        Ok(file) => Ok(Spare { path, file }),
        Err(err) => {
            let _ = std::fs::remove_file(&path);
            Err(err)
        }
    }
}

/// Writes `len` bytes of `file` from `offset` to the disk and waits for them
/// (`sync_file_range`: data only, no cache flush).
fn write_out(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a valid open descriptor for the whole call.
    let done = unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, flags) };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops the (clean) cached pages of `file`: direct writes over cached pages evict them first.
fn drop_cached(file: &File) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid open descriptor for the whole call; advice only, failure is harmless.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// The size of the next spare after a segment that held `bytes`: a little more, within bounds.
fn spare_len(bytes: u64) -> u64 {
    (bytes + bytes / 4)
        .next_multiple_of(64 << 10)
        .clamp(MIN_SPARE, SEGMENT_BYTES)
}

/// Segment `number`, made from `spare` when there is one, its name durable before anything
/// in it is.
fn next_segment(dir: &Path, number: u64, spare: Option<Spare>) -> io::Result<File> {
    if let Some(Spare { path, file }) = spare {
        match std::fs::rename(&path, segment_path(dir, number)) {
            Ok(()) => {
                crate::persist::sync_dir(dir)?;
                return Ok(file);
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "a spare journal segment could not be renamed; starting an empty one");
                drop(file);
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    open_segment(dir, number)
}

/// Creates segment `number` and makes its name durable before anything in it is.
fn open_segment(dir: &Path, number: u64) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(segment_path(dir, number))?;
    crate::persist::sync_dir(dir)?;
    Ok(file)
}

/// `syncfs` of the file system holding the open `dir`: every file written there so far is
/// durable, or a write-back error since `dir` was opened is returned.
fn sync_fs(dir: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid open descriptor for the whole call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Replays the segments an earlier run left in `data/.journal` (blocking), whether or not the
/// journal is on now: a crash with it on leaves files that only the journal can repair. The
/// restored files are durable when this returns; the segments stay until
/// [`remove_replayed`], so a crash before the replayed uploads are recorded replays them
/// again.
pub fn replay_leftover(data: &Path, tmp: &Path, store_path: u8) -> io::Result<Replayed> {
    let dir = data.join(JOURNAL_DIR);
    match remove_spares(&dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Replayed::default()),
        result => result?,
    }
    let segments = segments(&dir)?;
    if segments.is_empty() {
        return Ok(Replayed::default());
    }
    let mut replayed = replay(&segments, data, tmp, store_path)?;
    sync_fs(&File::open(data)?)?;
    replayed.segments = segments.into_iter().map(|(_, path)| path).collect();
    Ok(replayed)
}

/// Removes the segments a start replayed, once what they held is recorded (blocking).
pub fn remove_replayed(segments: &[PathBuf]) -> io::Result<()> {
    for path in segments {
        remove_if_present(path)?;
    }
    if let Some(dir) = segments.first().and_then(|path| path.parent()) {
        crate::persist::sync_dir(dir)?;
    }
    Ok(())
}

/// Applies the last entry of every name found in `segments` (blocking).
fn replay(
    segments: &[(u64, PathBuf)],
    data: &Path,
    tmp: &Path,
    store_path: u8,
) -> io::Result<Replayed> {
    let mut summary = Replayed::default();
    // Where the last entry of each name is, not its content: segments kept for long (failed
    // checkpoints) may hold far more than memory.
    let mut last: BTreeMap<String, Last> = BTreeMap::new();
    let mut files = Vec::with_capacity(segments.len());
    for (segment, (_, path)) in segments.iter().enumerate() {
        let file = File::open(path)?;
        let mut reader = BufReader::new(&file);
        let mut at = 0u64;
        while let Some((name, entry)) = read_entry(&mut reader, super::write::SMALL_BODY as usize)?
        {
            summary.entries += 1;
            let content_at = at + (HEAD + FIXED + name.len()) as u64;
            let located = match entry {
                Entry::File {
                    mtime,
                    content,
                    upload,
                } => {
                    at = content_at + content.len() as u64;
                    Last::File {
                        mtime,
                        upload,
                        segment,
                        at: content_at,
                        len: content.len() as u64,
                    }
                }
                Entry::Gone => {
                    at = content_at;
                    Last::Gone
                }
            };
            last.insert(name, located);
        }
        drop(reader);
        files.push(file);
    }
    for (text, entry) in last {
        let name = match LogicalName::parse(&text) {
            Ok(name) if name.store_path() == store_path => name,
            _ => {
                tracing::warn!(name = %text, "journal entry for a name outside this store path, skipped");
                continue;
            }
        };
        let Some((size, crc)) = recorded_content(&name) else {
            tracing::warn!(file = %name, "journal entry for a file that is not an ordinary file, skipped");
            continue;
        };
        let path = data.join(name.data_relative_path());
        match entry {
            Last::File {
                mtime,
                upload,
                segment,
                at,
                len,
            } => {
                use std::os::unix::fs::FileExt as _;
                if len != size {
                    tracing::warn!(file = %name, "journal entry does not match its name, skipped");
                    continue;
                }
                // bounded by `read_entry` (at most SMALL_BODY)
                let mut content = vec![0u8; len as usize];
                files[segment].read_exact_at(&mut content, at)?;
                if crc32fast::hash(&content) != crc {
                    tracing::warn!(file = %name, "journal entry does not match its name, skipped");
                    continue;
                }
                if upload {
                    summary.uploads.push(name.clone());
                }
                if holds(&path, size, crc)? {
                    continue;
                }
                restore(&path, tmp, mtime, &content)?;
                tracing::info!(file = %name, "restored from the journal");
                summary.restored += 1;
            }
            Last::Gone => {
                let sidecar = super::metadata::sidecar_path(&path);
                for gone in [&sidecar, &path] {
                    match std::fs::symlink_metadata(gone) {
                        Ok(meta) if meta.is_file() => {
                            std::fs::remove_file(gone)?;
                            if gone == &path {
                                tracing::info!(file = %name, "deleted again from the journal");
                                summary.removed += 1;
                            }
                        }
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(err) => return Err(err),
                    }
                }
            }
        }
    }
    Ok(summary)
}

/// Whether `path` is a regular file of `size` bytes whose CRC32 is `crc`.
fn holds(path: &Path, size: u64, crc: u32) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == size => {}
        Ok(_) => return Ok(false),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    }
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize() == crc)
}

/// Writes `content` under `path` through a temp file in `tmp` (no sync: the caller syncs the
/// file system once for all of them).
fn restore(path: &Path, tmp: &Path, mtime: u32, content: &[u8]) -> io::Result<()> {
    let staged = tmp.join(format!("journal.{}", std::process::id()));
    {
        let mut file = File::create(&staged)?;
        file.write_all(content)?;
        file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(u64::from(mtime)))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::rename(&staged, path)
}

/// The writer thread: takes everything queued, writes it to the current segment with one
/// `fdatasync`, tells the waiters; seals segments and hands them to the checkpoint thread.
fn write_loop(
    shared: &Shared,
    mut file: BlockAppender,
    mut segment: u64,
    sealed: &mpsc::Sender<Sealed>,
) {
    let mut batch = Vec::new();
    let mut after = AfterCommit::default();
    let mut written = 0u64;
    let mut first_entry = Instant::now();
    loop {
        let (upto, seal, spare) = {
            let mut state = lock(&shared.state);
            loop {
                if !state.queue.is_empty() || state.closed {
                    break;
                }
                if written > 0 && first_entry.elapsed() >= shared.seal_age {
                    break;
                }
                let wait = if written > 0 {
                    shared.seal_age.saturating_sub(first_entry.elapsed())
                } else {
                    Duration::from_secs(3600)
                };
                state = shared
                    .work
                    .wait_timeout(state, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if state.closed && state.queue.is_empty() {
                return;
            }
            std::mem::swap(&mut state.queue, &mut batch);
            std::mem::swap(&mut state.after, &mut after);
            if written == 0 && !batch.is_empty() {
                first_entry = Instant::now();
            }
            let after = written + batch.len() as u64;
            let seal =
                after >= SEGMENT_BYTES || (after > 0 && first_entry.elapsed() >= shared.seal_age);
            let mut spare = None;
            if seal {
                // entries queued from now on belong to the next segment
                state.segment = segment + 1;
                spare = state.spare.take();
            }
            (state.queued, seal, spare)
        };
        if !batch.is_empty() {
            let result = file.append_durably(&batch);
            written += batch.len() as u64;
            shared.stats.commits.fetch_add(1, Ordering::Relaxed);
            batch.clear();
            if let Err(err) = result {
                // their requests fail
                after.0.clear();
                return fail(shared, &err);
            }
            shared.durable.send_modify(|progress| progress.upto = upto);
            for job in after.0.drain(..) {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!(dir = %shared.dir.display(), "a file change after a journal commit panicked");
                }
            }
        }
        if seal {
            match next_segment(&shared.dir, segment + 1, spare) {
                Ok(next) => file = BlockAppender::new(next),
                Err(err) => return fail(shared, &err),
            }
            let _ = sealed.send(Sealed {
                segment,
                bytes: written,
            });
            segment += 1;
            written = 0;
        }
    }
}

/// A journal write failed: the entries waiting fail, and once the changes in flight are done
/// a last checkpoint empties the journal, so that files can be synced on their own from then
/// on. If that checkpoint fails too, the segments stay for the next start.
fn fail(shared: &Shared, err: &io::Error) {
    tracing::error!(dir = %shared.dir.display(), error = %err, "journal write failed; small files on this store path are synced on their own until restart");
    shared.set_mode(Mode::Broken);
    shared
        .durable
        .send_modify(|progress| progress.failed = true);
    if !wait_drained(shared, u64::MAX) {
        return;
    }
    match checkpoint(shared, u64::MAX) {
        Ok(()) => shared.set_mode(Mode::Disabled),
        Err(err) => {
            tracing::error!(dir = %shared.dir.display(), error = %err, "journal checkpoint after the failure failed too: its segments are replayed at the next start; deleting small files here is refused until then")
        }
    }
}

/// Waits until no change journaled in a segment up to `upto` is in flight, then forgets
/// those segments; `false` when the journal closed meanwhile.
fn wait_drained(shared: &Shared, upto: u64) -> bool {
    let mut state = lock(&shared.state);
    while !state.closed
        && state
            .in_flight
            .iter()
            .any(|(&segment, &count)| segment <= upto && count > 0)
    {
        state = shared
            .drained
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
    }
    if state.closed {
        return false;
    }
    state.in_flight.retain(|&segment, _| segment > upto);
    true
}

/// The checkpoint thread: prepares the spare for the next seal; once every file of a sealed
/// segment is written, `syncfs` makes them durable and the segment goes.
fn checkpoint_loop(shared: &Shared, sealed: &mpsc::Receiver<Sealed>) {
    let mut spares = 0;
    let mut refill = |len: u64| {
        if lock(&shared.state).spare.is_some() {
            return;
        }
        spares += 1;
        match prepare_spare(&shared.dir, spares, len) {
            Ok(spare) => {
                let mut state = lock(&shared.state);
                if state.closed {
                    drop(state);
                    drop(spare.file);
                    let _ = std::fs::remove_file(&spare.path);
                } else {
                    state.spare = Some(spare);
                }
            }
            // the writer starts an empty segment instead
            Err(err) => {
                tracing::warn!(dir = %shared.dir.display(), error = %err, "preparing a spare journal segment failed")
            }
        }
    };
    refill(FIRST_SPARE);
    while let Ok(mut last) = sealed.recv() {
        // segments sealed meanwhile ride along
        while let Ok(next) = sealed.try_recv() {
            last = next;
        }
        refill(spare_len(last.bytes));
        let upto = last.segment;
        if !wait_drained(shared, upto) {
            // the last checkpoint is `Journal::close`'s, or the next start's replay
            return;
        }
        if shared.mode() != Mode::Healthy {
            // the writer's failure handling checkpoints (or keeps) everything
            return;
        }
        match checkpoint(shared, upto) {
            Ok(()) => {
                shared.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            // Not retried: a write-back error is reported once, so a later syncfs could
            // succeed although a file of these segments was lost. They stay for the next start.
            Err(err) => {
                shared.set_mode(Mode::Broken);
                tracing::error!(dir = %shared.dir.display(), error = %err, "journal checkpoint failed: its segments are replayed at the next start; small files are synced on their own and deleting small files here is refused until then");
                return;
            }
        }
    }
}

/// Syncs the store path's file system, then removes this run's segments up to `upto`.
fn checkpoint(shared: &Shared, upto: u64) -> io::Result<()> {
    if let Some(CheckpointHook(hook)) = shared.before_checkpoint.get() {
        hook()?;
    }
    sync_fs(&shared.data)?;
    for (number, path) in segments(&shared.dir)? {
        if (shared.first..=upto).contains(&number) {
            remove_if_present(&path)?;
        }
    }
    crate::persist::sync_dir(&shared.dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::store_in;
    use crate::store::NewFile;

    const NEVER: Duration = Duration::from_secs(3600);

    /// Names and contents of ordinary files, made by a store in `dir`.
    async fn uploaded(dir: &Path, contents: &[&[u8]]) -> Vec<LogicalName> {
        let store = store_in(dir, 1, 2).await;
        let mut names = Vec::new();
        for content in contents {
            let req = NewFile {
                store_path: None,
                size: content.len() as u64,
                ext: "jpg",
                appender: false,
            };
            names.push(store.write_new_file(&req, &mut &content[..]).await.unwrap());
        }
        names
    }

    fn open(data: &Path, seal_age: Duration) -> (Journal, Replayed) {
        let tmp = data.join(".tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        Journal::open(data, &tmp, 0, 64 * 1024, seal_age).unwrap()
    }

    fn segment_count(data: &Path) -> usize {
        segments(&data.join(JOURNAL_DIR)).unwrap().len()
    }

    #[test]
    fn entries_read_back_until_a_torn_or_damaged_one() {
        let mut log = Vec::new();
        encode(&mut log, KIND_UPLOAD, "M00/00/01/a", 7, b"first");
        encode(&mut log, KIND_GONE, "M00/00/01/b", 0, b"");
        let whole = log.len();
        encode(&mut log, KIND_COPY, "M00/00/01/c", 9, b"third");
        let read_all = |bytes: &[u8]| {
            let mut reader = bytes;
            let mut out = Vec::new();
            while let Some(entry) = read_entry(&mut reader, 1024).unwrap() {
                out.push(entry);
            }
            out
        };
        let all = read_all(&log);
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0],
            (
                "M00/00/01/a".to_string(),
                Entry::File {
                    mtime: 7,
                    content: b"first".to_vec(),
                    upload: true
                }
            )
        );
        assert_eq!(all[1], ("M00/00/01/b".to_string(), Entry::Gone));
        assert!(matches!(&all[2].1, Entry::File { upload: false, .. }));
        // a crash mid-write: the torn entry and nothing after it
        assert_eq!(read_all(&log[..log.len() - 1]).len(), 2);
        // a damaged byte fails the entry's CRC
        let mut damaged = log.clone();
        damaged[whole + HEAD + 3] ^= 1;
        assert_eq!(read_all(&damaged).len(), 2);
        // a length beyond the bound is refused before anything is allocated
        let mut huge = log[..whole].to_vec();
        huge.extend_from_slice(&MAGIC.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(read_all(&huge).len(), 2);
    }

    proptest::proptest! {
        /// Whatever a crash or a bad disk leaves in a segment, reading it never panics, ends,
        /// and gives back only whole entries exactly as written before the damage.
        #[test]
        fn damaged_segments_read_back_a_prefix_of_what_was_written(
            contents in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), 1..6),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            flip in proptest::prelude::any::<Option<(proptest::sample::Index, u8)>>(),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut log = Vec::new();
            for (i, content) in contents.iter().enumerate() {
                encode(&mut log, KIND_COPY, &format!("M00/00/00/f{i}"), i as u32, content);
            }
            let mut damaged = log[..cut.index(log.len() + 1)].to_vec();
            if let (Some((at, bits)), false) = (flip, damaged.is_empty()) {
                let at = at.index(damaged.len());
                damaged[at] ^= bits | 1;
            }
            damaged.extend_from_slice(&tail);
            let mut reader = &damaged[..];
            let mut read = 0;
            while let Some((name, entry)) = read_entry(&mut reader, 1024).unwrap() {
                proptest::prop_assert!(read < contents.len());
                proptest::prop_assert_eq!(name, format!("M00/00/00/f{read}"));
                proptest::prop_assert_eq!(entry, Entry::File { mtime: read as u32, content: contents[read].clone(), upload: false });
                read += 1;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_restores_lost_and_torn_files_and_deletes_again() {
        let source = tempfile::tempdir().unwrap();
        let contents: [&[u8]; 4] = [b"torn by the crash", b"never linked", b"intact", b"deleted"];
        let names = uploaded(source.path(), &contents).await;
        let [torn, lost, intact, deleted] = &names[..] else {
            unreachable!()
        };

        // the same changes journaled on another disk, which then "crashes"
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let (journal, replayed) = open(&data, NEVER);
        assert_eq!(replayed, Replayed::default());
        let mut pending = Vec::new();
        for (name, content) in names.iter().zip(contents) {
            pending.push(
                journal
                    .append_upload(name, 1_700_000_000, content)
                    .await
                    .unwrap(),
            );
        }
        pending.push(journal.append_gone(deleted).await.unwrap());
        assert_eq!(journal.stats().entries, 5);
        assert!(journal.stats().commits >= 1);
        let path = |name: &LogicalName| data.join(name.data_relative_path());
        for name in [torn, intact, deleted] {
            std::fs::create_dir_all(path(name).parent().unwrap()).unwrap();
        }
        std::fs::write(path(torn), &contents[0][..5]).unwrap();
        std::fs::write(path(intact), contents[2]).unwrap();
        std::fs::write(path(deleted), contents[3]).unwrap();
        std::fs::write(format!("{}-m", path(deleted).display()), b"meta").unwrap();
        drop(pending);
        drop(journal);

        let (journal, replayed) = open(&data, NEVER);
        assert_eq!(replayed.segments.len(), 1);
        assert_eq!(replayed.entries, 5);
        assert_eq!(replayed.restored, 2);
        assert_eq!(replayed.removed, 1);
        let mut uploads = replayed.uploads.clone();
        uploads.sort_by_key(ToString::to_string);
        let mut expected = vec![torn.clone(), lost.clone(), intact.clone()];
        expected.sort_by_key(ToString::to_string);
        assert_eq!(uploads, expected);
        for (name, content) in [
            (torn, contents[0]),
            (lost, contents[1]),
            (intact, contents[2]),
        ] {
            assert_eq!(std::fs::read(path(name)).unwrap(), content);
        }
        let mtime = std::fs::metadata(path(lost)).unwrap().modified().unwrap();
        assert_eq!(
            mtime,
            std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert!(!path(deleted).exists());
        assert!(!Path::new(&format!("{}-m", path(deleted).display())).exists());
        // a checkpoint of this run leaves the replayed segment alone...
        assert!(journal.close(Duration::from_secs(5))().unwrap());
        drop(journal);
        assert!(replayed.segments[0].exists());
        // ... until its uploads are recorded; a start before that replays it again
        let (journal, again) = open(&data, NEVER);
        assert_eq!((again.entries, again.restored), (5, 0));
        remove_replayed(&again.segments).unwrap();
        assert!(journal.close(Duration::from_secs(5))().unwrap());
        drop(journal);
        assert_eq!(open(&data, NEVER).1, Replayed::default());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_entry_of_a_name_wins_across_segments() {
        let source = tempfile::tempdir().unwrap();
        let contents: [&[u8]; 3] = [b"deleted later", b"second of the first", b"a peer's copy"];
        let names = uploaded(source.path(), &contents).await;
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let dir = data.join(JOURNAL_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(data.join(".tmp")).unwrap();
        let name = |i: usize| names[i].to_string();
        let mut first = Vec::new();
        encode(&mut first, KIND_UPLOAD, &name(0), 5, contents[0]);
        encode(&mut first, KIND_UPLOAD, &name(1), 6, contents[1]);
        let mut second = Vec::new();
        encode(&mut second, KIND_GONE, &name(0), 0, b"");
        encode(&mut second, KIND_COPY, &name(2), 7, contents[2]);
        std::fs::write(segment_path(&dir, 1), &first).unwrap();
        std::fs::write(segment_path(&dir, 2), &second).unwrap();
        let path = |i: usize| data.join(names[i].data_relative_path());
        std::fs::create_dir_all(path(0).parent().unwrap()).unwrap();
        std::fs::write(path(0), contents[0]).unwrap();

        let replayed = replay_leftover(&data, &data.join(".tmp"), 0).unwrap();
        assert_eq!(replayed.entries, 4);
        assert_eq!((replayed.restored, replayed.removed), (2, 1));
        assert_eq!(replayed.uploads, vec![names[1].clone()]);
        assert_eq!(replayed.segments.len(), 2);
        assert!(!path(0).exists());
        assert_eq!(std::fs::read(path(1)).unwrap(), contents[1]);
        assert_eq!(std::fs::read(path(2)).unwrap(), contents[2]);
        let mtime = std::fs::metadata(path(2)).unwrap().modified().unwrap();
        assert_eq!(mtime, std::time::UNIX_EPOCH + Duration::from_secs(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_with_the_journal_off_still_replays_it() {
        let source = tempfile::tempdir().unwrap();
        let names = uploaded(source.path(), &[b"lost at the crash"]).await;
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let (journal, _) = open(&data, NEVER);
        drop(
            journal
                .append_upload(&names[0], 1, b"lost at the crash")
                .await
                .unwrap(),
        );
        drop(journal);
        let replayed = replay_leftover(&data, &data.join(".tmp"), 0).unwrap();
        assert_eq!(replayed.restored, 1);
        assert_eq!(
            std::fs::read(data.join(names[0].data_relative_path())).unwrap(),
            b"lost at the crash"
        );
        remove_replayed(&replayed.segments).unwrap();
        assert_eq!(
            replay_leftover(&data, &data.join(".tmp"), 0).unwrap(),
            Replayed::default()
        );
        // no journal directory at all: nothing to do, nothing created
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            replay_leftover(empty.path(), empty.path(), 0).unwrap(),
            Replayed::default()
        );
        assert!(!empty.path().join(JOURNAL_DIR).exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failure_files_are_synced_on_their_own() {
        let source = tempfile::tempdir().unwrap();
        let names = uploaded(source.path(), &[b"small"]).await;
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let (journal, _) = open(&data, NEVER);
        assert!(journal.takes(5) && journal.may_hold(&names[0]));
        // broken: segments kept, so deletes of files they may restore must be refused
        journal.shared.set_mode(Mode::Broken);
        assert!(!journal.takes(5));
        assert!(journal.may_hold(&names[0]));
        assert!(journal.append_gone(&names[0]).await.is_err());
        // disabled: nothing left to replay, files and deletes go on without it
        journal.shared.set_mode(Mode::Disabled);
        assert!(!journal.takes(5) && !journal.may_hold(&names[0]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sealed_segment_goes_once_its_files_are_written() {
        let source = tempfile::tempdir().unwrap();
        let names = uploaded(source.path(), &[b"one", b"two"]).await;
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let (journal, _) = open(&data, Duration::from_millis(20));
        let first = journal.append_upload(&names[0], 1, b"one").await.unwrap();
        // the next entries land in later segments once the first is sealed
        let deadline = Instant::now() + Duration::from_secs(30);
        while segment_count(&data) < 2 {
            assert!(
                Instant::now() < deadline,
                "the first segment was never sealed"
            );
            drop(journal.append_upload(&names[1], 1, b"two").await.unwrap());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // the first file is still being written: its segment stays
        assert!(data
            .join(JOURNAL_DIR)
            .join(format!("{:016}.log", 1))
            .exists());
        assert_eq!(journal.stats().checkpoints, 0);
        drop(first);
        while journal.stats().checkpoints == 0 || segment_path(&data.join(JOURNAL_DIR), 1).exists()
        {
            assert!(
                Instant::now() < deadline,
                "no checkpoint after the file was written"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_runs_its_hook_first_and_keeps_the_segments_when_it_fails() {
        let source = tempfile::tempdir().unwrap();
        let names = uploaded(source.path(), &[b"hooked"]).await;
        for hook_fails in [false, true] {
            let disk = tempfile::tempdir().unwrap();
            let data = disk.path().join("data");
            let (journal, _) = open(&data, NEVER);
            let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (seen, dir) = (calls.clone(), data.join(JOURNAL_DIR));
            journal.before_checkpoint(Arc::new(move || {
                // before the segment goes: what it would replay is still there
                assert!(segment_path(&dir, 1).exists());
                seen.fetch_add(1, Ordering::SeqCst);
                match hook_fails {
                    false => Ok(()),
                    true => Err(io::Error::other("binlog failed")),
                }
            }));
            drop(
                journal
                    .append_upload(&names[0], 1, b"hooked")
                    .await
                    .unwrap(),
            );
            let closed = journal.close(Duration::from_secs(5))();
            assert_eq!(calls.load(Ordering::SeqCst), 1, "fails {hook_fails}");
            assert_eq!(closed.is_err(), hook_fails);
            drop(journal);
            // a failed hook keeps the entry for the next start
            let (_, replayed) = open(&data, NEVER);
            assert_eq!(
                replayed.entries,
                usize::from(hook_fails),
                "fails {hook_fails}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_changes_the_file_once_its_entry_is_durable_even_for_a_gone_request() {
        let source = tempfile::tempdir().unwrap();
        let names = uploaded(source.path(), &[b"first", b"second"]).await;
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let (journal, _) = open(&data, NEVER);
        let segment = segment_path(&data.join(JOURNAL_DIR), 1);
        let entry_len = |path: &Path| std::fs::metadata(path).unwrap().len();
        let (pending, (len, content)) = journal
            .append_file_then(
                Origin::Upload,
                &names[0],
                1,
                b"first".to_vec(),
                move |content| (entry_len(&segment), content),
            )
            .await
            .unwrap();
        // run after the entry was written, and handed the content
        assert!(len > 5, "segment holds {len} bytes");
        assert_eq!(content, b"first");
        drop(pending);

        // a request that stops waiting: the change still runs, and the stop waits for it
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let request = journal.append_file_then(
            Origin::Upload,
            &names[1],
            1,
            b"second".to_vec(),
            move |_| {
                std::thread::sleep(Duration::from_millis(50));
                flag.store(true, Ordering::SeqCst);
            },
        );
        // polled once (queued), then dropped
        assert!(tokio::time::timeout(Duration::ZERO, request).await.is_err());
        assert!(journal.close(Duration::from_secs(10))().unwrap());
        assert!(
            ran.load(Ordering::SeqCst),
            "the stop did not wait for the change"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clean_stop_leaves_nothing_to_replay() {
        let source = tempfile::tempdir().unwrap();
        let names = uploaded(source.path(), &[b"kept"]).await;
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let (journal, _) = open(&data, NEVER);
        let pending = journal.append_upload(&names[0], 1, b"kept").await.unwrap();
        // a change still in flight holds the stop back, up to the grace
        assert!(!journal.close(Duration::from_millis(10))().unwrap());
        drop(pending);
        assert!(journal.close(Duration::from_secs(5))().unwrap());
        assert_eq!(segment_count(&data), 0);
        // closed: no more entries
        assert!(journal.append_upload(&names[0], 1, b"kept").await.is_err());
        drop(journal);
        assert_eq!(open(&data, NEVER).1, Replayed::default());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clean_stop_leaves_no_spare_behind() {
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let (journal, _) = open(&data, NEVER);
        // the first spare is being prepared, or ready: either way the stop removes it
        assert!(journal.close(Duration::from_secs(5))().unwrap());
        let left: Vec<_> = std::fs::read_dir(data.join(JOURNAL_DIR))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn a_start_removes_the_spares_a_crash_left() {
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let dir = data.join(JOURNAL_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{SPARE_PREFIX}3")), vec![0u8; 4096]).unwrap();
        let (journal, replayed) = open(&data, NEVER);
        assert_eq!(replayed, Replayed::default());
        assert!(!dir.join(format!("{SPARE_PREFIX}3")).exists());
        drop(journal);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_made_from_a_spare_replays_up_to_its_zeros() {
        // 60 KiB entries without a zero byte: a segment sealed by size (8 MiB) after ~140 of
        // them, and only a spare's tail is zeros
        let contents: Vec<Vec<u8>> = (0..300usize)
            .map(|i| {
                (0..60 * 1024)
                    .map(|j| 1 + ((i * 31 + j * 7) % 255) as u8)
                    .collect()
            })
            .collect();
        let source = tempfile::tempdir().unwrap();
        let slices: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
        let names = uploaded(source.path(), &slices).await;
        let disk = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let dir = data.join(JOURNAL_DIR);
        let (journal, _) = open(&data, NEVER);
        // entries kept in flight: no checkpoint removes their segments
        let mut pending = Vec::new();
        let mut next = 0;
        let from_spare = |dir: &Path| {
            segments(dir).unwrap().iter().any(|(number, path)| {
                let bytes = std::fs::read(path).unwrap();
                *number > 1
                    && bytes.len() as u64 >= MIN_SPARE
                    && bytes[bytes.len() - 4096..].iter().all(|&b| b == 0)
            })
        };
        while !(from_spare(&dir) && segment_count(&data) >= 2) {
            assert!(next < names.len(), "no segment was made from a spare");
            pending.push(
                journal
                    .append_upload(&names[next], 1, &contents[next])
                    .await
                    .unwrap(),
            );
            next += 1;
        }
        // a crash now: what the disk holds, zero-filled tails and all
        let image = tempfile::tempdir().unwrap();
        let copy = image.path().join("data");
        std::fs::create_dir_all(copy.join(JOURNAL_DIR)).unwrap();
        for (_, path) in segments(&dir).unwrap() {
            std::fs::copy(
                &path,
                copy.join(JOURNAL_DIR).join(path.file_name().unwrap()),
            )
            .unwrap();
        }
        let (_, replayed) = open(&copy, NEVER);
        assert_eq!(replayed.entries, next);
        assert_eq!(replayed.restored, next);
        for (name, content) in names.iter().zip(&contents).take(next) {
            assert_eq!(
                std::fs::read(copy.join(name.data_relative_path())).unwrap(),
                *content
            );
        }
        drop(pending);
        drop(journal);
    }

    #[test]
    fn spares_are_sized_after_the_last_segment() {
        assert_eq!(spare_len(0), MIN_SPARE);
        assert_eq!(spare_len(1 << 20), (1 << 20) + (256 << 10));
        assert_eq!(spare_len(100 << 20), SEGMENT_BYTES);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_journals_small_ordinary_files_and_their_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 2).await;
        let entries = || store.journal_stats()[0].unwrap().entries;
        let small = NewFile {
            store_path: None,
            size: 5,
            ext: "txt",
            appender: false,
        };
        let name = store
            .write_new_file(&small, &mut &b"small"[..])
            .await
            .unwrap();
        assert_eq!(entries(), 1);
        assert_eq!(
            std::fs::read(store.resolve(&name).unwrap()).unwrap(),
            b"small"
        );
        // appenders change, and big files are synced on their own
        let appender = NewFile {
            appender: true,
            ..small
        };
        store
            .write_new_file(&appender, &mut &b"small"[..])
            .await
            .unwrap();
        let big = vec![1u8; 100 * 1024];
        let big_req = NewFile {
            size: big.len() as u64,
            ..small
        };
        store.write_new_file(&big_req, &mut &big[..]).await.unwrap();
        assert_eq!(entries(), 1);
        store.delete(&name).await.unwrap();
        assert_eq!(entries(), 2);
        assert!(!store.resolve(&name).unwrap().exists());
    }
}
