//! The sync worker of one peer: opens `sync_lanes` connections to the peer's storage port,
//! each introducing itself with REPORT_SERVER_ID (the answer carries the peer's data
//! generation), then replays the binlog from the peer's mark. One reader hands the records to
//! the lanes by file ([`lanes::route`]); each lane sends one record at a time through
//! [`plan::RecordSync`] and reports its outcome. The cursor only moves over records the peer
//! confirmed (or that were skipped) with every record before them ([`lanes::Window`]), so
//! after a crash or a lost connection on either side the worker resumes at the first record
//! some lane had not finished; records replayed twice are harmless to the receiver.
//!
//! A peer that is down or busy (still copying files, status 16) is retried with a backoff of
//! 0.5 s doubling to 2 s (0.5 s while it is busy). A peer whose disk is full (status 28) is
//! offered the refused record again every 5 s: replication pauses there (the mark does not
//! pass it) and resumes once the peer has room. An error on any lane ends the session of all
//! of them. An idle lane sends ACTIVE_TEST every `keepalive`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fdfs_proto::cmd::Command;
use fdfs_proto::conn::Connection;
use fdfs_proto::file_id::LogicalName;
use fdfs_proto::status;
use fdfs_proto::sync_msg::{
    self, SyncDelete, SyncFilePrefix, SyncRangePrefix, SyncTruncate, SyncTwoNames, SYNC_PROBE,
    SYNC_SLAVE,
};
use fdfs_proto::tracker_msg::storage_status;
use fdfs_proto::{Header, ProtoError};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::binlog::{BinlogReader, Committed, Position};
use super::lanes::{self, Route, Window};
use super::mark::{self, Mark};
use super::plan::{sidecar_name, Local, Outcome, RecordSync, Request, Snapshot, Step};
use super::record::{Op, Record};
use super::{binlog_now, Peer, Replication};
use crate::store::{recorded_content, CopyContent, LocalFile, StoreError, IO_BUFFER};

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
/// The mark is saved after this many records or this much time, whichever comes first, and
/// at most every [`MARK_EVERY`] while caught up. Each save costs a file and a directory fsync;
/// a mark that a crash left behind only has the peer sent records it already has again.
const MARK_EVERY_RECORDS: u64 = 4096;
const MARK_EVERY: Duration = Duration::from_secs(1);
/// How often a worker logs its progress while it is behind.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(30);
/// Records in flight per lane at most; the peer's window holds `sync_lanes` times this. A
/// lane busy with a large file holds the mark back, and the other lanes go on this far
/// before they wait for it. A record in flight costs a few hundred bytes.
const WINDOW_PER_LANE: usize = 64;
/// Read buffer of a sync connection: it only reads answers, which are headers and at most a
/// few dozen bytes of body.
const SYNC_READ_BUFFER: usize = 4096;

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
    #[error("peer's data generation changed while its sync connections were opened")]
    GenerationChanged,
    #[error("sync lane {0} stopped without a report")]
    LaneStopped(usize),
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

/// Opens one sync connection: connect, authenticate, REPORT_SERVER_ID. Returns it with the
/// peer's data generation.
async fn open_lane(repl: &Replication, addr: &str) -> Result<(SyncConn, u64), SyncError> {
    let limit = repl.config().network_timeout;
    let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(SyncError::Connect(err)),
        Err(_) => return Err(SyncError::Timeout),
    };
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::with_capacity(SYNC_READ_BUFFER, stream);
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
    Ok((conn, generation))
}

/// Opens every lane; they must all see the same data generation. The first goes alone (a
/// busy or unreachable peer costs one attempt), the others at once.
async fn open_lanes(
    repl: &Arc<Replication>,
    addr: &str,
    count: usize,
) -> Result<(Vec<SyncConn>, u64), SyncError> {
    let (first, generation) = open_lane(repl, addr).await?;
    let mut conns = Vec::with_capacity(count);
    conns.push(first);
    let mut opening = JoinSet::new();
    for _ in 1..count {
        let (repl, addr) = (repl.clone(), addr.to_string());
        opening.spawn(async move { open_lane(&repl, &addr).await });
    }
    while let Some(opened) = opening.join_next().await {
        let (conn, other) = opened.map_err(|_| SyncError::LaneStopped(conns.len()))??;
        if other != generation {
            return Err(SyncError::GenerationChanged);
        }
        conns.push(conn);
    }
    Ok((conns, generation))
}

