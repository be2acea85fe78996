//! The slave mark. A slave whose prefix is all digits can have exactly a normal name's shape
//! (H.8), so its name seems to record a size and CRC32: its master's, not its own. While the
//! master is beside it, the directory tells such a slave from a damaged file (see
//! `replica::has_master_beside`); but FastDFS deletes a master without its slaves, and then
//! nothing would. So such a slave carries an extended attribute saying what it is, set before
//! it appears under its name: at its upload, and on a peer when the copy is accepted beside
//! its master. A file system without user extended attributes keeps only the directory test.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

const ATTR: &CStr = c"user.fdfs.slave";
const VALUE: &[u8] = b"1";

/// Marks the open `file` as a slave, then syncs it when `sync` (the mark is inode metadata
/// that an earlier fsync of the file did not cover; callers may leave the file's only sync to
/// this). A file system without user extended attributes is not an error: the file is synced
/// all the same.
pub(crate) fn mark(file: &File, sync: bool) -> io::Result<()> {
    if !set(file)? {
        tracing::debug!("no extended attributes here: slaves are told by their master alone");
    }
    // callers leave the file's own sync to this one: it runs with or without a mark
    if sync {
        file.sync_all()?;
    }
    Ok(())
}

/// Sets the attribute on `file`; `false` where the file system has no user extended
/// attributes.
fn set(file: &File) -> io::Result<bool> {
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the given length.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            ATTR.as_ptr(),
            VALUE.as_ptr().cast(),
            VALUE.len(),
            0,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match unsupported(&err) {
        true => Ok(false),
        false => Err(err),
    }
}

/// [`mark`] of the file at `path`.
pub(crate) fn mark_path(path: &Path, sync: bool) -> io::Result<()> {
    mark(&File::open(path)?, sync)
}

/// Marks the file at `path` unless it carries the mark already, syncing it (`sync`) only
/// when the mark was set: for a copy that is stored and durable already. `false` where the
/// file system has no user extended attributes.
pub(crate) fn add_to(path: &Path, sync: bool) -> io::Result<bool> {
    if is_marked(path) {
        return Ok(true);
    }
    let file = File::open(path)?;
    if !set(&file)? {
        return Ok(false);
    }
    if sync {
        file.sync_all()?;
    }
    Ok(true)
}

/// Whether the file at `path` carries the mark (links are not followed).
pub(crate) fn is_marked(path: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 4];
    // SAFETY: NUL-terminated path and name, and a buffer of the given length.
    let len = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            ATTR.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    usize::try_from(len).is_ok_and(|len| &value[..len] == VALUE)
}

fn unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOTSUP | libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_file_is_told_from_an_unmarked_one() {
        let dir = tempfile::tempdir().unwrap();
        let (marked, plain) = (dir.path().join("marked"), dir.path().join("plain"));
        std::fs::write(&marked, b"thumbnail").unwrap();
        std::fs::write(&plain, b"file").unwrap();
        mark_path(&marked, true).unwrap();
        assert!(is_marked(&marked));
        assert!(!is_marked(&plain));
        assert!(!is_marked(&dir.path().join("missing")));
        // the mark goes with the inode: a rename keeps it
        let moved = dir.path().join("moved");
        std::fs::rename(&marked, &moved).unwrap();
        assert!(is_marked(&moved));
        // adding to a stored file: once, and again is a no-op
        assert!(add_to(&plain, true).unwrap());
        assert!(is_marked(&plain));
        assert!(add_to(&plain, true).unwrap());
        assert!(add_to(&dir.path().join("missing"), false).is_err());
    }
}
