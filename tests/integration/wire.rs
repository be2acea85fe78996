//! Byte-level exchanges against the real servers, as FastDFS clients see them.

use fdfs_proto::conn::Connection;
use fdfs_proto::storage_msg::{
    DownloadRequest, FileInfoReply, GroupAndName, UploadPrefix, UploadReply,
};
use fdfs_proto::tracker_msg::{encode_group, FetchReply, QueryStoreReply};
use fdfs_proto::Header;
use fdfs_tests::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Connection<TcpStream>> {
    Ok(Connection::new(TcpStream::connect(addr).await?))
}

#[tokio::test]
async fn upload_and_download_as_a_fastdfs_client_does() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let mut tracker = connect(cluster.tracker.addr).await?;

    // P.1: QUERY_STORE_WITHOUT_GROUP_ONE → 40-byte reply
    let reply = tracker.call(101, &[], 1024).await?;
    assert_eq!(reply.len(), 40);
    let store = QueryStoreReply::decode(&reply)?;
    assert_eq!(store.group, "group1");
    assert_eq!(store.server.ip, "127.0.0.1");
    assert_eq!(store.server.port, cluster.storages[0].addr.port());

    // P.2: UPLOAD_FILE of "hello\n"
    let mut storage = connect(cluster.storages[0].addr).await?;
    let mut body = UploadPrefix {
        store_path_index: Some(store.store_path_index),
        file_size: 6,
        ext: "txt".into(),
    }
    .encode();
    body.extend_from_slice(b"hello\n");
    let reply = storage.call(11, &body, 1024).await?;
    assert_eq!(reply.len(), 60);
    let uploaded = UploadReply::decode(&reply)?;
    assert_eq!(uploaded.group, "group1");
    let fields = fdfs_proto::name::NameFields::from_logical_name(&uploaded.name)?;
    assert_eq!(fields.file_size(), 6);
    assert_eq!(fields.crc32, 0x363A_3020);
    assert_eq!(
        fields.source,
        fdfs_proto::name::Source::Id(cluster.specs[0].server_id)
    );

    // P.3: QUERY_FETCH_ONE → 39-byte reply naming the storage
    let query = GroupAndName {
        group: "group1".into(),
        name: uploaded.name.clone(),
    }
    .encode();
    let reply = tracker.call(102, &query, 1024).await?;
    assert_eq!(reply.len(), 39);
    assert_eq!(
        FetchReply::decode(&reply)?.servers[0].port,
        cluster.storages[0].addr.port()
    );
    let reply = tracker.call(103, &query, 1024).await?;
    assert_eq!(reply.len(), 39);

    // P.4: DOWNLOAD_FILE whole file
    let download = DownloadRequest {
        offset: 0,
        length: 0,
        group: "group1".into(),
        name: uploaded.name.clone(),
    }
    .encode();
    assert_eq!(storage.call(14, &download, 1024).await?, b"hello\n");

    // ACTIVE_TEST keeps the connection usable
    assert!(storage.call(111, &[], 0).await?.is_empty());
    assert!(tracker.call(111, &[], 0).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn query_file_info_arrives_in_a_single_read() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let id = cluster
        .client()
        .upload_bytes(b"hello world, fastdfs!\n", &Default::default())
        .await?;
    let mut raw = TcpStream::connect(cluster.storages[0].addr).await?;
    let body = GroupAndName {
        group: id.group.clone(),
        name: id.name.to_string(),
    }
    .encode();
    let mut packet = Header::request(22, body.len() as u64).encode().to_vec();
    packet.extend_from_slice(&body);
    raw.write_all(&packet).await?;
    // Python clients do one recv(1024) and expect header and body together.
    let mut buf = [0u8; 1024];
    let got = raw.read(&mut buf).await?;
    assert_eq!(got, 50, "header and body must come in one write");
    assert_eq!(&buf[..10], &Header::response(0, 40).encode());
    let info = FileInfoReply::decode(&buf[10..50])?;
    assert_eq!(info.file_size, 22);
    assert_eq!(
        &buf[26..34],
        &[0xff, 0xff, 0xff, 0xff, 0x80, 0x36, 0xce, 0xa3],
        "sign-extended CRC"
    );
    assert_eq!(info.source_ip, "127.0.0.1");
    Ok(())
}

#[tokio::test]
async fn tracker_answers_group_queries_and_keeps_the_connection_after_errors() -> anyhow::Result<()>
{
    let cluster = Cluster::builder().start().await?;
    let mut tracker = connect(cluster.tracker.addr).await?;
    assert_eq!(
        tracker
            .call(104, &encode_group("group1"), 1024)
            .await?
            .len(),
        40
    );
    let all = tracker.call(107, &encode_group("group1"), 1024).await?;
    assert_eq!(all.len(), 16 + 23 + 1);
    let unknown = tracker.call(104, &encode_group("nosuch"), 1024).await;
    assert!(matches!(
        unknown,
        Err(fdfs_proto::ProtoError::Status { status: 2 })
    ));
    let bad_len = tracker.call(104, b"short", 1024).await;
    assert!(matches!(
        bad_len,
        Err(fdfs_proto::ProtoError::Status { status: 22 })
    ));
    let bad_name = tracker
        .call(
            102,
            &GroupAndName {
                group: "group1".into(),
                name: "M00/00/00/../../etc/passwd".into(),
            }
            .encode(),
            1024,
        )
        .await;
    assert!(matches!(
        bad_name,
        Err(fdfs_proto::ProtoError::Status { status: 22 })
    ));
    // still the same connection
    assert_eq!(tracker.call(101, &[], 1024).await?.len(), 40);
    Ok(())
}
