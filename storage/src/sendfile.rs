//! `sendfile(2)` from an open file to a TCP socket: the kernel copies page-cache pages to the
//! socket, with no user-space buffer and no blocking-pool hop per chunk.
//!
//! The socket is non-blocking: [`TcpStream::async_io`] waits for writability and retries on
//! `EAGAIN`. Each wait is bounded by the network timeout, so a stalled client cannot hold the
//! task. A page-cache miss makes `sendfile` block the worker thread while the disk reads; the
//! config switch `sendfile = false` keeps the buffered path for disks where that hurts.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Most bytes handed to one `sendfile` call: a fast reader does not keep one task on the
/// thread for long between budget checks.
const MAX_CALL: usize = 4 << 20;

/// Sends `count` bytes of `file` from `offset` to `socket`. Returns the bytes sent: fewer
/// than `count` only when the file ended first (it shrank). A wait for writability longer
/// than `timeout` is an `io::ErrorKind::TimedOut` error.
pub async fn send_range(
    socket: &TcpStream,
    file: &impl AsFd,
    offset: u64,
    count: u64,
    timeout: Duration,
) -> io::Result<u64> {
    let mut pos = offset;
    let mut sent = 0u64;
    while sent < count {
        let want = usize::try_from(count - sent)
            .unwrap_or(MAX_CALL)
            .min(MAX_CALL);
        let call = socket.async_io(Interest::WRITABLE, || {
            // the kernel advances `pos` by what it sent
            rustix::fs::sendfile(socket, file, Some(&mut pos), want).map_err(io::Error::from)
        });
        let n = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "sendfile: socket not writable in time",
                ))
            }
        };
        if n == 0 {
            break;
        }
        sent += n as u64;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn content(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    #[tokio::test]
    async fn sends_exactly_the_range() {
        let data = content(3 << 20);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let (server, mut client) = pair().await;
        for (offset, count) in [
            (0u64, 1u64),
            (0, 65_537),
            (7, 100_000),
            (1 << 20, 1),
            (12_345, (3 << 20) - 12_345),
            (0, 3 << 20),
        ] {
            let reader = tokio::spawn(async move {
                let mut got = vec![0u8; count as usize];
                client.read_exact(&mut got).await.unwrap();
                (client, got)
            });
            let sent = send_range(&server, &file, offset, count, Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(sent, count);
            let (back, got) = reader.await.unwrap();
            client = back;
            let range = offset as usize..(offset + count) as usize;
            assert!(got == data[range], "offset {offset} count {count}");
        }
    }

    #[tokio::test]
    async fn stops_short_at_end_of_file() {
        let data = content(10_000);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let (server, mut client) = pair().await;
        let sent = send_range(&server, &file, 9_000, 5_000, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(sent, 1_000);
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data[9_000..]);
    }

    #[tokio::test]
    async fn a_reader_that_stalls_times_out() {
        let data = content(64 << 20);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        // the client never reads: the socket buffers fill, then the wait times out
        let (server, _client) = pair().await;
        let err = send_range(&server, &file, 0, 64 << 20, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
