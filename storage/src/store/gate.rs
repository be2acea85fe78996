//! A cap on the blocking disk calls in flight per store path (`store_path_max_io`).
//!
//! Disk calls run on tokio's blocking pool (`max_blocking_threads` threads), and a call on a
//! disk that hangs holds its thread until the disk answers. Without a cap, requests for files
//! on one hung store path would take every pool thread, one each, and then requests for the
//! other paths (and everything else that needs the pool) would wait too. Each path has a
//! semaphore: a disk call holds one of its slots until the call *returns* (the slot travels
//! into the pool closure, so a request that gives up does not free a slot its thread still
//! holds). A request over the limit waits without holding a thread, for at most `wait`
//! (`network_timeout`), and is then answered EBUSY (16; HTTP: 503).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::StoreError;

/// Default of `store_path_max_io`.
pub const DEFAULT_MAX_IO_PER_PATH: usize = 64;

/// The slots of one store path.
#[derive(Debug)]
pub(crate) struct IoGate {
    permits: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
    index: u8,
    /// Requests answered EBUSY because no slot freed up within `wait`.
    refused: AtomicU64,
}

/// One blocking disk call's right to run on its store path; the slot is free again when this
/// is dropped.
#[derive(Debug)]
pub struct IoSlot(#[allow(dead_code)] OwnedSemaphorePermit);

impl IoGate {
    pub(crate) fn new(index: u8, limit: usize, wait: Duration) -> Self {
        IoGate {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            limit: limit.max(1),
            wait,
            index,
            refused: AtomicU64::new(0),
        }
    }

    /// Waits for a slot, at most `wait`.
    pub(crate) async fn slot(&self) -> Result<IoSlot, StoreError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(IoSlot(permit));
        }
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(IoSlot(permit)),
            // the semaphore is never closed; a timeout is the only way here
            Ok(Err(_)) | Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::PathBusy { index: self.index })
            }
        }
    }

    /// Slots in use now.
    pub(crate) fn in_use(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_bounded_and_come_back() {
        let gate = IoGate::new(3, 2, Duration::from_millis(50));
        let a = gate.slot().await.unwrap();
        let _b = gate.slot().await.unwrap();
        assert_eq!(gate.in_use(), 2);
        // full: a third caller waits, then hears "busy"
        let busy = gate.slot().await.unwrap_err();
        assert!(matches!(busy, StoreError::PathBusy { index: 3 }), "{busy}");
        assert_eq!(gate.refused(), 1);
        drop(a);
        assert_eq!(gate.in_use(), 1);
        let _c = gate.slot().await.unwrap();
        assert_eq!(gate.in_use(), 2);
    }

    #[tokio::test]
    async fn a_waiting_caller_gets_the_next_free_slot() {
        let gate = Arc::new(IoGate::new(0, 1, Duration::from_secs(60)));
        let held = gate.slot().await.unwrap();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.slot().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.unwrap().unwrap();
    }
}
