//! Free and total space of a store path (`statvfs`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fdfs_proto::tracker_msg::PathUsage;
use fdfs_proto::units::ReservedSpace;

/// How long a statvfs answer stands in for new ones (far from the reserve only).
const FRESH: Duration = Duration::from_secs(1);
/// A remembered answer decides only while the path keeps this much above its reserve after
/// the write; closer to the reserve every write asks the file system again.
const SLACK: u64 = 256 << 20;

/// The last statvfs of a store path, debited by what was admitted since: a small upload
/// need not pay a statvfs (and a trip to the blocking pool) when the disk is far from full.
#[derive(Debug, Default)]
pub(crate) struct SpaceCache {
    last: Mutex<Option<Snapshot>>,
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    usage: PathUsage,
    /// Bytes admitted since `at`.
    admitted: u64,
}

impl SpaceCache {
    /// Remembers a fresh statvfs answer.
    pub(crate) fn store(&self, usage: PathUsage) {
        self.store_at(usage, Instant::now());
    }

    fn store_at(&self, usage: PathUsage, at: Instant) {
        *self.lock() = Some(Snapshot {
            at,
            usage,
            admitted: 0,
        });
    }

    /// `true` (and `size` is counted as used) when the remembered answer shows room for
    /// `size` bytes with [`SLACK`] to spare above `reserved`; `false` means "ask statvfs".
    pub(crate) fn admits(&self, size: u64, reserved: &ReservedSpace) -> bool {
        self.admits_at(size, reserved, Instant::now())
    }

    fn admits_at(&self, size: u64, reserved: &ReservedSpace, now: Instant) -> bool {
        let mut last = self.lock();
        let Some(snapshot) = last.as_mut() else {
            return false;
        };
        if now.saturating_duration_since(snapshot.at) >= FRESH {
            return false;
        }
        let left = snapshot
            .usage
            .free_bytes
            .checked_sub(snapshot.admitted)
            .and_then(|free| free.checked_sub(size))
            .and_then(|free| free.checked_sub(SLACK));
        match left {
            Some(left) if reserved.has_room(snapshot.usage.total_bytes, left) => {
                snapshot.admitted = snapshot.admitted.saturating_add(size);
                true
            }
            _ => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Total and available bytes of the filesystem holding `path` (blocking).
///
/// "Free" is `f_bavail`, the space an unprivileged writer can use, which is what uploads get.
pub fn disk_usage(path: &Path) -> io::Result<PathUsage> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs is a plain C struct for which all-zero bytes are a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // field widths differ between targets
    let block = if stat.f_frsize > 0 {
        stat.f_frsize as u64
    } else {
        stat.f_bsize as u64
    };
    #[allow(clippy::unnecessary_cast)]
    let (blocks, avail) = (stat.f_blocks as u64, stat.f_bavail as u64);
    Ok(PathUsage {
        total_bytes: blocks.saturating_mul(block),
        free_bytes: avail.saturating_mul(block),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_some_space_for_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let usage = disk_usage(dir.path()).unwrap();
        assert!(usage.total_bytes > 0);
        assert!(usage.free_bytes <= usage.total_bytes);
    }

    const GIB: u64 = 1 << 30;

    fn usage(total: u64, free: u64) -> PathUsage {
        PathUsage {
            total_bytes: total,
            free_bytes: free,
        }
    }

    #[test]
    fn cache_admits_only_fresh_answers_far_from_the_reserve() {
        let reserve: ReservedSpace = ReservedSpace::parse("10%").unwrap();
        let cache = SpaceCache::default();
        let t0 = Instant::now();
        assert!(!cache.admits_at(1, &reserve, t0), "nothing remembered yet");
        cache.store_at(usage(100 * GIB, 50 * GIB), t0);
        assert!(cache.admits_at(GIB, &reserve, t0));
        assert!(!cache.admits_at(1, &reserve, t0 + FRESH), "stale answer");
        // 50 GiB free, 10 GiB reserved: admitted writes eat into the remembered room
        cache.store_at(usage(100 * GIB, 50 * GIB), t0);
        for _ in 0..39 {
            assert!(cache.admits_at(GIB, &reserve, t0));
        }
        assert!(
            !cache.admits_at(GIB, &reserve, t0),
            "within the slack of the reserve: statvfs decides"
        );
        assert!(!cache.admits_at(u64::MAX, &reserve, t0));
    }

    #[test]
    fn cache_never_admits_on_a_full_path() {
        let all: ReservedSpace = ReservedSpace::parse("100%").unwrap();
        let cache = SpaceCache::default();
        let t0 = Instant::now();
        cache.store_at(usage(100 * GIB, 100 * GIB), t0);
        assert!(!cache.admits_at(0, &all, t0));
        let bytes: ReservedSpace = ReservedSpace::parse("1G").unwrap();
        cache.store_at(usage(100 * GIB, GIB + SLACK + 1), t0);
        assert!(!cache.admits_at(1, &bytes, t0));
        assert!(cache.admits_at(0, &bytes, t0));
    }

    #[test]
    fn missing_directory_is_an_error() {
        assert!(disk_usage(Path::new("/nonexistent/fdfs/path")).is_err());
    }
}
