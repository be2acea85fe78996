//! The content of the last few small files written here, kept in memory for the sync senders.
//!
//! Every new file is copied to each peer moments after it was stored (milliseconds, see
//! docs/performance.md), and a small one was in memory whole just before. Keeping the last
//! [`RECENT_BYTES`] of them saves each sender an open, stat and read on the blocking pool.
//! Only ordinary files are kept: their names are never reused and their content never changes,
//! so a copy taken from here is exactly what the disk holds (or held, if the file was deleted
//! since: its delete record follows the create, as for a copy read from disk just before).
//! Nothing is kept while the group has no other storage: no sender would read it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Bytes of content kept at most (oldest files are dropped first).
pub(crate) const RECENT_BYTES: usize = 1 << 20;

/// Larger files are not kept: a handful of them would fill the cache and be pushed out
/// before the senders reach them under load, while holding memory on top of the bodies still
/// in flight; for a file that size the sender's read costs little next to its copy.
pub(crate) const RECENT_MAX_FILE: usize = 16 << 10;

/// A recently written file: its content and mtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecentFile {
    pub(crate) body: Bytes,
    pub(crate) mtime: u32,
}

#[derive(Debug, Default)]
struct Recent {
    by_name: HashMap<String, RecentFile>,
    /// Names, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct RecentFiles {
    inner: Mutex<Recent>,
    capacity: usize,
    /// Files larger than this are not kept.
    max_file: usize,
    /// Files are kept only while some sender may want them.
    wanted: AtomicBool,
}

impl RecentFiles {
    pub(crate) fn new(capacity: usize, max_file: usize) -> Self {
        RecentFiles {
            inner: Mutex::new(Recent::default()),
            capacity,
            max_file,
            wanted: AtomicBool::new(false),
        }
    }

    /// Starts or stops keeping files; stopping drops what is kept.
    pub(crate) fn set_wanted(&self, wanted: bool) {
        if self.wanted.swap(wanted, Ordering::Relaxed) && !wanted {
            let mut recent = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            *recent = Recent::default();
        }
    }

    /// Remembers the file just stored as `name` (a logical name, `M00/XX/YY/...`).
    pub(crate) fn insert(&self, name: String, file: RecentFile) {
        let len = file.body.len();
        if len > self.capacity.min(self.max_file) || !self.wanted.load(Ordering::Relaxed) {
            return;
        }
        let mut recent = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        while recent.bytes + len > self.capacity {
            let Some(oldest) = recent.order.pop_front() else {
                break;
            };
            if let Some(gone) = recent.by_name.remove(&oldest) {
                recent.bytes -= gone.body.len();
            }
        }
        if let Some(old) = recent.by_name.insert(name.clone(), file) {
            // the same name twice cannot happen for new files; keep the count right anyway
            recent.bytes -= old.body.len();
            recent.order.retain(|n| n != &name);
        }
        recent.bytes += len;
        recent.order.push_back(name);
    }

    /// The content of `name` if it is one of the recent files.
    pub(crate) fn get(&self, name: &str) -> Option<RecentFile> {
        let recent = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        recent.by_name.get(name).cloned()
    }

    /// Drops `name` (it is being deleted): a sender that looks at it from now on finds what
    /// the disk holds. The content file of a slave stored as a link has no delete record of
    /// its own (it goes with the link's), so a copy of it sent after its delete would stay on
    /// the peer.
    pub(crate) fn forget(&self, name: &str) {
        if !self.wanted.load(Ordering::Relaxed) {
            return;
        }
        let mut recent = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gone) = recent.by_name.remove(name) {
            recent.bytes -= gone.body.len();
            recent.order.retain(|n| n != name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: usize, mtime: u32) -> RecentFile {
        RecentFile {
            body: Bytes::from(vec![mtime as u8; len]),
            mtime,
        }
    }

    fn wanted(capacity: usize) -> RecentFiles {
        let recent = RecentFiles::new(capacity, capacity);
        recent.set_wanted(true);
        recent
    }

    #[test]
    fn keeps_nothing_while_no_sender_wants_it() {
        let recent = RecentFiles::new(10, 10);
        recent.insert("a".into(), file(4, 1));
        assert_eq!(recent.get("a"), None);
        recent.set_wanted(true);
        recent.insert("b".into(), file(4, 2));
        assert_eq!(recent.get("b"), Some(file(4, 2)));
        // the last peer went: what was kept goes too
        recent.set_wanted(false);
        assert_eq!(recent.get("b"), None);
        assert_eq!(recent.inner.lock().unwrap().bytes, 0);
        recent.set_wanted(true);
        assert_eq!(recent.get("b"), None);
    }

    #[test]
    fn keeps_the_newest_files_within_its_capacity() {
        let recent = wanted(10);
        recent.insert("a".into(), file(4, 1));
        recent.insert("b".into(), file(4, 2));
        assert_eq!(recent.get("a"), Some(file(4, 1)));
        // 4 + 4 + 4 > 10: the oldest goes
        recent.insert("c".into(), file(4, 3));
        assert_eq!(recent.get("a"), None);
        assert_eq!(recent.get("b"), Some(file(4, 2)));
        assert_eq!(recent.get("c"), Some(file(4, 3)));
        // one that fills it alone pushes out everything else
        recent.insert("d".into(), file(10, 4));
        assert_eq!(recent.get("b"), None);
        assert_eq!(recent.get("c"), None);
        assert_eq!(recent.get("d"), Some(file(10, 4)));
        // one larger than the whole capacity is not kept and removes nothing
        recent.insert("e".into(), file(11, 5));
        assert_eq!(recent.get("e"), None);
        assert_eq!(recent.get("d"), Some(file(10, 4)));
    }

    #[test]
    fn a_deleted_file_is_forgotten() {
        let recent = wanted(10);
        recent.insert("a".into(), file(4, 1));
        recent.insert("b".into(), file(4, 2));
        recent.forget("a");
        recent.forget("never kept");
        assert_eq!(recent.get("a"), None);
        assert_eq!(recent.get("b"), Some(file(4, 2)));
        // its bytes are free again: two more fit beside "b"
        recent.insert("c".into(), file(3, 3));
        recent.insert("d".into(), file(3, 4));
        assert_eq!(recent.get("b"), Some(file(4, 2)));
        assert_eq!(recent.inner.lock().unwrap().bytes, 10);
    }

    #[test]
    fn files_above_the_size_limit_are_not_kept() {
        let recent = RecentFiles::new(100, 8);
        recent.set_wanted(true);
        recent.insert("small".into(), file(8, 1));
        recent.insert("large".into(), file(9, 2));
        assert_eq!(recent.get("small"), Some(file(8, 1)));
        assert_eq!(recent.get("large"), None);
    }

    #[test]
    fn a_name_stored_again_replaces_its_content() {
        let recent = wanted(10);
        recent.insert("a".into(), file(4, 1));
        recent.insert("a".into(), file(6, 2));
        assert_eq!(recent.get("a"), Some(file(6, 2)));
        // the count followed: 6 + 4 fits
        recent.insert("b".into(), file(4, 3));
        assert_eq!(recent.get("a"), Some(file(6, 2)));
        assert_eq!(recent.get("b"), Some(file(4, 3)));
    }
}
