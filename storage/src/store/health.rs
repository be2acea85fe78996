//! Store path health: a store path whose disk fails (I/O errors, read-only remount, the data
//! directory gone) is marked bad, left out of new uploads and reported to the trackers with
//! no space, so they stop sending uploads to it. Every failed disk operation with an I/O
//! error has its store path probed (write, fsync, read back and remove a small file, then
//! statvfs); a periodic probe of every path brings a healed one back.
//!
//! A probe that does not finish within [`PROBE_TIMEOUT`] also marks the path bad: a disk that
//! hangs must not hold up uploads, beats and metrics, which skip bad paths.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{disk_usage, Store, StoreError, TMP_DIR};

/// How long a probe may take before its store path counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes written and read back by a probe.
const PROBE_LEN: usize = 4096;

/// What is known about one store path's disk.
#[derive(Debug, Default)]
pub(super) struct PathHealth {
    bad: AtomicBool,
    /// A probe is running (at most one per path: a hung disk must not pile up threads).
    probing: AtomicBool,
    /// Why the path is bad.
    reason: Mutex<Option<String>>,
}

/// A store path's health as reported (metrics, logs, tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathState {
    pub healthy: bool,
    /// Why it is not, when it is not.
    pub reason: Option<String>,
}

impl PathHealth {
    pub(super) fn is_bad(&self) -> bool {
        self.bad.load(Ordering::Relaxed)
    }

    fn state(&self) -> PathState {
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        PathState {
            healthy: !self.is_bad(),
            reason: if self.is_bad() { reason } else { None },
        }
    }

    /// Records a probe result; logs changes only.
    fn set(&self, data: &Path, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.bad.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %data.display(), "store path is healthy again: taking new files");
                }
                *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = None;
            }
            Err(reason) => {
                if !self.bad.swap(true, Ordering::Relaxed) {
                    tracing::error!(path = %data.display(), %reason, "store path failed: no new files go there until it is healthy again");
                }
                *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            }
        }
    }
}

/// Writes, syncs, reads back and removes a small file in `data/.tmp`, then reads the disk
/// usage (blocking).
fn probe_blocking(data: &Path) -> io::Result<()> {
    if !std::fs::metadata(data)?.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    let path = data
        .join(TMP_DIR)
        .join(format!("probe.{:016x}", rand::thread_rng().gen::<u64>()));
    let result = (|| {
        let mut pattern = vec![0u8; PROBE_LEN];
        rand::thread_rng().fill(&mut pattern[..]);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.write_all(&pattern)?;
        file.sync_all()?;
        let mut back = Vec::with_capacity(PROBE_LEN);
        std::fs::File::open(&path)?.read_to_end(&mut back)?;
        if back != pattern {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "probe file read back different bytes",
            ));
        }
        Ok(())
    })();
    let removed = std::fs::remove_file(&path);
    result?;
    removed?;
    disk_usage(data).map(|_| ())
}

/// Probes one path unless a probe of it is already running; updates its health.
async fn probe(health: Arc<PathHealth>, data: PathBuf) {
    if health.probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let task = {
        let (health, data) = (health.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            let result = probe_blocking(&data);
            // a late answer still counts: it ends the probe and may heal the path
            health.probing.store(false, Ordering::Release);
            result
        })
    };
    let result = match tokio::time::timeout(PROBE_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(err))) => Err(format!("probe failed: {err}")),
        Ok(Err(join)) => Err(format!("probe failed: {join}")),
        Err(_) => Err(format!("probe did not finish within {PROBE_TIMEOUT:?}")),
    };
    health.set(&data, result);
}

impl Store {
    /// `<store path>/data` of store path `index`.
    pub fn data_dir(&self, index: u8) -> Result<&Path, StoreError> {
        Ok(&self.store_path(index)?.data)
    }

    /// Whether store path `index` keeps more than its reserved space after `size` more
    /// bytes (never for a bad path).
    pub async fn room_for(&self, index: u8, size: u64) -> Result<bool, StoreError> {
        self.has_room(index, size).await
    }

    /// Health of every store path, in index order.
    pub fn path_states(&self) -> Vec<PathState> {
        self.paths.iter().map(|p| p.health.state()).collect()
    }

