//! Group commit of directory fsyncs. A link or rename is durable once its directory is
//! synced; concurrent writers into one directory (round-robin placement sends consecutive
//! uploads to the same `XX/YY`, and the sync lanes replay them side by side) share one fsync
//! instead of queueing one each on the disk.
//!
//! A caller takes a ticket after its change; the change is covered by any fsync of the
//! directory that *starts* after the ticket was taken. While one fsync runs, later callers
//! wait, and the first of them to get the lock next runs one fsync for all of them.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Per-directory state of the group commit.
#[derive(Debug, Default)]
struct DirState {
    /// Tickets handed out (the last one).
    issued: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// An fsync of the directory is running.
    running: bool,
    /// Callers inside [`DirSyncer::sync`] for this directory; the entry goes when none is.
    callers: usize,
}

/// Shares directory fsyncs between concurrent callers (blocking; run it on the blocking pool).
#[derive(Debug, Default)]
pub struct DirSyncer {
    dirs: Mutex<HashMap<PathBuf, DirState>>,
    changed: Condvar,
}

impl DirSyncer {
    /// Makes every link, rename or unlink done in `dir` before this call durable.
    pub fn sync(&self, dir: &Path) -> io::Result<()> {
        self.sync_with(dir, crate::persist::sync_dir)
    }

    /// [`DirSyncer::sync`] of the directory holding `path`, as the disk layer reports it.
    pub fn sync_parent(&self, path: &Path) -> Result<(), super::StoreError> {
        match path.parent() {
            Some(dir) => self
                .sync(dir)
                .map_err(super::StoreError::io("syncing directory")),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, DirState>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sync_with(&self, dir: &Path, fsync: impl Fn(&Path) -> io::Result<()>) -> io::Result<()> {
        let mut dirs = self.lock();
        let ticket = {
            let state = dirs.entry(dir.to_path_buf()).or_default();
            state.issued += 1;
            state.callers += 1;
            state.issued
        };
        let result = loop {
            let state = dirs.get_mut(dir).expect("kept while a caller is inside");
            if state.synced >= ticket {
                break Ok(());
            }
            if state.running {
                dirs = self.changed.wait(dirs).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // our turn: one fsync covers every ticket issued so far
            state.running = true;
            let covers = state.issued;
            drop(dirs);
            let synced = fsync(dir);
            dirs = self.lock();
            let state = dirs.get_mut(dir).expect("kept while a caller is inside");
            state.running = false;
            if synced.is_ok() {
                state.synced = state.synced.max(covers);
            }
            self.changed.notify_all();
            // on an error the others try once more themselves: each reports its own outcome
            if let Err(err) = synced {
                break Err(err);
            }
        };
        let state = dirs.get_mut(dir).expect("kept while a caller is inside");
        state.callers -= 1;
        if state.callers == 0 && !state.running {
            dirs.remove(dir);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn a_lone_caller_syncs_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = DirSyncer::default();
        syncer.sync(dir.path()).unwrap();
        assert!(syncer.lock().is_empty());
        assert!(syncer.sync(&dir.path().join("missing")).is_err());
        assert!(syncer.lock().is_empty());
    }

    #[test]
    fn concurrent_callers_share_fsyncs_and_each_is_covered() {
        const CALLERS: usize = 8;
        let syncer = Arc::new(DirSyncer::default());
        let fsyncs = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(CALLERS));
        let threads: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (syncer, fsyncs, start) = (syncer.clone(), fsyncs.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    syncer
                        .sync_with(Path::new("/d"), |_| {
                            if fsyncs.fetch_add(1, Ordering::SeqCst) == 0 {
                                // the first fsync lasts until every other caller is waiting
                                while syncer.lock().get(Path::new("/d")).unwrap().callers < CALLERS
                                {
                                    std::thread::yield_now();
                                }
                            }
                            Ok(())
                        })
                        .unwrap();
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // the first runs alone; everyone arriving meanwhile shares the next one
        assert_eq!(fsyncs.load(Ordering::SeqCst), 2);
        assert!(syncer.lock().is_empty());
    }

    #[test]
    fn a_caller_arriving_during_an_fsync_waits_for_the_next_one() {
        let syncer = Arc::new(DirSyncer::default());
        let started = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = {
            let (syncer, started, release, order) = (
                syncer.clone(),
                started.clone(),
                release.clone(),
                order.clone(),
            );
            std::thread::spawn(move || {
                syncer
                    .sync_with(Path::new("/d"), |_| {
                        started.wait();
                        release.wait();
                        order.lock().unwrap().push("first fsync");
                        Ok(())
                    })
                    .unwrap();
            })
        };
        started.wait();
        // the first fsync is running: a change made now is not covered by it
        let second = {
            let (syncer, order) = (syncer.clone(), order.clone());
            std::thread::spawn(move || {
                syncer
                    .sync_with(Path::new("/d"), |_| {
                        order.lock().unwrap().push("second fsync");
                        Ok(())
                    })
                    .unwrap();
                order.lock().unwrap().push("second returned");
            })
        };
        while syncer.lock().get(Path::new("/d")).map_or(0, |s| s.callers) < 2 {
            std::thread::yield_now();
        }
        release.wait();
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(
            *order.lock().unwrap(),
            ["first fsync", "second fsync", "second returned"]
        );
    }

    #[test]
    fn a_failed_fsync_is_reported_and_others_retry() {
        let syncer = DirSyncer::default();
        let calls = AtomicUsize::new(0);
        let failing = |_: &Path| -> io::Result<()> {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(io::Error::other("disk gone"))
        };
        assert!(syncer.sync_with(Path::new("/d"), failing).is_err());
        assert!(syncer.sync_with(Path::new("/d"), |_| Ok(())).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(syncer.lock().is_empty());
    }
}
