//! `Conn`: one client connection to a tracker or storage, with per-I/O timeouts and the state
//! the pool needs to decide whether the connection may be reused.
//!
//! A connection is *clean* only once its last exchange completed: the whole reply was read,
//! or an error status other than EINVAL was answered (the storage closes after EINVAL, A.4).
//! Every error path leaves it unclean, so a half-sent upload or a half-read download is never
//! reused.

use std::pin::Pin;
use std::time::Duration;

use fdfs_proto::conn::Connection;
use fdfs_proto::header::{Header, HEADER_LEN};
use fdfs_proto::{status, ProtoError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutStream;

use crate::error::ClientError;

/// Chunk size used to stream upload bodies.
pub(crate) const STREAM_CHUNK: usize = 64 * 1024;

type Stream = Pin<Box<TimeoutStream<TcpStream>>>;

#[derive(Debug)]
pub(crate) struct Conn {
    inner: Connection<Stream>,
    addr: String,
    /// Taken from the pool rather than freshly connected.
    reused: bool,
    /// The last exchange completed and left the stream in sync.
    clean: bool,
    /// A reply header was received during the current exchange.
    got_reply: bool,
}

impl Conn {
    /// Connects to `addr` (`host:port`) within `connect_timeout`; every later read or write
    /// fails after `network_timeout` without progress.
    pub(crate) async fn connect(
        addr: &str,
        connect_timeout: Duration,
        network_timeout: Duration,
    ) -> Result<Conn, ClientError> {
        let connect_err = |source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let tcp = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(err)) => return Err(connect_err(err)),
            Err(_) => {
                return Err(connect_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {connect_timeout:?}"),
                )))
            }
        };
        // Requests are written as header+prefix and then body chunks; without NODELAY the
        // small first segment waits for a delayed ACK.
        tcp.set_nodelay(true).map_err(connect_err)?;
        let mut stream = TimeoutStream::new(tcp);
        stream.set_read_timeout(Some(network_timeout));
        stream.set_write_timeout(Some(network_timeout));
        tracing::debug!(addr, "connected");
        Ok(Conn {
            inner: Connection::new(Box::pin(stream)),
            addr: addr.to_string(),
            reused: false,
            clean: true,
            got_reply: false,
        })
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    #[cfg(test)]
    pub(crate) fn is_reused(&self) -> bool {
        self.reused
    }

    pub(crate) fn mark_reused(&mut self) {
        self.reused = true;
    }

    /// Whether the connection may go back to the pool: its last exchange completed and no
    /// unread bytes are waiting.
    pub(crate) fn is_reusable(&self) -> bool {
        self.clean && self.inner.buffered() == 0
    }

    /// Best-effort check that an idle connection was not closed by the server meanwhile
    /// (servers close idle connections and after some errors).
    pub(crate) fn looks_alive(&self) -> bool {
        let tcp: &TcpStream = self.inner.get_ref().as_ref().get_ref().get_ref();
        let mut probe = [0u8; 1];
        match tcp.try_read(&mut probe) {
            // nothing to read: still open and in sync
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => true,
            // EOF, unsolicited bytes or an error
            _ => false,
        }
    }

    /// Whether `result` shows this connection was already dead when it was taken from the
    /// pool: it was reused, nothing was answered, and the failure is a closed/reset socket.
    /// Such requests never reached a live server and may be sent again.
    pub(crate) fn died_before_reply<T>(&self, result: &Result<T, ClientError>) -> bool {
        match result {
            Err(err) => self.reused && !self.got_reply && err.is_dead_connection(),
            Ok(_) => false,
        }
    }

    fn begin(&mut self) {
        self.clean = false;
        self.got_reply = false;
    }

    /// Sends a whole request (header and body in one write).
    pub(crate) async fn send(
        &mut self,
        cmd: u8,
        header_status: u8,
        body: &[u8],
    ) -> Result<(), ClientError> {
        self.begin();
        let header = Header {
            pkg_len: body.len() as i64,
            cmd,
            status: header_status,
        };
        self.inner.send(header, body).await?;
        Ok(())
    }

    /// Sends a request whose body is `prefix` followed by `size` bytes from `reader`: the
    /// header, the prefix and the first chunk of content go in one write (a small file is a
    /// single write, so one segment and one wake-up of the server), the rest in bounded
    /// chunks.
    pub(crate) async fn send_streamed<R: AsyncRead + Unpin>(
        &mut self,
        cmd: u8,
        prefix: &[u8],
        size: u64,
        reader: &mut R,
    ) -> Result<(), ClientError> {
        self.begin();
        let body_len = (prefix.len() as u64)
            .checked_add(size)
            .filter(|len| i64::try_from(*len).is_ok())
            .ok_or_else(|| ClientError::input("size", format!("{size} bytes is too large")))?;
        let head_len = HEADER_LEN + prefix.len();
        let chunk = usize::try_from(size).map_or(STREAM_CHUNK, |size| size.min(STREAM_CHUNK));
        let mut buf = vec![0u8; head_len + chunk];
        buf[..HEADER_LEN].copy_from_slice(&Header::request(cmd, body_len).encode());
        buf[HEADER_LEN..head_len].copy_from_slice(prefix);
        let mut start = head_len;
        let mut sent = 0u64;
        loop {
            // fill the buffer (after the header on the first round) as far as the reader allows
            let want = (buf.len() - start).min(usize::try_from(size - sent).unwrap_or(usize::MAX));
            let mut filled = 0;
            while filled < want {
                let n = reader.read(&mut buf[start + filled..start + want]).await?;
                if n == 0 {
                    return Err(ClientError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the data to upload ended after {} of {size} bytes",
                            sent + filled as u64
                        ),
                    )));
                }
                filled += n;
            }
            if let Err(err) = self.inner.write_all(&buf[..start + filled]).await {
                return Err(self.status_after_write_error(err.into()).await);
            }
            sent += filled as u64;
            start = 0;
            if sent == size {
                break;
            }
        }
        self.inner.flush().await?;
        Ok(())
    }

    /// A server that refuses a streamed request may answer and close before reading the
    /// whole body; its status explains the failed write better than "connection reset".
    async fn status_after_write_error(&mut self, write_err: ClientError) -> ClientError {
        match self.inner.read_response_header().await {
            Err(ProtoError::Status { status }) => ClientError::from_status(status),
            _ => write_err,
        }
    }

    /// Reads a reply header; a non-zero status becomes the matching error. Returns the body
    /// length.
    pub(crate) async fn read_reply_header(&mut self) -> Result<u64, ClientError> {
        match self.inner.read_response_header().await {
            Ok(len) => {
                self.got_reply = true;
                Ok(len)
            }
            Err(ProtoError::Status { status: code }) => {
                self.got_reply = true;
                // the body was drained; only EINVAL makes the storage close (A.4)
                self.clean = code != status::EINVAL;
                Err(ClientError::from_status(code))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Reads a whole reply whose body must not exceed `max` bytes.
    pub(crate) async fn read_reply(&mut self, max: u64) -> Result<Vec<u8>, ClientError> {
        let len = self.read_reply_header().await?;
        let body = self.inner.read_body(len, max).await?;
        self.clean = true;
        Ok(body)
    }

    /// Reads a reply that must have an empty body.
    pub(crate) async fn read_empty_reply(&mut self) -> Result<(), ClientError> {
        let len = self.read_reply_header().await?;
        if len != 0 {
            return Err(ClientError::Protocol(ProtoError::BadLength {
                what: "empty reply",
                len,
            }));
        }
        self.clean = true;
        Ok(())
    }

    /// Reads a reply body into `writer`, refusing a body longer than `max` (if given).
    /// Returns the number of bytes written.
    pub(crate) async fn read_reply_into<W: AsyncWrite + Unpin>(
        &mut self,
        max: Option<u64>,
        writer: &mut W,
    ) -> Result<u64, ClientError> {
        let len = self.read_reply_header().await?;
        if let Some(max) = max {
            if len > max {
                return Err(ClientError::Protocol(ProtoError::BodyTooLarge { len, max }));
            }
        }
        let copied = tokio::io::copy_buf(&mut self.inner.body_reader(len), writer).await?;
        if copied != len {
            return Err(ProtoError::Closed.into());
        }
        tokio::io::AsyncWriteExt::flush(writer).await?;
        self.clean = true;
        Ok(copied)
    }

    /// Sends a request and reads its whole reply (at most `max` bytes).
    pub(crate) async fn call(
        &mut self,
        cmd: u8,
        body: &[u8],
        max: u64,
    ) -> Result<Vec<u8>, ClientError> {
        self.send(cmd, 0, body).await?;
        self.read_reply(max).await
    }

    /// Sends a request whose reply must be empty.
    pub(crate) async fn call_empty(&mut self, cmd: u8, body: &[u8]) -> Result<(), ClientError> {
        self.send(cmd, 0, body).await?;
        self.read_empty_reply().await
    }
}
