//! Every tracker metric (names documented in the README, "Metrics (tracker)").
//!
//! Metrics are recorded with the `metrics` macros into this tracker's own Prometheus recorder,
//! installed only around each recording (`with_local_recorder`), never process-wide: several
//! trackers can then live in one test process, each with its own numbers. Request metrics are
//! recorded as requests finish; the per-storage gauges are refreshed from the registry when
//! `/metrics` is scraped, so they are never staler than the scrape.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use fdfs_proto::cmd::Command;
use fdfs_proto::sample_budget::SampleBudget;
use fdfs_proto::tracker_msg::storage_status;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    with_local_recorder, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::cluster::Cluster;

pub const REQUESTS: &str = "fdfs_tracker_requests_total";
pub const REQUEST_DURATION: &str = "fdfs_tracker_request_duration_seconds";
pub const CONNECTIONS_OPEN: &str = "fdfs_tracker_connections_open";
pub const STORAGES: &str = "fdfs_tracker_storages";
pub const HEARTBEAT_AGE: &str = "fdfs_tracker_storage_heartbeat_age_seconds";
pub const FREE_BYTES: &str = "fdfs_tracker_storage_free_bytes";
pub const TOTAL_BYTES: &str = "fdfs_tracker_storage_total_bytes";
pub const SYNC_RECORDS_BEHIND: &str = "fdfs_tracker_replication_records_behind";
pub const SYNC_SECONDS_BEHIND: &str = "fdfs_tracker_replication_seconds_behind";
pub const CLOCK_SKEW: &str = "fdfs_tracker_storage_clock_skew_seconds";
pub const ADDRESS_MISMATCH: &str = "fdfs_tracker_storage_address_mismatch";
pub const REFUSED: &str = "fdfs_tracker_refused_total";

/// Tracker requests take microseconds to milliseconds; the top buckets catch stalls.
const DURATION_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Statuses every group reports a `fdfs_tracker_storages` series for (zero when none).
const STATUSES: [u8; 9] = [
    storage_status::INIT,
    storage_status::WAIT_SYNC,
    storage_status::SYNCING,
    storage_status::IP_CHANGED,
    storage_status::DELETED,
    storage_status::OFFLINE,
    storage_status::ONLINE,
    storage_status::ACTIVE,
    storage_status::RECOVERY,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Connections that have sent a tracker request and are still open.
    open: Mutex<HashSet<SocketAddr>>,
    /// Latency samples since the last folding (bounds what the recorder holds).
    samples: SampleBudget,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `query_store_without_group_one` for `QueryStoreWithoutGroupOne`.
pub fn command_label(command: Command) -> String {
    let name = format!("{command:?}");
    let mut label = String::with_capacity(name.len() + 8);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                label.push('_');
            }
            label.push(c.to_ascii_lowercase());
        } else {
            label.push(c);
        }
    }
    label
}

