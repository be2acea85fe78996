//! Durable appends to a log file through `O_DIRECT` writes of whole blocks.
//!
//! A journal commit is a small append followed by `fdatasync`. Written through the page cache,
//! the commit copies the bytes into cached pages, and `fdatasync` then has to find, write back
//! and wait for those pages before it flushes the disk's cache. Written with `O_DIRECT` over
//! blocks that are already allocated and written (a zero-filled spare), the bytes go straight
//! from the buffer to the disk and `fdatasync` only flushes the cache: on this kind of machine
//! about a fifth less CPU per commit and a faster commit.
//!
//! `O_DIRECT` writes whole aligned blocks, so the block holding the end of the log is kept in
//! memory and written again, with the next bytes after it, at the next append. Its earlier
//! bytes are rewritten with what they already hold, so a torn rewrite cannot change them; the
//! padding after the end is zeros, where a reader of the log stops.
//!
//! Where `O_DIRECT` is not available (some file systems refuse it, or refuse this block size),
//! the appender writes through the page cache as before.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;

/// Alignment of every direct write: its offset, length and buffer address. 4 KiB covers the
/// logical block size of common disks and the block size of common file systems.
const BLOCK: usize = 4096;
/// Bytes written by one direct write at most; a longer append takes several, then one sync.
const CHUNK: usize = 256 << 10;

/// Appends to a file that holds nothing but zeros (or nothing) from offset 0 on.
#[derive(Debug)]
pub struct BlockAppender {
    file: File,
    /// Bytes appended so far: the log ends here.
    end: u64,
    /// `Some` while writes go through `O_DIRECT`.
    direct: Option<AlignedBuffer>,
}

impl BlockAppender {
    /// Takes `file` (open for writing, empty or zero-filled) and switches it to `O_DIRECT`
    /// when the file system allows it.
    pub fn new(file: File) -> BlockAppender {
        let direct = set_direct(&file, true).ok().map(|()| AlignedBuffer::new());
        BlockAppender {
            file,
            end: 0,
            direct,
        }
    }

    /// Whether appends bypass the page cache.
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Appends `bytes` and makes them durable (`fdatasync`).
    pub fn append_durably(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let Some(buffer) = self.direct.as_mut() else {
                self.file.write_all_at(rest, self.end)?;
                self.end += rest.len() as u64;
                break;
            };
            let take = rest.len().min(CHUNK);
            let start = self.end - buffer.tail as u64;
            let (content, padded) = buffer.fill(&rest[..take]);
            match self.file.write_all_at(buffer.aligned(padded), start) {
                Ok(()) => {
                    buffer.keep_tail(content);
                    self.end += take as u64;
                    rest = &rest[take..];
                }
                // the file system does not take direct writes of this alignment: the same
                // bytes go through the page cache instead
                Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(error = %err, "direct writes refused, journal commits go through the page cache");
                    set_direct(&self.file, false)?;
                    self.direct = None;
                }
                Err(err) => return Err(err),
            }
        }
        self.file.sync_data()
    }
}

/// Sets or clears `O_DIRECT` on an open file.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor that stays open for the whole call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A block-aligned region of memory holding the partial block at the end of the log (its
/// first `tail` bytes) and then the bytes being appended.
#[derive(Debug)]
struct AlignedBuffer {
    raw: Vec<u8>,
    /// Where the aligned region starts in `raw`.
    start: usize,
    /// Bytes of the log's last, partial block, at the start of the region.
    tail: usize,
}

impl AlignedBuffer {
    fn new() -> AlignedBuffer {
        let raw = vec![0u8; CHUNK + 2 * BLOCK];
        let start = raw.as_ptr().align_offset(BLOCK);
        AlignedBuffer {
            raw,
            start,
            tail: 0,
        }
    }

    /// Puts `bytes` after the tail and zeros up to the next block boundary; returns the
    /// length of the content (tail and bytes) and the padded length (whole blocks).
    fn fill(&mut self, bytes: &[u8]) -> (usize, usize) {
        let content = self.tail + bytes.len();
        let padded = content.next_multiple_of(BLOCK);
        let region = &mut self.raw[self.start..self.start + padded];
        region[self.tail..content].copy_from_slice(bytes);
        region[content..].fill(0);
        (content, padded)
    }

    fn aligned(&self, len: usize) -> &[u8] {
        &self.raw[self.start..self.start + len]
    }

    /// After `content` bytes of the region were written: the partial block at their end
    /// becomes the new tail.
    fn keep_tail(&mut self, content: usize) {
        let block = content - content % BLOCK;
        self.raw
            .copy_within(self.start + block..self.start + content, self.start);
        self.tail = content - block;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// Appends runs of many sizes (within a block, across blocks, across chunks) and checks
    /// after each that the file holds exactly what was appended, then zeros.
    fn appends_read_back(mut appender: BlockAppender, path: &std::path::Path, zeros_after: usize) {
        let sizes = [
            1,
            7,
            BLOCK - 8,
            BLOCK,
            3,
            2 * BLOCK + 5,
            CHUNK + 3 * BLOCK + 11,
            100,
            0,
            1,
        ];
        let mut expected = Vec::new();
        for (round, size) in sizes.into_iter().enumerate() {
            let run: Vec<u8> = (0..size)
                .map(|i| (i * 31 + round * 7 + 1) as u8 | 1)
                .collect();
            appender.append_durably(&run).unwrap();
            expected.extend_from_slice(&run);
            let on_disk = std::fs::read(path).unwrap();
            assert!(on_disk.len() >= expected.len().max(zeros_after));
            assert!(on_disk[..expected.len()] == expected[..], "round {round}");
            assert!(
                on_disk[expected.len()..].iter().all(|&b| b == 0),
                "round {round}"
            );
        }
    }

    #[test]
    fn appends_to_a_zero_filled_file_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&vec![0u8; 4 * CHUNK]).unwrap();
        file.sync_all().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let appender = BlockAppender::new(file);
        eprintln!("direct writes: {}", appender.is_direct());
        appends_read_back(appender, &path, 4 * CHUNK);
    }

    #[test]
    fn appends_to_an_empty_file_grow_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = std::fs::File::create(&path).unwrap();
        appends_read_back(BlockAppender::new(file), &path, 0);
    }

    #[test]
    fn without_direct_writes_appends_go_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = std::fs::File::create(&path).unwrap();
        let appender = BlockAppender {
            file,
            end: 0,
            direct: None,
        };
        assert!(!appender.is_direct());
        appends_read_back(appender, &path, 0);
    }
}