    /// Whether store path `index` takes new files.
    pub fn path_healthy(&self, index: u8) -> bool {
        self.paths
            .get(usize::from(index))
            .is_some_and(|p| !p.health.is_bad())
    }

    /// Passes `result` on; an I/O error has store path `index` probed in the background
    /// (not a missing file or an invalid request, nor a full disk: those say nothing about
    /// the disk's health).
    pub(crate) fn note_result<T>(
        &self,
        index: u8,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Err(err @ StoreError::Io { .. }) = &result {
            if !err.is_no_space() {
                self.suspect(index);
            }
        }
        result
    }

    /// Starts a probe of store path `index` (in the background).
    pub(crate) fn suspect(&self, index: u8) {
        let Some(path) = self.paths.get(usize::from(index)) else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(probe(path.health.clone(), path.data.clone()));
        }
    }

    /// Marks store path `index` bad right away (a disk call that did not return in time).
    pub(crate) fn mark_bad(&self, index: u8, reason: String) {
        if let Some(path) = self.paths.get(usize::from(index)) {
            path.health.set(&path.data, Err(reason));
        }
    }

    /// Probes every store path now, all at once; returns when every probe has finished or
    /// timed out.
    pub async fn probe_paths(&self) {
        let probes: Vec<_> = self
            .paths
            .iter()
            .map(|p| tokio::spawn(probe(p.health.clone(), p.data.clone())))
            .collect();
        for probe in probes {
            let _ = probe.await;
        }
    }

    /// Probes every store path each `interval` until `stop`.
    pub async fn run_health_checks(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            self.probe_paths().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::store_in;
    use super::super::NewFile;
    use super::*;

    fn upload(size: u64) -> NewFile<'static> {
        NewFile {
            store_path: None,
            size,
            ext: "",
            appender: false,
        }
    }

    #[tokio::test]
    async fn a_failed_path_is_skipped_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 2, 1).await;
        let data = dir.path().join("p1/data");
        let away = dir.path().join("p1/data.away");
        // the disk of path 1 goes away (as when it is unmounted or dies)
        std::fs::rename(&data, &away).unwrap();
        // uploads whose turn is path 1 find its space unreadable, go to path 0, and have
        // path 1 probed
        for _ in 0..2 {
            let name = store.write_new_file(&upload(1), &mut &b"x"[..]).await;
            assert_eq!(name.unwrap().store_path(), 0);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.path_healthy(1) {
            assert!(
                std::time::Instant::now() < deadline,
                "path 1 not marked bad"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(store.path_healthy(0));
        let states = store.path_states();
        assert!(states[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("probe failed"));
        // new files all go to path 0 now; path 1 itself has no room (a slave of a file there
        // cannot be stored; the upload command asks for any path instead)
        for _ in 0..3 {
            let name = store
                .write_new_file(&upload(1), &mut &b"y"[..])
                .await
                .unwrap();
            assert_eq!(name.store_path(), 0);
        }
        let req = NewFile {
            store_path: Some(1),
            ..upload(1)
        };
        assert!(matches!(
            store.write_new_file(&req, &mut &b"y"[..]).await,
            Err(StoreError::NoSpace)
        ));
        // the trackers hear that it has no space
        let usage = store.usage().await;
        assert_eq!((usage[1].total_bytes, usage[1].free_bytes), (0, 0));
        assert!(usage[0].total_bytes > 0);
        // the disk comes back: the next probe heals the path
        std::fs::rename(&away, &data).unwrap();
        store.probe_paths().await;
        assert!(store.path_healthy(1));
        assert_eq!(store.path_states()[1].reason, None);
        let seen: Vec<u8> = {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let name = store.write_new_file(&upload(1), &mut &b"z"[..]).await;
                seen.push(name.unwrap().store_path());
            }
            seen.sort();
            seen
        };
        assert_eq!(seen, [0, 1]);
    }

    #[tokio::test]
    async fn a_data_directory_replaced_by_a_file_fails_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 1).await;
        let data = dir.path().join("data");
        std::fs::rename(&data, dir.path().join("data.away")).unwrap();
        std::fs::write(&data, b"not a directory").unwrap();
        store.probe_paths().await;
        assert!(!store.path_healthy(0));
        // the only path is bad: no room anywhere
        assert!(matches!(
            store.write_new_file(&upload(1), &mut &b"x"[..]).await,
            Err(StoreError::NoSpace)
        ));
    }
}
