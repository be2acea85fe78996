//! DOWNLOAD_FILE (14, F.3): offset, length, group, name; the reply streams the bytes.

use std::io::SeekFrom;

use fdfs_proto::server::{Flow, ServerConn};
use fdfs_proto::storage_msg::DownloadRequest;
use fdfs_proto::{Header, ProtoError, HEADER_LEN};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::warn;

use super::{check_group, parse_name, respond, small_body, CmdError, Ctx};
use crate::store::{StoreError, IO_BUFFER};

pub(super) async fn handle(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
) -> Result<Flow, ProtoError> {
    let body = match small_body(ctx, conn, header).await? {
        Ok(body) => body,
        Err(flow) => return Ok(flow),
    };
    let (file, offset, count) = match open(ctx, &body).await {
        Ok(opened) => opened,
        Err(err) => return respond(conn, Err(err), true).await,
    };
    crate::stats::note_status(fdfs_proto::status::OK);
    crate::stats::note_bytes(count);
    stream(conn, file, offset, count).await
}

/// Opens the file and works out the byte range to send (F.3).
async fn open(ctx: &Ctx, body: &[u8]) -> Result<(File, u64, u64), CmdError> {
    let req = DownloadRequest::decode(body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    let (file, size) = ctx.store.open_read(&name).await?;
    let count = byte_count(size, req.offset, req.length)?;
    Ok((file, req.offset, count))
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

/// Sends the header, then `count` bytes from `offset`, with a bounded buffer. A file that
/// shrinks meanwhile cannot deliver the promised length: the connection is closed.
async fn stream(
    conn: &mut ServerConn,
    mut file: File,
    offset: u64,
    count: u64,
) -> Result<Flow, ProtoError> {
    if offset > 0 {
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
        while filled < want {
            let n = file.read(&mut buf[start + filled..start + want]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
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
