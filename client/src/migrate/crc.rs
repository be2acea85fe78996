//! CRC32 (the one FastDFS names carry) of bytes as they stream past.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads through `inner`, hashing what it returns.
pub(crate) struct CrcReader<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R> CrcReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        CrcReader {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    pub(crate) fn crc32(&self) -> u32 {
        self.hasher.clone().finalize()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CrcReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.hasher.update(&buf.filled()[before..]);
        }
        polled
    }
}

/// A writer that keeps only the CRC32 and the length of what it is given.
#[derive(Default)]
pub(crate) struct CrcSink {
    hasher: crc32fast::Hasher,
    len: u64,
}

impl CrcSink {
    pub(crate) fn finish(&self) -> (u64, u32) {
        (self.len, self.hasher.clone().finalize())
    }
}

impl AsyncWrite for CrcSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Size and CRC32 of a local file, read in 64 KiB pieces.
pub(crate) async fn file_crc(path: &std::path::Path) -> std::io::Result<(u64, u32)> {
    let file = tokio::fs::File::open(path).await?;
    let mut reader = CrcReader::new(file);
    let len = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await?;
    Ok((len, reader.crc32()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn streams_hash_like_one_shot() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let mut reader = CrcReader::new(&data[..]);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(reader.crc32(), crc32fast::hash(&data));
        let mut sink = CrcSink::default();
        tokio::io::copy(&mut &data[..], &mut sink).await.unwrap();
        assert_eq!(sink.finish(), (data.len() as u64, crc32fast::hash(&data)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        assert_eq!(
            file_crc(&path).await.unwrap(),
            (data.len() as u64, crc32fast::hash(&data))
        );
    }
}
