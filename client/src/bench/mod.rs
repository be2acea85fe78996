//! The load generator behind `fdfs bench`: throughput and latency of uploads, downloads and
//! a mix of both with deletes, and replication lag, against any FastDFS-compatible cluster.
//!
//! Each of the `concurrency` tasks has its own [`Client`] (so its own connections) and runs
//! operations back to back; every operation does what a FastDFS client does — ask a tracker,
//! then send the storage command — unless a storage is pinned. Latencies go into HdrHistograms
//! (merged at the end), so percentiles cost nothing per operation.
//!
//! ```no_run
//! use std::time::Duration;
//! use fdfs_client::bench::{self, BenchConfig, Mode};
//! use fdfs_client::ClientConfig;
//!
//! # async fn demo() -> Result<(), bench::BenchError> {
//! let mut config = BenchConfig::new(Mode::Upload);
//! config.size = "4KiB".parse().map_err(bench::BenchError::Invalid)?;
//! config.concurrency = 8;
//! config.duration = Some(Duration::from_secs(10));
//! let report = bench::run(ClientConfig::new(vec!["127.0.0.1:22122".into()]), &config).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! Modules: sizes (`size`), the operation mix (`ratio`), routing and upload content
//! (`route`), the throughput modes (`load`), replication lag (`lag`), histograms and error
//! counts (`stats`), the progress line (`progress`) and the [`Report`] (`report`).

mod lag;
mod load;
mod progress;
mod ratio;
mod report;
mod route;
mod size;
mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fdfs_proto::file_id::validate_group;

pub use lag::{LagReport, PeerLag};
pub use ratio::{OpKind, Ratio};
pub use report::{Cleanup, Report};
pub use size::{format_size, parse_size, SizeSpec};
pub use stats::{describe_error_kind, error_kind, LatencyMs, OpSummary};

use crate::config::validate_addr;
use crate::{Client, ClientConfig, ClientError, FileId};
use lag::{LagRun, SamplerResult};
use load::{FileSet, Load, Mix, Schedule};
use progress::{Live, Progress};
use route::Route;
use stats::OpStats;

/// Most tasks a run may start.
pub const MAX_CONCURRENCY: usize = 4096;
/// Prepared files for `download` and `mixed` when not given: at most this many...
const DEFAULT_FILES: u64 = 100;
/// ...and at most this many bytes in all (but at least [`MIN_DEFAULT_FILES`] files).
const DEFAULT_FILES_BYTES: u64 = 256 << 20;
const MIN_DEFAULT_FILES: u64 = 4;

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// New files of the configured size.
    Upload,
    /// Whole-file reads of prepared files, picked at random.
    Download,
    /// Uploads, downloads and deletes in the given proportions.
    Mixed(Ratio),
    /// Replication lag: upload, then poll every other storage of the group.
    Lag,
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Upload => "upload",
            Mode::Download => "download",
            Mode::Mixed(_) => "mixed",
            Mode::Lag => "lag",
        }
    }
}

/// Settings of a run (the options of `fdfs bench`).
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    pub mode: Mode,
    /// Size of each uploaded file.
    pub size: SizeSpec,
    /// Tasks running operations at once (lag mode: samplers).
    pub concurrency: usize,
    /// Measured operations (lag: samples) in all; with `duration`, whichever ends first.
    pub count: Option<u64>,
    /// Measured time; no operation starts after it.
    pub duration: Option<Duration>,
    /// Time before the measurement starts, running the same operations (ignored by `lag`).
    pub warmup: Duration,
    /// Send everything to this storage (`host:port`) instead of asking a tracker.
    pub storage: Option<String>,
    /// Upload to this group; required with `storage`.
    pub group: Option<String>,
    /// Leave the uploaded files in place.
    pub keep: bool,
    /// Files to prepare for `download` and `mixed` (default: 100, fewer for large files).
    pub files: Option<u64>,
    /// How long `lag` polls a peer before counting it as not replicated.
    pub lag_timeout: Duration,
    /// Pause between two polls of a peer.
    pub lag_poll: Duration,
    /// Print the once-a-second progress line on stderr.
    pub progress: bool,
}

