//! The result of a run: a serialisable [`Report`] (`--json`) and its text rendering.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::lag::LagReport;
use super::stats::{describe_error_kind, OpSummary};

/// Everything `fdfs bench` measured; `--json` prints it as one JSON object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// `upload`, `download`, `mixed` or `lag`.
    pub mode: String,
    /// `U:D:X` weights of a `mixed` run.
    pub ratio: Option<String>,
    /// The trackers asked, or none with a pinned storage.
    pub trackers: Vec<String>,
    /// The pinned storage, if any.
    pub storage: Option<String>,
    pub group: Option<String>,
    /// File size as given (`4KiB`, `4KiB..100KiB`) and its bounds in bytes.
    pub size: String,
    pub size_min: u64,
    pub size_max: u64,
    pub concurrency: usize,
    pub warmup_s: f64,
    /// Measured time: from the end of the warm-up until the last task finished.
    pub elapsed_s: f64,
    /// Files uploaded before the measurement for downloads to read.
    pub prepared_files: u64,
    /// All measured operations together.
    pub total: OpSummary,
    /// Per kind of operation (`upload`, `download`, `delete`) that ran.
    pub ops: BTreeMap<String, OpSummary>,
    /// Replication lag per peer (`lag` mode).
    pub lag: Option<LagReport>,
    pub cleanup: Cleanup,
}

/// What happened to the files the run created.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Cleanup {
    pub deleted: u64,
    pub failed: u64,
    /// Left in place because of `--keep`.
    pub kept: u64,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // plain data (strings, numbers, maps with string keys) always serialises
        serde_json::to_string(self).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    }
}

fn opt_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |ms| format!("{ms:.2}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.storage {
            Some(storage) => format!("storage {storage} directly"),
            None => format!("tracker {}", self.trackers.join(", ")),
        };
        let ratio = self
            .ratio
            .as_ref()
            .map(|ratio| format!(" {ratio}"))
            .unwrap_or_default();
        writeln!(
            f,
            "fdfs bench {}{ratio}: size {}, concurrency {}, via {target}{}",
            self.mode,
            self.size,
            self.concurrency,
            self.group
                .as_ref()
                .map(|group| format!(", group {group}"))
                .unwrap_or_default(),
        )?;
        write!(f, "measured {:.2} s", self.elapsed_s)?;
        if self.warmup_s > 0.0 {
            write!(f, " after {:.1} s of warm-up", self.warmup_s)?;
        }
        if self.prepared_files > 0 {
            write!(f, ", reading {} prepared files", self.prepared_files)?;
        }
        writeln!(f)?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<9} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7}",
            "op",
            "ops",
            "ops/s",
            "MB/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors"
        )?;
        let mut rows: Vec<(&str, &OpSummary)> =
            self.ops.iter().map(|(op, s)| (op.as_str(), s)).collect();
        if self.ops.len() > 1 {
            rows.push(("total", &self.total));
        }
        for (op, summary) in rows {
            let latency = summary.latency_ms.as_ref();
            writeln!(
                f,
                "{:<9} {:>9} {:>10.1} {:>9.2} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7}",
                op,
                summary.ops,
                summary.ops_per_s,
                summary.mb_per_s,
                opt_ms(latency.map(|l| l.p50)),
                opt_ms(latency.map(|l| l.p95)),
                opt_ms(latency.map(|l| l.p99)),
                opt_ms(latency.map(|l| l.p99_9)),
                opt_ms(latency.map(|l| l.max)),
                summary.errors,
            )?;
        }
        if !self.total.errors_by_kind.is_empty() {
            writeln!(f)?;
            writeln!(f, "errors:")?;
            for (op, summary) in &self.ops {
                for (kind, count) in &summary.errors_by_kind {
                    writeln!(f, "  {op}: {} × {count}", describe_error_kind(kind))?;
                }
            }
        }
        if let Some(lag) = &self.lag {
            writeln!(f)?;
            writeln!(
                f,
                "replication lag ({} samples, polled every {:.0} ms, timeout {:.1} s):",
                lag.samples, lag.poll_ms, lag.timeout_s
            )?;
            if lag.peers.is_empty() {
                writeln!(f, "  no other storage in the group to poll")?;
            }
            for peer in &lag.peers {
                let latency = peer.lag_ms.as_ref();
                write!(
                    f,
                    "  {}: {}/{} replicated",
                    peer.peer, peer.replicated, peer.samples
                )?;
                if latency.is_some() {
                    write!(
                        f,
                        ", lag p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
                        opt_ms(latency.map(|l| l.p50)),
                        opt_ms(latency.map(|l| l.p95)),
                        opt_ms(latency.map(|l| l.p99)),
                        opt_ms(latency.map(|l| l.max)),
                    )?;
                }
                if peer.not_replicated > 0 {
                    write!(
                        f,
                        "; {} not replicated within {:.1} s",
                        peer.not_replicated, lag.timeout_s
                    )?;
                }
                for (kind, count) in &peer.errors_by_kind {
                    write!(f, "; {} × {count}", describe_error_kind(kind))?;
                }
                writeln!(f)?;
            }
        }
        writeln!(f)?;
        if self.cleanup.kept > 0 {
            write!(f, "kept {} files (--keep)", self.cleanup.kept)
        } else {
            write!(f, "deleted {} files", self.cleanup.deleted)?;
            if self.cleanup.failed > 0 {
                write!(f, ", {} could not be deleted", self.cleanup.failed)?;
            }
            Ok(())
        }
    }
}