fn status_label(status: u8) -> String {
    storage_status::name(status).to_ascii_lowercase()
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &DURATION_BUCKETS)
            .expect("the bucket list is a non-empty constant")
            .build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics {
            recorder,
            handle,
            open: Mutex::new(HashSet::new()),
            samples: SampleBudget::default(),
        };
        metrics.record(|| {
            describe_counter!(
                REQUESTS,
                "Tracker requests answered, by command and FastDFS status byte."
            );
            describe_histogram!(
                REQUEST_DURATION,
                Unit::Seconds,
                "Time from a request's header to the end of its reply, by command."
            );
            describe_gauge!(
                CONNECTIONS_OPEN,
                "Open connections that have sent at least one tracker request."
            );
            describe_gauge!(
                STORAGES,
                "Storages known to the tracker, by group and status."
            );
            describe_gauge!(
                HEARTBEAT_AGE,
                Unit::Seconds,
                "Seconds since the storage's last heartbeat reached this tracker."
            );
            describe_gauge!(
                FREE_BYTES,
                Unit::Bytes,
                "Free space of the storage (all store paths) at its last heartbeat."
            );
            describe_gauge!(
                TOTAL_BYTES,
                Unit::Bytes,
                "Disk size of the storage (all store paths) at its last heartbeat."
            );
            describe_gauge!(
                SYNC_RECORDS_BEHIND,
                "Binlog records of the source storage its peer has not confirmed, as the source last reported."
            );
            describe_gauge!(
                SYNC_SECONDS_BEHIND,
                Unit::Seconds,
                "Age of the oldest change of the source storage its peer has not confirmed (0 when caught up)."
            );
            describe_counter!(
                REFUSED,
                "Connections and requests refused, by reason: allow_hosts (closed at accept), auth_failed (wrong cluster secret), not_authenticated (storage command before authenticating), admin_hosts (admin command from another host), metrics_allow_hosts (HTTP request answered 403)."
            );
            describe_gauge!(
                CLOCK_SKEW,
                Unit::Seconds,
                "The storage's clock minus the tracker's at its last replication report."
            );
            describe_gauge!(
                ADDRESS_MISMATCH,
                "1 when the storage listens on another IP than it connects from, or another storage is registered at its ip:port."
            );
            gauge!(CONNECTIONS_OPEN).set(0.0);
        });
        metrics
    }

    /// A connection or request refused by the security settings (see [`REFUSED`]).
    pub fn refused(&self, reason: &'static str) {
        self.record(|| counter!(REFUSED, "reason" => reason).increment(1));
    }

    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        with_local_recorder(&self.recorder, f)
    }

    /// A request answered with `status` after `elapsed`.
    pub fn request(&self, command: Command, status: u8, elapsed: Duration) {
        let command = command_label(command);
        self.record(|| {
            counter!(REQUESTS, "command" => command.clone(), "status" => status.to_string())
                .increment(1);
            histogram!(REQUEST_DURATION, "command" => command).record(elapsed.as_secs_f64());
        });
        if self.samples.spend() {
            self.handle.run_upkeep();
        }
    }

    /// A request arrived on the connection from `peer`; counts the connection the first time.
    pub fn connection_active(&self, peer: SocketAddr) {
        let added = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer);
        if added {
            self.record(|| gauge!(CONNECTIONS_OPEN).increment(1.0));
        }
    }

    /// The connection from `peer` closed.
    pub fn connection_closed(&self, peer: SocketAddr) {
        let removed = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&peer);
        if removed {
            self.record(|| gauge!(CONNECTIONS_OPEN).decrement(1.0));
        }
    }

    /// Refreshes the per-group and per-storage gauges from the registry; `unix_now` in seconds.
    pub fn observe(&self, cluster: &Cluster, unix_now: i64) {
        self.record(|| {
            for group in cluster.groups() {
                for status in STATUSES {
                    let count = group
                        .storages()
                        .iter()
                        .filter(|s| s.status == status)
                        .count();
                    gauge!(STORAGES, "group" => group.name.clone(), "status" => status_label(status))
                        .set(count as f64);
                }
                for storage in group.storages() {
                    let labels = [
                        ("group", group.name.clone()),
                        ("storage", storage.id.clone()),
                    ];
                    if storage.last_beat_unix > 0 {
                        let age = unix_now.saturating_sub(storage.last_beat_unix).max(0);
                        gauge!(HEARTBEAT_AGE, &labels).set(age as f64);
                    }
                    gauge!(FREE_BYTES, &labels).set(storage.free_bytes() as f64);
                    gauge!(TOTAL_BYTES, &labels).set(storage.total_bytes() as f64);
                    if let Some(skew) = storage.sync.clock_skew {
                        gauge!(CLOCK_SKEW, &labels).set(skew as f64);
                    }
                    let mismatch = storage.address_mismatch()
                        || cluster.same_address(&group.name, &storage.id).is_some();
                    gauge!(ADDRESS_MISMATCH, &labels).set(f64::from(u8::from(mismatch)));
                    for (source, figures) in &storage.sync.from {
                        let labels = [
                            ("group", group.name.clone()),
                            ("source", source.clone()),
                            ("peer", storage.id.clone()),
                        ];
                        gauge!(SYNC_RECORDS_BEHIND, &labels).set(figures.records_behind as f64);
                        gauge!(SYNC_SECONDS_BEHIND, &labels).set(figures.seconds_behind as f64);
                    }
                }
            }
        });
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets; called periodically (and by
    /// [`Metrics::request`] every [`FOLD_EVERY`](fdfs_proto::sample_budget::FOLD_EVERY) samples).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::cluster::tests::{join_request, peer, usage};

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn labels_are_snake_case() {
        assert_eq!(
            command_label(Command::QueryStoreWithoutGroupOne),
            "query_store_without_group_one"
        );
        assert_eq!(command_label(Command::StorageBeat), "storage_beat");
        assert_eq!(status_label(storage_status::WAIT_SYNC), "wait_sync");
    }

    #[test]
    fn requests_and_connections_are_counted() {
        let metrics = Metrics::new();
        for _ in 0..3 {
            metrics.request(Command::QueryFetchOne, 0, Duration::from_micros(300));
        }
        metrics.request(Command::QueryFetchOne, 2, Duration::from_millis(2));
        metrics.connection_active(peer(1));
        metrics.connection_active(peer(1));
        metrics.connection_active(peer(2));
        metrics.connection_closed(peer(2));
        metrics.connection_closed(peer(3));
        let text = metrics.render();
        assert_eq!(
            line_value(
                &text,
                "fdfs_tracker_requests_total{command=\"query_fetch_one\",status=\"0\"}"
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            line_value(
                &text,
                "fdfs_tracker_requests_total{command=\"query_fetch_one\",status=\"2\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            line_value(
                &text,
                "fdfs_tracker_request_duration_seconds_bucket{command=\"query_fetch_one\",le=\"0.0005\"}"
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            line_value(
                &text,
                "fdfs_tracker_request_duration_seconds_count{command=\"query_fetch_one\"}"
            ),
            Some(4.0)
        );
        assert_eq!(
            line_value(&text, "fdfs_tracker_connections_open "),
            Some(1.0)
        );
        assert!(
            text.contains("# HELP fdfs_tracker_requests_total"),
            "{text}"
        );
    }

    #[test]
    fn storage_gauges_follow_the_registry() {
        let metrics = Metrics::new();
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 7, 23000, 1), now)
            .unwrap();
        cluster
            .report_beat(peer(1), vec![usage(1000, 400)], None, now, 1_000)
            .unwrap();
        cluster
            .join(peer(2), &join_request("group1", 8, 23001, 1), now)
            .unwrap();
        metrics.observe(&cluster, 1_030);
        let text = metrics.render();
        let value = |prefix: &str| line_value(&text, prefix);
        assert_eq!(
            value("fdfs_tracker_storages{group=\"group1\",status=\"active\"}"),
            Some(1.0)
        );
        assert_eq!(
            value("fdfs_tracker_storages{group=\"group1\",status=\"online\"}"),
            Some(1.0)
        );
        assert_eq!(
            value("fdfs_tracker_storages{group=\"group1\",status=\"deleted\"}"),
            Some(0.0)
        );
        assert_eq!(
            value("fdfs_tracker_storage_heartbeat_age_seconds{group=\"group1\",storage=\"7\"}"),
            Some(30.0)
        );
        // No heartbeat yet: no age.
        assert_eq!(
            value("fdfs_tracker_storage_heartbeat_age_seconds{group=\"group1\",storage=\"8\"}"),
            None
        );
        assert_eq!(
            value("fdfs_tracker_storage_free_bytes{group=\"group1\",storage=\"7\"}"),
            Some(400.0)
        );
        assert_eq!(
            value("fdfs_tracker_storage_total_bytes{group=\"group1\",storage=\"7\"}"),
            Some(1000.0)
        );
        // replication figures reported by storage 7 about storage 8
        let report = fdfs_proto::sync_msg::SyncReport {
            unix_time: 1_030,
            generation: 1,
            peers: vec![fdfs_proto::sync_msg::PeerProgress {
                peer_id: "8".into(),
                records_behind: 12,
                seconds_behind: 3,
                ..Default::default()
            }],
        };
        cluster.sync_report(peer(1), &report, now, 1_030).unwrap();
        metrics.observe(&cluster, 1_030);
        let text = metrics.render();
        assert_eq!(
            line_value(
                &text,
                "fdfs_tracker_replication_records_behind{group=\"group1\",source=\"7\",peer=\"8\"}"
            ),
            Some(12.0),
            "{text}"
        );
        assert_eq!(
            line_value(
                &text,
                "fdfs_tracker_replication_seconds_behind{group=\"group1\",source=\"7\",peer=\"8\"}"
            ),
            Some(3.0)
        );
        // storage 7's clock runs 2 s ahead; storage 8 listens where it does not connect from
        let ahead = fdfs_proto::sync_msg::SyncReport {
            unix_time: 1_032,
            ..report
        };
        cluster.sync_report(peer(1), &ahead, now, 1_030).unwrap();
        cluster.note_listen_ip(peer(2), "127.0.0.2");
        metrics.observe(&cluster, 1_030);
        let text = metrics.render();
        let value = |prefix: &str| line_value(&text, prefix);
        assert_eq!(
            value("fdfs_tracker_storage_clock_skew_seconds{group=\"group1\",storage=\"7\"}"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value("fdfs_tracker_storage_address_mismatch{group=\"group1\",storage=\"7\"}"),
            Some(0.0)
        );
        assert_eq!(
            value("fdfs_tracker_storage_address_mismatch{group=\"group1\",storage=\"8\"}"),
            Some(1.0)
        );
        cluster.disconnect(peer(1));
        metrics.observe(&cluster, 1_031);
        let text = metrics.render();
        assert_eq!(
            line_value(
                &text,
                "fdfs_tracker_storages{group=\"group1\",status=\"active\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            line_value(
                &text,
                "fdfs_tracker_storages{group=\"group1\",status=\"offline\"}"
            ),
            Some(1.0)
        );
    }
}
