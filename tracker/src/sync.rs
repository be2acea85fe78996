//! Replication bookkeeping (J.1, K.2): which storage a new or recovering storage copies its
//! files from, the statuses it goes through meanwhile, and how far every storage's changes
//! have reached every other storage, which the read rules (J.4) depend on.
//!
//! Storages report per peer a *synced timestamp* `W` ("every change I accepted with a
//! timestamp below W is on that peer") for the peer's current data *generation*. A figure for
//! an older generation (the peer lost its data since) no longer counts. Sans-IO like
//! [`crate::cluster`]: the clock comes in as arguments.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fdfs_proto::status;
use fdfs_proto::sync_msg::{SyncReason, SyncReport, SyncSource};
use fdfs_proto::tracker_msg::storage_status::{
    self, ACTIVE, DELETED, INIT, IP_CHANGED, OFFLINE, ONLINE, RECOVERY, SYNCING, WAIT_SYNC,
};
use tracing::{info, warn};

use crate::cluster::{Cluster, Storage, StorageKey};

/// Clocks further apart than this get a warning: reads are routed on each source's own clock
/// (crate::select), but file names and HTTP token checks carry each server's time.
pub const MAX_CLOCK_SKEW: i64 = 1;
/// A persisting skew is warned about again after this long.
const SKEW_WARN_EVERY: Duration = Duration::from_secs(600);

/// How far one source storage's changes reached a storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSync {
    /// The receiving storage's generation the figures are for.
    pub generation: u64,
    pub synced_timestamp: i64,
    pub acked_seq: i64,
    pub records_behind: i64,
    pub seconds_behind: i64,
    /// Unix time of the report.
    pub reported: i64,
}

/// Replication facts about one storage.
#[derive(Clone, Debug, Default)]
pub struct SyncInfo {
    /// Its data generation, from its own reports (0 = not reported yet).
    pub generation: u64,
    /// The storage it copies files from, while WAIT_SYNC / SYNCING / RECOVERY.
    pub source: String,
    /// Per source storage id: how far that storage's changes reached this one.
    pub from: BTreeMap<String, PeerSync>,
    /// Its clock minus the tracker's at its last SYNC_REPORT, in seconds.
    pub clock_skew: Option<i64>,
    /// Last clock skew warning.
    skew_warned: Option<Instant>,
}

impl SyncInfo {
    /// The synced timestamp from `source`, if it is for this storage's current data.
    pub fn synced_from(&self, source: &str) -> Option<i64> {
        self.from
            .get(source)
            .filter(|p| self.generation != 0 && p.generation == self.generation)
            .map(|p| p.synced_timestamp)
    }
}

/// Why a sync command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyncError {
    #[error("connection has not joined")]
    NotJoined,
    #[error("no ACTIVE storage of group {0} to copy files from yet")]
    NoSource(String),
    #[error("status {0} cannot be requested")]
    BadStatus(u8),
}

impl SyncError {
    pub fn status(&self) -> u8 {
        match self {
            SyncError::NotJoined => status::EACCES,
            SyncError::NoSource(_) => status::EAGAIN,
            SyncError::BadStatus(_) => status::EINVAL,
        }
    }
}

/// Storages whose data counts: they may hold files a newcomer lacks.
fn holds_data(storage: &Storage) -> bool {
    matches!(storage.status, OFFLINE | ONLINE | ACTIVE)
}

impl Cluster {
    fn joined_storage(
        &mut self,
        peer: SocketAddr,
    ) -> Result<(StorageKey, &mut Storage), SyncError> {
        let key = self.session(peer).cloned().ok_or(SyncError::NotJoined)?;
        let index = self
            .group_position(&key.group)
            .map_err(|_| SyncError::NotJoined)?;
        let storage = self.groups[index]
            .storages
            .iter_mut()
            .find(|s| s.id == key.id && s.report_conn == Some(peer))
            .ok_or(SyncError::NotJoined)?;
        Ok((key, storage))
    }

