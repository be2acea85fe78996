//! Files per store path (the `fdfs_storage_files` gauge): counted once at start-up by a
//! background walk of `data/XX/YY/`, then kept up to date by the store's own changes.
//!
//! The walk and the changes meet at one gate per store path: a change holds the gate (shared)
//! from just before its file-system operation until it has noted its effect, and the walk
//! holds it (exclusively) while it reads one directory. A change counts only for directories
//! the walk has passed; the walk sees the result of every change in a directory it has not
//! read yet. So no file is counted twice or missed, whatever runs during the walk.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

/// Directories of a store path (`XX/YY`, 256 × 256) in walk order; the gate value once the
/// walk is complete.
const DIRS: u32 = 256 * 256;

#[derive(Debug, Default)]
struct PathCount {
    /// Directories (`XX * 256 + YY`) below this value have been walked.
    walked: RwLock<u32>,
    count: AtomicI64,
}

/// Stored files of every store path.
#[derive(Debug)]
pub struct FileCounts {
    paths: Vec<PathCount>,
}

/// A change in progress in one store path (see the module comment).
pub(crate) struct Change<'a> {
    walked: RwLockReadGuard<'a, u32>,
    count: &'a AtomicI64,
}

impl Change<'_> {
    /// `delta` files appeared (or disappeared) in the directory holding `path`
    /// (`<data>/XX/YY/name`).
    pub(crate) fn note(&self, path: &Path, delta: i64) {
        let Some(dir) = dir_index(path) else {
            return;
        };
        if dir < *self.walked {
            self.count.fetch_add(delta, Ordering::Relaxed);
        }
    }
}

/// `XX * 256 + YY` of `<data>/XX/YY/name`.
fn dir_index(path: &Path) -> Option<u32> {
    let low = path.parent()?;
    let high = low.parent()?;
    let hex = |p: &Path| -> Option<u32> {
        let name = p.file_name()?.to_str()?;
        if name.len() != 2 {
            return None;
        }
        u32::from_str_radix(name, 16).ok()
    };
    Some(hex(high)? * 256 + hex(low)?)
}

/// Whether a directory entry is a stored file: not a metadata sidecar (`-m`) nor anything
/// hidden (temp files and markers start with a dot).
fn is_stored_file(name: &std::ffi::OsStr, kind: std::fs::FileType) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    (kind.is_file() || kind.is_symlink()) && !name.starts_with('.') && !name.ends_with("-m")
}

fn count_dir(dir: &Path) -> io::Result<i64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err)
            if err.kind() == io::ErrorKind::NotFound
                || err.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(0)
        }
        Err(err) => return Err(err),
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry?;
        if is_stored_file(&entry.file_name(), entry.file_type()?) {
            count += 1;
        }
    }
    Ok(count)
}

impl FileCounts {
    pub fn new(paths: usize) -> FileCounts {
        FileCounts {
            paths: (0..paths).map(|_| PathCount::default()).collect(),
        }
    }

