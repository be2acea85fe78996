//! Garbage, oversized and hostile packets: an error status or a closed connection, never a
//! crash, and the servers keep serving everyone else.

use std::time::Duration;

use fdfs_client::UploadOptions;
use fdfs_proto::conn::Connection;
use fdfs_proto::storage_msg::{DownloadRequest, GroupAndName, UploadPrefix};
use fdfs_proto::{Header, ProtoError};
use fdfs_tests::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until EOF (or a reply) and reports what came back: `None` = closed without reply.
async fn answer(stream: &mut TcpStream) -> Option<Header> {
    let mut raw = [0u8; 10];
    match tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut raw)).await {
        Ok(Ok(_)) => Some(Header::decode(&raw)),
        _ => None,
    }
}

async fn send_raw(
    addr: std::net::SocketAddr,
    bytes: &[u8],
) -> anyhow::Result<(TcpStream, Option<Header>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let reply = answer(&mut stream).await;
    Ok((stream, reply))
}

async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn hostile_packets_get_errors_or_closes_and_service_continues() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let tracker = cluster.tracker.addr;
    let storage = cluster.storages[0].addr;

    // negative and huge lengths: the tracker closes without replying
    let (_, reply) = send_raw(
        tracker,
        &Header {
            pkg_len: -1,
            cmd: 101,
            status: 0,
        }
        .encode(),
    )
    .await?;
    assert_eq!(reply, None);
    let (_, reply) = send_raw(
        tracker,
        &Header {
            pkg_len: 1 << 40,
            cmd: 102,
            status: 0,
        }
        .encode(),
    )
    .await?;
    assert_eq!(reply, None);
    // unknown command: 22
    let (_, reply) = send_raw(tracker, &Header::request(250, 0).encode()).await?;
    assert_eq!(reply.map(|h| h.status), Some(22));

    // storage: unknown command → 22 and close
    let (mut stream, reply) = send_raw(storage, &Header::request(250, 0).encode()).await?;
    assert_eq!(reply.map(|h| (h.cmd, h.status)), Some((100, 22)));
    assert!(closed(&mut stream).await);
    // storage: a metadata request announcing a 1 TiB body is refused without allocating it
    let (mut stream, reply) = send_raw(
        storage,
        &Header {
            pkg_len: 1 << 40,
            cmd: 13,
            status: 0,
        }
        .encode(),
    )
    .await?;
    assert!(reply.map(|h| h.status == 22).unwrap_or(true));
    assert!(closed(&mut stream).await);
    // upload whose pkg_len disagrees with the announced file size
    let mut packet = Header::request(11, 15 + 10).encode().to_vec();
    packet.extend_from_slice(
        &UploadPrefix {
            store_path_index: Some(0),
            file_size: 999,
            ext: "txt".into(),
        }
        .encode(),
    );
    packet.extend_from_slice(&[0u8; 10]);
    let (mut stream, reply) = send_raw(storage, &packet).await?;
    assert_eq!(reply.map(|h| h.status), Some(22));
    assert!(closed(&mut stream).await);
    // bad extension and bad store path index
    for (index, ext) in [(Some(0u8), "t/t"), (Some(7), "txt")] {
        let mut packet = Header::request(11, 15 + 3).encode().to_vec();
        packet.extend_from_slice(
            &UploadPrefix {
                store_path_index: index,
                file_size: 3,
                ext: ext.into(),
            }
            .encode(),
        );
        packet.extend_from_slice(b"abc");
        let (_, reply) = send_raw(storage, &packet).await?;
        assert_eq!(
            reply.map(|h| h.status),
            Some(22),
            "index {index:?} ext {ext}"
        );
    }
    // garbage bytes
    let (_, reply) = send_raw(storage, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert!(reply.map(|h| h.status != 0).unwrap_or(true));

    // a client that disconnects in the middle of a body
    let mut stream = TcpStream::connect(storage).await?;
    let mut packet = Header::request(11, 15 + 1000).encode().to_vec();
    packet.extend_from_slice(
        &UploadPrefix {
            store_path_index: Some(0),
            file_size: 1000,
            ext: "".into(),
        }
        .encode(),
    );
    packet.extend_from_slice(&[1u8; 10]);
    stream.write_all(&packet).await?;
    drop(stream);

    // everyone else is still served
    let client = cluster.client();
    let id = client
        .upload_bytes(b"still here", &UploadOptions::default())
        .await?;
    assert_eq!(client.download_bytes(&id, 0, 0).await?, b"still here");
    Ok(())
}