    /// SYNC_DEST_REQ (87): a storage without (complete) data asks whom to copy from. `None`
    /// when no other storage holds data (it is ONLINE then); else the first ACTIVE storage
    /// by id, and the asker becomes WAIT_SYNC (new) or RECOVERY. With holders but none ACTIVE
    /// the asker must ask again later (EAGAIN); a new storage waits as INIT, which does not
    /// count as a holder, so storages starting together cannot wait for each other forever.
    pub fn sync_dest(
        &mut self,
        peer: SocketAddr,
        reason: SyncReason,
        unix_now: i64,
    ) -> Result<Option<SyncSource>, SyncError> {
        let (key, _) = self.joined_storage(peer)?;
        let index = self
            .group_position(&key.group)
            .map_err(|_| SyncError::NotJoined)?;
        let group = &mut self.groups[index];
        let others = || group.storages.iter().filter(|s| s.id != key.id);
        let has_holders = others().any(holds_data);
        let source = others().find(|s| s.status == ACTIVE).map(|s| s.id.clone());
        let storage = group
            .storages
            .iter_mut()
            .find(|s| s.id == key.id)
            .ok_or(SyncError::NotJoined)?;
        let copying = match reason {
            SyncReason::New => WAIT_SYNC,
            SyncReason::Recovery => RECOVERY,
        };
        if !has_holders {
            storage.status = ONLINE;
            storage.sync.source.clear();
            info!(group = %key.group, id = %key.id, "no other storage holds data: nothing to copy");
            return Ok(None);
        }
        let Some(source) = source else {
            storage.status = if reason == SyncReason::New {
                INIT
            } else {
                RECOVERY
            };
            return Err(SyncError::NoSource(key.group));
        };
        storage.status = copying;
        storage.sync.source = source.clone();
        info!(group = %key.group, id = %key.id, %source, status = storage_status::name(copying), "storage copies the group's files");
        Ok(Some(SyncSource {
            source_id: source,
            until: unix_now,
        }))
    }

    /// CHANGE_STATUS (59): a storage sets its own status while it copies files (WAIT_SYNC,
    /// SYNCING, RECOVERY, INIT) and says ONLINE when done; its next beat makes it ACTIVE.
    /// J.1 stores ONLINE/ACTIVE as OFFLINE; fdfs-rs keeps ONLINE (the storage is connected),
    /// so peers never see a storage that is about to serve as OFFLINE, which would make
    /// them stop counting it for `write_ack = "all"`.
    pub fn change_status(&mut self, peer: SocketAddr, requested: u8) -> Result<(), SyncError> {
        let (key, storage) = self.joined_storage(peer)?;
        let status = match requested {
            ONLINE | ACTIVE => ONLINE,
            OFFLINE => OFFLINE,
            INIT | WAIT_SYNC | SYNCING | RECOVERY => requested,
            other => return Err(SyncError::BadStatus(other)),
        };
        if storage.status == DELETED || storage.status == IP_CHANGED {
            return Err(SyncError::BadStatus(requested));
        }
        if storage.status != status {
            info!(group = %key.group, id = %key.id, from = storage_status::name(storage.status), to = storage_status::name(status), "storage changed its status");
            storage.status = status;
            if !matches!(status, WAIT_SYNC | SYNCING | RECOVERY) {
                storage.sync.source.clear();
            }
        }
        Ok(())
    }

