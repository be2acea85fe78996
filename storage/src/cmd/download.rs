//! DOWNLOAD_FILE (14, F.3): offset, length, group, name; the reply streams the bytes.

use std::io::SeekFrom;
use std::time::Duration;

use fdfs_proto::server::{Flow, ServerConn};
use fdfs_proto::storage_msg::DownloadRequest;
use fdfs_proto::{Header, ProtoError, HEADER_LEN};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::warn;

use super::{check_group, parse_name, respond, small_body, CmdError, Ctx};
use crate::store::{IoSlot, Store, StoreError, IO_BUFFER};

pub(super) async fn handle(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
) -> Result<Flow, ProtoError> {
    let body = match small_body(ctx, conn, header).await? {
        Ok(body) => body,
        Err(flow) => return Ok(flow),
    };
    let (file, offset, count, index) = match open(ctx, &body).await {
        Ok(opened) => opened,
        Err(err) => return respond(conn, Err(err), true).await,
    };
    // the disk reads of a buffered body each hold a slot of the store path (store::gate);
    // sendfile(2) runs on the connection's own thread and needs none
    let disk = Disk {
        store: &ctx.store,
        index,
    };
    crate::stats::note_status(fdfs_proto::status::OK);
    crate::stats::note_bytes(count);
    let zero_copy = ctx.sendfile.then_some(ctx.network_timeout);
    stream(conn, file, offset, count, zero_copy, disk).await
}

/// Bodies above this go out with sendfile(2); smaller ones are read into one buffer and sent
/// with the header in a single write, which is cheaper for them and what clients that read
/// header and body with one `recv` expect.
const SENDFILE_MIN: u64 = 64 * 1024;

/// Opens the file and works out the byte range to send (F.3).
async fn open(ctx: &Ctx, body: &[u8]) -> Result<(std::fs::File, u64, u64, u8), CmdError> {
    let req = DownloadRequest::decode(body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    let (file, size) = ctx.store.open_read_std(&name).await?;
    // a normal file's name records its size: a copy of another size is damaged, and sending
    // it would hand the client bytes it cannot tell from the real ones (unless it is a slave
    // shaped as a normal name, whose master is beside it)
    if let Some((recorded, _)) = crate::scrub::recorded(&name) {
        if recorded != size && !ctx.store.beside_its_master(&name).await {
            tracing::error!(file = %name, on_disk = size, recorded, "damaged file: size differs from its name, not sent; repairing it from a peer");
            ctx.scrub.repair_soon(&name);
            return Err(StoreError::Corrupt(format!(
                "{name} has {size} bytes on disk, its name says {recorded}"
            ))
            .into());
        }
    }
    let count = byte_count(size, req.offset, req.length)?;
    Ok((file, req.offset, count, name.store_path()))
}

/// How many bytes to send: `length` if it fits after `offset`, else the rest (clamped).
/// An offset at or past the end is invalid, except offset 0 of an empty file, which gets an
/// empty success (clients accept both answers).
fn byte_count(size: u64, offset: u64, length: u64) -> Result<u64, StoreError> {
    if size == 0 && offset == 0 {
        return Ok(0);
    }
    if offset >= size {
        return Err(StoreError::Invalid(format!(
            "offset {offset} beyond file size {size}"
        )));
    }
    let rest = size - offset;
    Ok(if length > 0 && length <= rest {
        length
    } else {
        rest
    })
}

/// Sends the header, then `count` bytes from `offset`: with sendfile when `zero_copy` gives
/// the network timeout and the body is large, else through a bounded buffer. A file that
/// shrinks meanwhile cannot deliver the promised length: the connection is closed.
async fn stream(
    conn: &mut ServerConn,
    file: std::fs::File,
    offset: u64,
    count: u64,
    zero_copy: Option<Duration>,
    disk: Disk<'_>,
) -> Result<Flow, ProtoError> {
    if count <= SENDFILE_MIN {
        return send_small(conn, file, offset, count, disk).await;
    }
    match zero_copy {
        Some(timeout) => send_zero_copy(conn, file, offset, count, timeout).await,
        None => send_buffered(conn, File::from_std(file), offset, count, disk).await,
    }
}

/// The store path a download reads from, for its disk slots.
struct Disk<'a> {
    store: &'a Store,
    index: u8,
}

impl Disk<'_> {
    async fn slot(&self) -> Result<IoSlot, StoreError> {
        self.store.io_slot(self.index).await
    }
}

