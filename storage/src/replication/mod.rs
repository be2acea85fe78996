//! Group replication (L): every storage of a group holds every file.
//!
//! * [`binlog`]: each change a client makes here is appended to the binlog (durably, before
//!   the client hears success); [`record`] is its line format.
//! * [`sender`]: one worker per peer of the group (from the trackers' member list) replays the
//!   binlog to that peer over the storage port with the L.4 sync commands, from a cursor kept
//!   in a [`mark`] file; [`plan`] is its I/O-free decision logic. The receiving side lives in
//!   `cmd::sync` and `store::replica`.
//! * [`state`] / [`pull`]: a new storage, or one whose store path was wiped, first copies the
//!   files of a peer named by a tracker, and only then accepts pushes and becomes ACTIVE.
//!
//! Progress per peer (cursor, records and seconds behind, the watermark the tracker routes
//! reads with) is logged and reported to the trackers in SYNC_REPORT.

pub mod binlog;
pub mod lanes;
pub mod mark;
pub mod plan;
pub mod pull;
pub mod record;
pub mod sender;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fdfs_proto::sync_msg::{PeerProgress, SyncReason, SyncReport, SyncSource};
use fdfs_proto::tracker_msg::storage_status;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::stats::Stats;
use crate::store::Store;
use crate::tracker_link::Members;
use binlog::{Binlog, Release, Ticket};
use record::Op;
use state::{LocalState, Phase, Reason};

/// When a change is acknowledged to the client (config key `write_ack`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteAck {
    /// Once this storage has it (FastDFS behaviour).
    #[default]
    Local,
    /// Once every ACTIVE storage of the group has it.
    All,
}

/// What replication needs from the config.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    pub group: String,
    pub self_id: String,
    /// `<base_path>/data/sync`
    pub sync_dir: PathBuf,
    pub store_paths: Vec<PathBuf>,
    pub fsync: bool,
    pub write_ack: WriteAck,
    pub write_ack_timeout: Duration,
    pub network_timeout: Duration,
    /// Idle sync connections send ACTIVE_TEST this often.
    pub keepalive: Duration,
    /// Sync connections to each peer, records partitioned by file ([`lanes`]).
    pub sync_lanes: usize,
    pub binlog_rotate_size: u64,
    /// Peers must prove it before a sync connection carries anything (fdfs_proto::auth).
    pub cluster_secret: Option<fdfs_proto::auth::ClusterSecret>,
}

