//! Counting what a run did: latency histograms (HdrHistogram, microseconds), operations,
//! bytes and errors by kind, merged over tasks and summarised as percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::ClientError;

/// Highest latency the histograms track exactly (one hour); longer ones count as one hour.
const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits kept by the histograms (0.1 % resolution).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> Self {
        // bounds are constants within what HdrHistogram accepts, so this cannot fail
        let histogram = Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_DIGITS)
            .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"));
        Latencies(histogram)
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub(crate) fn merge(&mut self, other: &Latencies) {
        for value in other.0.iter_recorded() {
            let _ = self
                .0
                .record_n(value.value_iterated_to(), value.count_at_value());
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }

    /// Percentiles in milliseconds, or `None` when nothing was recorded.
    pub(crate) fn summary(&self) -> Option<LatencyMs> {
        if self.0.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(LatencyMs {
            p50: ms(self.0.value_at_quantile(0.50)),
            p95: ms(self.0.value_at_quantile(0.95)),
            p99: ms(self.0.value_at_quantile(0.99)),
            p99_9: ms(self.0.value_at_quantile(0.999)),
            max: ms(self.0.max()),
            mean: self.0.mean() / 1000.0,
        })
    }
}

/// Latency percentiles in milliseconds (HdrHistogram values: within 0.1 % of the exact
/// figure).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

/// What one kind of operation did during the measured part of a run.
#[derive(Clone, Debug)]
pub(crate) struct OpStats {
    /// Latencies of the operations that succeeded.
    latency: Latencies,
    bytes: u64,
    errors: BTreeMap<String, u64>,
}

impl OpStats {
    pub(crate) fn new() -> Self {
        OpStats {
            latency: Latencies::new(),
            bytes: 0,
            errors: BTreeMap::new(),
        }
    }

    pub(crate) fn record_ok(&mut self, latency: Duration, bytes: u64) {
        self.latency.record(latency);
        self.bytes += bytes;
    }

    pub(crate) fn record_error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: &OpStats) {
        self.latency.merge(&other.latency);
        self.bytes += other.bytes;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
    }

    /// Successful operations plus errors.
    pub(crate) fn attempts(&self) -> u64 {
        self.latency.len() + self.errors.values().sum::<u64>()
    }

    /// Rates over `elapsed` and latency percentiles.
    pub(crate) fn summary(&self, elapsed: Duration) -> OpSummary {
        let secs = elapsed.as_secs_f64();
        let rate = |value: f64| if secs > 0.0 { value / secs } else { 0.0 };
        let ops = self.latency.len();
        OpSummary {
            ops,
            errors: self.errors.values().sum(),
            bytes: self.bytes,
            ops_per_s: rate(ops as f64),
            mb_per_s: rate(self.bytes as f64 / 1e6),
            latency_ms: self.latency.summary(),
            errors_by_kind: self.errors.clone(),
        }
    }
}

/// The figures of one kind of operation (or of all of them) in a [`Report`](super::Report).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpSummary {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Content bytes moved by the successful operations.
    pub bytes: u64,
    /// Successful operations per second of measured time.
    pub ops_per_s: f64,
    /// Content megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Latency of the successful operations; `None` if there was none.
    pub latency_ms: Option<LatencyMs>,
    /// Failures by kind: `status_N` for a FastDFS status code N, else `connect`,
    /// `timeout`, `io`, `protocol`, `no_tracker`, `short_read`, `invalid_input`, `local_file`.
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// A short, stable name for the kind of a failure, used as the key of `errors_by_kind`.
pub fn error_kind(err: &ClientError) -> String {
    if let Some(status) = err.status() {
        return format!("status_{status}");
    }
    match err {
        ClientError::NoTracker { .. } => "no_tracker",
        ClientError::Connect { .. } => "connect",
        ClientError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => "timeout",
        ClientError::Io(_) => "io",
        ClientError::Protocol(_) => "protocol",
        ClientError::File { .. } => "local_file",
        _ => "invalid_input",
    }
    .to_string()
}