#[tokio::test]
async fn file_names_cannot_reach_outside_the_store_path() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    // a file next to the store path that must stay unreachable
    std::fs::write(cluster.storage_base(0).join("secret.txt"), b"secret")?;
    let names = [
        "M00/00/00/../../../secret.txt",
        "M00/00/../../secret.txt",
        "M00/../../secret.txt/xx",
        "../../secret.txt/xxxxx",
        "M00/00/00/..",
        "M00/0a/00/abcdefgh",
        "M01/00/00/abcdefghijk",
        "M00/00/00/abc\0def",
        "/etc/passwd/aaaaaaaaa",
    ];
    for name in names {
        let mut conn = Connection::new(TcpStream::connect(cluster.storages[0].addr).await?);
        let request = DownloadRequest {
            offset: 0,
            length: 0,
            group: "group1".into(),
            name: name.into(),
        }
        .encode();
        let result = conn.call(14, &request, 1 << 20).await;
        assert!(
            matches!(result, Err(ProtoError::Status { status: 22 })),
            "{name:?} → {result:?}"
        );
        let mut conn = Connection::new(TcpStream::connect(cluster.storages[0].addr).await?);
        let request = GroupAndName {
            group: "group1".into(),
            name: name.into(),
        }
        .encode();
        let result = conn.call(12, &request, 1024).await;
        assert!(
            matches!(result, Err(ProtoError::Status { status: 22 })),
            "delete {name:?} → {result:?}"
        );
    }
    assert_eq!(
        std::fs::read(cluster.storage_base(0).join("secret.txt"))?,
        b"secret"
    );
    // wrong group
    let id = cluster
        .client()
        .upload_bytes(b"mine", &UploadOptions::default())
        .await?;
    let mut conn = Connection::new(TcpStream::connect(cluster.storages[0].addr).await?);
    let request = DownloadRequest {
        offset: 0,
        length: 0,
        group: "group9".into(),
        name: id.name.to_string(),
    }
    .encode();
    assert!(matches!(
        conn.call(14, &request, 1024).await,
        Err(ProtoError::Status { status: 22 })
    ));
    Ok(())
}

#[tokio::test]
async fn many_idle_connections_do_not_block_real_clients() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(cluster.storages[0].addr).await?);
        idle.push(TcpStream::connect(cluster.tracker.addr).await?);
    }
    // a slow client sending its header byte by byte holds only its own connection
    let mut slow = TcpStream::connect(cluster.storages[0].addr).await?;
    slow.write_all(&[0, 0, 0]).await?;
    let client = cluster.client();
    let id = client
        .upload_bytes(b"not blocked", &UploadOptions::default())
        .await?;
    assert_eq!(client.download_bytes(&id, 0, 0).await?, b"not blocked");
    Ok(())
}

/// A non-streamed request (header and body) of `buff_size` bytes or more is answered 22 and
/// the connection closes, as FastDFS's buffer of that size refuses it (A.5); one byte less is
/// served.
#[tokio::test]
async fn requests_that_fill_the_storage_buffer_are_refused() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .storage_config("buff_size = \"8KB\"")
        .start()
        .await?;
    let storage = cluster.storages[0].addr;
    let id = cluster
        .client()
        .upload_bytes(b"metadata here", &UploadOptions::default())
        .await?;
    let set_metadata = |total: usize| {
        let name = id.name.to_string();
        // 10 header bytes, 33 fixed body bytes, the name, then one pair padded to fill `total`
        let value = "v".repeat(total - 10 - 33 - name.len() - 2);
        let body = fdfs_proto::storage_msg::SetMetadataRequest {
            op: fdfs_proto::storage_msg::MetadataOp::Overwrite,
            group: id.group.clone(),
            name,
            metadata: format!("k\x02{value}").into_bytes(),
        }
        .encode();
        assert_eq!(10 + body.len(), total);
        let mut packet = Header::request(13, body.len() as u64).encode().to_vec();
        packet.extend_from_slice(&body);
        packet
    };
    let (mut stream, reply) = send_raw(storage, &set_metadata(8192)).await?;
    assert_eq!(reply.map(|h| h.status), Some(22));
    assert!(closed(&mut stream).await);
    let (_, reply) = send_raw(storage, &set_metadata(8191)).await?;
    assert_eq!(reply.map(|h| h.status), Some(0));
    Ok(())
}
