//! Free and total space of a store path (`statvfs`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fdfs_proto::tracker_msg::PathUsage;

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

    #[test]
    fn missing_directory_is_an_error() {
        assert!(disk_usage(Path::new("/nonexistent/fdfs/path")).is_err());
    }
}
