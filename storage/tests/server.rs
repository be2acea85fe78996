//! In-process tests: `run()` on 127.0.0.1:0, raw FastDFS packets over TCP.

mod common;

use common::*;
use fdfs_proto::name::{NameFields, Source};
use fdfs_proto::storage_msg::{FileInfoReply, MetadataOp};
use fdfs_proto::ProtoError;

const HELLO: &[u8] = b"hello world, fastdfs!\n";

#[tokio::test]
async fn upload_then_download_whole_and_ranges() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let name = upload(&mut conn, 11, "txt", HELLO).await.unwrap();
    assert_eq!(name.len(), 44, "{name}");
    assert!(name.starts_with("M00/00/00/") && name.ends_with(".txt"));
    let fields = NameFields::from_logical_name(&name).unwrap();
    assert_eq!(fields.source, Source::Id(100_001));
    assert_eq!(fields.file_size(), 22);
    assert_eq!(fields.crc32, 0x8036_CEA3);

    assert_eq!(download(&mut conn, &name, 0, 0).await.unwrap(), HELLO);
    assert_eq!(download(&mut conn, &name, 6, 0).await.unwrap(), &HELLO[6..]);
    assert_eq!(
        download(&mut conn, &name, 6, 5).await.unwrap(),
        &HELLO[6..11]
    );
    assert_eq!(download(&mut conn, &name, 0, 1000).await.unwrap(), HELLO);
    assert_eq!(
        download(&mut conn, &name, 21, 0).await.unwrap(),
        &HELLO[21..]
    );
    // offset == size: EINVAL and the connection is closed
    assert_eq!(status_of(download(&mut conn, &name, 22, 0).await), 22);
    assert_closed(&mut conn).await;

    let mut conn = server.connect().await;
    assert_eq!(status_of(download(&mut conn, &name, 100, 0).await), 22);
    assert_closed(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn large_upload_and_download_stream() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let content: Vec<u8> = (0..3 * 1024 * 1024 + 17u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let name = upload(&mut conn, 11, "bin", &content).await.unwrap();
    let fields = NameFields::from_logical_name(&name).unwrap();
    assert_eq!(fields.file_size(), content.len() as u64);
    assert_eq!(fields.crc32, crc32fast::hash(&content));
    let back = download(&mut conn, &name, 0, 0).await.unwrap();
    assert!(back == content, "downloaded bytes differ");
    let part = download(&mut conn, &name, 1_000_000, 500_000)
        .await
        .unwrap();
    assert!(part == content[1_000_000..1_500_000]);
    server.stop().await;
}

#[tokio::test]
async fn empty_file_downloads_as_empty_success() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let name = upload(&mut conn, 11, "", b"").await.unwrap();
    assert_eq!(name.len(), 44);
    assert!(name[37..].bytes().all(|b| b.is_ascii_digit()), "{name}");
    assert_eq!(download(&mut conn, &name, 0, 0).await.unwrap(), b"");
    assert_eq!(status_of(download(&mut conn, &name, 1, 0).await), 22);
    server.stop().await;
}

