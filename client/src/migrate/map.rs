//! The migration map: old URL path → file ID (with the size, mtime and CRC32 of the source
//! file), stored in a redb database (crash-safe: a commit is either wholly there or not).
//!
//! redb locks the database file exclusively while it is open, in this process as in others.
//! So no program keeps it open: `fdfs import` opens it for each batch of results and closes it
//! again, and readers (the router, `--verify`) keep a [`Snapshot`] in memory that they refresh
//! from the changes since their last read ([`MigrationMap::read_since`]); while another
//! program holds the file, [`MigrationMap::open`] retries until its deadline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableTable, TableDefinition};

/// old path → (file id, size, mtime in ns since the epoch, crc32, change sequence number)
const PATHS: TableDefinition<&str, (&str, u64, i64, u32, u64)> = TableDefinition::new("paths");
/// change sequence number → old path, for incremental reads
const CHANGES: TableDefinition<u64, &str> = TableDefinition::new("changes");
/// superseded file IDs still to delete from the cluster
const TRASH: TableDefinition<&str, u64> = TableDefinition::new("trash");
/// counters: "next_seq"
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Page cache of a short-lived handle: the map is read sequentially once per open.
const CACHE_BYTES: usize = 16 << 20;

/// Errors of the migration map.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Another program kept the map open past the deadline.
    #[error("migration map {} is in use by another program (an import or a router reload) — retry later", .0.display())]
    Busy(PathBuf),
    /// The database reported an error (I/O, corruption).
    #[error("migration map {}: {source}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
}

/// What the map knows of one imported file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The file ID in the cluster (`group1/M00/...`).
    pub file_id: String,
    /// Size of the source file when it was imported.
    pub size: u64,
    /// Modification time of the source file (ns since the epoch).
    pub mtime_ns: i64,
    /// CRC32 of the content uploaded.
    pub crc32: u32,
}

/// A change to record: `path` now maps to `entry`; `superseded` is the file ID it mapped to
/// before (to delete once this is committed).
#[derive(Clone, Debug)]
pub struct Record {
    pub path: String,
    pub entry: Entry,
    pub superseded: Option<String>,
}

/// Entries changed since a read, and the sequence number of the last change.
pub type Changes = (Vec<(String, Entry)>, u64);

/// The map file. Cheap: holds only the path; each operation opens and closes the database.
#[derive(Clone, Debug)]
pub struct MigrationMap {
    path: PathBuf,
    wait: Duration,
}

impl MigrationMap {
    /// The map at `path` (created on the first write); operations wait up to `wait` for a
    /// program that has it open.
    pub fn new(path: impl Into<PathBuf>, wait: Duration) -> Self {
        MigrationMap {
            path: path.into(),
            wait,
        }
    }

