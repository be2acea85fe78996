//! STORAGE_HEALTH (fdfs-rs 200): per storage, the facts `fdfs status` warns about that the
//! 6.16 list replies cannot carry (see `fdfs_proto::health_msg` for the body).

use fdfs_proto::health_msg::{HealthReport, PeerLag, StorageHealth};

use super::{expect_len, CmdError};
use crate::cluster::Cluster;
use crate::service::{unix_now, Tracker};

pub fn handle(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    expect_len(body, 0, "storage health")?;
    Ok(report(&tracker.cluster(), unix_now()).encode())
}

/// Every storage of every group, in group and id order.
pub fn report(cluster: &Cluster, unix_now: i64) -> HealthReport {
    let mut storages = Vec::new();
    for group in cluster.groups() {
        for s in group.storages() {
            let peers = s
                .sync
                .from
                .iter()
                // figures for data this storage no longer has say nothing about it
                .filter(|(_, p)| s.sync.generation == 0 || p.generation == s.sync.generation)
                .map(|(source, p)| PeerLag {
                    source_id: source.clone(),
                    records_behind: p.records_behind,
                    seconds_behind: p.seconds_behind,
                    reported: p.reported,
                })
                .collect();
            storages.push(StorageHealth {
                group: group.name.clone(),
                id: s.id.clone(),
                clock_skew: s.sync.clock_skew,
                listen_ip: s.listen_ip.clone(),
                same_address_as: cluster
                    .same_address(&group.name, &s.id)
                    .map(|(_, id)| id)
                    .unwrap_or_default(),
                peers,
            });
        }
    }
    HealthReport {
        tracker_time: unix_now,
        storages,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use fdfs_proto::sync_msg::{PeerProgress, SyncReport};

    use super::*;
    use crate::cluster::tests::{join_request, peer};
    use crate::sync::tests::active;

    #[test]
    fn skew_listen_ip_conflicts_and_lag_per_peer() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        active(&mut cluster, 1);
        active(&mut cluster, 2);
        // storage 1 runs 5 s ahead and reports that storage 2 misses 7 of its records
        let report_1 = SyncReport {
            unix_time: 1_005,
            generation: 1,
            peers: vec![PeerProgress {
                peer_id: "2".into(),
                peer_generation: 1,
                records_behind: 7,
                seconds_behind: 3,
                ..PeerProgress::default()
            }],
        };
        cluster.sync_report(peer(1), &report_1, now, 1_000).unwrap();
        let report_2 = SyncReport {
            unix_time: 1_000,
            generation: 1,
            peers: vec![],
        };
        cluster.sync_report(peer(2), &report_2, now, 1_000).unwrap();
        // storage 2 listens on another IP than it connects from
        cluster.note_listen_ip(peer(2), "10.1.2.3");
        cluster.note_listen_ip(peer(1), "127.0.0.1");

        let health = report(&cluster, 1_000);
        assert_eq!(health.tracker_time, 1_000);
        let [one, two] = &health.storages[..] else {
            panic!("{health:?}")
        };
        assert_eq!(one.clock_skew, Some(5));
        assert_eq!(two.clock_skew, Some(0));
        assert!(one.peers.is_empty());
        assert_eq!(
            two.peers,
            [PeerLag {
                source_id: "1".into(),
                records_behind: 7,
                seconds_behind: 3,
                reported: 1_000,
            }]
        );
        let storage = |id: &str| {
            cluster
                .group("group1")
                .unwrap()
                .storage(id)
                .unwrap()
                .clone()
        };
        assert!(!storage("1").address_mismatch());
        assert!(storage("2").address_mismatch());
        assert_eq!(two.listen_ip, "10.1.2.3");
        assert!(one.same_address_as.is_empty());

        // storage 3 takes over storage 1's address after 1 went away: both records claim it
        cluster.disconnect(peer(1));
        let from_1: SocketAddr = peer(3);
        cluster
            .join(from_1, &join_request("group1", 3, 23001, 1), now)
            .unwrap();
        let health = report(&cluster, 1_001);
        let conflicts: Vec<(&str, &str)> = health
            .storages
            .iter()
            .map(|s| (s.id.as_str(), s.same_address_as.as_str()))
            .collect();
        assert_eq!(conflicts, [("1", "3"), ("2", ""), ("3", "1")]);
        // once the stale record is deleted the conflict is gone
        cluster.delete_storage("group1", "1").unwrap();
        assert!(report(&cluster, 1_002)
            .storages
            .iter()
            .all(|s| s.same_address_as.is_empty()));
    }

    #[test]
    fn clock_skew_from_a_sync_report_on_the_wire() {
        use fdfs_proto::cmd::Command;
        let tracker = Tracker::new(&crate::config::TrackerConfig::default());
        tracker
            .cluster()
            .join(
                peer(1),
                &join_request("group1", 1, 23001, 1),
                Instant::now(),
            )
            .unwrap();
        // the storage's clock runs 30 s ahead of ours
        let report = SyncReport {
            unix_time: unix_now() + 30,
            generation: 1,
            peers: vec![],
        };
        super::super::handle(
            &tracker,
            Command::SyncReport,
            &report.encode(),
            peer(1),
            peer(9),
        )
        .unwrap();
        let body =
            super::super::handle(&tracker, Command::StorageHealth, &[], peer(2), peer(9)).unwrap();
        let health = HealthReport::decode(&body).unwrap();
        let skew = health.storages[0].clock_skew.unwrap();
        // a second boundary may pass between building the report and handling it
        assert!((29..=30).contains(&skew), "{skew}");
    }

    #[test]
    fn a_body_is_refused() {
        let tracker = Tracker::new(&crate::config::TrackerConfig::default());
        assert!(handle(&tracker, &[0]).is_err());
        let body = handle(&tracker, &[]).unwrap();
        assert!(HealthReport::decode(&body).unwrap().storages.is_empty());
    }
}
