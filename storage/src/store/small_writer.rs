//! A store path's writer thread for small files stored without syncs (`fsync` off).
//!
//! Writing and linking a 4 KiB file takes tens of microseconds; handing it to the blocking
//! pool and back costs about as much again (a futex wake each way, and a pool thread that
//! parks after every file). One thread per store path takes every small write queued while it
//! ran the previous ones, and is woken only when it went idle. With `fsync` on, small files
//! go through the journal's writer instead (`journal`), which works the same way.
//!
//! The caller holds the store path's IO slot across the job, so `store_path_max_io` still
//! bounds what a hung disk holds in memory.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::StoreError;

type Job = Box<dyn FnOnce() + Send>;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct SmallWriter {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    jobs: Vec<Job>,
    /// The thread waits for work: a new job must wake it.
    idle: bool,
    closed: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("jobs", &self.jobs.len())
            .field("idle", &self.idle)
            .field("closed", &self.closed)
            .finish()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SmallWriter {
    /// Starts the writer thread of store path `index`.
    pub(crate) fn start(index: u8) -> io::Result<SmallWriter> {
        let shared = Arc::new(Shared::default());
        let thread = shared.clone();
        std::thread::Builder::new()
            .name(format!("small-writer-{index}"))
            .spawn(move || run(&thread))?;
        Ok(SmallWriter { shared })
    }

    /// Runs `job` on the writer thread. It runs even if the returned future is dropped
    /// first (like blocking-pool work), so a file change is never cut in half.
    pub(crate) async fn run<T, F>(&self, context: &'static str, job: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let wake = {
            let mut state = lock(&self.shared.state);
            if state.closed {
                return Err(stopped(context));
            }
            state.jobs.push(Box::new(move || {
                let _ = done.send(job());
            }));
            std::mem::take(&mut state.idle)
        };
        if wake {
            self.shared.work.notify_one();
        }
        // a job that panicked dropped its sender
        result.await.unwrap_or_else(|_| Err(stopped(context)))
    }
}

impl Drop for SmallWriter {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.work.notify_one();
    }
}

fn stopped(context: &'static str) -> StoreError {
    StoreError::Io {
        context,
        source: io::Error::other("the store path's small-file writer stopped"),
    }
}

/// The writer thread: runs every queued job, then waits for more; ends once closed and empty.
fn run(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        {
            let mut state = lock(&shared.state);
            while state.jobs.is_empty() {
                if state.closed {
                    return;
                }
                state.idle = true;
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.idle = false;
            std::mem::swap(&mut state.jobs, &mut batch);
        }
        for job in batch.drain(..) {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                tracing::error!("a small-file write panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_and_report_back() {
        let writer = Arc::new(SmallWriter::start(0).unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50usize {
            let (writer, seen) = (writer.clone(), seen.clone());
            tasks.spawn(async move {
                let doubled = writer
                    .run("test", move || {
                        seen.lock().unwrap().push(i);
                        Ok(i * 2)
                    })
                    .await;
                (i, doubled.unwrap())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (i, doubled) = joined.unwrap();
            assert_eq!(doubled, i * 2);
        }
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        let err = writer
            .run("test", || Err::<(), _>(StoreError::NotFound))
            .await;
        assert!(matches!(err, Err(StoreError::NotFound)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_fails_alone_and_a_dropped_request_still_runs() {
        let writer = SmallWriter::start(0).unwrap();
        let failed = writer.run("test", || -> Result<(), StoreError> { panic!("boom") });
        assert!(matches!(failed.await, Err(StoreError::Io { .. })));
        // the thread is held busy, so the next job stays queued while its request goes
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = writer.run("test", move || {
            let _ = held.recv();
            Ok(())
        });
        assert!(tokio::time::timeout(std::time::Duration::ZERO, busy)
            .await
            .is_err());
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let request = writer.run("test", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        // polled once (queued), then dropped
        assert!(tokio::time::timeout(std::time::Duration::ZERO, request)
            .await
            .is_err());
        release.send(()).unwrap();
        // the thread still serves, and ran the dropped request's job before this one
        let after = ran.clone();
        let count = writer
            .run("test", move || Ok(after.load(Ordering::SeqCst)))
            .await
            .unwrap();
        assert_eq!(count, 1);
    }
}