/// What a lane reports to its session.
#[derive(Debug)]
enum LaneEvent {
    Done {
        seq: u64,
        outcome: Outcome,
    },
    /// The lane stopped; the session ends.
    Failed(SyncError),
}

/// One lane: sends the records handed to it, in order, one at a time, on its connection.
async fn lane(
    repl: Arc<Replication>,
    peer: String,
    index: usize,
    mut conn: SyncConn,
    mut records: mpsc::Receiver<Record>,
    events: mpsc::Sender<LaneEvent>,
) {
    let limit = repl.config().network_timeout;
    let keepalive = repl.config().keepalive;
    let mut last_sent = Instant::now();
    loop {
        let idle = keepalive.saturating_sub(last_sent.elapsed());
        let record = tokio::select! {
            record = records.recv() => match record {
                Some(record) => record,
                None => return,
            },
            _ = tokio::time::sleep(idle) => {
                let alive = match exchange(&mut conn, Header::request(Command::ActiveTest.code(), 0), &[], limit).await {
                    Ok(status::OK) => Ok(()),
                    Ok(status) => Err(SyncError::Refused { seq: 0, status }),
                    Err(err) => Err(err),
                };
                if let Err(err) = alive {
                    let _ = events.send(LaneEvent::Failed(err)).await;
                    return;
                }
                last_sent = Instant::now();
                continue;
            }
        };
        let result = sync_record(&repl, &mut conn, &record).await;
        last_sent = Instant::now();
        let event = match result {
            Ok(outcome) => {
                match &outcome {
                    Outcome::Skipped(reason) => {
                        debug!(%peer, lane = index, seq = record.seq, name = record.op.name(), reason, "record skipped")
                    }
                    _ => debug!(%peer, lane = index, seq = record.seq, ?outcome, "record synced"),
                }
                LaneEvent::Done {
                    seq: record.seq,
                    outcome,
                }
            }
            Err(err) => LaneEvent::Failed(err),
        };
        let failed = matches!(event, LaneEvent::Failed(_));
        if events.send(event).await.is_err() || failed {
            return;
        }
    }
}

/// One session's life: the lanes' connections, the binlog reader that feeds them and the
/// window that moves the mark. `Ok(true)` when at least one record was confirmed.
async fn session(repl: &Arc<Replication>, peer: &Peer, mark: &mut Mark) -> Result<bool, SyncError> {
    let (addr, peer_status) = locate(repl, &peer.id).ok_or(SyncError::NoAddress)?;
    if matches!(
        peer_status,
        storage_status::OFFLINE | storage_status::INIT | storage_status::WAIT_SYNC
    ) {
        // nobody answers, or it is about to copy everything anyway: try once in a while
        debug!(peer = %peer.id, status = storage_status::name(peer_status), "peer not ready");
    }
    let count = repl.config().sync_lanes.max(1);
    let (conns, generation) = tokio::select! {
        _ = peer.stop.cancelled() => return Ok(false),
        opened = open_lanes(repl, &addr, count) => opened?,
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
    info!(peer = %peer.id, %addr, seq = mark.acked_seq, lanes = count, "sync connection up");

    let capacity = count * WINDOW_PER_LANE;
    // every event answers a record in the window, or ends a lane
    let (events_tx, events) = mpsc::channel(capacity + count);
    let mut queues = Vec::with_capacity(count);
    let mut tasks = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(capacity);
        tasks.spawn(lane(
            repl.clone(),
            peer.id.clone(),
            index,
            conn,
            rx,
            events_tx.clone(),
        ));
        queues.push(tx);
    }
    drop(events_tx);
    let mut dispatch = Dispatch {
        repl,
        peer,
        reader: BinlogReader::new(repl.binlog().dir(), mark.position()),
        mark,
        committed: repl.binlog().subscribe(),
        window: Window::new(capacity),
        queues,
        events,
        tasks,
        held: None,
        at_end: false,
        progressed: false,
        unsaved: 0,
        last_save: Instant::now(),
        last_log: Instant::now(),
    };
    let result = dispatch.run().await;
    // confirmations that arrived meanwhile still move the mark (the lanes stop when `tasks`
    // is dropped)
    while let Ok(event) = dispatch.events.try_recv() {
        if let LaneEvent::Done { .. } = event {
            let _ = dispatch.on_event(event).await;
        }
    }
    result.map(|()| dispatch.progressed)
}

