//! The throughput modes (`upload`, `download`, `mixed`): C tasks, each with its own client
//! (so its own connections), run operations back to back until the count or the deadline;
//! what happens during the warm-up is not recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::progress::Live;
use super::ratio::{OpKind, Ratio};
use super::route::Route;
use super::size::SizeSpec;
use super::stats::{error_kind, OpStats};
use crate::{Client, ClientError, FileId};

/// Which operations the tasks run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mix {
    Upload,
    Download,
    Mixed(Ratio),
}

/// When a run stops and which part of it counts.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Operations before this instant are warm-up.
    pub(crate) measure_from: Instant,
    /// No operation starts after this instant.
    pub(crate) deadline: Option<Instant>,
    /// Measured operations to run in all (claimed one by one by the tasks).
    pub(crate) count: Option<u64>,
    claimed: AtomicU64,
}

impl Schedule {
    pub(crate) fn new(warmup: Duration, duration: Option<Duration>, count: Option<u64>) -> Self {
        let measure_from = Instant::now() + warmup;
        Schedule {
            measure_from,
            deadline: duration.map(|duration| measure_from + duration),
            count,
            claimed: AtomicU64::new(0),
        }
    }

    /// Whether to start another operation, and if so whether it is measured.
    pub(crate) fn next(&self) -> Option<bool> {
        let now = Instant::now();
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            return None;
        }
        if now < self.measure_from {
            return Some(false);
        }
        match self.count {
            Some(count) if self.claimed.fetch_add(1, Ordering::Relaxed) >= count => None,
            _ => Some(true),
        }
    }
}

/// Files that downloads and deletes pick from: the prepared ones and, in `mixed`, the new
/// uploads.
#[derive(Debug, Default)]
pub(crate) struct FileSet(Mutex<Vec<(FileId, u64)>>);

impl FileSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(FileId, u64)>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn add(&self, id: FileId, size: u64) {
        self.lock().push((id, size));
    }

    fn pick(&self, rng: &mut impl Rng) -> Option<(FileId, u64)> {
        let files = self.lock();
        if files.is_empty() {
            return None;
        }
        Some(files[rng.gen_range(0..files.len())].clone())
    }

    fn take(&self, rng: &mut impl Rng) -> Option<(FileId, u64)> {
        let mut files = self.lock();
        if files.is_empty() {
            return None;
        }
        let index = rng.gen_range(0..files.len());
        Some(files.swap_remove(index))
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn drain(&self) -> Vec<FileId> {
        self.lock().drain(..).map(|(id, _)| id).collect()
    }
}

/// Everything the tasks share.
pub(crate) struct Load {
    pub(crate) mix: Mix,
    pub(crate) size: SizeSpec,
    pub(crate) route: Route,
    pub(crate) schedule: Schedule,
    pub(crate) files: Arc<FileSet>,
    pub(crate) live: Arc<Live>,
}

/// What one task did: per-operation stats (indexed by [`OpKind::index`]) and, in `upload`
/// mode, the files it created.
pub(crate) struct TaskResult {
    pub(crate) stats: [OpStats; 3],
    pub(crate) uploaded: Vec<FileId>,
}

/// Runs operations until the schedule says stop.
pub(crate) async fn task(load: Arc<Load>, client: Client) -> TaskResult {
    let mut rng = StdRng::from_entropy();
    let mut result = TaskResult {
        stats: [OpStats::new(), OpStats::new(), OpStats::new()],
        uploaded: Vec::new(),
    };
    while let Some(measured) = load.schedule.next() {
        let (op, outcome, latency) = one_op(&load, &client, &mut rng, &mut result).await;
        match &outcome {
            Ok(bytes) => load.live.ok(*bytes),
            Err(_) => load.live.error(),
        }
        if measured {
            let stats = &mut result.stats[op.index()];
            match outcome {
                Ok(bytes) => stats.record_ok(latency, bytes),
                Err(kind) => stats.record_error(&kind),
            }
        }
    }
    result
}