#[tokio::test]
async fn delete_then_missing() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let name = upload(&mut conn, 11, "txt", HELLO).await.unwrap();
    set_metadata(&mut conn, "group1", &name, MetadataOp::Overwrite, b"a\x02b")
        .await
        .unwrap();
    let path = server.path_of(&name);
    assert!(path.exists());
    simple(&mut conn, 12, &group_and_name("group1", &name))
        .await
        .unwrap();
    assert!(!path.exists());
    assert!(!sidecar(&path).exists());
    // missing file: 2, connection stays usable
    assert_eq!(status_of(download(&mut conn, &name, 0, 0).await), 2);
    assert_eq!(
        status_of(simple(&mut conn, 12, &group_and_name("group1", &name)).await),
        2
    );
    active_test(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn metadata_overwrite_merge_get() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let name = upload(&mut conn, 11, "jpg", HELLO).await.unwrap();
    let get = |name: &str| group_and_name("group1", name);
    // never had metadata: 2, not an empty success
    assert_eq!(status_of(simple(&mut conn, 15, &get(&name)).await), 2);
    set_metadata(
        &mut conn,
        "group1",
        &name,
        MetadataOp::Overwrite,
        b"width\x02160\x01height\x0280\x01author\x02me",
    )
    .await
    .unwrap();
    assert_eq!(
        simple(&mut conn, 15, &get(&name)).await.unwrap(),
        b"author\x02me\x01height\x0280\x01width\x02160"
    );
    set_metadata(
        &mut conn,
        "group1",
        &name,
        MetadataOp::Merge,
        b"width\x02999\x01zeta\x02z",
    )
    .await
    .unwrap();
    assert_eq!(
        simple(&mut conn, 15, &get(&name)).await.unwrap(),
        b"author\x02me\x01height\x0280\x01width\x02999\x01zeta\x02z"
    );
    set_metadata(&mut conn, "group1", &name, MetadataOp::Overwrite, b"")
        .await
        .unwrap();
    assert_eq!(status_of(simple(&mut conn, 15, &get(&name)).await), 2);
    // metadata of a missing file: 2, connection open
    let missing = format!("{}AAAAAAA{}", &name[..30], &name[37..]);
    assert_eq!(
        status_of(set_metadata(&mut conn, "group1", &missing, MetadataOp::Merge, b"a\x02b").await),
        2
    );
    active_test(&mut conn).await;

    // a bad op flag: 22 and closed
    let mut body = fdfs_proto::storage_msg::SetMetadataRequest {
        op: MetadataOp::Overwrite,
        group: "group1".into(),
        name: name.clone(),
        metadata: b"a\x02b".to_vec(),
    }
    .encode();
    body[16] = b'X';
    assert_eq!(status_of(simple(&mut conn, 13, &body).await), 22);
    assert_closed(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn file_info_of_normal_and_appender_files() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let name = upload(&mut conn, 11, "txt", HELLO).await.unwrap();
    let body = query_info(&mut conn, &name, 0).await.unwrap();
    assert_eq!(body.len(), 40);
    // size 22, crc sign-extended, no known source ip (no tracker)
    assert_eq!(&body[0..8], &[0, 0, 0, 0, 0, 0, 0, 22]);
    assert_eq!(
        &body[16..24],
        &[0xff, 0xff, 0xff, 0xff, 0x80, 0x36, 0xce, 0xa3]
    );
    assert_eq!(&body[24..], &[0u8; 16]);
    let info = FileInfoReply::decode(&body).unwrap();
    let fields = NameFields::from_logical_name(&name).unwrap();
    assert_eq!(info.create_timestamp, u64::from(fields.timestamp));

    let appender = upload(&mut conn, 23, "txt", b"hello\n").await.unwrap();
    let info = FileInfoReply::decode(&query_info(&mut conn, &appender, 0).await.unwrap()).unwrap();
    assert_eq!((info.file_size, info.crc32), (6, 0x363A_3020));
    // flags 3: no crc for appender files
    let info = FileInfoReply::decode(&query_info(&mut conn, &appender, 3).await.unwrap()).unwrap();
    assert_eq!((info.file_size, info.crc32), (6, 0));

    let missing = format!("{}AAAAAAA{}", &name[..30], &name[37..]);
    assert_eq!(status_of(query_info(&mut conn, &missing, 2).await), 2);
    active_test(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_group_is_einval_and_closes() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let name = upload(&mut conn, 11, "txt", HELLO).await.unwrap();
    for (cmd, body) in [
        (12u8, group_and_name("group2", &name)),
        (15, group_and_name("group2", &name)),
        (22, group_and_name("group2", &name)),
        (14, download_body("group2", &name, 0, 0)),
    ] {
        let mut conn = server.connect().await;
        assert_eq!(
            status_of(simple(&mut conn, cmd, &body).await),
            22,
            "cmd {cmd}"
        );
        assert_closed(&mut conn).await;
    }
    assert!(server.path_of(&name).exists());
    server.stop().await;
}

#[tokio::test]
async fn traversal_and_malformed_names_are_einval() {
    let server = TestServer::start("").await;
    std::fs::write(server.dir.path().join("secret"), b"secret").unwrap();
    let bad = [
        "M00/00/00/../../../secret",
        "M00/00/00/../../secret",
        "M00/../../secret00000000",
        "M00/0a/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt",
        "M01/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt",
        "M00/00/00/.tmp",
        "M00/00/00/a b",
        "short",
    ];
    for name in bad {
        for (cmd, body) in [
            (14u8, download_body("group1", name, 0, 0)),
            (12, group_and_name("group1", name)),
            (15, group_and_name("group1", name)),
            (22, group_and_name("group1", name)),
        ] {
            let mut conn = server.connect().await;
            assert_eq!(
                status_of(simple(&mut conn, cmd, &body).await),
                22,
                "cmd {cmd} {name}"
            );
            assert_closed(&mut conn).await;
        }
    }
    assert!(server.dir.path().join("secret").exists());
    server.stop().await;
}

#[tokio::test]
async fn bad_uploads_are_refused() {
    let server = TestServer::start("").await;
    // store path index 5 on a one-path storage
    let mut conn = server.connect().await;
    let mut body = upload_prefix(Some(5), 5, "txt");
    body.extend_from_slice(b"hello");
    assert_eq!(status_of(simple(&mut conn, 11, &body).await), 22);
    assert_closed(&mut conn).await;
    // a slash in the extension
    let mut conn = server.connect().await;
    let mut body = upload_prefix(None, 5, "t/t");
    body.extend_from_slice(b"hello");
    assert_eq!(status_of(simple(&mut conn, 11, &body).await), 22);
    assert_closed(&mut conn).await;
    // pkg_len disagreeing with file_size
    let mut conn = server.connect().await;
    let mut body = upload_prefix(None, 6, "txt");
    body.extend_from_slice(b"hello");
    assert_eq!(status_of(simple(&mut conn, 11, &body).await), 22);
    assert_closed(&mut conn).await;
    // explicit valid index works
    let mut conn = server.connect().await;
    let mut body = upload_prefix(Some(0), 5, "txt");
    body.extend_from_slice(b"hello");
    assert!(simple(&mut conn, 11, &body).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn oversized_small_request_is_einval() {
    let server = TestServer::start("buff_size = \"4KB\"").await;
    let mut conn = server.connect().await;
    let mut body = group_and_name("group1", "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt");
    body.resize(5000, b'a');
    assert_eq!(status_of(simple(&mut conn, 15, &body).await), 22);
    assert_closed(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn no_space_is_enospc() {
    let server = TestServer::start("reserved_storage_space = \"100%\"").await;
    let mut conn = server.connect().await;
    assert_eq!(status_of(upload(&mut conn, 11, "txt", HELLO).await), 28);
    // the body was not consumed: the connection is closed
    assert_closed(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn short_upload_body_leaves_no_file() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let mut body = upload_prefix(None, 1 << 20, "bin");
    body.extend_from_slice(&[5u8; 1000]);
    let header = fdfs_proto::Header::request(11, 15 + (1 << 20));
    conn.send(header, &body).await.unwrap();
    // wait until the server has the data in its temp directory, then vanish
    let tmp = server.dir.path().join("data/.tmp");
    wait_until("temp file appears", || count_entries(&tmp) > 0).await;
    drop(conn);
    wait_until("temp file removed", || count_entries(&tmp) == 0).await;
    assert_eq!(
        stored_files(&server.dir.path().join("data")),
        Vec::<String>::new()
    );
    // the server still works
    let mut conn = server.connect().await;
    upload(&mut conn, 11, "txt", HELLO).await.unwrap();
    assert_eq!(stored_files(&server.dir.path().join("data")).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn unknown_command_is_einval() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    assert_eq!(status_of(simple(&mut conn, 101, &[]).await), 22);
    assert_closed(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn joins_tracker_and_resolves_source_ip() {
    let mut tracker = FakeTracker::start().await;
    let server = TestServer::start_with_tracker(
        &tracker.addr.to_string(),
        "heart_beat_interval = \"100ms\"",
    )
    .await;
    let join = tracker.join().await;
    assert_eq!(join.group, "group1");
    assert_eq!(join.storage_id, 100_001);
    assert_eq!(join.port, server.addr.port());
    assert_eq!(join.store_path_count, 1);
    assert_eq!(join.subdir_count_per_path, 4);
    assert_eq!(join.version, fdfs_proto::VERSION);
    assert!(join.join_time > 0 && (join.join_time - join.up_time).abs() <= 2);

    let mut conn = server.connect().await;
    let name = upload(&mut conn, 11, "txt", HELLO).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let info = FileInfoReply::decode(&query_info(&mut conn, &name, 0).await.unwrap()).unwrap();
        if info.source_ip == "10.1.2.3" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "member list never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // beats carry disk usage of the one store path
    let beat = tracker.beat().await;
    assert_eq!(beat.paths.len(), 1);
    assert!(beat.paths[0].total_bytes > 0);
    server.stop().await;
}

#[tokio::test]
async fn refused_join_is_retried() {
    let mut tracker = FakeTracker::start_with(22, None).await;
    let server = TestServer::start_with_tracker(&tracker.addr.to_string(), "").await;
    let first = tracker.join().await;
    let second = tracker.join().await;
    assert_eq!(first, second);
    server.stop().await;
}

#[tokio::test]
async fn lost_tracker_connection_rejoins() {
    let mut tracker = FakeTracker::start_with(0, Some(1)).await;
    let server =
        TestServer::start_with_tracker(&tracker.addr.to_string(), "heart_beat_interval = \"50ms\"")
            .await;
    tracker.join().await;
    tracker.beat().await;
    // the tracker drops the connection at the second beat: the storage joins again
    let again = tracker.join().await;
    assert_eq!(again.storage_id, 100_001);
    tracker.beat().await;
    server.stop().await;
}

#[tokio::test]
async fn join_time_survives_restart() {
    let server = TestServer::start("").await;
    let dir = server.stop_keep_dir().await;
    let first = std::fs::read_to_string(dir.path().join("data/storage_join.toml")).unwrap();
    let server = TestServer::start_in(dir, "127.0.0.1:1", "").await;
    let second = std::fs::read_to_string(server.dir.path().join("data/storage_join.toml")).unwrap();
    assert_eq!(first, second);
    server.stop().await;
}

#[test]
fn proto_error_status_is_einval_for_bad_names() {
    assert_eq!(ProtoError::invalid("file name", "x").status(), 22);
}