    /// Where the map lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_err(&self, source: impl Into<redb::Error>) -> MapError {
        MapError::Db {
            path: self.path.clone(),
            source: Box::new(source.into()),
        }
    }

    /// Opens (creating if needed) the database, retrying while another holder has it.
    pub fn open(&self) -> Result<Database, MapError> {
        let deadline = Instant::now() + self.wait;
        let mut pause = Duration::from_millis(2);
        loop {
            let opened = Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&self.path);
            match opened {
                Ok(db) => return Ok(db),
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    if Instant::now() >= deadline {
                        return Err(MapError::Busy(self.path.clone()));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(err) => return Err(self.db_err(err)),
            }
        }
    }

    /// Entries changed after `since` (a sequence number from an earlier read; 0 = all), and
    /// the sequence number to pass next time. Returns `None` when the map file does not exist.
    pub fn read_since(&self, since: u64) -> Result<Option<Changes>, MapError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let db = self.open()?;
        let txn = db.begin_read().map_err(|e| self.db_err(e))?;
        let changes = match txn.open_table(CHANGES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Some((Vec::new(), since))),
            Err(err) => return Err(self.db_err(err)),
        };
        let paths = txn.open_table(PATHS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        let mut last = since;
        let range = changes
            .range(since.saturating_add(1)..)
            .map_err(|e| self.db_err(e))?;
        for item in range {
            let (seq, key) = item.map_err(|e| self.db_err(e))?;
            last = seq.value();
            let key = key.value().to_string();
            if let Some(value) = paths.get(key.as_str()).map_err(|e| self.db_err(e))? {
                let (file_id, size, mtime_ns, crc32, _) = value.value();
                let entry = Entry {
                    file_id: file_id.to_string(),
                    size,
                    mtime_ns,
                    crc32,
                };
                out.push((key, entry));
            }
        }
        Ok(Some((out, last)))
    }

    /// Commits `records` in one transaction: each path's new entry (with a new sequence
    /// number) and its superseded file ID into the trash.
    pub fn commit(&self, records: &[Record]) -> Result<(), MapError> {
        if records.is_empty() {
            return Ok(());
        }
        let db = self.open()?;
        let txn = db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut paths = txn.open_table(PATHS).map_err(|e| self.db_err(e))?;
            let mut changes = txn.open_table(CHANGES).map_err(|e| self.db_err(e))?;
            let mut trash = txn.open_table(TRASH).map_err(|e| self.db_err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
            let mut seq = meta
                .get("next_seq")
                .map_err(|e| self.db_err(e))?
                .map(|v| v.value())
                .unwrap_or(1);
            for record in records {
                let entry = &record.entry;
                let old_seq = paths
                    .insert(
                        record.path.as_str(),
                        (
                            entry.file_id.as_str(),
                            entry.size,
                            entry.mtime_ns,
                            entry.crc32,
                            seq,
                        ),
                    )
                    .map_err(|e| self.db_err(e))?
                    .map(|old| old.value().4);
                // one change row per path: the table stays as large as the map
                if let Some(old_seq) = old_seq {
                    changes.remove(old_seq).map_err(|e| self.db_err(e))?;
                }
                changes
                    .insert(seq, record.path.as_str())
                    .map_err(|e| self.db_err(e))?;
                if let Some(old) = &record.superseded {
                    if *old != entry.file_id {
                        trash
                            .insert(old.as_str(), seq)
                            .map_err(|e| self.db_err(e))?;
                    }
                }
                seq += 1;
            }
            meta.insert("next_seq", seq).map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    /// File IDs superseded by re-imports and not yet deleted from the cluster.
    pub fn trash(&self) -> Result<Vec<String>, MapError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let db = self.open()?;
        let txn = db.begin_read().map_err(|e| self.db_err(e))?;
        let trash = match txn.open_table(TRASH) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(self.db_err(err)),
        };
        let mut out = Vec::new();
        for item in trash.iter().map_err(|e| self.db_err(e))? {
            let (id, _) = item.map_err(|e| self.db_err(e))?;
            out.push(id.value().to_string());
        }
        Ok(out)
    }

    /// Forgets trash entries (their files were deleted, or were already gone).
    pub fn clear_trash(&self, ids: &[String]) -> Result<(), MapError> {
        if ids.is_empty() {
            return Ok(());
        }
        let db = self.open()?;
        let txn = db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut trash = txn.open_table(TRASH).map_err(|e| self.db_err(e))?;
            for id in ids {
                trash.remove(id.as_str()).map_err(|e| self.db_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.db_err(e))
    }
}

/// An in-memory copy of the map, refreshed incrementally.
#[derive(Debug, Default)]
pub struct Snapshot {
    entries: HashMap<String, Entry>,
    /// lower-cased path → path, for case-insensitive lookups (the last import of paths that
    /// differ only in case wins)
    lower: HashMap<String, String>,
    seq: u64,
}

impl Snapshot {
    /// An empty snapshot (nothing read yet).
    pub fn new() -> Self {
        Snapshot::default()
    }