impl BenchConfig {
    /// A 10-second run of `mode` with 4 KiB files, one task, no warm-up.
    pub fn new(mode: Mode) -> Self {
        BenchConfig {
            mode,
            size: SizeSpec::fixed(4096),
            concurrency: 1,
            count: None,
            duration: Some(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            storage: None,
            group: None,
            keep: false,
            files: None,
            lag_timeout: Duration::from_secs(5),
            lag_poll: Duration::from_millis(2),
            progress: false,
        }
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |msg: &str| Err(BenchError::Invalid(msg.to_string()));
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(BenchError::Invalid(format!(
                "concurrency must be 1..{MAX_CONCURRENCY}, not {}",
                self.concurrency
            )));
        }
        match (self.count, self.duration) {
            (None, None) => return invalid("give a count, a duration or both"),
            (Some(0), _) => return invalid("count must be at least 1"),
            (_, Some(duration)) if duration.is_zero() => {
                return invalid("duration must be more than 0")
            }
            _ => {}
        }
        if self.files == Some(0) {
            return invalid("files must be at least 1");
        }
        if let Some(storage) = &self.storage {
            validate_addr(storage).map_err(|err| BenchError::Invalid(err.to_string()))?;
            if self.group.is_none() {
                return invalid("a pinned storage needs its group (--group)");
            }
        }
        if let Some(group) = &self.group {
            validate_group(group).map_err(|err| BenchError::Invalid(format!("group: {err}")))?;
        }
        if self.mode == Mode::Lag && (self.lag_timeout.is_zero() || self.lag_poll.is_zero()) {
            return invalid("the lag timeout and poll interval must be more than 0");
        }
        Ok(())
    }

    /// Files prepared for downloads: as configured, else 100, fewer for large files.
    pub fn prepared_files(&self) -> u64 {
        self.files.unwrap_or_else(|| {
            (DEFAULT_FILES_BYTES / self.size.max.max(1)).clamp(MIN_DEFAULT_FILES, DEFAULT_FILES)
        })
    }

    fn label(&self) -> String {
        format!("{} {} c={}", self.mode.name(), self.size, self.concurrency)
    }
}