/// Header and content in one buffer and one write. The content comes straight from the page
/// cache when it is there (no trip to the blocking pool, which costs more than a small read),
/// else from one blocking read.
async fn send_small(
    conn: &mut ServerConn,
    file: std::fs::File,
    offset: u64,
    count: u64,
    disk: Disk<'_>,
) -> Result<Flow, ProtoError> {
    let len = usize::try_from(count).expect("at most SENDFILE_MIN");
    let mut buf = Vec::with_capacity(HEADER_LEN + len);
    buf.extend_from_slice(&Header::response(0, count).encode());
    if !crate::nowait::append_exact_at(&file, offset, len, &mut buf) {
        buf.truncate(HEADER_LEN);
        // nothing sent yet: a path whose slots all stay taken is answered EBUSY
        let slot = match disk.slot().await {
            Ok(slot) => slot,
            Err(err) => return respond(conn, Err(err.into()), true).await,
        };
        buf = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            read_up_to(&file, offset, len, buf)
        })
        .await
        .map_err(std::io::Error::other)??;
    }
    conn.write_all(&buf).await?;
    conn.flush().await?;
    if buf.len() < HEADER_LEN + len {
        warn!(
            missing = HEADER_LEN + len - buf.len(),
            "file shrank during download, closing connection"
        );
        return Ok(Flow::Close);
    }
    Ok(Flow::Continue)
}