    /// Reads the changes since the last refresh; returns how many entries changed.
    pub fn refresh(&mut self, map: &MigrationMap) -> Result<usize, MapError> {
        let Some((changed, seq)) = map.read_since(self.seq)? else {
            return Ok(0);
        };
        Ok(self.apply(changed, seq))
    }

    /// Applies changes read with [`MigrationMap::read_since`]`(self.seq())` (readers that must
    /// not block while reading do that elsewhere); returns how many entries changed.
    pub fn apply(&mut self, changed: Vec<(String, Entry)>, seq: u64) -> usize {
        let count = changed.len();
        for (path, entry) in changed {
            self.lower.insert(path.to_lowercase(), path.clone());
            self.entries.insert(path, entry);
        }
        self.seq = self.seq.max(seq);
        count
    }

    /// The entry of `path` exactly as given.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The entry of `path`, ignoring case if there is no exact match; returns the stored path.
    pub fn get_ignore_case(&self, path: &str) -> Option<(&str, &Entry)> {
        if let Some((key, entry)) = self.entries.get_key_value(path) {
            return Some((key.as_str(), entry));
        }
        let key = self.lower.get(&path.to_lowercase())?;
        self.entries
            .get_key_value(key)
            .map(|(key, entry)| (key.as_str(), entry))
    }

    /// Number of mapped paths.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The sequence number of the last change read.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, size: u64) -> Entry {
        Entry {
            file_id: id.into(),
            size,
            mtime_ns: 1_700_000_000_000_000_000,
            crc32: 0xdead_beef,
        }
    }

    fn record(path: &str, id: &str, superseded: Option<&str>) -> Record {
        Record {
            path: path.into(),
            entry: entry(id, 3),
            superseded: superseded.map(String::from),
        }
    }

    #[test]
    fn commits_are_read_back_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let map = MigrationMap::new(dir.path().join("map.redb"), Duration::from_secs(1));
        assert!(map.read_since(0).unwrap().is_none());
        let mut snap = Snapshot::new();
        assert_eq!(snap.refresh(&map).unwrap(), 0);
        map.commit(&[
            record("/a/x.jpg", "g/1", None),
            record("/a/Y.jpg", "g/2", None),
        ])
        .unwrap();
        assert_eq!(snap.refresh(&map).unwrap(), 2);
        assert_eq!(snap.get("/a/x.jpg").unwrap().file_id, "g/1");
        assert_eq!(snap.refresh(&map).unwrap(), 0, "nothing new");
        map.commit(&[record("/a/x.jpg", "g/3", Some("g/1"))])
            .unwrap();
        assert_eq!(snap.refresh(&map).unwrap(), 1);
        assert_eq!(snap.get("/a/x.jpg").unwrap().file_id, "g/3");
        assert_eq!(snap.len(), 2);
        assert_eq!(map.trash().unwrap(), ["g/1"]);
        map.clear_trash(&["g/1".into()]).unwrap();
        assert!(map.trash().unwrap().is_empty());
        // a fresh reader sees each path once, with its latest entry
        let (all, _) = map.read_since(0).unwrap().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(snap.get_ignore_case("/A/y.JPG").unwrap().0, "/a/Y.jpg");
        assert!(snap.get("/a/y.jpg").is_none());
    }

    #[test]
    fn a_held_map_is_busy_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let map = MigrationMap::new(dir.path().join("map.redb"), Duration::from_millis(100));
        map.commit(&[record("/p", "g/1", None)]).unwrap();
        let held = map.open().unwrap();
        assert!(matches!(map.read_since(0), Err(MapError::Busy(_))));
        drop(held);
        assert_eq!(map.read_since(0).unwrap().unwrap().0.len(), 1);
        // a holder that lets go within the wait is waited for
        let held = map.open().unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(held);
        });
        assert_eq!(map.read_since(0).unwrap().unwrap().0.len(), 1);
        releaser.join().unwrap();
    }
}