/// Picks and runs one operation: which one it was, the bytes it moved or the kind of its
/// failure, and how long it took.
async fn one_op(
    load: &Load,
    client: &Client,
    rng: &mut StdRng,
    result: &mut TaskResult,
) -> (OpKind, Result<u64, String>, Duration) {
    let wanted = match load.mix {
        Mix::Upload => OpKind::Upload,
        Mix::Download => OpKind::Download,
        Mix::Mixed(ratio) => ratio.pick(rng),
    };
    // downloads and deletes need a file; with none left, upload one
    let target = match wanted {
        OpKind::Upload => None,
        OpKind::Download => load.files.pick(rng),
        OpKind::Delete => load.files.take(rng),
    };
    let started = Instant::now();
    let (op, outcome) = match (wanted, target) {
        (OpKind::Download, Some((id, size))) => {
            let outcome = match load.route.download(client, &id).await {
                Ok(bytes) if bytes == size => Ok(bytes),
                Ok(_) => Err("short_read".to_string()),
                Err(err) => Err(error_kind(&err)),
            };
            (OpKind::Download, outcome)
        }
        (OpKind::Delete, Some((id, size))) => {
            let outcome = load.route.delete(client, &id).await;
            if let Err(err) = &outcome {
                if !matches!(err, ClientError::NotFound) {
                    // keep it for the final cleanup
                    load.files.add(id, size);
                }
            }
            (
                OpKind::Delete,
                outcome.map(|()| 0).map_err(|err| error_kind(&err)),
            )
        }
        _ => {
            let size = load.size.sample(rng);
            let outcome = match load.route.upload(client, size, rng).await {
                Ok((id, _)) => {
                    match load.mix {
                        Mix::Upload => result.uploaded.push(id),
                        _ => load.files.add(id, size),
                    }
                    Ok(size)
                }
                Err(err) => Err(error_kind(&err)),
            };
            (OpKind::Upload, outcome)
        }
    };
    (op, outcome, started.elapsed())
}

/// Uploads `count` files of `size` into `files` for downloads to read, with one task per
/// client. Stops at the first failure and returns it (the files made so far stay in `files`).
pub(crate) async fn prepare(
    route: &Route,
    size: SizeSpec,
    files: &Arc<FileSet>,
    clients: &[Client],
    count: u64,
    live: &Arc<Live>,
) -> Result<(), ClientError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let client = client.clone();
        let (route, files, next, live) = (route.clone(), files.clone(), next.clone(), live.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::from_entropy();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let file_size = size.sample(&mut rng);
                match route.upload(&client, file_size, &mut rng).await {
                    Ok((id, _)) => {
                        live.ok(file_size);
                        files.add(id, file_size);
                    }
                    Err(err) => {
                        // make the other tasks stop too
                        next.store(count, Ordering::Relaxed);
                        return Err(err);
                    }
                }
            }
            Ok(())
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(join_err) => std::panic::resume_unwind(join_err.into_panic()),
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Deletes `files` with one task per client; returns (deleted, failed).
pub(crate) async fn delete_all(
    route: &Route,
    clients: &[Client],
    files: Vec<FileId>,
) -> (u64, u64) {
    let queue = Arc::new(Mutex::new(files));
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let client = client.clone();
        let queue = queue.clone();
        let route = route.clone();
        tasks.spawn(async move {
            let (mut deleted, mut failed) = (0, 0);
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .pop();
                let Some(id) = next else {
                    break;
                };
                match route.delete(&client, &id).await {
                    Ok(()) => deleted += 1,
                    Err(err) => {
                        tracing::warn!(%id, error = %err, "could not delete a benchmark file");
                        failed += 1;
                    }
                }
            }
            (deleted, failed)
        });
    }
    let (mut deleted, mut failed) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((d, f)) => {
                deleted += d;
                failed += f;
            }
            Err(join_err) => std::panic::resume_unwind(join_err.into_panic()),
        }
    }
    (deleted, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_limits_measured_operations_only() {
        let schedule = Schedule::new(Duration::ZERO, None, Some(3));
        let starts: Vec<Option<bool>> = (0..5).map(|_| schedule.next()).collect();
        assert_eq!(starts, [Some(true), Some(true), Some(true), None, None]);

        let warming = Schedule::new(Duration::from_secs(3600), None, Some(1));
        for _ in 0..10 {
            assert_eq!(warming.next(), Some(false), "warm-up claims no count");
        }

        let over = Schedule::new(Duration::ZERO, Some(Duration::ZERO), None);
        assert_eq!(over.next(), None);
        let open = Schedule::new(Duration::ZERO, Some(Duration::from_secs(3600)), None);
        assert_eq!(open.next(), Some(true));
    }

    #[test]
    fn file_set_picks_and_takes() {
        let set = FileSet::default();
        let mut rng = StdRng::seed_from_u64(3);
        assert!(set.pick(&mut rng).is_none());
        assert!(set.take(&mut rng).is_none());
        let id = FileId::parse("group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt").unwrap();
        set.add(id.clone(), 6);
        set.add(id.clone(), 6);
        assert_eq!(set.pick(&mut rng), Some((id.clone(), 6)));
        assert_eq!(set.len(), 2);
        assert!(set.take(&mut rng).is_some());
        assert_eq!(set.len(), 1);
        assert_eq!(set.drain(), [id]);
        assert_eq!(set.len(), 0);
    }
}