/// Why a run could not be made (failed operations during the run are counted in the report
/// instead).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid option: {0}")]
    Invalid(String),
    /// Preparing the files to download failed; the ones made were deleted (unless kept).
    #[error("could not prepare the files to download ({made} of {wanted} uploaded)")]
    Prepare {
        made: u64,
        wanted: u64,
        #[source]
        source: ClientError,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Runs a benchmark against the trackers of `client_config` (or the pinned storage).
pub async fn run(client_config: ClientConfig, config: &BenchConfig) -> Result<Report, BenchError> {
    config.validate()?;
    let clients = (0..config.concurrency)
        .map(|_| Client::new(client_config.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let route = Route::new(config.storage.clone(), config.group.clone());
    let mut report = Report {
        mode: config.mode.name().to_string(),
        ratio: match config.mode {
            Mode::Mixed(ratio) => Some(ratio.to_string()),
            _ => None,
        },
        trackers: if config.storage.is_some() {
            Vec::new()
        } else {
            client_config.tracker_servers.clone()
        },
        storage: config.storage.clone(),
        group: config.group.clone(),
        size: config.size.to_string(),
        size_min: config.size.min,
        size_max: config.size.max,
        concurrency: config.concurrency,
        warmup_s: 0.0,
        elapsed_s: 0.0,
        prepared_files: 0,
        total: OpStats::new().summary(Duration::ZERO),
        ops: BTreeMap::new(),
        lag: None,
        cleanup: Cleanup::default(),
    };
    let live = Arc::new(Live::default());
    let mix = match config.mode {
        Mode::Upload => Some(Mix::Upload),
        Mode::Download => Some(Mix::Download),
        Mode::Mixed(ratio) => Some(Mix::Mixed(ratio)),
        Mode::Lag => None,
    };
    let (stats, files, elapsed) = match mix {
        None => {
            let (result, elapsed) = run_lag(config, route.clone(), &clients, live).await;
            report.lag = Some(LagReport {
                timeout_s: config.lag_timeout.as_secs_f64(),
                poll_ms: config.lag_poll.as_secs_f64() * 1000.0,
                samples: result.samples,
                samples_without_peers: result.samples_without_peers,
                peers: result
                    .peers
                    .iter()
                    .map(|(peer, stats)| stats.summary(peer))
                    .collect(),
            });
            let mut stats = [OpStats::new(), OpStats::new(), OpStats::new()];
            stats[OpKind::Upload.index()] = result.upload;
            (stats, result.uploaded, elapsed)
        }
        Some(mix) => {
            report.warmup_s = config.warmup.as_secs_f64();
            let outcome = run_load(config, mix, route.clone(), &clients, live).await?;
            report.prepared_files = outcome.prepared;
            (outcome.stats, outcome.files, outcome.elapsed)
        }
    };
    report.elapsed_s = elapsed.as_secs_f64();
    let mut total = OpStats::new();
    for op in OpKind::ALL {
        let op_stats = &stats[op.index()];
        if op_stats.attempts() > 0 {
            total.merge(op_stats);
            report
                .ops
                .insert(op.as_str().to_string(), op_stats.summary(elapsed));
        }
    }
    report.total = total.summary(elapsed);
    report.cleanup = if config.keep {
        Cleanup {
            kept: files.len() as u64,
            ..Cleanup::default()
        }
    } else {
        let (deleted, failed) = load::delete_all(&route, &clients, files).await;
        Cleanup {
            deleted,
            failed,
            kept: 0,
        }
    };
    Ok(report)
}

struct LoadOutcome {
    stats: [OpStats; 3],
    /// Every file the run created that still exists.
    files: Vec<FileId>,
    prepared: u64,
    elapsed: Duration,
}

/// Prepares the files to read (unless `mix` only uploads), then measures.
async fn run_load(
    config: &BenchConfig,
    mix: Mix,
    route: Route,
    clients: &[Client],
    live: Arc<Live>,
) -> Result<LoadOutcome, BenchError> {
    let files = Arc::new(FileSet::default());
    let mut prepared = 0;
    if !matches!(mix, Mix::Upload) {
        let wanted = config.prepared_files();
        let result = {
            let _progress = Progress::start(
                config.progress,
                live.clone(),
                format!("preparing {wanted} files of {}", config.size),
                Instant::now(),
            );
            load::prepare(&route, config.size, &files, clients, wanted, &live).await
        };
        prepared = files.len() as u64;
        if let Err(source) = result {
            if !config.keep {
                load::delete_all(&route, clients, files.drain()).await;
            }
            return Err(BenchError::Prepare {
                made: prepared,
                wanted,
                source,
            });
        }
    }
    // the live counters restart so the progress line shows the measured run only
    let live = Arc::new(Live::default());
    let load = Arc::new(Load {
        mix,
        size: config.size,
        route,
        schedule: Schedule::new(config.warmup, config.duration, config.count),
        files,
        live,
    });
    let measure_from = load.schedule.measure_from;
    let _progress = Progress::start(
        config.progress,
        load.live.clone(),
        config.label(),
        measure_from,
    );
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients.iter().cloned() {
        tasks.spawn(load::task(load.clone(), client));
    }
    let mut stats = [OpStats::new(), OpStats::new(), OpStats::new()];
    let mut created = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let result = match joined {
            Ok(result) => result,
            Err(join_err) => std::panic::resume_unwind(join_err.into_panic()),
        };
        for (total, task) in stats.iter_mut().zip(&result.stats) {
            total.merge(task);
        }
        created.extend(result.uploaded);
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    created.extend(load.files.drain());
    Ok(LoadOutcome {
        stats,
        files: created,
        prepared,
        elapsed,
    })
}

async fn run_lag(
    config: &BenchConfig,
    route: Route,
    clients: &[Client],
    live: Arc<Live>,
) -> (SamplerResult, Duration) {
    let run = Arc::new(LagRun {
        size: config.size,
        route,
        schedule: Schedule::new(Duration::ZERO, config.duration, config.count),
        timeout: config.lag_timeout,
        poll: config.lag_poll,
        live: live.clone(),
    });
    let started = Instant::now();
    let _progress = Progress::start(config.progress, live, config.label(), started);
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients.iter().cloned() {
        tasks.spawn(lag::sampler(run.clone(), client));
    }
    let mut total = SamplerResult::empty();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => total.merge(result),
            Err(join_err) => std::panic::resume_unwind(join_err.into_panic()),
        }
    }
    (total, started.elapsed())
}

#[cfg(test)]
mod tests;
