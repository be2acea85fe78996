//! The router's view of the migration map: an in-memory [`Snapshot`] refreshed from the map
//! file every `map_refresh_interval` and on a miss, reading only the entries changed since.
//!
//! redb locks the map file while it is open, so the router never keeps it open: each refresh
//! opens it, reads the changes and closes it. `fdfs import` does the same per batch of
//! uploads, so both can run at once; a refresh that finds the importer holding the file
//! retries (briefly on a miss, longer in the background) and otherwise keeps the snapshot it
//! has. A restarted router reads the whole map again: nothing is lost.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use fdfs_client::migrate::{Entry, MigrationMap, Snapshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// (mtime, length) of the map file when it was last read.
type Stamp = (SystemTime, u64);

/// A shared, refreshing snapshot of the map.
pub struct MapView {
    path: PathBuf,
    snapshot: RwLock<Snapshot>,
    /// refreshes in the background wait this long for an importer to let go
    patient: MigrationMap,
    /// refreshes on a miss, while a client waits
    quick: MigrationMap,
    last: tokio::sync::Mutex<Option<Stamp>>,
}

impl MapView {
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(MapView {
            patient: MigrationMap::new(&path, Duration::from_secs(2)),
            quick: MigrationMap::new(&path, Duration::from_millis(100)),
            path,
            snapshot: RwLock::new(Snapshot::new()),
            last: tokio::sync::Mutex::new(None),
        })
    }

    /// Number of mapped paths known now.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no mapped path is known (yet).
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `key` up, refreshing once from the file if it is not known yet.
    pub async fn lookup(&self, key: &str, ignore_case: bool) -> Option<Entry> {
        if let Some(entry) = self.get(key, ignore_case) {
            return Some(entry);
        }
        match self.refresh(true).await {
            Ok(true) => self.get(key, ignore_case),
            Ok(false) => None,
            Err(err) => {
                debug!(error = %err, "map refresh on a miss failed");
                None
            }
        }
    }

    fn get(&self, key: &str, ignore_case: bool) -> Option<Entry> {
        let snapshot = self.read();
        if ignore_case {
            snapshot
                .get_ignore_case(key)
                .map(|(_, entry)| entry.clone())
        } else {
            snapshot.get(key).cloned()
        }
    }

    /// Reads the changes since the last refresh if the file changed; returns whether any
    /// entry changed.
    pub async fn refresh(&self, quick: bool) -> anyhow::Result<bool> {
        let mut last = self.last.lock().await;
        // stat before reading: a commit after this point is seen by the next refresh
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|meta| Some((meta.modified().ok()?, meta.len())));
        if let (Some(stamp), Some(previous)) = (stamp, *last) {
            // a file changed twice within the clock's resolution would keep its stamp: trust
            // an unchanged stamp only once it is a second old
            let settled = stamp
                .0
                .elapsed()
                .map(|age| age > Duration::from_secs(1))
                .unwrap_or(false);
            if stamp == previous && settled {
                return Ok(false);
            }
        }
        let Some(stamp) = stamp else {
            return Ok(false);
        };
        let map = if quick { &self.quick } else { &self.patient }.clone();
        let seq = self.read().seq();
        let read = tokio::task::spawn_blocking(move || map.read_since(seq)).await??;
        let Some((changes, seq)) = read else {
            return Ok(false);
        };
        let changed = self
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(changes, seq);
        *last = Some(stamp);
        if changed > 0 {
            debug!(changed, total = self.len(), "map refreshed");
        }
        Ok(changed > 0)
    }

    /// Refreshes every `interval` until `shutdown`.
    pub async fn run_refresher(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut missing_logged = false;
        loop {
            match self.refresh(false).await {
                Ok(_) => {}
                Err(err) => {
                    warn!(error = %err, "cannot read the migration map, keeping the entries known")
                }
            }
            if !self.path.exists() && !missing_logged {
                info!(map = %self.path.display(), "migration map does not exist yet; map rules answer 404 until it does");
                missing_logged = true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdfs_client::migrate::Record;

    fn record(path: &str, id: &str) -> Record {
        Record {
            path: path.into(),
            entry: Entry {
                file_id: id.into(),
                size: 1,
                mtime_ns: 0,
                crc32: 0,
            },
            superseded: None,
        }
    }

    #[tokio::test]
    async fn follows_the_map_and_survives_a_busy_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.redb");
        let map = MigrationMap::new(&path, Duration::from_secs(2));
        let view = MapView::new(path.clone());
        assert!(view.lookup("/a", false).await.is_none(), "no map file yet");
        map.commit(&[record("/a", "g/1")]).unwrap();
        assert_eq!(view.lookup("/a", false).await.unwrap().file_id, "g/1");
        // an importer holding the file: lookups answer from memory, misses give up quickly
        let held = map.open().unwrap();
        assert_eq!(view.lookup("/a", false).await.unwrap().file_id, "g/1");
        assert!(view.lookup("/b", false).await.is_none());
        drop(held);
        map.commit(&[record("/B", "g/2"), record("/a", "g/3")])
            .unwrap();
        assert_eq!(view.lookup("/b", true).await.unwrap().file_id, "g/2");
        assert!(view.lookup("/b", false).await.is_none());
        view.refresh(false).await.unwrap();
        assert_eq!(view.lookup("/a", false).await.unwrap().file_id, "g/3");
        assert_eq!(view.len(), 2);
    }
}
