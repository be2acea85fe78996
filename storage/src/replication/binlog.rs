//! The binlog: an append-only sequence of [`Record`]s in `<base_path>/data/sync/binlog.NNN`
//! (a new file every `rotate_size` bytes), written by one thread with group commit.
//!
//! A change is acknowledged to its client only once its record is durable: callers
//! [`Binlog::append`] and wait; the writer thread takes every record queued meanwhile, writes
//! them in one go and fsyncs once for all of them. A new file made durable by its store path's
//! journal is the exception ([`Binlog::append_lazy`]): a crash that loses its record leaves
//! the journal entry, whose replay records the file again, so nobody waits for the record and
//! the writer lets such records gather for up to [`LAZY_DELAY`] before one fsync takes them
//! all; the journal's checkpoint makes them durable first ([`Binlog::sync_queued`]). Without fsync (`fsync = false`) there is
//! nothing to share and nothing to wait for: the caller writes its record itself, which
//! spares two thread hand-offs per change. On start the last file is scanned and a
//! torn tail (a record cut short by a crash, or garbage after the last good record) is cut
//! off, so readers never see a partial record.
//!
//! [`Ticket`]s make the records' watermarks honest: a change takes a ticket (stamped with the
//! clock) before it touches the disk, so a record's watermark can be the oldest ticket still
//! open, below which no later record's file can be.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::record::{Op, Record, RecordError, MAX_LINE};

/// Size at which a new binlog file is started (L.1).
pub const DEFAULT_ROTATE_SIZE: u64 = 1 << 30;

/// How long records nobody waits for ([`Binlog::append_lazy`]) may gather before they are
/// written and synced. Readers see a record once it is durable, so this is added to the
/// replication lag of such a file, at most; under load it turns one fsync per record into one
/// per this interval.
pub const LAZY_DELAY: Duration = Duration::from_millis(5);

/// A place in the binlog: file index and byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub index: u32,
    pub offset: u64,
}

/// What is durable so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Just after the last durable record.
    pub end: Position,
    /// Sequence number of the last durable record (0 = none yet).
    pub seq: u64,
    /// Set once a write failed: nothing more is accepted until a restart.
    pub failed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error("binlog i/o: {0}")]
    Io(#[from] io::Error),
    #[error("binlog writes failed earlier; restart the storage")]
    Failed,
}

pub fn file_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("binlog.{index:03}"))
}

fn unix_now() -> u32 {
    crate::clock::unix_now_u32()
}

/// Open tickets: (timestamp, id).
#[derive(Debug, Default)]
struct Tickets {
    open: BTreeSet<(u32, u64)>,
    next_id: u64,
}

/// What the writer thread is asked to do.
#[derive(Debug)]
enum Job {
    /// Write a record; `lazy`: nobody waits for it to be durable.
    Record { seq: u64, line: Vec<u8>, lazy: bool },
    /// Answer once every record queued before is durable (`false`: a write failed).
    Barrier(mpsc::SyncSender<bool>),
}

/// A record not yet visible to readers: durable once `end` is known, released once the
/// change it describes is complete.
#[derive(Debug, Default)]
struct Unpublished {
    end: Option<Position>,
    released: bool,
}

/// Where records go.
#[derive(Debug)]
enum Sink {
    /// To the writer thread (fsync on: group commit), unparked for a job somebody waits for
    /// (a lazy record does not wake it while it gathers a batch).
    Thread(mpsc::Sender<Job>, std::thread::Thread),
    /// Written by the caller, under the lock (fsync off).
    Inline(Tail),
    /// Closed, or a write failed: nothing more is accepted.
    Closed,
}

#[derive(Debug)]
struct Inner {
    tickets: Tickets,
    next_seq: u64,
    sink: Sink,
    unpublished: BTreeMap<u64, Unpublished>,
}

/// The writing side, shared by every command handler.
///
/// Two positions move forward: *durable* (written and fsynced; what [`Binlog::append`] waits
/// for) and *published* (what readers may replay). A record is published once it is durable
/// **and** its change is complete ([`Release`] dropped), and only after every record before
/// it: a record written before its change (a new file is recorded before it appears under
/// its name) must not be replayed while the change is still under way.
#[derive(Debug)]
pub struct Binlog {
    dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
    durable: watch::Sender<Committed>,
    published: Arc<watch::Sender<Committed>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Taken before a change touches the disk; consumed by [`Binlog::append`]. Dropping it (the
/// change failed) releases it.
#[derive(Debug)]
pub struct Ticket {
    key: Option<(u32, u64)>,
    inner: Arc<Mutex<Inner>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.tickets.open.remove(&key);
        }
    }
}

