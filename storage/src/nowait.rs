//! Reads that never wait for the disk: `preadv2(RWF_NOWAIT)` (Linux 4.14+) returns data only
//! when it is already in the page cache. Hot files — most of an image server's traffic — are
//! then read on the server threads without a trip to the blocking pool (which costs more than
//! the read itself for small files); anything else (pages not cached, a kernel or file system
//! without support, any error) makes the caller fall back to an ordinary read on the blocking
//! pool, which also reports the real error.

use std::fs::File;
use std::os::fd::AsRawFd;

use bytes::Bytes;

/// Exactly `len` bytes at `offset` if they can be had without blocking; None otherwise
/// (including a file shorter than `offset + len`: the blocking path reports that).
pub fn read_exact_at(file: &File, offset: u64, len: usize) -> Option<Bytes> {
    let mut buf = Vec::with_capacity(len);
    append_exact_at(file, offset, len, &mut buf).then(|| Bytes::from(buf))
}

/// Appends exactly `len` bytes at `offset` to `buf` if they can be had without blocking and
/// says whether it did; on `false`, `buf` may hold part of them after its old end (truncate
/// it back before reuse).
pub fn append_exact_at(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> bool {
    append_impl(file, offset, len, buf).is_some()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn append_impl(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> Option<()> {
    buf.reserve(len);
    let start = buf.len();
    let mut filled = 0usize;
    while filled < len {
        let at = i64::try_from(offset.checked_add(filled as u64)?).ok()?;
        let iov = libc::iovec {
            // SAFETY: `start + filled < start + len <= capacity`: the pointer stays inside
            // the allocation.
            iov_base: unsafe { buf.as_mut_ptr().add(start + filled) }.cast(),
            iov_len: len - filled,
        };
        // SAFETY: one valid iovec describing writable, owned memory; the fd is open.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
        if n <= 0 {
            // 0: end of file before len; -1: EAGAIN (not cached), EOPNOTSUPP, ...
            return None;
        }
        filled += n as usize;
        // SAFETY: the kernel initialised the `n` bytes after the first `filled - n` ones.
        unsafe { buf.set_len(start + filled) };
    }
    Some(())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn append_impl(_file: &File, _offset: u64, _len: usize, _buf: &mut Vec<u8>) -> Option<()> {
    None
}

/// Opens the regular file at `path` read-only, with its status, if every component of the
/// path is in the kernel's lookup cache (`openat2` with `RESOLVE_CACHED`, Linux 5.12+): then
/// neither the open nor the fstat waits for the disk, and a hot file needs no trip to the
/// blocking pool at all. `None` otherwise (a component not cached, a missing file, not a
/// regular file, an older kernel, any error): the caller opens on the blocking pool, which
/// also reports the real error. The open is `O_NONBLOCK` so that a FIFO or device put under
/// a file's name cannot hold the calling thread; a regular file has the flag cleared again.
#[cfg(target_os = "linux")]
pub fn open_cached(path: &std::path::Path) -> Option<(File, std::fs::Metadata)> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let file = File::from(openat2(CWD, path, flags, Mode::empty(), ResolveFlags::CACHED).ok()?);
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    // later reads of the file behave as after a plain open
    rustix::fs::fcntl_setfl(&file, OFlags::empty()).ok()?;
    Some((file, meta))
}

#[cfg(not(target_os = "linux"))]
pub fn open_cached(_path: &std::path::Path) -> Option<(File, std::fs::Metadata)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn opens_only_what_the_lookup_cache_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hot");
        std::fs::write(&path, b"content").unwrap();
        // just created: its dentry is cached, unless this kernel has no RESOLVE_CACHED
        if let Some((mut file, meta)) = open_cached(&path) {
            assert_eq!(meta.len(), 7);
            let flags = rustix::fs::fcntl_getfl(&file).unwrap();
            assert!(!flags.contains(rustix::fs::OFlags::NONBLOCK));
            let mut read = String::new();
            std::io::Read::read_to_string(&mut file, &mut read).unwrap();
            assert_eq!(read, "content");
        }
        assert!(open_cached(&dir.path().join("missing")).is_none());
        assert!(open_cached(dir.path()).is_none(), "not a regular file");
        // a FIFO nobody writes to: a plain open would wait for a writer forever
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|status| status.success()) {
            assert!(open_cached(&fifo).is_none());
        }
    }

    #[test]
    fn cached_data_or_nothing() {
        let mut tmp = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        tmp.write_all(&content).unwrap();
        // just written: in the page cache, unless this platform has no RWF_NOWAIT
        if let Some(bytes) = read_exact_at(&tmp, 10, 100_000) {
            assert_eq!(&bytes[..], &content[10..100_010]);
        }
        // never a short answer
        assert_eq!(read_exact_at(&tmp, 199_990, 20), None);
        assert_eq!(read_exact_at(&tmp, u64::MAX - 5, 20), None);
        if let Some(bytes) = read_exact_at(&tmp, 0, 0) {
            assert!(bytes.is_empty());
        }
    }
}