    /// Starts a change in store path `index` (blocking: may wait for the walk to finish
    /// reading one directory).
    pub(crate) fn begin(&self, index: u8) -> Option<Change<'_>> {
        let path = self.paths.get(usize::from(index))?;
        Some(Change {
            walked: path.walked.read().unwrap_or_else(PoisonError::into_inner),
            count: &path.count,
        })
    }

    /// Walks `data` (store path `index`) once, directory by directory (blocking). Returns
    /// early, leaving the count unknown, when `stop` returns true.
    pub(crate) fn walk(&self, index: u8, data: &Path, stop: &dyn Fn() -> bool) -> io::Result<()> {
        let Some(path) = self.paths.get(usize::from(index)) else {
            return Ok(());
        };
        let lock = || path.walked.write().unwrap_or_else(PoisonError::into_inner);
        for high in 0..256u32 {
            if stop() {
                return Ok(());
            }
            let level1 = data.join(format!("{high:02X}"));
            {
                let mut walked = lock();
                if !level1.is_dir() {
                    // changes in it from now on are counted by the changes themselves
                    *walked = (high + 1) * 256;
                    continue;
                }
            }
            for low in 0..256u32 {
                let dir = level1.join(format!("{low:02X}"));
                let mut walked = lock();
                let found = count_dir(&dir)?;
                path.count.fetch_add(found, Ordering::Relaxed);
                *walked = high * 256 + low + 1;
            }
        }
        Ok(())
    }

    /// Files of each store path, in index order; `None` until the walk of that path is done.
    pub fn counts(&self) -> Vec<Option<u64>> {
        self.paths
            .iter()
            .map(|path| {
                let walked = *path.walked.read().unwrap_or_else(PoisonError::into_inner);
                (walked >= DIRS).then(|| path.count.load(Ordering::Relaxed).max(0) as u64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn walk_counts_files_but_not_sidecars_or_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        touch(&data.join("00/00/a"));
        touch(&data.join("00/00/a-m"));
        touch(&data.join("00/01/b"));
        touch(&data.join("FF/FF/c"));
        touch(&data.join(".tmp/upload-1"));
        touch(&data.join(".fdfs_store_id"));
        std::os::unix::fs::symlink(data.join("00/01/b"), data.join("00/01/b_s")).unwrap();
        let counts = FileCounts::new(1);
        assert_eq!(counts.counts(), vec![None]);
        counts.walk(0, data, &|| false).unwrap();
        assert_eq!(counts.counts(), vec![Some(4)]);
        // once walked, changes count everywhere
        let change = counts.begin(0).unwrap();
        change.note(&data.join("7F/00/new"), 1);
        change.note(&data.join("00/00/a"), -1);
        drop(change);
        assert_eq!(counts.counts(), vec![Some(4)]);
        assert!(counts.begin(1).is_none());
    }

    #[test]
    fn changes_before_the_walk_reaches_a_directory_are_left_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        touch(&data.join("00/00/a"));
        touch(&data.join("80/00/b"));
        let counts = FileCounts::new(1);
        // walk half of the directories by hand: up to 7F/FF
        *counts.paths[0].walked.write().unwrap() = 0x80 * 256;
        counts.paths[0].count.store(1, Ordering::Relaxed);
        {
            let change = counts.begin(0).unwrap();
            // a new file in a walked directory counts now
            touch(&data.join("00/00/c"));
            change.note(&data.join("00/00/c"), 1);
            // a new file in a directory still to walk is found by the walk
            touch(&data.join("80/00/d"));
            change.note(&data.join("80/00/d"), 1);
        }
        let path = &counts.paths[0];
        let mut walked = path.walked.write().unwrap();
        for d in 0x80 * 256..DIRS {
            let found = count_dir(&data.join(format!("{:02X}/{:02X}", d / 256, d % 256))).unwrap();
            path.count.fetch_add(found, Ordering::Relaxed);
            *walked = d + 1;
        }
        drop(walked);
        assert_eq!(counts.counts(), vec![Some(4)]);
    }

    /// Every way a file appears or goes away moves the count of the store path it is in.
    #[tokio::test]
    async fn store_changes_keep_the_count() {
        use crate::store::test_support::store_in;
        use crate::store::NewFile;
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_in(dir.path(), 2, 4).await;
        let new = |appender| NewFile {
            store_path: Some(0),
            size: 3,
            ext: "txt",
            appender,
        };
        // one file before the walk: found by it
        let first = store
            .write_new_file(&new(false), &mut &b"abc"[..])
            .await
            .unwrap();
        assert_eq!(store.file_counts(), vec![None, None]);
        store
            .count_files(&tokio_util::sync::CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(store.file_counts(), vec![Some(1), Some(0)]);

        let appender = store
            .write_new_file(&new(true), &mut &b"abc"[..])
            .await
            .unwrap();
        store
            .set_metadata(
                &appender,
                fdfs_proto::storage_msg::MetadataOp::Overwrite,
                b"k\x02v",
            )
            .await
            .unwrap();
        let slave = store
            .write_slave(&first, "_s", "txt", 2, &mut &b"xy"[..])
            .await
            .unwrap();
        assert_eq!(store.file_counts(), vec![Some(3), Some(0)]);
        // renamed: still one file, its sidecar not counted
        let regenerated = store.regenerate(&appender).await.unwrap();
        assert_eq!(store.file_counts(), vec![Some(3), Some(0)]);

        // replicated changes
        let copy =
            fdfs_proto::file_id::LogicalName::parse("M01/00/01/wKgBAAAAAAAAAAAAAAAAAAAAAAA.txt")
                .unwrap();
        store
            .replica_write(&copy, 2, 1_700_000_000, &mut &b"hi"[..], true)
            .await
            .unwrap();
        // an update replaces it: no new file
        store
            .replica_write(&copy, 2, 1_700_000_001, &mut &b"ho"[..], false)
            .await
            .unwrap();
        let link = copy.with_base("wKgBAAAAAAAAAAAAAAAAAAAAAAA_l.txt").unwrap();
        store
            .replica_link(&link, &copy, 1_700_000_001)
            .await
            .unwrap();
        assert_eq!(store.file_counts(), vec![Some(3), Some(2)]);
        let moved = copy.with_base("wKgBAAAAAAAAAAAAAAAAAAAAAAB.txt").unwrap();
        store.replica_rename(&moved, &copy).await.unwrap();
        assert_eq!(store.file_counts(), vec![Some(3), Some(2)]);
        store.replica_delete(&moved).await.unwrap();
        store.replica_delete(&moved).await.unwrap();
        assert_eq!(store.file_counts(), vec![Some(3), Some(1)]);

        // deletes
        store.delete(&slave).await.unwrap();
        store.delete(&regenerated).await.unwrap();
        assert!(store.delete(&regenerated).await.is_err());
        assert_eq!(store.file_counts(), vec![Some(1), Some(1)]);

        // a slave stored as a link takes its content file along when deleted
        store.set_slave_use_link(true);
        let linked = store
            .write_slave(&first, "_t", "txt", 2, &mut &b"xy"[..])
            .await
            .unwrap();
        assert_eq!(store.file_counts(), vec![Some(3), Some(1)]);
        store.delete(&linked).await.unwrap();
        assert_eq!(store.file_counts(), vec![Some(1), Some(1)]);

        // the counts agree with a fresh walk
        let again = FileCounts::new(2);
        for index in 0..2u8 {
            let data = dir.path().join(format!("p{index}")).join("data");
            again.walk(index, &data, &|| false).unwrap();
        }
        assert_eq!(again.counts(), store.file_counts());
    }

    #[test]
    fn directory_index_of_a_path() {
        assert_eq!(dir_index(Path::new("/s/data/0A/FF/name")), Some(0x0AFF));
        assert_eq!(dir_index(Path::new("/s/data/.tmp/name")), None);
        assert_eq!(dir_index(Path::new("name")), None);
    }
}