/// Held while the change a record describes is being made; dropping it lets readers see the
/// record.
#[derive(Debug)]
pub struct Release {
    seq: u64,
    inner: Arc<Mutex<Inner>>,
    published: Arc<watch::Sender<Committed>>,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = inner.unpublished.get_mut(&self.seq) {
            entry.released = true;
        }
        publish(&mut inner, &self.published);
    }
}

/// Moves the published position over every leading record that is durable and released.
fn publish(inner: &mut Inner, published: &watch::Sender<Committed>) {
    let mut last = None;
    while let Some(entry) = inner.unpublished.first_entry() {
        match entry.get() {
            Unpublished {
                end: Some(end),
                released: true,
            } => {
                last = Some((*entry.key(), *end));
                entry.remove();
            }
            _ => break,
        }
    }
    if let Some((seq, end)) = last {
        published.send_modify(|c| {
            c.seq = seq;
            c.end = end;
        });
    }
}

impl Binlog {
    /// Opens (or creates) the binlog in `dir`, cutting off a torn tail, and starts the writer.
    pub fn open(dir: &Path, fsync: bool, rotate_size: u64) -> io::Result<Binlog> {
        std::fs::create_dir_all(dir)?;
        let (index, offset, last_seq) = recover(dir)?;
        let tail = Tail {
            dir: dir.to_path_buf(),
            index,
            offset,
            fsync,
            rotate_size,
            file: None,
        };
        let start = Committed {
            end: Position { index, offset },
            seq: last_seq,
            failed: false,
        };
        let durable = watch::Sender::new(start);
        let published = Arc::new(watch::Sender::new(start));
        let inner = Arc::new(Mutex::new(Inner {
            tickets: Tickets::default(),
            next_seq: last_seq + 1,
            sink: Sink::Closed,
            unpublished: BTreeMap::new(),
        }));
        let writer = if fsync {
            let (tx, rx) = mpsc::channel::<Job>();
            let writer = Writer {
                tail,
                durable: durable.clone(),
                published: published.clone(),
                inner: inner.clone(),
            };
            let handle = std::thread::Builder::new()
                .name("binlog-writer".into())
                .spawn(move || writer.run(rx))?;
            inner.lock().unwrap_or_else(|e| e.into_inner()).sink =
                Sink::Thread(tx, handle.thread().clone());
            Some(handle)
        } else {
            inner.lock().unwrap_or_else(|e| e.into_inner()).sink = Sink::Inline(tail);
            None
        };
        Ok(Binlog {
            dir: dir.to_path_buf(),
            inner,
            durable,
            published,
            writer: Mutex::new(writer),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes a ticket stamped now.
    pub fn ticket(&self) -> Ticket {
        let mut inner = self.lock();
        let id = inner.tickets.next_id;
        inner.tickets.next_id += 1;
        let key = (unix_now(), id);
        inner.tickets.open.insert(key);
        Ticket {
            key: Some(key),
            inner: self.inner.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record for `op` (at `timestamp`) and waits until it is durable. Readers see
    /// it once the returned [`Release`] is dropped too.
    pub async fn append(
        &self,
        ticket: Ticket,
        timestamp: u32,
        op: Op,
    ) -> Result<(Record, Release), BinlogError> {
        self.append_with(ticket, timestamp, op, false).await
    }

    /// [`Binlog::append`] without waiting until the record is durable, for a change that is
    /// durable by other means which also make sure it is recorded after a crash (a new file's
    /// journal entry: its replay records the file again). The record becomes durable within
    /// [`LAZY_DELAY`], with the next record somebody waits for, or at [`Binlog::sync_queued`];
    /// readers see it only then.
    pub async fn append_lazy(
        &self,
        ticket: Ticket,
        timestamp: u32,
        op: Op,
    ) -> Result<(Record, Release), BinlogError> {
        self.append_with(ticket, timestamp, op, true).await
    }

    async fn append_with(
        &self,
        mut ticket: Ticket,
        timestamp: u32,
        op: Op,
        lazy: bool,
    ) -> Result<(Record, Release), BinlogError> {
        let mut durable = self.durable.subscribe();
        let (record, release) = {
            let mut inner = self.lock();
            if let Some(key) = ticket.key.take() {
                inner.tickets.open.remove(&key);
            }
            let now = unix_now();
            let watermark = inner
                .tickets
                .open
                .first()
                .map_or(now, |(ts, _)| (*ts).min(now));
            let record = Record {
                seq: inner.next_seq,
                timestamp,
                watermark,
                op,
            };
            let line = record.encode().into_bytes();
            let end = match &mut inner.sink {
                Sink::Thread(queue, writer) => {
                    queue
                        .send(Job::Record {
                            seq: record.seq,
                            line,
                            lazy,
                        })
                        .map_err(|_| BinlogError::Failed)?;
                    if !lazy {
                        writer.unpark();
                    }
                    None
                }
                Sink::Inline(tail) => match tail.write(&line) {
                    Ok(start) => Some(Position {
                        index: start.index,
                        offset: start.offset + line.len() as u64,
                    }),
                    Err(err) => {
                        error!(error = %err, "cannot write the binlog; changes are refused until a restart");
                        inner.sink = Sink::Closed;
                        self.durable.send_modify(|c| c.failed = true);
                        return Err(BinlogError::Io(err));
                    }
                },
                Sink::Closed => return Err(BinlogError::Failed),
            };
            inner.next_seq += 1;
            inner.unpublished.insert(
                record.seq,
                Unpublished {
                    end,
                    released: false,
                },
            );
            if let Some(end) = end {
                // written (the caller's own write); nothing to wait for
                self.durable.send_replace(Committed {
                    end,
                    seq: record.seq,
                    failed: false,
                });
            }
            let release = Release {
                seq: record.seq,
                inner: self.inner.clone(),
                published: self.published.clone(),
            };
            (record, release)
        };
        let seq = record.seq;
        if lazy {
            return Ok((record, release));
        }
        let state = durable
            .wait_for(|c| c.seq >= seq || c.failed)
            .await
            .map_err(|_| BinlogError::Failed)?;
        if state.seq >= seq {
            Ok((record, release))
        } else {
            Err(BinlogError::Failed)
        }
    }

    /// Blocks until every record appended so far is durable (lazy ones too); an error when a
    /// write failed, or the binlog closed with records it did not make durable.
    pub fn sync_queued(&self) -> io::Result<()> {
        let failed = || io::Error::other("the binlog failed: records may be lost");
        let reply = {
            let inner = self.lock();
            match &inner.sink {
                Sink::Thread(queue, writer) => {
                    let (reply, answer) = mpsc::sync_channel(1);
                    queue.send(Job::Barrier(reply)).map_err(|_| failed())?;
                    writer.unpark();
                    Some(answer)
                }
                // written by the callers themselves (fsync off): nothing is queued
                Sink::Inline(_) => None,
                // closed: the writer made everything durable before it stopped, unless it failed
                Sink::Closed => {
                    let durable = *self.durable.borrow();
                    if durable.failed || durable.seq + 1 < inner.next_seq {
                        return Err(failed());
                    }
                    None
                }
            }
        };
        match reply.map(|answer| answer.recv()) {
            None | Some(Ok(true)) => Ok(()),
            Some(_) => Err(failed()),
        }
    }

    /// What readers may replay now; subscribe to follow it.
    pub fn committed(&self) -> Committed {
        *self.published.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        self.published.subscribe()
    }

    /// A watermark valid for everything written so far: every file created with an mtime
    /// below it has a record with a sequence number at most the returned one.
    pub fn watermark_now(&self) -> (u32, u64) {
        let inner = self.lock();
        let now = unix_now();
        let watermark = inner
            .tickets
            .open
            .first()
            .map_or(now, |(ts, _)| (*ts).min(now));
        (watermark, inner.next_seq - 1)
    }

    /// Stops the writer after it has written what was queued.
    pub fn close(&self) {
        self.lock().sink = Sink::Closed;
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            // a batch of lazy records still gathering is written at once
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

impl Drop for Binlog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The binlog file records are appended to.
#[derive(Debug)]
struct Tail {
    dir: PathBuf,
    index: u32,
    /// Just after the last record written.
    offset: u64,
    fsync: bool,
    rotate_size: u64,
    file: Option<File>,
}

impl Tail {
    /// Writes `batch` (whole records) at the end — in a new file when the current one is
    /// full — and syncs it when configured; returns where the batch starts.
    fn write(&mut self, batch: &[u8]) -> io::Result<Position> {
        if self.offset >= self.rotate_size && self.offset > 0 {
            self.index += 1;
            self.offset = 0;
            self.file = None;
            info!(index = self.index, "starting a new binlog file");
        }
        if self.file.is_none() {
            let opened = OpenOptions::new()
                .create(true)
                .append(true)
                .open(file_path(&self.dir, self.index))?;
            if self.fsync && self.offset == 0 {
                crate::persist::sync_dir(&self.dir)?;
            }
            self.file = Some(opened);
        }
        let out = self.file.as_mut().expect("opened above");
        out.write_all(batch)?;
        if self.fsync {
            out.sync_data()?;
        }
        let start = Position {
            index: self.index,
            offset: self.offset,
        };
        self.offset += batch.len() as u64;
        Ok(start)
    }
}

/// The writer thread's state.
struct Writer {
    tail: Tail,
    durable: watch::Sender<Committed>,
    published: Arc<watch::Sender<Committed>>,
    inner: Arc<Mutex<Inner>>,
}

/// Records the writer takes at once, and the barriers answered after them.
#[derive(Default)]
struct Batch {
    /// (seq, line) of every record.
    records: Vec<(u64, Vec<u8>)>,
    bytes: usize,
    barriers: Vec<mpsc::SyncSender<bool>>,
    /// Some record or barrier has somebody waiting.
    urgent: bool,
}

impl Batch {
    fn add(&mut self, job: Job) {
        match job {
            Job::Record { seq, line, lazy } => {
                self.bytes += line.len();
                self.urgent |= !lazy;
                self.records.push((seq, line));
            }
            Job::Barrier(reply) => {
                self.urgent = true;
                self.barriers.push(reply);
            }
        }
    }
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        // larger batches are split so one group commit stays bounded
        const MAX_BATCH: usize = 1 << 20;
        let mut buf = Vec::new();
        while let Ok(first) = queue.recv() {
            let mut batch = Batch::default();
            batch.add(first);
            while batch.bytes < MAX_BATCH {
                match queue.try_recv() {
                    Ok(more) => batch.add(more),
                    Err(_) => break,
                }
            }
            if !batch.urgent {
                // nobody waits: let more records share the fsync, until somebody does (parked,
                // not blocked on the queue, so each lazy record does not wake the thread)
                let deadline = Instant::now() + LAZY_DELAY;
                loop {
                    while let Ok(more) = queue.try_recv() {
                        batch.add(more);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if batch.urgent || batch.bytes >= MAX_BATCH || left.is_zero() {
                        break;
                    }
                    std::thread::park_timeout(left);
                }
            }
            if !batch.records.is_empty() && !self.write(&mut buf, &batch.records) {
                // later appends are refused at once (dropping the sender ends the drain);
                // barriers queued meanwhile hear of it when their reply is dropped
                while queue.recv().is_ok() {}
                return;
            }
            for reply in batch.barriers {
                let _ = reply.send(true);
            }
        }
    }

    /// Writes and syncs `records`, then lets their callers and readers go on; `false` when
    /// that failed (the binlog then takes nothing more).
    fn write(&mut self, buf: &mut Vec<u8>, records: &[(u64, Vec<u8>)]) -> bool {
        buf.clear();
        for (_, line) in records {
            buf.extend_from_slice(line);
        }
        match self.tail.write(buf) {
            Ok(start) => {
                let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                let mut end = start;
                for (seq, line) in records {
                    end.offset += line.len() as u64;
                    if let Some(entry) = inner.unpublished.get_mut(seq) {
                        entry.end = Some(end);
                    }
                }
                let last = records.last().map_or(0, |(seq, _)| *seq);
                self.durable.send_replace(Committed {
                    end,
                    seq: last,
                    failed: false,
                });
                publish(&mut inner, &self.published);
                true
            }
            Err(err) => {
                error!(error = %err, "cannot write the binlog; changes are refused until a restart");
                self.inner.lock().unwrap_or_else(|e| e.into_inner()).sink = Sink::Closed;
                self.durable.send_modify(|c| c.failed = true);
                false
            }
        }
    }
}

/// Finds the last binlog file, cuts a torn tail off it and returns (index, size, last seq).
/// Indexes of the binlog files in `dir`, oldest first.
fn binlog_indexes(dir: &Path) -> io::Result<Vec<u32>> {
    let mut indexes: Vec<u32> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let digits = name.strip_prefix("binlog.")?;
            (digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect();
    indexes.sort_unstable();
    Ok(indexes)
}

fn recover(dir: &Path) -> io::Result<(u32, u64, u64)> {
    let indexes = binlog_indexes(dir)?;
    let Some(&last) = indexes.last() else {
        return Ok((0, 0, 0));
    };
    let (valid_end, last_seq) = scan(&file_path(dir, last))?;
    let path = file_path(dir, last);
    let len = std::fs::metadata(&path)?.len();
    if valid_end < len {
        warn!(
            file = %path.display(),
            dropped_bytes = len - valid_end,
            "binlog ends with a torn record, cutting it off"
        );
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(valid_end)?;
        file.sync_all()?;
    }
    let last_seq = match last_seq {
        Some(seq) => seq,
        // an empty newest file: the sequence goes on from the files before it
        None => indexes
            .iter()
            .rev()
            .skip(1)
            .find_map(|&i| scan(&file_path(dir, i)).ok().and_then(|(_, seq)| seq))
            .unwrap_or(0),
    };
    Ok((last, valid_end, last_seq))
}

/// Changes a crash may have interrupted, from the newest `tail` bytes of the binlog.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// Names whose last record is a delete. A delete is recorded before it is done, so a
    /// crash in between leaves such a name on disk here while the peers delete it.
    pub deletes: Vec<String>,
    /// `(new, old)` of renames that are the last record of both names. A rename is recorded
    /// before the new name appears and the old one goes, so a crash in between can leave both.
    pub renames: Vec<(String, String)>,
}

/// Reads the changes the start-up must finish (the client never heard back about them).
/// Changes in flight at a crash sit at the very end of the binlog: a short tail covers them.
pub fn tail_unfinished(dir: &Path, tail: u64) -> io::Result<Unfinished> {
    let Some(last) = binlog_indexes(dir)?.last().copied() else {
        return Ok(Unfinished::default());
    };
    let mut file = File::open(file_path(dir, last))?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(tail);
    file.seek(io::SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(tail).read_to_end(&mut bytes)?;
    // a tail that starts inside a record: skip to the next whole one
    let whole = if start > 0 {
        bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&bytes[..0], |at| &bytes[at + 1..])
    } else {
        &bytes[..]
    };
    #[derive(PartialEq)]
    enum Last {
        Delete,
        RenamedTo(String),
        RenamedFrom(String),
        Other,
    }
    let mut last: BTreeMap<String, Last> = BTreeMap::new();
    for line in whole.split_inclusive(|&b| b == b'\n') {
        let Ok(record) = Record::decode(line) else {
            continue;
        };
        match record.op {
            Op::Delete { name } => {
                last.insert(name, Last::Delete);
            }
            Op::Rename { name, old } => {
                last.insert(old.clone(), Last::RenamedTo(name.clone()));
                last.insert(name, Last::RenamedFrom(old));
            }
            op => {
                last.insert(op.name().to_string(), Last::Other);
            }
        }
    }
    let mut unfinished = Unfinished::default();
    for (name, change) in &last {
        match change {
            Last::Delete => unfinished.deletes.push(name.clone()),
            Last::RenamedFrom(old) if last.get(old) == Some(&Last::RenamedTo(name.clone())) => {
                unfinished.renames.push((name.clone(), old.clone()))
            }
            _ => {}
        }
    }
    Ok(unfinished)
}

/// Reads a whole binlog file; returns the end of its last valid record and that record's
/// sequence number. Bad records followed by good ones are damage in the middle: reported and
/// kept (readers skip them); bad bytes after the last good record are a torn tail.
fn scan(path: &Path) -> io::Result<(u64, Option<u64>)> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut offset = 0u64;
    let mut valid_end = 0u64;
    let mut last_seq = None;
    let mut damaged = 0usize;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = read_line(&mut reader, &mut line)?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        match Record::decode(&line) {
            Ok(record) => {
                if valid_end < offset - n as u64 {
                    damaged += 1;
                }
                valid_end = offset;
                last_seq = Some(record.seq);
            }
            Err(RecordError::Unterminated) => break,
            Err(_) => {}
        }
    }
    if damaged > 0 {
        error!(file = %path.display(), damaged, "binlog has damaged records in the middle; they are skipped");
    }
    Ok((valid_end, last_seq))
}

/// Reads one line (newline included) of at most [`MAX_LINE`] + 1 bytes, skipping the rest of
/// a longer one; returns the bytes consumed.
fn read_line<R: BufRead>(reader: &mut R, line: &mut Vec<u8>) -> io::Result<usize> {
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', line)?;
    if n > MAX_LINE && !line.ends_with(b"\n") {
        let mut skipped = 0;
        let mut sink = Vec::new();
        loop {
            sink.clear();
            let m = reader
                .by_ref()
                .take(64 * 1024)
                .read_until(b'\n', &mut sink)?;
            skipped += m;
            if m == 0 || sink.ends_with(b"\n") {
                break;
            }
        }
        return Ok(n + skipped);
    }
    Ok(n)
}

/// Reads records in order from a position, never past what is durable.
#[derive(Debug)]
pub struct BinlogReader {
    dir: PathBuf,
    pos: Position,
    file: Option<tokio::io::BufReader<tokio::fs::File>>,
}

impl BinlogReader {
    pub fn new(dir: &Path, pos: Position) -> Self {
        BinlogReader {
            dir: dir.to_path_buf(),
            pos,
            file: None,
        }
    }

    /// The position of the next record to read.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The next record before `end` and the position after it; `None` when `end` is reached.
    /// Damaged records are logged and skipped.
    pub async fn next(&mut self, end: Position) -> io::Result<Option<(Record, Position)>> {
        let mut line = Vec::with_capacity(256);
        loop {
            if self.pos >= end {
                return Ok(None);
            }
            if self.file.is_none() {
                let path = file_path(&self.dir, self.pos.index);
                let mut file = match tokio::fs::File::open(&path).await {
                    Ok(file) => file,
                    Err(err)
                        if err.kind() == io::ErrorKind::NotFound && self.pos.index < end.index =>
                    {
                        // a gap in the numbering (files removed by hand): go on with the next
                        warn!(file = %path.display(), "binlog file missing, skipping it");
                        self.pos = Position {
                            index: self.pos.index + 1,
                            offset: 0,
                        };
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                file.seek(SeekFrom::Start(self.pos.offset)).await?;
                self.file = Some(tokio::io::BufReader::new(file));
            }
            let reader = self.file.as_mut().expect("opened above");
            line.clear();
            let n = reader
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                if self.pos.index < end.index {
                    self.pos = Position {
                        index: self.pos.index + 1,
                        offset: 0,
                    };
                    self.file = None;
                    continue;
                }
                // durable data missing from the file: it was cut behind our back
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("binlog ends before {:?}", end),
                ));
            }
            let start = self.pos;
            if n > MAX_LINE && !line.ends_with(b"\n") {
                // skip the rest of an overlong line
                let mut skipped = 0u64;
                loop {
                    let mut sink = Vec::new();
                    let m = reader.take(64 * 1024).read_until(b'\n', &mut sink).await?;
                    skipped += m as u64;
                    if m == 0 || sink.ends_with(b"\n") {
                        break;
                    }
                }
                self.pos.offset += n as u64 + skipped;
                warn!(
                    index = start.index,
                    offset = start.offset,
                    "overlong binlog line skipped"
                );
                continue;
            }
            self.pos.offset += n as u64;
            match Record::decode(&line) {
                Ok(record) => return Ok(Some((record, self.pos))),
                Err(err) => {
                    warn!(index = start.index, offset = start.offset, error = %err, "damaged binlog record skipped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str) -> Op {
        Op::Create {
            name: format!("M00/00/00/{name}"),
        }
    }

    async fn read_all(dir: &Path, from: Position, end: Position) -> Vec<Record> {
        let mut reader = BinlogReader::new(dir, from);
        let mut out = Vec::new();
        while let Some((record, _)) = reader.next(end).await.unwrap() {
            out.push(record);
        }
        out
    }

    #[tokio::test]
    async fn unfinished_are_the_names_last_deleted_or_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
        let name = |n: &str| format!("M00/00/00/{n}");
        let rename = |new: &str, old: &str| Op::Rename {
            name: name(new),
            old: name(old),
        };
        let ops = [
            create("a"),
            create("b"),
            Op::Delete { name: name("a") },
            Op::Update { name: name("b-m") },
            Op::Delete { name: name("b-m") },
            Op::Update { name: name("b-m") },
            create("x"),
            rename("y", "x"),
            create("p"),
            rename("q", "p"),
            Op::Update { name: name("q") },
            Op::Delete { name: name("c-m") },
        ];
        for op in ops {
            binlog.append(binlog.ticket(), 1, op).await.unwrap();
        }
        binlog.close();
        let all = tail_unfinished(dir.path(), 1 << 20).unwrap();
        assert_eq!(all.deletes, [name("a"), name("c-m")]);
        // q changed after its rename: that rename finished
        assert_eq!(all.renames, [(name("y"), name("x"))]);
        // a tail starting inside a record skips it: only whole records count
        let tail = tail_unfinished(dir.path(), 20).unwrap();
        assert!(
            tail.deletes.is_empty() || tail.deletes == [name("c-m")],
            "{tail:?}"
        );
        // no binlog yet
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            tail_unfinished(empty.path(), 1 << 20).unwrap(),
            Unfinished::default()
        );
    }

    #[tokio::test]
    async fn appends_are_durable_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let binlog = Binlog::open(dir.path(), true, DEFAULT_ROTATE_SIZE).unwrap();
        let mut seqs = Vec::new();
        for i in 0..5 {
            let record = binlog
                .append(binlog.ticket(), 100 + i, create(&format!("file{i}")))
                .await
                .unwrap()
                .0;
            seqs.push(record.seq);
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        let committed = binlog.committed();
        assert_eq!(committed.seq, 5);
        let records = read_all(dir.path(), Position::default(), committed.end).await;
        assert_eq!(records.len(), 5);
        assert_eq!(records[4].op, create("file4"));
        assert_eq!(records[4].timestamp, 104);
        drop(binlog);

        let binlog = Binlog::open(dir.path(), true, DEFAULT_ROTATE_SIZE).unwrap();
        assert_eq!(binlog.committed().seq, 5);
        assert_eq!(binlog.committed().end, committed.end);
        let next = binlog
            .append(binlog.ticket(), 1, create("again"))
            .await
            .unwrap();
        assert_eq!(next.0.seq, 6);
    }

    #[tokio::test]
    async fn concurrent_appends_are_grouped_and_all_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let binlog = Arc::new(Binlog::open(dir.path(), true, DEFAULT_ROTATE_SIZE).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let binlog = binlog.clone();
            tasks.push(tokio::spawn(async move {
                binlog
                    .append(binlog.ticket(), 7, create(&format!("f{i}")))
                    .await
                    .unwrap()
                    .0
                    .seq
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        let records = read_all(dir.path(), Position::default(), binlog.committed().end).await;
        assert_eq!(
            records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=200).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_never_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
            for i in 0..3 {
                binlog
                    .append(binlog.ticket(), 1, create(&format!("f{i}")))
                    .await
                    .unwrap();
            }
        }
        let path = file_path(dir.path(), 0);
        let good_len = std::fs::metadata(&path).unwrap().len();
        let full = Record {
            seq: 4,
            timestamp: 1,
            watermark: 1,
            op: create("torn"),
        }
        .encode();
        // every possible cut of a fourth record
        for cut in 1..full.len() {
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            file.write_all(&full.as_bytes()[..cut]).unwrap();
            drop(file);
            let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
            assert_eq!(binlog.committed().seq, 3, "cut at {cut}");
            assert_eq!(binlog.committed().end.offset, good_len);
            drop(binlog);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        }
        // garbage bytes after the last record go too, and appending carries on
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"\0\0\xff garbage\n\0")
            .unwrap();
        let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
        let (record, _) = binlog
            .append(binlog.ticket(), 1, create("next"))
            .await
            .unwrap();
        assert_eq!(record.seq, 4);
        let records = read_all(dir.path(), Position::default(), binlog.committed().end).await;
        assert_eq!(records.len(), 4);
        assert_eq!(records[3].op, create("next"));
    }

    #[tokio::test]
    async fn damage_in_the_middle_is_skipped_by_readers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
            for i in 0..3 {
                binlog
                    .append(binlog.ticket(), 1, create(&format!("f{i}")))
                    .await
                    .unwrap();
            }
        }
        let path = file_path(dir.path(), 0);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 12;
        bytes[second] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
        assert_eq!(binlog.committed().seq, 3);
        let records = read_all(dir.path(), Position::default(), binlog.committed().end).await;
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3]);
    }

    /// A binlog holding one record, whose next write fails: it starts binlog.001
    /// (rotate_size 1), which is made a directory.
    async fn failing_after_one_record(fsync: bool) -> (tempfile::TempDir, Binlog, Record) {
        let dir = tempfile::tempdir().unwrap();
        let binlog = Binlog::open(dir.path(), fsync, 1).unwrap();
        let (first, release) = binlog
            .append(binlog.ticket(), 1, create("first"))
            .await
            .unwrap();
        drop(release);
        std::fs::create_dir(file_path(dir.path(), 1)).unwrap();
        (dir, binlog, first)
    }

    #[tokio::test]
    async fn a_failed_write_refuses_every_later_change() {
        for fsync in [false, true] {
            let (dir, binlog, first) = failing_after_one_record(fsync).await;
            let failed = binlog.append(binlog.ticket(), 2, create("second")).await;
            assert!(failed.is_err(), "fsync {fsync}");
            let later = binlog.append(binlog.ticket(), 3, create("third")).await;
            assert!(
                matches!(later, Err(BinlogError::Failed)),
                "fsync {fsync}: {later:?}"
            );
            // what was written before stays readable
            let committed = binlog.committed();
            assert_eq!(committed.seq, first.seq);
            let records = read_all(dir.path(), Position::default(), committed.end).await;
            assert_eq!(records.len(), 1, "fsync {fsync}");
        }
    }

    /// Blocking [`Binlog::sync_queued`] off the runtime's threads.
    async fn sync_queued(binlog: &Arc<Binlog>) -> io::Result<()> {
        let binlog = binlog.clone();
        tokio::task::spawn_blocking(move || binlog.sync_queued())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn lazy_records_become_durable_and_readable_without_anybody_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let binlog = Arc::new(Binlog::open(dir.path(), true, DEFAULT_ROTATE_SIZE).unwrap());
        for i in 0..3 {
            let (record, release) = binlog
                .append_lazy(binlog.ticket(), 10 + i, create(&format!("lazy{i}")))
                .await
                .unwrap();
            assert_eq!(record.seq, u64::from(i) + 1);
            drop(release);
        }
        // nobody waits: the writer makes them durable on its own, and readers then see them
        let deadline = Instant::now() + Duration::from_secs(10);
        while binlog.committed().seq < 3 {
            assert!(
                Instant::now() < deadline,
                "lazy records never became durable"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let records = read_all(dir.path(), Position::default(), binlog.committed().end).await;
        assert_eq!(records.len(), 3);
        assert_eq!(records[2].op, create("lazy2"));

        // a barrier makes every record queued before it durable when it returns
        let (lazy, _release) = binlog
            .append_lazy(binlog.ticket(), 20, create("before the barrier"))
            .await
            .unwrap();
        sync_queued(&binlog).await.unwrap();
        assert!(binlog.durable.borrow().seq >= lazy.seq);
        // and a record somebody waits for takes the lazy ones before it along
        let (lazy, _release) = binlog
            .append_lazy(binlog.ticket(), 21, create("lazy again"))
            .await
            .unwrap();
        let (waited, _release) = binlog
            .append(binlog.ticket(), 22, create("waited for"))
            .await
            .unwrap();
        assert!(waited.seq > lazy.seq);
        assert!(binlog.durable.borrow().seq >= waited.seq);

        // closed cleanly: everything was made durable
        let (last, release) = binlog
            .append_lazy(binlog.ticket(), 23, create("last"))
            .await
            .unwrap();
        drop(release);
        binlog.close();
        sync_queued(&binlog).await.unwrap();
        drop(binlog);
        let reopened = Binlog::open(dir.path(), true, DEFAULT_ROTATE_SIZE).unwrap();
        assert_eq!(reopened.committed().seq, last.seq);
    }

    #[tokio::test]
    async fn a_barrier_reports_a_lazy_record_that_could_not_be_written() {
        let (_dir, binlog, first) = failing_after_one_record(true).await;
        let binlog = Arc::new(binlog);
        let queued = binlog.append_lazy(binlog.ticket(), 2, create("lazy")).await;
        assert!(queued.is_ok(), "a lazy record is only queued: {queued:?}");
        assert!(sync_queued(&binlog).await.is_err());
        assert!(sync_queued(&binlog).await.is_err(), "failed for good");
        assert_eq!(binlog.committed().seq, first.seq);
    }

    #[tokio::test]
    async fn rotation_and_reading_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let binlog = Binlog::open(dir.path(), false, 200).unwrap();
        for i in 0..10 {
            binlog
                .append(binlog.ticket(), 1, create(&format!("file-number-{i}")))
                .await
                .unwrap();
        }
        let end = binlog.committed().end;
        assert!(end.index >= 2, "{end:?}");
        assert!(file_path(dir.path(), 1).exists());
        let records = read_all(dir.path(), Position::default(), end).await;
        assert_eq!(records.len(), 10);
        // reading resumes from any position a reader reported
        let mut reader = BinlogReader::new(dir.path(), Position::default());
        let mut positions = Vec::new();
        while let Some((_, pos)) = reader.next(end).await.unwrap() {
            positions.push(pos);
        }
        let resumed = read_all(dir.path(), positions[4], end).await;
        assert_eq!(resumed.first().unwrap().seq, 6);
        drop(binlog);
        // an empty newest file keeps the sequence going
        std::fs::File::create(file_path(dir.path(), end.index + 1)).unwrap();
        let binlog = Binlog::open(dir.path(), false, 200).unwrap();
        assert_eq!(binlog.committed().seq, 10);
    }

    #[tokio::test]
    async fn watermarks_stay_below_open_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
        let early = binlog.ticket();
        let early_ts = early.key.unwrap().0;
        let record = binlog
            .append(binlog.ticket(), 5, create("a"))
            .await
            .unwrap();
        assert!(record.0.watermark <= early_ts);
        let (watermark, seq) = binlog.watermark_now();
        assert!(watermark <= early_ts);
        assert_eq!(seq, 1);
        drop(early);
        let (after, _) = binlog.watermark_now();
        assert!(after >= early_ts);
    }

    #[tokio::test]
    async fn readers_see_a_record_only_once_its_change_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
        let (first, first_release) = binlog
            .append(binlog.ticket(), 1, create("a"))
            .await
            .unwrap();
        let (second, second_release) = binlog
            .append(binlog.ticket(), 1, create("b"))
            .await
            .unwrap();
        assert_eq!(binlog.committed().seq, 0, "durable, but not released");
        // releasing the later one first publishes nothing: order is kept
        drop(second_release);
        assert_eq!(binlog.committed().seq, 0);
        drop(first_release);
        let published = binlog.committed();
        assert_eq!(published.seq, second.seq);
        let records = read_all(dir.path(), Position::default(), published.end).await;
        assert_eq!(records, [first, second]);
        // a reopened binlog publishes everything that is on disk
        drop(binlog);
        let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
        assert_eq!(binlog.committed().seq, 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn any_tail_damage_keeps_every_whole_record(count in 1usize..20, tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                {
                    let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
                    for i in 0..count {
                        binlog.append(binlog.ticket(), i as u32, create(&format!("n{i}"))).await.unwrap();
                    }
                }
                let path = file_path(dir.path(), 0);
                let before = std::fs::read(&path).unwrap();
                // a tail without a newline can never complete a record
                let tail: Vec<u8> = tail.into_iter().filter(|&b| b != b'\n').collect();
                std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&tail).unwrap();
                let binlog = Binlog::open(dir.path(), false, DEFAULT_ROTATE_SIZE).unwrap();
                assert_eq!(binlog.committed().seq, count as u64);
                assert_eq!(std::fs::read(&path).unwrap(), before);
                let records = read_all(dir.path(), Position::default(), binlog.committed().end).await;
                assert_eq!(records.len(), count);
            });
        }
    }
}
