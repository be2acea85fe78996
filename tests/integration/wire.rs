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

/// PARAMETER_REQ says storage ids are in use, so FastDFS's client library loads the id table
/// with FETCH_STORAGE_IDS (69) at start and maps addresses to ids with GET_SERVER_ID (70).
#[tokio::test]
async fn tracker_serves_the_storage_id_table() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .groups(&[("group1", 2), ("group2", 1)])
        .start()
        .await?;
    let mut tracker = connect(cluster.tracker.addr).await?;
    let params = String::from_utf8(tracker.call(75, &[], 4096).await?)?;
    assert!(params.contains("use_storage_id=1\n"), "{params}");

    let fetch = |start: i32, allow_empty: u8| {
        let mut body = start.to_be_bytes().to_vec();
        body.push(allow_empty);
        body
    };
    let reply = tracker.call(69, &fetch(0, 0), 4096).await?;
    let total = i32::from_be_bytes(reply[..4].try_into()?);
    let count = i32::from_be_bytes(reply[4..8].try_into()?);
    let text = std::str::from_utf8(&reply[8..])?;
    assert_eq!((total, count), (3, 3), "{text}");
    let mut expected: Vec<String> = cluster
        .specs
        .iter()
        .zip(&cluster.storages)
        .map(|(spec, daemon)| {
            format!(
                "{} {} 127.0.0.1:{}\n",
                spec.server_id,
                spec.group,
                daemon.addr.port()
            )
        })
        .collect();
    expected.sort_by_key(|line| line.split(' ').next().unwrap().parse::<u32>().unwrap());
    assert_eq!(text, expected.concat());

    // the caller pages with start_index; one past the end is out of range
    let rest = tracker.call(69, &fetch(2, 0), 4096).await?;
    assert_eq!(i32::from_be_bytes(rest[..4].try_into()?), 3);
    assert_eq!(i32::from_be_bytes(rest[4..8].try_into()?), 1);
    assert_eq!(std::str::from_utf8(&rest[8..])?, expected[2]);
    for start in [3, -1] {
        let out_of_range = tracker.call(69, &fetch(start, 1), 4096).await;
        assert!(
            matches!(
                out_of_range,
                Err(fdfs_proto::ProtoError::Status { status: 22 })
            ),
            "{start}: {out_of_range:?}"
        );
    }
    let bad_len = tracker.call(69, &[0, 0, 0, 0], 4096).await;
    assert!(matches!(
        bad_len,
        Err(fdfs_proto::ProtoError::Status { status: 22 })
    ));

    let server_id = |group: &str, addr: &str| {
        let mut body = encode_group(group);
        body.extend_from_slice(addr.as_bytes());
        body
    };
    let (spec, daemon) = (&cluster.specs[1], &cluster.storages[1]);
    let addr = format!("127.0.0.1:{}", daemon.addr.port());
    let id = tracker
        .call(70, &server_id(&spec.group, &addr), 1024)
        .await?;
    assert_eq!(id, spec.server_id.to_string().into_bytes());
    for (group, addr) in [
        ("group2", addr.as_str()),
        (spec.group.as_str(), "127.0.0.1:1"),
        (spec.group.as_str(), "10.9.9.9"),
    ] {
        let unknown = tracker.call(70, &server_id(group, addr), 1024).await;
        assert!(
            matches!(unknown, Err(fdfs_proto::ProtoError::Status { status: 2 })),
            "{group} {addr}: {unknown:?}"
        );
    }
    // a group name alone: the caller's own IP (every storage here is on 127.0.0.1)
    let own = String::from_utf8(tracker.call(70, &encode_group("group1"), 1024).await?)?;
    assert!(
        cluster.specs[..2]
            .iter()
            .any(|spec| spec.server_id.to_string() == own),
        "{own}"
    );
    // still the same connection
    assert_eq!(tracker.call(101, &[], 1024).await?.len(), 40);

    // before any storage joined: 8 zero bytes when the caller allows an empty table, else
    // the start index is out of range
    let empty = Cluster::builder().groups(&[]).start().await?;
    let mut tracker = connect(empty.tracker.addr).await?;
    assert_eq!(tracker.call(69, &fetch(0, 1), 1024).await?, [0u8; 8]);
    let refused = tracker.call(69, &fetch(0, 0), 1024).await;
    assert!(
        matches!(refused, Err(fdfs_proto::ProtoError::Status { status: 22 })),
        "{refused:?}"
    );
    Ok(())
}

/// GET_STORAGE_STATUS (71) answers a storage's 67-byte brief (K.5); GET_LEADER (95) the
/// tracker's own address, as a lone FastDFS tracker (its own leader) does.
#[tokio::test]
async fn tracker_answers_storage_status_and_its_leader() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let mut tracker = connect(cluster.tracker.addr).await?;
    let request = |group: &str, addr: &str| {
        let mut body = encode_group(group);
        body.extend_from_slice(addr.as_bytes());
        body
    };
    let brief = |reply: &[u8]| -> anyhow::Result<(u8, i32, String, String)> {
        anyhow::ensure!(reply.len() == 67, "brief of {} bytes", reply.len());
        let text = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .trim_end_matches('\0')
                .to_string()
        };
        Ok((
            reply[0],
            i32::from_be_bytes(reply[1..5].try_into()?),
            text(&reply[5..21]),
            text(&reply[21..67]),
        ))
    };
    let (spec, port) = (cluster.specs[1].clone(), cluster.storages[1].addr.port());
    let addr = format!("127.0.0.1:{port}");
    let reply = tracker.call(71, &request("group1", &addr), 1024).await?;
    let expected_active = (
        7u8,
        i32::from(port),
        spec.server_id.to_string(),
        "127.0.0.1".to_string(),
    );
    assert_eq!(brief(&reply)?, expected_active);
    for (group, addr) in [("group2", addr.as_str()), ("group1", "127.0.0.1:1")] {
        let unknown = tracker.call(71, &request(group, addr), 1024).await;
        assert!(
            matches!(unknown, Err(fdfs_proto::ProtoError::Status { status: 2 })),
            "{group} {addr}: {unknown:?}"
        );
    }
    let bad = tracker.call(71, &[0; 8], 1024).await;
    assert!(
        matches!(bad, Err(fdfs_proto::ProtoError::Status { status: 22 })),
        "{bad:?}"
    );

    // the brief follows the storage's state: OFFLINE (5) once its heartbeats stop
    cluster.storages[1].kill();
    let tracker_addr = cluster.tracker.addr;
    fdfs_tests::wait_for(
        "the tracker to see the storage OFFLINE",
        std::time::Duration::from_secs(20),
        || async {
            let mut conn = connect(tracker_addr).await.ok()?;
            let reply = conn.call(71, &request("group1", &addr), 1024).await.ok()?;
            (brief(&reply).ok()?.0 == 5).then_some(())
        },
    )
    .await?;

    let leader = String::from_utf8(tracker.call(95, &[], 1024).await?)?;
    assert_eq!(leader, cluster.tracker.addr.to_string());
    // still the same connection
    assert_eq!(tracker.call(101, &[], 1024).await?.len(), 40);
    Ok(())
}