/// The reading side of a session: hands records to the lanes as far as the window allows and
/// moves the mark over what they confirm.
struct Dispatch<'a> {
    repl: &'a Replication,
    peer: &'a Peer,
    mark: &'a mut Mark,
    reader: BinlogReader,
    committed: watch::Receiver<Committed>,
    window: Window,
    queues: Vec<mpsc::Sender<Record>>,
    events: mpsc::Receiver<LaneEvent>,
    tasks: JoinSet<()>,
    /// A record read but not admitted yet (the window is full, or it waits for a barrier).
    held: Option<(Route, Record, Position)>,
    /// The reader found nothing more the last time it looked.
    at_end: bool,
    progressed: bool,
    unsaved: u64,
    last_save: Instant,
    last_log: Instant,
}

impl Dispatch<'_> {
    /// Until the peer is stopped (`Ok`) or a lane fails.
    async fn run(&mut self) -> Result<(), SyncError> {
        let lanes = self.queues.len();
        loop {
            while let Ok(event) = self.events.try_recv() {
                self.on_event(event).await?;
            }
            if self.peer.stop.is_cancelled() {
                return Ok(());
            }
            if self.held.is_none() && self.window.open() {
                let end = self.committed.borrow_and_update().end;
                match self.reader.next(end).await.map_err(SyncError::Binlog)? {
                    Some((record, after)) => {
                        self.at_end = false;
                        self.held = Some((lanes::route(&record.op, lanes), record, after));
                    }
                    None => self.at_end = true,
                }
            }
            if let Some((route, record, after)) = self.held.take() {
                if self.window.admits(route) {
                    self.send(route, record, after).await?;
                    continue;
                }
                self.held = Some((route, record, after));
            }
            if self.held.is_none() && self.at_end && self.window.is_empty() {
                self.caught_up().await;
            }
            let reading = self.held.is_none() && self.window.open();
            tokio::select! {
                _ = self.peer.stop.cancelled() => return Ok(()),
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event).await?,
                    None => return Err(SyncError::LaneStopped(0)),
                },
                changed = self.committed.changed(), if reading => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    // a lane reports before it stops; take that report
                    while let Ok(event) = self.events.try_recv() {
                        self.on_event(event).await?;
                    }
                    debug!(peer = %self.peer.id, ?joined, "sync lane stopped without a report");
                    return Err(SyncError::LaneStopped(0));
                }
                // refresh the caught-up watermark and save the mark now and then while idle
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Hands a record to its lane.
    async fn send(
        &mut self,
        route: Route,
        record: Record,
        after: Position,
    ) -> Result<(), SyncError> {
        self.peer.update(|s| {
            s.oldest_pending.get_or_insert(record.timestamp);
        });
        if let Route::Barrier(lane) = route {
            debug!(peer = %self.peer.id, seq = record.seq, lane, "record names files of two lanes: sent alone");
        }
        self.window
            .push(record.seq, after, record.timestamp, record.watermark, route);
        if self.queues[route.lane()].send(record).await.is_err() {
            // the lane stopped; its report says why
            while let Ok(event) = self.events.try_recv() {
                self.on_event(event).await?;
            }
            return Err(SyncError::LaneStopped(route.lane()));
        }
        Ok(())
    }

    /// Everything published is confirmed: save the mark, and tell the peer's status that
    /// every change up to now is there.
    async fn caught_up(&mut self) {
        // Under a steady load the sender catches up between records over and over: saving
        // each time cost more than the records. The idle wake-up saves what is left.
        if self.unsaved > 0 && self.last_save.elapsed() >= MARK_EVERY {
            self.save().await;
        }
        let (watermark, seq) = self.repl.binlog().watermark_now();
        if self.mark.acked_seq >= seq {
            self.peer.update(|s| {
                s.synced_timestamp = s.synced_timestamp.max(watermark);
                s.oldest_pending = None;
            });
        }
    }

    async fn save(&mut self) {
        save_mark(self.repl, &self.peer.id, self.mark).await;
        self.unsaved = 0;
        self.last_save = Instant::now();
    }

    /// Takes a lane's report; a failure ends the session.
    async fn on_event(&mut self, event: LaneEvent) -> Result<(), SyncError> {
        let (seq, outcome) = match event {
            LaneEvent::Done { seq, outcome } => (seq, outcome),
            LaneEvent::Failed(err) => return Err(err),
        };
        self.window
            .confirm(seq, matches!(outcome, Outcome::Skipped(_)));
        let mut last = None;
        while let Some(entry) = self.window.pop_confirmed() {
            advance(self.mark, &entry);
            self.unsaved += 1;
            last = Some(entry);
        }
        let Some(last) = last else {
            return Ok(());
        };
        self.progressed = true;
        let (synced, skipped, watermark) = (
            self.mark.synced_records,
            self.mark.skipped_records,
            self.mark.watermark,
        );
        let oldest = self.window.oldest_pending();
        self.peer.update(|s| {
            s.acked_seq = last.seq;
            s.synced_timestamp = s.synced_timestamp.max(watermark);
            s.oldest_pending = oldest;
            s.synced_records = synced;
            s.skipped_records = skipped;
        });
        self.repl.notify_acks();
        if self.unsaved >= MARK_EVERY_RECORDS || self.last_save.elapsed() >= MARK_EVERY {
            self.save().await;
        }
        if self.last_log.elapsed() >= PROGRESS_LOG_EVERY {
            let committed_seq = self.repl.binlog().committed().seq;
            info!(
                peer = %self.peer.id,
                seq = last.seq,
                file = last.after.index,
                offset = last.after.offset,
                records_behind = committed_seq.saturating_sub(last.seq),
                seconds_behind = binlog_now().saturating_sub(last.timestamp),
                in_flight = self.window.len(),
                "sync progress"
            );
            self.last_log = Instant::now();
        }
        Ok(())
    }
}