/// Proves the cluster secret to the server at the other end of a fresh connection, and
/// checks its proof (`fdfs_proto::auth`), within `limit`. Nothing to do without a secret.
pub(crate) async fn authenticate<S>(
    conn: &mut fdfs_proto::conn::Connection<S>,
    secret: Option<&fdfs_proto::auth::ClusterSecret>,
    purpose: fdfs_proto::auth::Purpose,
    limit: Duration,
) -> Result<(), fdfs_proto::auth::AuthError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(secret) = secret else {
        return Ok(());
    };
    match tokio::time::timeout(limit, fdfs_proto::auth::initiate(conn, secret, purpose)).await {
        Ok(result) => result,
        Err(_) => Err(fdfs_proto::ProtoError::Io(std::io::ErrorKind::TimedOut.into()).into()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error(transparent)]
    Binlog(#[from] binlog::BinlogError),
    #[error("not confirmed by {peers:?} within {timeout:?} (write_ack = all)")]
    NotConfirmed {
        peers: Vec<String>,
        timeout: Duration,
    },
}

/// A peer worker's progress, shared with reports and write acknowledgement.
#[derive(Clone, Debug, Default)]
pub struct PeerStatus {
    pub connected: bool,
    /// When the current sync connection was set up.
    pub connected_at: Option<std::time::Instant>,
    /// The peer's data generation our cursor is for (0 = not connected yet).
    pub generation: u64,
    pub acked_seq: u64,
    /// Every change of ours with an mtime below this is on the peer.
    pub synced_timestamp: u32,
    /// Timestamp of the oldest record the peer has not confirmed, when known.
    pub oldest_pending: Option<u32>,
    pub synced_records: u64,
    pub skipped_records: u64,
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub struct Peer {
    pub id: String,
    status: Mutex<PeerStatus>,
    stop: CancellationToken,
    /// Since when the member list shows the peer OFFLINE.
    offline_since: Mutex<Option<std::time::Instant>>,
    /// Failed sync attempts (the `fdfs_storage_sync_errors_total` counter).
    errors: AtomicU64,
}

impl Peer {
    pub fn status(&self) -> PeerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Failed sync attempts since the storage started (a peer still copying files, which
    /// only makes us wait, is not counted).
    pub fn sync_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn sync_failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn update(&self, change: impl FnOnce(&mut PeerStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The phase as seen by the tracker links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseView {
    pub phase: Phase,
    pub reason: Reason,
    pub source: String,
}

impl PhaseView {
    /// The J.1 status this storage asks its trackers to show while it copies files.
    pub fn tracker_status(&self) -> Option<u8> {
        match (self.phase, self.reason) {
            (Phase::Ready, _) => None,
            (_, Reason::Recovery) => Some(storage_status::RECOVERY),
            (Phase::Pending, Reason::New) => Some(storage_status::WAIT_SYNC),
            (Phase::Pulling, Reason::New) => Some(storage_status::SYNCING),
        }
    }
}

/// Replication of one storage: its binlog, its peers' workers, its own copy state.
#[derive(Debug)]
pub struct Replication {
    config: ReplicationConfig,
    binlog: Binlog,
    store: Arc<Store>,
    members: Arc<Members>,
    /// Counts the bytes the sync workers push (`*_sync_out_bytes`).
    stats: Arc<Stats>,
    state: Mutex<LocalState>,
    phase: watch::Sender<PhaseView>,
    peers: Mutex<BTreeMap<String, Arc<Peer>>>,
    /// Bumped on every confirmation by a peer and every membership change.
    acks: watch::Sender<u64>,
    /// Peers that opened a sync connection to us since we accept pushes.
    pushers: watch::Sender<std::collections::BTreeSet<String>>,
}

fn view(state: &LocalState) -> PhaseView {
    PhaseView {
        phase: state.phase,
        reason: state.reason,
        source: state.source.clone(),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
}

/// How much of the binlog's end is read at start for changes a crash interrupted: far more
/// than the records of the requests in flight at any moment.
const REDO_TAIL: u64 = 4 << 20;

/// Finishes deletes and renames that were recorded (and so reach the peers) but not done
/// before a crash.
async fn redo_unfinished(store: &Store, unfinished: binlog::Unfinished) {
    use fdfs_proto::file_id::LogicalName;
    for name in unfinished.deletes {
        let Ok(logical) = LogicalName::parse(&name) else {
            continue;
        };
        match store.local_file(&logical).await {
            Ok(crate::store::LocalFile::Missing) => {}
            Ok(_) => {
                info!(file = %name, "finishing a delete a crash interrupted");
                if let Err(err) = store.delete(&logical).await {
                    warn!(file = %name, error = %err, "cannot finish an interrupted delete");
                }
            }
            Err(err) => warn!(file = %name, error = %err, "cannot check an interrupted delete"),
        }
    }
    for (name, old) in unfinished.renames {
        let (Ok(new), Ok(old)) = (LogicalName::parse(&name), LogicalName::parse(&old)) else {
            continue;
        };
        match store.finish_rename(&new, &old).await {
            Ok(true) => info!(file = %name, old = %old, "finished a rename a crash interrupted"),
            Ok(false) => {}
            Err(err) => warn!(file = %name, error = %err, "cannot finish an interrupted rename"),
        }
    }
}

impl Replication {
    /// Opens the binlog and the copy state.
    pub async fn open(
        config: ReplicationConfig,
        store: Arc<Store>,
        members: Arc<Members>,
        stats: Arc<Stats>,
    ) -> std::io::Result<Replication> {
        let (dir, paths, fsync, rotate) = (
            config.sync_dir.clone(),
            config.store_paths.clone(),
            config.fsync,
            config.binlog_rotate_size,
        );
        let (binlog, state, redo) = blocking(move || {
            let binlog = Binlog::open(&dir, fsync, rotate)?;
            let state = state::open(&dir, &paths)?;
            let redo = binlog::tail_unfinished(&dir, REDO_TAIL)?;
            Ok((binlog, state, redo))
        })
        .await?;
        redo_unfinished(&store, redo).await;
        let committed = binlog.committed();
        info!(
            seq = committed.seq,
            file = committed.end.index,
            offset = committed.end.offset,
            phase = ?state.phase,
            generation = state.generation,
            "binlog open"
        );
        Ok(Replication {
            phase: watch::Sender::new(view(&state)),
            config,
            binlog,
            store,
            members,
            stats,
            state: Mutex::new(state),
            peers: Mutex::new(BTreeMap::new()),
            acks: watch::Sender::new(0),
            pushers: watch::Sender::new(Default::default()),
        })
    }

    pub fn config(&self) -> &ReplicationConfig {
        &self.config
    }

    pub fn binlog(&self) -> &Binlog {
        &self.binlog
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn members(&self) -> &Arc<Members> {
        &self.members
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn local(&self) -> std::sync::MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.local().generation
    }

    /// Whether peers may push changes (the data is complete).
    pub fn accepting(&self) -> bool {
        self.local().phase == Phase::Ready
    }

    pub fn phase(&self) -> PhaseView {
        self.phase.borrow().clone()
    }

    pub fn subscribe_phase(&self) -> watch::Receiver<PhaseView> {
        self.phase.subscribe()
    }

    /// Applies `change` to the copy state, saves it and publishes the phase.
    async fn change_state(&self, change: impl FnOnce(&mut LocalState)) -> std::io::Result<()> {
        let state = {
            let mut state = self.local();
            change(&mut state);
            state.clone()
        };
        let dir = self.config.sync_dir.clone();
        let saved = state.clone();
        blocking(move || state::save(&dir, &saved)).await?;
        self.phase.send_if_modified(|current| {
            let next = view(&state);
            let changed = *current != next;
            *current = next;
            changed
        });
        Ok(())
    }

    pub(crate) fn local_state(&self) -> LocalState {
        self.local().clone()
    }

    pub(crate) async fn save_pull_progress(
        &self,
        path: u32,
        offset: u64,
        listed: bool,
    ) -> std::io::Result<()> {
        self.change_state(|s| {
            s.pull_path = path;
            s.pull_offset = offset;
            s.pull_listed = listed;
        })
        .await
    }

    /// A tracker answered SYNC_DEST_REQ: copy from `source`, or (none) nothing to copy.
    pub async fn source_assigned(&self, source: Option<SyncSource>) -> std::io::Result<()> {
        if self.local().phase != Phase::Pending {
            return Ok(());
        }
        match source {
            None => {
                info!("no peer holds data to copy: ready");
                self.change_state(|s| s.phase = Phase::Ready).await
            }
            Some(source) => {
                info!(source = %source.source_id, "copying the group's files from a peer");
                self.change_state(|s| {
                    s.phase = Phase::Pulling;
                    s.source = source.source_id;
                    s.pull_path = 0;
                    s.pull_offset = 0;
                    s.pull_listed = false;
                })
                .await
            }
        }
    }

    /// The copy is complete.
    pub(crate) async fn pull_finished(&self) -> std::io::Result<()> {
        self.change_state(|s| {
            s.phase = Phase::Ready;
            s.pull_path = 0;
            s.pull_offset = 0;
            s.pull_listed = false;
        })
        .await
    }

    /// The source cannot be used: ask a tracker for another.
    pub(crate) async fn pull_needs_new_source(&self) -> std::io::Result<()> {
        self.change_state(|s| {
            s.phase = Phase::Pending;
            s.source.clear();
        })
        .await
    }

    /// The reason to give a tracker in SYNC_DEST_REQ.
    pub fn sync_reason(&self) -> SyncReason {
        match self.local().reason {
            Reason::New => SyncReason::New,
            Reason::Recovery => SyncReason::Recovery,
        }
    }

    /// Takes a ticket before a change touches the disk (see [`binlog::Ticket`]).
    pub fn ticket(&self) -> Ticket {
        self.binlog.ticket()
    }

    /// Records a client's change durably; returns its sequence number and the guard that
    /// keeps the record from the sync workers until the change is complete.
    pub async fn record(&self, ticket: Ticket, op: Op) -> Result<(u64, Release), ReplError> {
        let (record, release) = self.binlog.append(ticket, binlog_now(), op).await?;
        Ok((record.seq, release))
    }

    /// [`Replication::record`] of a new file its store path's journal made durable: returns
    /// without waiting for the record to be durable (see [`binlog::Binlog::append_lazy`]).
    pub async fn record_lazy(&self, ticket: Ticket, op: Op) -> Result<(u64, Release), ReplError> {
        let (record, release) = self.binlog.append_lazy(ticket, binlog_now(), op).await?;
        Ok((record.seq, release))
    }

    /// Blocks until every record appended so far is durable (see
    /// [`binlog::Binlog::sync_queued`]).
    pub fn sync_binlog(&self) -> std::io::Result<()> {
        self.binlog.sync_queued()
    }

    /// Records a client's change that is already made, with `timestamp` (the mtime the
    /// change gave the file) as the record's, and with `write_ack = all` waits until every
    /// ACTIVE peer has it. A slave link's record carries the link's own mtime this way, and
    /// the peers give their links that time.
    pub async fn commit(&self, ticket: Ticket, timestamp: u32, op: Op) -> Result<(), ReplError> {
        let (record, release) = self.binlog.append(ticket, timestamp, op).await?;
        drop(release);
        self.confirm(record.seq).await
    }

    /// With `write_ack = all`: waits until every ACTIVE peer confirmed record `seq`.
    pub async fn confirm(&self, seq: u64) -> Result<(), ReplError> {
        if self.config.write_ack == WriteAck::Local {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.config.write_ack_timeout;
        let mut changes = self.acks.subscribe();
        loop {
            changes.borrow_and_update();
            let waiting = self.unconfirmed(seq);
            if waiting.is_empty() {
                return Ok(());
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let peers = self.unconfirmed(seq);
                    if peers.is_empty() {
                        return Ok(());
                    }
                    warn!(seq, ?peers, timeout = ?self.config.write_ack_timeout, "peers did not confirm a change in time");
                    return Err(ReplError::NotConfirmed {
                        peers,
                        timeout: self.config.write_ack_timeout,
                    });
                }
            }
        }
    }

    /// Peers that must confirm `seq` but have not yet: the ACTIVE ones, and those that may
    /// be ACTIVE by now although our member list (a beat old) does not say so yet: every
    /// peer that accepts our pushes, unless the list shows it OFFLINE since before it
    /// accepted them (a stopped process keeps its connection open).
    fn unconfirmed(&self, seq: u64) -> Vec<String> {
        use storage_status::{ACTIVE, INIT, OFFLINE, ONLINE, RECOVERY, SYNCING, WAIT_SYNC};
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        self.members
            .all()
            .into_iter()
            .filter(|m| m.id != self.config.self_id)
            .filter(|m| {
                let Some(peer) = peers.get(&m.id) else {
                    return m.status == ACTIVE;
                };
                let status = peer.status();
                let counts = match m.status {
                    ACTIVE => true,
                    ONLINE | INIT | WAIT_SYNC | SYNCING | RECOVERY => status.connected,
                    OFFLINE => {
                        let since = *peer.offline_since.lock().unwrap_or_else(|e| e.into_inner());
                        status.connected
                            && matches!((status.connected_at, since), (Some(up), Some(down)) if up > down)
                    }
                    _ => false,
                };
                counts && status.acked_seq < seq
            })
            .map(|m| m.id)
            .collect()
    }

    /// A peer opened a sync connection to us (REPORT_SERVER_ID).
    pub fn pusher_connected(&self, id: &str) {
        self.pushers
            .send_if_modified(|set| set.insert(id.to_string()));
    }

    /// Waits (at most `limit`) until every peer our member list shows ACTIVE has opened a
    /// sync connection to us. Called before a storage asks to be ACTIVE, so that peers
    /// writing with `write_ack = all` count it from its first moment as a server.
    pub async fn wait_for_pushers(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pushers = self.pushers.subscribe();
        loop {
            let missing: Vec<String> = {
                let connected = pushers.borrow_and_update();
                self.members
                    .all()
                    .into_iter()
                    .filter(|m| m.id != self.config.self_id && m.status == storage_status::ACTIVE)
                    .filter(|m| !connected.contains(&m.id))
                    .map(|m| m.id)
                    .collect()
            };
            if missing.is_empty() {
                return;
            }
            tokio::select! {
                _ = pushers.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(?missing, "peers did not connect in time; asking to be ACTIVE anyway");
                    return;
                }
            }
        }
    }

    pub(crate) fn notify_acks(&self) {
        self.acks.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Progress of every peer worker.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The SYNC_REPORT body: our clock, our generation and every peer's progress.
    pub fn report(&self) -> SyncReport {
        let committed = self.binlog.committed();
        let now = binlog_now();
        SyncReport {
            unix_time: i64::from(now),
            generation: self.generation(),
            peers: self
                .peers()
                .iter()
                .map(|peer| {
                    let status = peer.status();
                    let behind = committed.seq.saturating_sub(status.acked_seq);
                    PeerProgress {
                        peer_id: peer.id.clone(),
                        peer_generation: status.generation,
                        synced_timestamp: i64::from(status.synced_timestamp),
                        acked_seq: status.acked_seq as i64,
                        records_behind: behind as i64,
                        seconds_behind: match status.oldest_pending {
                            Some(ts) if behind > 0 => i64::from(now.saturating_sub(ts)),
                            _ => 0,
                        },
                    }
                })
                .collect(),
        }
    }

    /// Runs the peer workers (following the member list) and the copy from a source while
    /// one is needed, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        {
            let repl = self.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move { pull::run(repl, stop).await });
        }
        let mut members = self.members.subscribe();
        loop {
            self.reconcile(&tasks);
            self.notify_acks();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = members.changed() => if changed.is_err() { break },
                // a safety net in case a change slipped by
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
        for peer in self.peers() {
            peer.stop.cancel();
        }
        tasks.close();
        tasks.wait().await;
        self.binlog.close();
    }

    /// Starts a worker for every peer that should get our binlog, stops the others.
    fn reconcile(self: &Arc<Self>, tasks: &TaskTracker) {
        let wanted: BTreeMap<String, u8> = self
            .members
            .all()
            .into_iter()
            .filter(|m| m.id != self.config.self_id)
            .filter(|m| {
                !matches!(
                    m.status,
                    storage_status::DELETED | storage_status::IP_CHANGED | storage_status::NONE
                )
            })
            .map(|m| (m.id, m.status))
            .collect();
        let offline: std::collections::BTreeSet<String> = self
            .members
            .all()
            .into_iter()
            .filter(|m| m.status == storage_status::OFFLINE)
            .map(|m| m.id)
            .collect();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        for (id, peer) in peers.iter() {
            let mut since = peer.offline_since.lock().unwrap_or_else(|e| e.into_inner());
            match (offline.contains(id), *since) {
                (true, None) => *since = Some(std::time::Instant::now()),
                (false, Some(_)) => *since = None,
                _ => {}
            }
        }
        peers.retain(|id, peer| {
            let keep = wanted.contains_key(id);
            if !keep {
                info!(peer = %id, "peer left the group or was deleted: stopping its sync worker");
                peer.stop.cancel();
            }
            keep
        });
        for id in wanted.keys() {
            if peers.contains_key(id) {
                continue;
            }
            info!(peer = %id, "starting sync worker");
            let peer = Arc::new(Peer {
                id: id.clone(),
                status: Mutex::new(PeerStatus::default()),
                stop: CancellationToken::new(),
                offline_since: Mutex::new(None),
                errors: AtomicU64::new(0),
            });
            peers.insert(id.clone(), peer.clone());
            tasks.spawn(sender::run(self.clone(), peer));
        }
        self.store.keep_recent_files(!peers.is_empty());
    }
}

pub(crate) fn binlog_now() -> u32 {
    crate::clock::unix_now_u32()
}