    /// SYNC_REPORT (89): the reporter's generation, clock and progress of each peer.
    pub fn sync_report(
        &mut self,
        peer: SocketAddr,
        report: &SyncReport,
        now: Instant,
        unix_now: i64,
    ) -> Result<(), SyncError> {
        let (key, reporter) = self.joined_storage(peer)?;
        if reporter.sync.generation != report.generation {
            if reporter.sync.generation != 0 {
                info!(group = %key.group, id = %key.id, "storage reports new data: its replication figures start over");
            }
            reporter.sync.generation = report.generation;
        }
        let skew = report.unix_time.saturating_sub(unix_now);
        reporter.sync.clock_skew = Some(skew);
        if skew.abs() > MAX_CLOCK_SKEW {
            let due = reporter
                .sync
                .skew_warned
                .is_none_or(|at| now.saturating_duration_since(at) >= SKEW_WARN_EVERY);
            if due {
                warn!(
                    group = %key.group,
                    id = %key.id,
                    skew_seconds = skew,
                    "storage clock differs from the tracker's (reads are routed correctly regardless, but its file names and HTTP token checks follow its own clock): fix the clocks (NTP)"
                );
                reporter.sync.skew_warned = Some(now);
            }
        } else if reporter.sync.skew_warned.take().is_some() {
            info!(group = %key.group, id = %key.id, "storage clock agrees with the tracker's again");
        }
        let index = self
            .group_position(&key.group)
            .map_err(|_| SyncError::NotJoined)?;
        let group = &mut self.groups[index];
        for entry in &report.peers {
            let Some(target) = group.storages.iter_mut().find(|s| s.id == entry.peer_id) else {
                continue;
            };
            let figures = target.sync.from.entry(key.id.clone()).or_default();
            let timestamp = if figures.generation == entry.peer_generation {
                figures.synced_timestamp.max(entry.synced_timestamp)
            } else {
                entry.synced_timestamp
            };
            *figures = PeerSync {
                generation: entry.peer_generation,
                synced_timestamp: timestamp,
                acked_seq: entry.acked_seq,
                records_behind: entry.records_behind,
                seconds_behind: entry.seconds_behind,
                reported: unix_now,
            };
        }
        // the stat block's last_synced_timestamp (E.2): the least any ACTIVE peer guarantees
        let active: Vec<String> = group
            .storages
            .iter()
            .filter(|s| s.status == ACTIVE)
            .map(|s| s.id.clone())
            .collect();
        for storage in &mut group.storages {
            let least = active
                .iter()
                .filter(|id| **id != storage.id)
                .map(|id| storage.sync.synced_from(id).unwrap_or(0))
                .min();
            storage.last_synced_timestamp = least
                .map(|w| u32::try_from((w - 1).max(0)).unwrap_or(u32::MAX))
                .unwrap_or(0);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Instant;

    use fdfs_proto::sync_msg::PeerProgress;

    use super::*;
    use crate::cluster::tests::{join_request, peer, usage};

    fn status(cluster: &Cluster, id: &str) -> u8 {
        cluster.group("group1").unwrap().storage(id).unwrap().status
    }

    /// Joins storage `n` of group1 on `peer(n)` and makes it ACTIVE.
    pub(crate) fn active(cluster: &mut Cluster, n: u16) {
        cluster
            .join(
                peer(n),
                &join_request("group1", u32::from(n), 23000 + n, 1),
                Instant::now(),
            )
            .unwrap();
        cluster
            .beat(peer(n), vec![usage(10, 5)], Instant::now())
            .unwrap();
    }

    #[test]
    fn the_first_storage_copies_nothing_the_next_ones_copy_from_an_active_one() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 1, 23001, 1), now)
            .unwrap();
        assert_eq!(cluster.sync_dest(peer(1), SyncReason::New, 100), Ok(None));
        cluster.beat(peer(1), vec![usage(10, 5)], now).unwrap();
        assert_eq!(status(&cluster, "1"), ACTIVE);