/// An error kind as people read it: `status 2 (no such file or directory)`.
pub fn describe_error_kind(kind: &str) -> String {
    match kind
        .strip_prefix("status_")
        .and_then(|code| code.parse::<u8>().ok())
    {
        Some(code) => format!("status {code} ({})", fdfs_proto::status::describe(code)),
        None => kind.replace('_', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut latencies = Latencies::new();
        for value in 1..=1000 {
            latencies.record(ms(value));
        }
        let summary = latencies.summary().unwrap();
        // HdrHistogram with 3 digits: within 0.1 % of the exact rank value
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(summary.p50, 500.0), "{summary:?}");
        assert!(close(summary.p95, 950.0), "{summary:?}");
        assert!(close(summary.p99, 990.0), "{summary:?}");
        assert!(close(summary.p99_9, 999.0), "{summary:?}");
        assert!(close(summary.max, 1000.0), "{summary:?}");
        assert!(close(summary.mean, 500.5), "{summary:?}");
        assert!(Latencies::new().summary().is_none());
    }

    #[test]
    fn tails_are_not_averaged_away() {
        let mut latencies = Latencies::new();
        for _ in 0..990 {
            latencies.record(Duration::from_micros(200));
        }
        for _ in 0..10 {
            latencies.record(ms(50));
        }
        let summary = latencies.summary().unwrap();
        assert!(summary.p50 < 0.21, "{summary:?}");
        assert!(summary.p99 < 0.21, "{summary:?}");
        assert!(summary.p99_9 > 49.0, "{summary:?}");
        assert!(summary.max > 49.0, "{summary:?}");
        // sub-microsecond and absurd latencies are clamped, not dropped
        latencies.record(Duration::ZERO);
        latencies.record(Duration::from_secs(10 * 3600));
        assert_eq!(latencies.len(), 1002);
        assert!(latencies.summary().unwrap().max >= 3_599_000.0);
    }

    #[test]
    fn stats_merge_and_rate() {
        let mut a = OpStats::new();
        let mut b = OpStats::new();
        for _ in 0..10 {
            a.record_ok(ms(1), 4096);
            b.record_ok(ms(3), 4096);
        }
        a.record_error("status_2");
        b.record_error("status_2");
        b.record_error("io");
        a.merge(&b);
        assert_eq!(a.attempts(), 23);
        let summary = a.summary(Duration::from_secs(2));
        assert_eq!(summary.ops, 20);
        assert_eq!(summary.errors, 3);
        assert_eq!(summary.bytes, 20 * 4096);
        assert!((summary.ops_per_s - 10.0).abs() < 1e-9);
        assert!((summary.mb_per_s - 20.0 * 4096.0 / 2e6).abs() < 1e-9);
        assert_eq!(summary.errors_by_kind["status_2"], 2);
        assert_eq!(summary.errors_by_kind["io"], 1);
        let latency = summary.latency_ms.unwrap();
        assert!((latency.p50 - 1.0).abs() < 0.01, "{latency:?}");
        assert!((latency.max - 3.0).abs() < 0.01, "{latency:?}");
        let empty = OpStats::new().summary(Duration::ZERO);
        assert_eq!(
            (empty.ops, empty.ops_per_s, empty.latency_ms),
            (0, 0.0, None)
        );
    }

    #[test]
    fn error_kinds() {
        assert_eq!(error_kind(&ClientError::NotFound), "status_2");
        assert_eq!(error_kind(&ClientError::Status(5)), "status_5");
        let timeout = ClientError::Io(std::io::ErrorKind::TimedOut.into());
        assert_eq!(error_kind(&timeout), "timeout");
        let reset = ClientError::Io(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(error_kind(&reset), "io");
        let refused = ClientError::Connect {
            addr: "x:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(error_kind(&refused), "connect");
        assert_eq!(
            describe_error_kind("status_2"),
            format!("status 2 ({})", fdfs_proto::status::describe(2))
        );
        assert_eq!(describe_error_kind("short_read"), "short read");
        assert_eq!(describe_error_kind("status_x"), "status x");
    }
}