/// Appends up to `len` bytes at `offset` to `buf`: fewer only at the end of the file.
fn read_up_to(
    file: &std::fs::File,
    offset: u64,
    len: usize,
    mut buf: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let start = buf.len();
    buf.resize(start + len, 0);
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[start + filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    buf.truncate(start + filled);
    Ok(buf)
}

async fn send_zero_copy(
    conn: &mut ServerConn,
    file: std::fs::File,
    offset: u64,
    count: u64,
    timeout: Duration,
) -> Result<Flow, ProtoError> {
    conn.write_all(&Header::response(0, count).encode()).await?;
    conn.flush().await?;
    let socket = conn.get_ref().get_ref();
    let sent = crate::sendfile::send_range(socket, &file, offset, count, timeout).await?;
    if sent < count {
        warn!(
            missing = count - sent,
            "file shrank during download, closing connection"
        );
        return Ok(Flow::Close);
    }
    Ok(Flow::Continue)
}

async fn send_buffered(
    conn: &mut ServerConn,
    mut file: File,
    offset: u64,
    count: u64,
    disk: Disk<'_>,
) -> Result<Flow, ProtoError> {
    // a path that stays busy mid-body can only close the connection
    let busy = |err: StoreError| ProtoError::Io(std::io::Error::other(err.to_string()));
    if offset > 0 {
        let _slot = disk.slot().await.map_err(busy)?;
        file.seek(SeekFrom::Start(offset)).await?;
    }
    let chunk = IO_BUFFER.min(usize::try_from(count).unwrap_or(IO_BUFFER));
    // the header goes out with the first chunk: some clients read both with one recv
    let mut buf = vec![0u8; HEADER_LEN + chunk];
    buf[..HEADER_LEN].copy_from_slice(&Header::response(0, count).encode());
    let mut start = HEADER_LEN;
    let mut remaining = count;
    loop {
        let want = chunk.min(usize::try_from(remaining).unwrap_or(chunk));
        let mut filled = 0;
        // a tokio file read finishes its pool call before it returns: the slot covers it
        let slot = disk.slot().await.map_err(busy)?;
        while filled < want {
            let n = file.read(&mut buf[start + filled..start + want]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        drop(slot);
        if start + filled > 0 {
            conn.write_all(&buf[..start + filled]).await?;
        }
        remaining -= filled as u64;
        if filled < want {
            warn!(
                missing = remaining,
                "file shrank during download, closing connection"
            );
            conn.flush().await?;
            return Ok(Flow::Close);
        }
        start = 0;
        if remaining == 0 {
            break;
        }
    }
    conn.flush().await?;
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranges_stay_inside_the_file(size in 0u64..1 << 40, offset in 0u64..1 << 41, length in 0u64..1 << 41) {
            match byte_count(size, offset, length) {
                Ok(count) => {
                    prop_assert!(offset + count <= size);
                    if size > 0 {
                        prop_assert!(count >= 1);
                        prop_assert!(offset < size);
                    }
                    if length > 0 && length <= size - offset {
                        prop_assert_eq!(count, length);
                    } else {
                        prop_assert_eq!(count, size - offset);
                    }
                }
                Err(_) => prop_assert!(offset >= size && !(size == 0 && offset == 0)),
            }
        }
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect()
    }

    /// A server connection as `serve` builds it, and the client end.
    async fn conn_pair() -> (ServerConn, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let mut timed = tokio_io_timeout::TimeoutStream::new(accepted.unwrap().0);
        timed.set_write_timeout(Some(Duration::from_secs(10)));
        (
            fdfs_proto::conn::Connection::new(Box::pin(timed)),
            client.unwrap(),
        )
    }

    /// Streams the F.3 range of a file of `data` and returns (flow, header, body) as received.
    async fn download(
        data: &[u8],
        offset: u64,
        length: u64,
        zero_copy: Option<Duration>,
    ) -> (Flow, Header, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let count = byte_count(data.len() as u64, offset, length).unwrap();
        let (mut conn, mut client) = conn_pair().await;
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        let store = crate::store::test_support::store_in(dir.path(), 1, 1).await;
        let disk = Disk {
            store: &store,
            index: 0,
        };
        let flow = stream(&mut conn, file, offset, count, zero_copy, disk)
            .await
            .unwrap();
        drop(conn);
        let received = reader.await.unwrap();
        let header = Header::decode(received[..HEADER_LEN].try_into().unwrap());
        (flow, header, received[HEADER_LEN..].to_vec())
    }

    #[tokio::test]
    async fn both_paths_send_the_exact_bytes() {
        let sizes = [1usize, 4096, 64 * 1024, 64 * 1024 + 1, 100 * 1024, 3 << 20];
        for size in sizes {
            let data = content(size);
            let size = size as u64;
            for (offset, length) in [
                (0, 0),
                (0, size),
                (size / 3, 0),
                (size / 3, size / 2),
                (size / 3, size),
                (size - 1, 0),
                (size - 1, 1000),
                (1, 65_537),
            ] {
                if offset >= size {
                    continue;
                }
                let count = byte_count(size, offset, length).unwrap();
                let want = &data[offset as usize..(offset + count) as usize];
                for zero_copy in [Some(Duration::from_secs(10)), None] {
                    let (flow, header, body) = download(&data, offset, length, zero_copy).await;
                    let case = format!("size {size} offset {offset} length {length}");
                    assert_eq!(flow, Flow::Continue, "{case}");
                    assert_eq!((header.cmd, header.status), (100, 0), "{case}");
                    assert_eq!(header.pkg_len as u64, count, "{case}");
                    assert!(body == want, "{case} {zero_copy:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_large_file_goes_through_sendfile_intact() {
        let data = content(40 << 20);
        let (flow, header, body) = download(&data, 12_345, 0, Some(Duration::from_secs(10))).await;
        assert_eq!(flow, Flow::Continue);
        assert_eq!(header.pkg_len as usize, data.len() - 12_345);
        assert!(body == data[12_345..]);
    }

    #[tokio::test]
    async fn a_shrunk_file_closes_the_connection() {
        // large (sendfile or buffered) and small (one write) bodies
        for size in [1usize << 20, 40 << 10] {
            let data = content(size);
            let half = size / 2;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, &data).unwrap();
            for zero_copy in [Some(Duration::from_secs(10)), None] {
                let file = std::fs::File::open(&path).unwrap();
                // the range was computed before the file shrank to half
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(half as u64)
                    .unwrap();
                let (mut conn, mut client) = conn_pair().await;
                let reader = tokio::spawn(async move {
                    let mut received = Vec::new();
                    client.read_to_end(&mut received).await.unwrap();
                    received
                });
                let store = crate::store::test_support::store_in(dir.path(), 1, 1).await;
                let disk = Disk {
                    store: &store,
                    index: 0,
                };
                let flow = stream(&mut conn, file, 0, size as u64, zero_copy, disk)
                    .await
                    .unwrap();
                assert_eq!(flow, Flow::Close);
                drop(conn);
                let received = reader.await.unwrap();
                assert_eq!(received.len(), HEADER_LEN + half, "{size} {zero_copy:?}");
                assert!(received[HEADER_LEN..] == data[..half]);
                std::fs::write(&path, &data).unwrap();
            }
        }
    }

    #[test]
    fn ranges_follow_the_spec_table() {
        // F.3, 22-byte file
        assert_eq!(byte_count(22, 0, 0).unwrap(), 22);
        assert_eq!(byte_count(22, 6, 0).unwrap(), 16);
        assert_eq!(byte_count(22, 6, 5).unwrap(), 5);
        assert_eq!(byte_count(22, 0, 1000).unwrap(), 22);
        assert_eq!(byte_count(22, 21, 0).unwrap(), 1);
        assert_eq!(byte_count(22, 6, 16).unwrap(), 16);
        assert_eq!(byte_count(22, 6, 17).unwrap(), 16);
        assert!(byte_count(22, 22, 0).is_err());
        assert!(byte_count(22, 23, 1).is_err());
        assert_eq!(byte_count(0, 0, 0).unwrap(), 0);
        assert_eq!(byte_count(0, 0, 5).unwrap(), 0);
        assert!(byte_count(0, 1, 0).is_err());
    }
}