        cluster
            .join(peer(2), &join_request("group1", 2, 23002, 1), now)
            .unwrap();
        let source = cluster.sync_dest(peer(2), SyncReason::New, 100).unwrap();
        assert_eq!(
            source,
            Some(SyncSource {
                source_id: "1".into(),
                until: 100
            })
        );
        assert_eq!(status(&cluster, "2"), WAIT_SYNC);
        // beats do not make a copying storage ACTIVE
        cluster.beat(peer(2), vec![usage(10, 5)], now).unwrap();
        assert_eq!(status(&cluster, "2"), WAIT_SYNC);
        cluster.change_status(peer(2), SYNCING).unwrap();
        assert_eq!(status(&cluster, "2"), SYNCING);
        cluster.beat(peer(2), vec![usage(10, 5)], now).unwrap();
        assert_eq!(status(&cluster, "2"), SYNCING);
        // done: ONLINE (not J.1's OFFLINE), the next beat makes it ACTIVE
        cluster.change_status(peer(2), ONLINE).unwrap();
        assert_eq!(status(&cluster, "2"), ONLINE);
        cluster.beat(peer(2), vec![usage(10, 5)], now).unwrap();
        assert_eq!(status(&cluster, "2"), ACTIVE);
        assert_eq!(
            cluster.change_status(peer(2), DELETED),
            Err(SyncError::BadStatus(DELETED))
        );
        assert_eq!(
            cluster.change_status(peer(9), ONLINE),
            Err(SyncError::NotJoined)
        );
    }

    #[test]
    fn storages_starting_together_do_not_wait_for_each_other() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 1, 23001, 1), now)
            .unwrap();
        cluster
            .join(peer(2), &join_request("group1", 2, 23002, 1), now)
            .unwrap();
        // 2 is ONLINE (might hold data) but not ACTIVE: 1 must wait, as INIT
        let err = cluster.sync_dest(peer(1), SyncReason::New, 1).unwrap_err();
        assert_eq!(err.status(), status::EAGAIN);
        assert_eq!(status(&cluster, "1"), INIT);
        // 1 waiting as INIT is no holder: 2 starts empty
        assert_eq!(cluster.sync_dest(peer(2), SyncReason::New, 1), Ok(None));
        cluster.beat(peer(2), vec![usage(10, 5)], now).unwrap();
        assert_eq!(
            cluster
                .sync_dest(peer(1), SyncReason::New, 2)
                .unwrap()
                .unwrap()
                .source_id,
            "2"
        );
        // a recovering storage shows RECOVERY
        active(&mut cluster, 3);
        assert_eq!(
            cluster
                .sync_dest(peer(3), SyncReason::Recovery, 3)
                .unwrap()
                .unwrap()
                .source_id,
            "2"
        );
        assert_eq!(status(&cluster, "3"), RECOVERY);
    }

    fn report(generation: u64, peers: Vec<(&str, u64, i64)>) -> SyncReport {
        SyncReport {
            unix_time: 1000,
            generation,
            peers: peers
                .into_iter()
                .map(|(id, peer_generation, synced)| PeerProgress {
                    peer_id: id.into(),
                    peer_generation,
                    synced_timestamp: synced,
                    ..PeerProgress::default()
                })
                .collect(),
        }
    }

    #[test]
    fn synced_timestamps_count_only_for_the_current_generation() {
        let mut cluster = Cluster::new();
        active(&mut cluster, 1);
        active(&mut cluster, 2);
        let now = Instant::now();
        let synced = |cluster: &Cluster, to: &str, from: &str| {
            cluster
                .group("group1")
                .unwrap()
                .storage(to)
                .unwrap()
                .sync
                .synced_from(from)
        };
        // 1 reports on 2 before 2 said which generation it has: not trusted yet
        cluster
            .sync_report(peer(1), &report(11, vec![("2", 22, 500)]), now, 1000)
            .unwrap();
        assert_eq!(synced(&cluster, "2", "1"), None);
        cluster
            .sync_report(peer(2), &report(22, vec![("1", 11, 400)]), now, 1000)
            .unwrap();
        assert_eq!(synced(&cluster, "2", "1"), Some(500));
        assert_eq!(synced(&cluster, "1", "2"), Some(400));
        // figures only grow within a generation
        cluster
            .sync_report(peer(1), &report(11, vec![("2", 22, 450)]), now, 1000)
            .unwrap();
        assert_eq!(synced(&cluster, "2", "1"), Some(500));
        assert_eq!(
            cluster
                .group("group1")
                .unwrap()
                .storage("2")
                .unwrap()
                .last_synced_timestamp,
            499
        );
        // 2 lost its data: 1's old figure no longer counts, a fresh one does
        cluster
            .sync_report(peer(2), &report(23, vec![]), now, 1000)
            .unwrap();
        assert_eq!(synced(&cluster, "2", "1"), None);
        cluster
            .sync_report(peer(1), &report(11, vec![("2", 23, 10)]), now, 1000)
            .unwrap();
        assert_eq!(synced(&cluster, "2", "1"), Some(10));
        // clock skew is accepted (and warned about)
        let mut skewed = report(11, vec![]);
        skewed.unix_time = 2000;
        cluster.sync_report(peer(1), &skewed, now, 1000).unwrap();
        assert!(cluster
            .group("group1")
            .unwrap()
            .storage("1")
            .unwrap()
            .sync
            .skew_warned
            .is_some());
    }
}
