//! Response bodies. [`FileBody`] streams byte ranges of an open file (with optional literal
//! parts in between, for `multipart/byteranges`) one [`CHUNK`]-sized positional read at a time
//! (from the page cache in place when possible, else on the blocking pool), so a request holds
//! at most one chunk whatever the file size, and hyper pulls the next chunk only when the
//! socket has taken the previous ones.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::task::JoinHandle;

use super::nowait;

/// Size of one read from disk.
pub const CHUNK: usize = 128 * 1024;

/// Every response body of the server.
pub type Body = BoxBody<Bytes, io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// One piece of a streamed body.
#[derive(Debug)]
pub enum Part {
    Literal(Bytes),
    File { offset: u64, len: u64 },
}

/// Streams [`Part`]s, reading file parts from `file`.
pub struct FileBody {
    file: Arc<File>,
    parts: VecDeque<Part>,
    remaining: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    pub fn new(file: Arc<File>, parts: Vec<Part>) -> FileBody {
        let remaining = parts
            .iter()
            .map(|part| match part {
                Part::Literal(bytes) => bytes.len() as u64,
                Part::File { len, .. } => *len,
            })
            .sum();
        FileBody {
            file,
            parts: parts.into(),
            remaining,
            reading: None,
        }
    }
}

/// Reads exactly `len` bytes at `offset`; a file that shrank is an error (the response
/// promised a length, so the connection must be cut rather than padded).
pub(super) fn read_exact_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ))
            }
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Bytes::from(buf))
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            if let Some(reading) = self.reading.as_mut() {
                let result = match Pin::new(reading).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(joined) => joined.unwrap_or_else(|err| Err(io::Error::other(err))),
                };
                self.reading = None;
                return Poll::Ready(Some(result.map(|bytes| {
                    self.remaining -= bytes.len() as u64;
                    Frame::data(bytes)
                })));
            }
            match self.parts.front_mut() {
                None => return Poll::Ready(None),
                Some(Part::Literal(_)) => {
                    if let Some(Part::Literal(bytes)) = self.parts.pop_front() {
                        self.remaining -= bytes.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                }
                Some(Part::File { offset, len }) => {
                    if *len == 0 {
                        self.parts.pop_front();
                        continue;
                    }
                    let take = (*len).min(CHUNK as u64);
                    let at = *offset;
                    *offset += take;
                    *len -= take;
                    if let Some(bytes) = nowait::read_exact_at(&self.file, at, take as usize) {
                        self.remaining -= take;
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    let file = self.file.clone();
                    self.reading = Some(tokio::task::spawn_blocking(move || {
                        read_exact_at(&file, at, take as usize)
                    }));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Wraps a body from elsewhere (a proxied peer) so that a stall longer than `idle` ends it
/// with an error instead of holding the client connection forever.
pub struct IdleTimeout<B> {
    inner: Pin<Box<B>>,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner: Box::pin(inner),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(io::Error::other)))
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer stopped sending",
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn collect(body: FileBody) -> io::Result<Vec<u8>> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn streams_ranges_and_literals() {
        let mut tmp = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        tmp.write_all(&content).unwrap();
        let file = Arc::new(tmp);
        let body = FileBody::new(
            file.clone(),
            vec![
                Part::Literal(Bytes::from_static(b"<")),
                Part::File {
                    offset: 5,
                    len: (2 * CHUNK + 3) as u64,
                },
                Part::Literal(Bytes::from_static(b">")),
                Part::File { offset: 0, len: 0 },
                Part::File { offset: 1, len: 2 },
            ],
        );
        assert_eq!(body.size_hint().exact(), Some((2 * CHUNK + 7) as u64));
        let got = collect(body).await.unwrap();
        let mut want = b"<".to_vec();
        want.extend_from_slice(&content[5..5 + 2 * CHUNK + 3]);
        want.push(b'>');
        want.extend_from_slice(&content[1..3]);
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_shrunk_file_is_an_error() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(b"short").unwrap();
        let body = FileBody::new(Arc::new(tmp), vec![Part::File { offset: 0, len: 10 }]);
        let err = collect(body).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
