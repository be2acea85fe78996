//! Bounds the latency samples a Prometheus recorder holds between two foldings.
//!
//! `metrics-exporter-prometheus` keeps every recorded histogram sample until the histogram is
//! folded into its buckets (at a scrape or an explicit upkeep). A server answering tens of
//! thousands of requests a second and scraped rarely (or never) would hold all of them: memory
//! growing with the request count. Both daemons count their samples with a [`SampleBudget`] and
//! fold once it is spent, so at most `every` samples wait whatever the request rate.

use std::sync::atomic::{AtomicU64, Ordering};

/// Samples recorded between two foldings of the histograms; see the module docs.
pub const FOLD_EVERY: u64 = 1024;

/// Counts recorded samples; says when to fold them.
#[derive(Debug)]
pub struct SampleBudget {
    recorded: AtomicU64,
    every: u64,
}

impl SampleBudget {
    /// A budget of `every` samples (at least 1).
    pub const fn new(every: u64) -> Self {
        SampleBudget {
            recorded: AtomicU64::new(0),
            every: if every == 0 { 1 } else { every },
        }
    }

    /// Counts one recorded sample. True for exactly one call in every `every`, also when
    /// threads record concurrently: the caller folds then.
    pub fn spend(&self) -> bool {
        (self.recorded.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.every)
    }

    /// Samples counted so far.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }
}

impl Default for SampleBudget {
    fn default() -> Self {
        SampleBudget::new(FOLD_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn says_fold_once_every_n_samples() {
        let budget = SampleBudget::new(4);
        let folds: Vec<bool> = (0..9).map(|_| budget.spend()).collect();
        assert_eq!(
            folds,
            [false, false, false, true, false, false, false, true, false]
        );
        assert_eq!(budget.recorded(), 9);
    }

    #[test]
    fn concurrent_recorders_fold_exactly_once_per_n() {
        let budget = Arc::new(SampleBudget::new(100));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || (0..2_500).filter(|_| budget.spend()).count())
            })
            .collect();
        let folds: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(folds, 100);
    }

    #[test]
    fn a_zero_budget_folds_every_sample() {
        let budget = SampleBudget::new(0);
        assert!(budget.spend());
        assert!(budget.spend());
    }
}
