//! The storage's Prometheus metrics (names documented in the README, "Status and metrics
//! (storage)"), served at `GET /metrics` on the HTTP port, and the optional access log.
//!
//! Like the tracker, the storage records into its own recorder, installed only around each
//! recording (`with_local_recorder`), never process-wide: several storages can live in one
//! test process. Request metrics are recorded as requests finish; disk and replication gauges
//! are refreshed when `/metrics` is scraped.

use std::time::Duration;

use fdfs_proto::cmd::Command;
use fdfs_proto::logging::AccessLog;
use fdfs_proto::sample_budget::SampleBudget;
use fdfs_proto::server::ConnInfo;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    with_local_recorder, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::replication::Replication;
use crate::stats::Outcome;

/// Renders `/metrics`, refreshing the disk and replication gauges first.
#[derive(Debug)]
pub struct Exporter {
    pub metrics: std::sync::Arc<Metrics>,
    pub repl: std::sync::Arc<Replication>,
    pub scrub: std::sync::Arc<crate::scrub::Scrubber>,
    /// Store paths, in index order (the `path` label).
    pub paths: Vec<String>,
}

impl Exporter {
    pub async fn render(&self) -> String {
        let store = self.repl.store();
        let usage = store.usage().await;
        self.metrics.disks(&self.paths, &usage);
        self.metrics.files(&self.paths, &store.file_counts());
        self.metrics.sync(&self.repl.report());
        let errors: Vec<(String, u64)> = self
            .repl
            .peers()
            .iter()
            .map(|peer| (peer.id.clone(), peer.sync_errors()))
            .collect();
        self.metrics.sync_errors(&errors);
        self.metrics
            .faults(&self.paths, &store.path_states(), &self.scrub);
        self.metrics
            .disk_slots(&self.paths, &store.io_in_use(), &store.io_refused());
        self.metrics.journal(&self.paths, &store.journal_stats());
        self.metrics.render()
    }
}

pub const REQUESTS: &str = "fdfs_storage_requests_total";
pub const REQUEST_DURATION: &str = "fdfs_storage_request_duration_seconds";
pub const BYTES_RECEIVED: &str = "fdfs_storage_bytes_received_total";
pub const BYTES_SENT: &str = "fdfs_storage_bytes_sent_total";
pub const CONNECTIONS_OPEN: &str = "fdfs_storage_connections_open";
pub const DISK_TOTAL: &str = "fdfs_storage_disk_total_bytes";
pub const DISK_FREE: &str = "fdfs_storage_disk_free_bytes";
pub const SYNC_RECORDS_BEHIND: &str = "fdfs_storage_sync_records_behind";
pub const SYNC_SECONDS_BEHIND: &str = "fdfs_storage_sync_seconds_behind";
pub const SYNC_ERRORS: &str = "fdfs_storage_sync_errors_total";
pub const FILES: &str = "fdfs_storage_files";
pub const REFUSED: &str = "fdfs_storage_refused_total";
pub const STORE_PATH_HEALTHY: &str = "fdfs_storage_store_path_healthy";
pub const STORE_PATH_IO_IN_USE: &str = "fdfs_storage_store_path_io_in_use";
pub const STORE_PATH_IO_BUSY: &str = "fdfs_storage_store_path_io_busy_total";
pub const JOURNAL_ENTRIES: &str = "fdfs_storage_journal_entries_total";
pub const JOURNAL_COMMITS: &str = "fdfs_storage_journal_commits_total";
pub const JOURNAL_CHECKPOINTS: &str = "fdfs_storage_journal_checkpoints_total";
pub const JOURNAL_HEALTHY: &str = "fdfs_storage_journal_healthy";
pub const SCRUB_RUNNING: &str = "fdfs_storage_scrub_running";
pub const SCRUB_CHECKED: &str = "fdfs_storage_scrub_checked_files_total";
pub const SCRUB_CORRUPT: &str = "fdfs_storage_scrub_corrupt_files_total";
pub const SCRUB_REPAIRED: &str = "fdfs_storage_scrub_repaired_files_total";
pub const SCRUB_UNREPAIRABLE: &str = "fdfs_storage_scrub_unrepairable_files_total";
pub const SCRUB_BYTES: &str = "fdfs_storage_scrub_read_bytes_total";

