//! `Connection`: one FastDFS socket with its read buffer, shared by clients and servers.
//!
//! Reads are bounded: a body is only buffered after its length has been checked against the
//! caller's limit, and large bodies are handed out as a `take(n)` reader to be streamed.
//! Replies are written as one buffer (header + small body) because some clients read both with
//! a single `recv`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, Take};

use crate::error::ProtoError;
use crate::header::{Header, HEADER_LEN};

/// Size of the read buffer of every connection.
pub const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug)]
pub struct Connection<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Self {
        Self::with_capacity(READ_BUFFER, stream)
    }

    /// A connection whose read buffer holds `capacity` bytes (bodies larger than it are
    /// still read whole; it only sets how much one socket read can take).
    pub fn with_capacity(capacity: usize, stream: S) -> Self {
        Connection {
            stream: BufReader::with_capacity(capacity, stream),
        }
    }

    pub fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.stream.get_mut()
    }

    /// Bytes already read from the socket but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.stream.buffer().len()
    }

    /// Reads the next header; `None` when the peer closed cleanly between packets.
    pub async fn read_header(&mut self) -> Result<Option<Header>, ProtoError> {
        let mut raw = [0u8; HEADER_LEN];
        let mut filled = 0;
        while filled < HEADER_LEN {
            let n = self.stream.read(&mut raw[filled..]).await?;
            if n == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(ProtoError::Truncated {
                    need: HEADER_LEN,
                    have: filled,
                });
            }
            filled += n;
        }
        Ok(Some(Header::decode(&raw)))
    }

    /// Reads a whole body of `len` bytes, refusing anything above `max` before allocating.
    pub async fn read_body(&mut self, len: u64, max: u64) -> Result<Vec<u8>, ProtoError> {
        if len > max {
            return Err(ProtoError::BodyTooLarge { len, max });
        }
        let mut body = vec![0u8; len as usize];
        self.read_exact(&mut body).await?;
        Ok(body)
    }

    pub async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ProtoError> {
        match self.stream.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProtoError::Closed),
            Err(err) => Err(err.into()),
        }
    }

    /// The next `len` bytes as a reader, for streaming a body to disk.
    pub fn body_reader(&mut self, len: u64) -> Take<&mut BufReader<S>> {
        (&mut self.stream).take(len)
    }

    /// Reads and drops `len` bytes (a body we refuse but must consume to stay in sync).
    pub async fn discard(&mut self, len: u64) -> Result<(), ProtoError> {
        let copied = tokio::io::copy(&mut self.body_reader(len), &mut tokio::io::sink()).await?;
        if copied != len {
            return Err(ProtoError::Closed);
        }
        Ok(())
    }

    /// Writes header and body in one write and flushes.
    pub async fn send(&mut self, header: Header, body: &[u8]) -> Result<(), ProtoError> {
        let mut packet = Vec::with_capacity(HEADER_LEN + body.len());
        packet.extend_from_slice(&header.encode());
        packet.extend_from_slice(body);
        let stream = self.stream.get_mut();
        stream.write_all(&packet).await?;
        stream.flush().await?;
        Ok(())
    }

    pub async fn send_request(&mut self, cmd: u8, body: &[u8]) -> Result<(), ProtoError> {
        self.send(Header::request(cmd, body.len() as u64), body)
            .await
    }

    pub async fn send_response(&mut self, status: u8, body: &[u8]) -> Result<(), ProtoError> {
        self.send(Header::response(status, body.len() as u64), body)
            .await
    }

    /// Writes raw bytes (a header before a streamed body, or a body chunk) without flushing.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ProtoError> {
        self.stream.get_mut().write_all(bytes).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        self.stream.get_mut().flush().await?;
        Ok(())
    }

    /// Reads a response header and checks it: command 100, status 0. On a non-zero status
    /// the (normally empty) body is drained so the connection stays usable, and
    /// `ProtoError::Status` is returned. Returns the body length.
    pub async fn read_response_header(&mut self) -> Result<u64, ProtoError> {
        let header = self.read_header().await?.ok_or(ProtoError::Closed)?;
        if header.cmd != crate::cmd::RESP {
            return Err(ProtoError::UnexpectedResponse(header.cmd));
        }
        let len = header.body_len()?;
        if header.status != 0 {
            if len > READ_BUFFER as u64 {
                return Err(ProtoError::BodyTooLarge {
                    len,
                    max: READ_BUFFER as u64,
                });
            }
            self.discard(len).await?;
            return Err(ProtoError::Status {
                status: header.status,
            });
        }
        Ok(len)
    }

    /// Reads a whole response (header checks as above) whose body must not exceed `max`.
    pub async fn read_response(&mut self, max: u64) -> Result<Vec<u8>, ProtoError> {
        let len = self.read_response_header().await?;
        self.read_body(len, max).await
    }

    /// Sends a request and reads its whole response.
    pub async fn call(
        &mut self,
        cmd: u8,
        body: &[u8],
        max_reply: u64,
    ) -> Result<Vec<u8>, ProtoError> {
        self.send_request(cmd, body).await?;
        self.read_response(max_reply).await
    }

    pub async fn shutdown(&mut self) -> Result<(), ProtoError> {
        self.stream.get_mut().shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_response_over_a_pipe() {
        let (a, b) = tokio::io::duplex(1024);
        let mut client = Connection::new(a);
        let mut server = Connection::new(b);
        client.send_request(111, &[]).await.unwrap();
        let header = server.read_header().await.unwrap().unwrap();
        assert_eq!((header.cmd, header.pkg_len), (111, 0));
        server.send_response(0, b"hello").await.unwrap();
        assert_eq!(client.read_response(16).await.unwrap(), b"hello");
        server.send_response(2, &[]).await.unwrap();
        assert!(matches!(
            client.read_response(16).await,
            Err(ProtoError::Status { status: 2 })
        ));
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_before_allocation() {
        let (a, b) = tokio::io::duplex(1024);
        let mut client = Connection::new(a);
        let mut server = Connection::new(b);
        client
            .send(Header::response(0, u64::MAX >> 1), &[])
            .await
            .unwrap();
        assert!(matches!(
            server.read_response(1024).await,
            Err(ProtoError::BodyTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn eof_between_packets_is_clean_and_inside_is_not() {
        let (a, b) = tokio::io::duplex(1024);
        let mut server = Connection::new(b);
        drop(a);
        assert!(server.read_header().await.unwrap().is_none());
        let (mut a, b) = tokio::io::duplex(1024);
        let mut server = Connection::new(b);
        a.write_all(&[0, 0, 0]).await.unwrap();
        drop(a);
        assert!(server.read_header().await.is_err());
    }

    #[tokio::test]
    async fn wrong_response_command_is_an_error() {
        let (a, b) = tokio::io::duplex(1024);
        let mut client = Connection::new(a);
        let mut server = Connection::new(b);
        server.send(Header::request(11, 0), &[]).await.unwrap();
        assert!(matches!(
            client.read_response(16).await,
            Err(ProtoError::UnexpectedResponse(11))
        ));
    }
}