/// Moves the mark past a finished record (the first of the window).
fn advance(mark: &mut Mark, entry: &lanes::Entry) {
    mark.binlog_index = entry.after.index;
    mark.binlog_offset = entry.after.offset;
    mark.acked_seq = entry.seq;
    mark.watermark = mark.watermark.max(entry.watermark);
    match entry.done {
        Some(true) => mark.skipped_records += 1,
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
        LocalFile::Link { target, .. } => Local::Link { target },
    }
}

/// What we hold for a record: its name, that name's sidecar, and the other name of a link
/// (its target) or of a rename (the old name). Only a rename sends the sidecar, so only a
/// rename looks it up (one blocking-pool trip less for every other record), and the file of a
/// create record just written here is known from memory.
async fn snapshot(repl: &Replication, op: &Op) -> Result<Snapshot, SyncError> {
    let store = repl.store();
    let main = match op {
        Op::Create { name } => store.created_file(&parse(name)?).await?,
        _ => store.local_file(&parse(op.name())?).await?,
    };
    let sidecar = match (op, LogicalName::parse(&sidecar_name(op.name()))) {
        (Op::Rename { .. }, Ok(name)) => store.local_file(&name).await?,
        _ => LocalFile::Missing,
    };
    let other = match (op, &main) {
        (Op::Link { target, .. }, _) => store.local_file(&parse(target)?).await?,
        (_, LocalFile::Link { target, .. }) => store.local_file(&parse(target)?).await?,
        (Op::Rename { old, .. }, _) => store.local_file(&parse(old)?).await?,
        _ => LocalFile::Missing,
    };
    // only a create is sent whole with the slave flag; only a file off its name's size can
    // be a marked slave (one more blocking-pool trip for those rare files)
    let marked_slave = match (op, &main) {
        (Op::Create { name }, LocalFile::File { size, .. }) => {
            let name = parse(name)?;
            match recorded_content(&name) {
                Some((recorded, _)) if recorded != *size => store.is_marked_slave(&name).await,
                _ => false,
            }
        }
        _ => false,
    };
    Ok(Snapshot {
        main: local(main),
        sidecar: local(sidecar),
        other: local(other),
        marked_slave,
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
    let copy = match repl.store().open_copy(&parse(name)?).await {
        Ok(copy) => copy,
        Err(StoreError::NotFound) => {
            return Err(SyncError::LocalChanged(format!("{name} disappeared")))
        }
        Err(err) => return Err(err.into()),
    };
    let size = copy.size;
    let prefix = SyncFilePrefix {
        name_len: name.len() as u64,
        file_size: size,
        timestamp: copy.mtime,
        group: repl.config().group.clone(),
    };
    let mut header = Header::request(cmd.code(), (SyncFilePrefix::LEN + name.len()) as u64 + size);
    if copy.slave {
        // the peer may not have its master (deleted meanwhile): the copy speaks for itself
        header.status = SYNC_SLAVE;
    }
    let mut head = header.encode().to_vec();
    head.extend_from_slice(&prefix.encode());
    head.extend_from_slice(name.as_bytes());
    match copy.content {
        CopyContent::Read(body) => {
            if body.len() as u64 != size {
                return Err(SyncError::LocalChanged(format!("{name} is shorter now")));
            }
            // a small file goes in the same write as its request head
            head.extend_from_slice(&body);
            stream_request(repl, conn, head, None, size).await
        }
        CopyContent::Open(file) => {
            let file = tokio::fs::File::from_std(file);
            stream_request(repl, conn, head, Some(file), size).await
        }
    }
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
    stream_request(repl, conn, head, Some(file), length).await
}

/// Writes `head`, then `count` bytes of `file` with a bounded buffer, then reads the answer;
/// without a file the content is already at the end of `head`. A file that ends early cannot
/// deliver the announced length: the connection is given up.
async fn stream_request(
    repl: &Replication,
    conn: &mut SyncConn,
    head: Vec<u8>,
    file: Option<tokio::fs::File>,
    count: u64,
) -> Result<u8, SyncError> {
    // a generous limit for the whole transfer: at least 1 MiB/s
    let limit = repl.config().network_timeout + Duration::from_secs(count >> 20);
    let answered = timed(limit, async {
        let Some(mut file) = file else {
            conn.write_all(&head).await?;
            conn.flush().await?;
            return answer(conn).await;
        };
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

    fn entry(seq: u64, watermark: u32, after: Position, skipped: bool) -> lanes::Entry {
        lanes::Entry {
            seq,
            after,
            timestamp: 100,
            watermark,
            done: Some(skipped),
        }
    }

    #[test]
    fn the_cursor_moves_past_finished_records_only_forward() {
        let mut mark = Mark::default();
        let after = Position {
            index: 0,
            offset: 80,
        };
        advance(&mut mark, &entry(1, 50, after, false));
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
        advance(&mut mark, &entry(2, 40, later, true));
        assert_eq!(
            (mark.position(), mark.acked_seq, mark.watermark),
            (later, 2, 50)
        );
        assert_eq!((mark.synced_records, mark.skipped_records), (1, 1));
        let end = Position {
            index: 1,
            offset: 90,
        };
        advance(&mut mark, &entry(3, 60, end, false));
        assert_eq!(
            (mark.acked_seq, mark.watermark, mark.synced_records),
            (3, 60, 2)
        );
    }
}