/// Storage requests take from microseconds (metadata) to seconds (large files).
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// One `access` log line per request while on (switched on SIGHUP).
    access_log: AccessLog,
    /// The group, for the file IDs of the access log.
    group: String,
    /// Latency samples since the last folding (bounds what the recorder holds).
    samples: SampleBudget,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("access_log", &self.access_log.enabled())
            .finish_non_exhaustive()
    }
}

/// `upload_appender_file` for `UploadAppenderFile`.
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

/// Whether a command sends file content to the client (its bytes count as sent).
fn sends_content(command: Command) -> bool {
    matches!(command, Command::DownloadFile)
}

impl Metrics {
    pub fn new(access_log: AccessLog, group: &str) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &DURATION_BUCKETS)
            .expect("the bucket list is a non-empty constant")
            .build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics {
            recorder,
            handle,
            access_log,
            group: group.to_string(),
            samples: SampleBudget::default(),
        };
        metrics.record(|| {
            describe_counter!(
                REQUESTS,
                "Storage requests answered, by command and FastDFS status byte."
            );
            describe_histogram!(
                REQUEST_DURATION,
                Unit::Seconds,
                "Time from a request's header to the end of its reply, by command."
            );
            describe_counter!(
                BYTES_RECEIVED,
                Unit::Bytes,
                "Request body bytes received (uploads, appends, replication pushes, ...)."
            );
            describe_counter!(
                BYTES_SENT,
                Unit::Bytes,
                "File content bytes sent to clients (downloads)."
            );
            describe_gauge!(
                CONNECTIONS_OPEN,
                "Open connections that have sent at least one storage request."
            );
            describe_gauge!(DISK_TOTAL, Unit::Bytes, "Size of the store path's disk.");
            describe_gauge!(
                DISK_FREE,
                Unit::Bytes,
                "Free space of the store path's disk."
            );
            describe_gauge!(
                SYNC_RECORDS_BEHIND,
                "Binlog records of this storage the peer has not confirmed."
            );
            describe_gauge!(
                SYNC_SECONDS_BEHIND,
                Unit::Seconds,
                "Age of the oldest change of this storage the peer has not confirmed (0 when caught up)."
            );
            describe_counter!(
                SYNC_ERRORS,
                "Failed attempts to sync with the peer (connection, protocol or refused record)."
            );
            describe_gauge!(
                STORE_PATH_HEALTHY,
                "1 while the store path's disk works, 0 once a probe failed (no new files go there)."
            );
            describe_gauge!(
                STORE_PATH_IO_IN_USE,
                "Blocking disk calls in flight on the store path (at most store_path_max_io)."
            );
            describe_counter!(
                STORE_PATH_IO_BUSY,
                "Requests answered EBUSY (HTTP 503) because the store path's disk slots stayed taken for network_timeout."
            );
            describe_counter!(
                JOURNAL_ENTRIES,
                "Small files (and their deletes) made durable through the store path's journal."
            );
            describe_counter!(
                JOURNAL_COMMITS,
                "Journal fdatasyncs, each covering every entry queued while the previous one ran."
            );
            describe_counter!(
                JOURNAL_CHECKPOINTS,
                "Journal checkpoints: a syncfs of the store path, after which the sealed segments are removed."
            );
            describe_gauge!(
                JOURNAL_HEALTHY,
                "1 while the journal takes small files; 0 after a journal failure (files are then synced on their own)."
            );
            describe_gauge!(SCRUB_RUNNING, "1 while a scrub runs.");
            describe_counter!(
                SCRUB_CHECKED,
                "Files whose size and CRC32 a scrub compared with their name."
            );
            describe_counter!(SCRUB_CORRUPT, "Damaged files found (scrubs and downloads).");
            describe_counter!(SCRUB_REPAIRED, "Damaged files replaced by a peer's good copy.");
            describe_counter!(
                SCRUB_UNREPAIRABLE,
                "Damaged files no ACTIVE peer had a good copy of."
            );
            describe_counter!(SCRUB_BYTES, Unit::Bytes, "Bytes read by scrubs.");
            describe_gauge!(
                FILES,
                "Stored files of the store path (metadata sidecars not counted)."
            );
            describe_counter!(
                REFUSED,
                "Connections and requests refused, by reason: allow_hosts (closed at accept), http_allow_hosts (answered 403), metrics_allow_hosts (/metrics answered 403), auth_failed (wrong cluster secret), not_authenticated (sync command before authenticating), admin_hosts (SCRUB from a host not in admin_hosts)."
            );
            gauge!(CONNECTIONS_OPEN).set(0.0);
            counter!(BYTES_RECEIVED).absolute(0);
            counter!(BYTES_SENT).absolute(0);
        });
        metrics
    }

    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        with_local_recorder(&self.recorder, f)
    }

    /// A connection or request refused by the security settings (see [`REFUSED`]).
    pub fn refused(&self, reason: &'static str) {
        self.record(|| counter!(REFUSED, "reason" => reason).increment(1));
    }

    /// A finished request: counters, latency, bytes and the access log line.
    pub fn request(
        &self,
        command: Command,
        outcome: Outcome,
        body_len: u64,
        elapsed: Duration,
        info: &ConnInfo,
    ) {
        let label = command_label(command);
        let status = outcome.status.unwrap_or(fdfs_proto::status::EIO);
        let sent = if sends_content(command) && status == 0 {
            outcome.bytes.unwrap_or(0)
        } else {
            0
        };
        self.record(|| {
            counter!(REQUESTS, "command" => label.clone(), "status" => status.to_string())
                .increment(1);
            histogram!(REQUEST_DURATION, "command" => label.clone()).record(elapsed.as_secs_f64());
            counter!(BYTES_RECEIVED).increment(body_len);
            counter!(BYTES_SENT).increment(sent);
        });
        if self.samples.spend() {
            self.handle.run_upkeep();
        }
        if self.access_log.enabled() {
            let bytes = if sends_content(command) {
                sent
            } else {
                outcome.bytes.unwrap_or(body_len)
            };
            let file = outcome
                .file
                .map(|name| format!("{}/{}", self.group, name.as_str()));
            tracing::info!(
                target: "access",
                client = %info.peer,
                command = %label,
                file = file.as_deref().unwrap_or("-"),
                status,
                bytes,
                duration_us = elapsed.as_micros() as u64,
                "request"
            );
        }
    }

    pub fn connections_open(&self, open: usize) {
        self.record(|| gauge!(CONNECTIONS_OPEN).set(open as f64));
    }

    /// Disk figures of each store path (`paths[i]` with `usage[i]`).
    pub fn disks(&self, paths: &[String], usage: &[fdfs_proto::tracker_msg::PathUsage]) {
        self.record(|| {
            for (path, usage) in paths.iter().zip(usage) {
                gauge!(DISK_TOTAL, "path" => path.clone()).set(usage.total_bytes as f64);
                gauge!(DISK_FREE, "path" => path.clone()).set(usage.free_bytes as f64);
            }
        });
    }

    /// Stored files of each store path (`paths[i]` with `counts[i]`); a path still being
    /// counted is left out.
    pub fn files(&self, paths: &[String], counts: &[Option<u64>]) {
        self.record(|| {
            for (path, count) in paths.iter().zip(counts) {
                if let Some(count) = count {
                    gauge!(FILES, "path" => path.clone()).set(*count as f64);
                }
            }
        });
    }

    /// Failed sync attempts of each peer so far.
    pub fn sync_errors(&self, errors: &[(String, u64)]) {
        self.record(|| {
            for (peer, count) in errors {
                counter!(SYNC_ERRORS, "peer" => peer.clone()).absolute(*count);
            }
        });
    }

    /// Replication progress of each peer.
    pub fn sync(&self, report: &fdfs_proto::sync_msg::SyncReport) {
        self.record(|| {
            for peer in &report.peers {
                gauge!(SYNC_RECORDS_BEHIND, "peer" => peer.peer_id.clone())
                    .set(peer.records_behind as f64);
                gauge!(SYNC_SECONDS_BEHIND, "peer" => peer.peer_id.clone())
                    .set(peer.seconds_behind as f64);
            }
        });
    }

    /// Disk slots in use and requests refused for want of one, per store path.
    pub fn disk_slots(&self, paths: &[String], in_use: &[usize], busy: &[u64]) {
        self.record(|| {
            for ((path, in_use), busy) in paths.iter().zip(in_use).zip(busy) {
                gauge!(STORE_PATH_IO_IN_USE, "path" => path.clone()).set(*in_use as f64);
                counter!(STORE_PATH_IO_BUSY, "path" => path.clone()).absolute(*busy);
            }
        });
    }

    /// The journal of each store path that has one (fsync on).
    pub fn journal(&self, paths: &[String], stats: &[Option<crate::store::JournalStats>]) {
        self.record(|| {
            for (path, stats) in paths.iter().zip(stats) {
                let Some(stats) = stats else { continue };
                let path = path.clone();
                counter!(JOURNAL_ENTRIES, "path" => path.clone()).absolute(stats.entries);
                counter!(JOURNAL_COMMITS, "path" => path.clone()).absolute(stats.commits);
                counter!(JOURNAL_CHECKPOINTS, "path" => path.clone()).absolute(stats.checkpoints);
                gauge!(JOURNAL_HEALTHY, "path" => path).set(if stats.healthy { 1.0 } else { 0.0 });
            }
        });
    }

    /// Store path health (1 healthy, 0 failed) and the scrub counters since start.
    pub fn faults(
        &self,
        paths: &[String],
        states: &[crate::store::PathState],
        scrub: &crate::scrub::Scrubber,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        self.record(|| {
            for (path, state) in paths.iter().zip(states) {
                gauge!(STORE_PATH_HEALTHY, "path" => path.clone()).set(if state.healthy {
                    1.0
                } else {
                    0.0
                });
            }
            gauge!(SCRUB_RUNNING).set(if scrub.report().running { 1.0 } else { 0.0 });
            let totals = scrub.totals();
            counter!(SCRUB_CHECKED).absolute(totals.checked.load(Relaxed));
            counter!(SCRUB_CORRUPT).absolute(totals.corrupt.load(Relaxed));
            counter!(SCRUB_REPAIRED).absolute(totals.repaired.load(Relaxed));
            counter!(SCRUB_UNREPAIRABLE).absolute(totals.unrepairable.load(Relaxed));
            counter!(SCRUB_BYTES).absolute(totals.bytes.load(Relaxed));
        });
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ConnInfo {
        ConnInfo::new(
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:23000".parse().unwrap(),
            tokio_util::sync::CancellationToken::new(),
        )
    }

    fn value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn requests_and_bytes_are_rendered() {
        let metrics = Metrics::new(AccessLog::new(false), "group1");
        let ok = |bytes| Outcome {
            status: Some(0),
            bytes: Some(bytes),
            ..Outcome::default()
        };
        metrics.request(
            Command::UploadFile,
            ok(100),
            115,
            Duration::from_millis(2),
            &info(),
        );
        metrics.request(
            Command::DownloadFile,
            ok(100),
            30,
            Duration::from_millis(1),
            &info(),
        );
        metrics.connections_open(3);
        metrics.files(&["/a".to_string(), "/b".to_string()], &[Some(7), None]);
        metrics.sync_errors(&[("100002".to_string(), 4)]);
        let text = metrics.render();
        assert_eq!(value(&text, "fdfs_storage_files{path=\"/a\"}"), Some(7.0));
        // a path still being counted is not exported
        assert!(!text.contains("fdfs_storage_files{path=\"/b\"}"));
        assert_eq!(
            value(&text, "fdfs_storage_sync_errors_total{peer=\"100002\"}"),
            Some(4.0)
        );
        assert_eq!(
            value(
                &text,
                "fdfs_storage_requests_total{command=\"upload_file\",status=\"0\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "fdfs_storage_bytes_received_total "),
            Some(145.0)
        );
        assert_eq!(value(&text, "fdfs_storage_bytes_sent_total "), Some(100.0));
        assert_eq!(value(&text, "fdfs_storage_connections_open "), Some(3.0));
        assert!(
            text.contains("fdfs_storage_request_duration_seconds_bucket{command=\"download_file\"")
        );
    }
}
