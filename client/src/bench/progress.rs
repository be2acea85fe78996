//! Live counters of a run and the once-a-second progress line on stderr.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Counters the tasks bump after each operation; read by the progress line only.
#[derive(Debug, Default)]
pub(crate) struct Live {
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

impl Live {
    pub(crate) fn ok(&self, bytes: u64) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.ops.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// Prints a progress line once a second until dropped.
pub(crate) struct Progress(Option<JoinHandle<()>>);

impl Progress {
    /// `label` names the run ("upload 4KiB c=8"); counters before `measure_from` are warm-up.
    pub(crate) fn start(
        enabled: bool,
        live: Arc<Live>,
        label: String,
        measure_from: Instant,
    ) -> Progress {
        if !enabled {
            return Progress(None);
        }
        let started = Instant::now();
        let terminal = std::io::stderr().is_terminal();
        Progress(Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            let mut last = live.snapshot();
            let mut second_began = Instant::now();
            loop {
                ticker.tick().await;
                let now = live.snapshot();
                // the second shown was warm-up if it began before the measurement
                let line = progress_line(
                    &label,
                    started.elapsed(),
                    second_began < measure_from,
                    last,
                    now,
                );
                last = now;
                second_began = Instant::now();
                let mut stderr = std::io::stderr().lock();
                // a terminal gets one line rewritten in place, a log one line per second
                let _ = if terminal {
                    write!(stderr, "\r\x1b[K{line}")
                } else {
                    writeln!(stderr, "{line}")
                };
                let _ = stderr.flush();
            }
        })))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            if std::io::stderr().is_terminal() {
                eprint!("\r\x1b[K");
            }
        }
    }
}

/// `fdfs bench upload 4KiB c=8: 12s  5123 ops/s  21.0 MB/s  (61234 ops, 0 errors)`, over
/// the last second.
fn progress_line(
    label: &str,
    elapsed: Duration,
    warming_up: bool,
    last: (u64, u64, u64),
    now: (u64, u64, u64),
) -> String {
    let ops = now.0.saturating_sub(last.0);
    let mb = now.1.saturating_sub(last.1) as f64 / 1e6;
    let phase = if warming_up { " warm-up" } else { "" };
    format!(
        "fdfs bench {label}: {}s{phase}  {ops} ops/s  {mb:.1} MB/s  ({} ops, {} errors)",
        elapsed.as_secs(),
        now.0,
        now.2
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_the_last_second() {
        let line = progress_line(
            "upload 4KiB c=8",
            Duration::from_millis(3200),
            false,
            (100, 400_000, 0),
            (1100, 4_400_000, 2),
        );
        assert_eq!(
            line,
            "fdfs bench upload 4KiB c=8: 3s  1000 ops/s  4.0 MB/s  (1100 ops, 2 errors)"
        );
        let warm = progress_line("x", Duration::from_secs(1), true, (0, 0, 0), (0, 0, 0));
        assert!(warm.contains("warm-up"), "{warm}");
    }
}
