//! In-process tracker on 127.0.0.1:0, driven with raw FastDFS packets.

use std::time::Duration;

use fdfs_proto::header::Header;
use fdfs_proto::name::{size_field, NameFields, Source};
use fdfs_proto::tracker_msg::{
    encode_group, storage_status, BeatReply, BeatRequest, FetchReply, JoinReply, JoinRequest,
    PathUsage, QueryStoreAllReply, QueryStoreReply,
};
use fdfs_proto::{cmd::Command, status};
use tokio::net::TcpStream;

mod common;

use common::{expect_status, request, Conn, TestTracker};

/// The connection still answers requests.
async fn assert_open(conn: &mut Conn) {
    expect_status(conn, Command::ActiveTest, &[], status::OK).await;
}

/// The server closed the connection without answering.
async fn assert_closed(conn: &mut Conn) {
    let next = tokio::time::timeout(Duration::from_secs(5), conn.read_header()).await;
    match next.expect("the server reacts in time") {
        Ok(None) | Err(_) => {}
        Ok(Some(header)) => panic!("unexpected reply {header:?}"),
    }
}

fn join_request(group: &str, id: u32, port: u16) -> JoinRequest {
    JoinRequest {
        group: group.into(),
        storage_id: id,
        port,
        store_path_count: 2,
        subdir_count_per_path: 256,
        upload_priority: 10,
        join_time: 1,
        up_time: 2,
        version: fdfs_proto::VERSION.into(),
    }
}

fn beat_request() -> Vec<u8> {
    let path = PathUsage {
        total_bytes: 100 << 30,
        free_bytes: 50 << 30,
    };
    BeatRequest {
        paths: vec![path, path],
    }
    .encode()
}

/// A storage's report connection after JOIN and one BEAT: the storage is ACTIVE.
async fn active_storage(tracker: &TestTracker, group: &str, id: u32, port: u16) -> Conn {
    let mut conn = tracker.connect().await;
    let (status, body) = request(
        &mut conn,
        Command::StorageJoin,
        &join_request(group, id, port).encode(),
    )
    .await;
    assert_eq!(status, status::OK);
    let reply = JoinReply::decode(&body).unwrap();
    assert_eq!(reply.status, storage_status::ONLINE);
    assert_eq!(reply.sync_source_id, "");
    let (status, body) = request(&mut conn, Command::StorageBeat, &beat_request()).await;
    assert_eq!(status, status::OK);
    let members = BeatReply::decode(&body)
        .unwrap()
        .members
        .expect("member list");
    let me = members.iter().find(|m| m.id == id.to_string()).unwrap();
    assert_eq!(
        (me.status, me.port, me.ip.as_str()),
        (storage_status::ACTIVE, port, "127.0.0.1")
    );
    conn
}

/// Polls QUERY_STORE_WITH_GROUP_ONE until it answers `expected`.
async fn wait_for_store_status(conn: &mut Conn, group: &str, expected: u8) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) =
            request(conn, Command::QueryStoreWithGroupOne, &encode_group(group)).await;
        if status == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still status {status}, want {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn normal_name(id: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fields = NameFields {
        source: Source::Id(id),
        timestamp: now as u32,
        size_field: size_field(6, false, 1),
        crc32: 0x363A3020,
    };
    format!("M00/00/00/{}275.txt", fields.encode())
}

fn file_query(group: &str, name: &str) -> Vec<u8> {
    let mut body = encode_group(group);
    body.extend_from_slice(name.as_bytes());
    body
}

#[tokio::test]
async fn join_beat_then_query_store() {
    let tracker = TestTracker::start("").await;
    let mut client = tracker.connect().await;
    expect_status(
        &mut client,
        Command::QueryStoreWithoutGroupOne,
        &[],
        status::ENOENT,
    )
    .await;

    let mut report = tracker.connect().await;
    let (status, _) = request(
        &mut report,
        Command::StorageJoin,
        &join_request("group1", 100001, 23000).encode(),
    )
    .await;
    assert_eq!(status, status::OK);
    // Joined but not ACTIVE yet: not writable.
    expect_status(
        &mut client,
        Command::QueryStoreWithoutGroupOne,
        &[],
        status::ENOENT,
    )
    .await;
    let (status, _) = request(&mut report, Command::StorageBeat, &beat_request()).await;
    assert_eq!(status, status::OK);

    client
        .send_request(Command::QueryStoreWithoutGroupOne.code(), &[])
        .await
        .unwrap();
    let header = client.read_header().await.unwrap().unwrap();
    assert_eq!(header, Header::response(0, 40));
    let body = client.read_body(40, 40).await.unwrap();
    let reply = QueryStoreReply::decode(&body).unwrap();
    assert_eq!(reply.group, "group1");
    assert_eq!(
        (reply.server.ip.as_str(), reply.server.port),
        ("127.0.0.1", 23000)
    );
    assert_eq!(reply.store_path_index, 0);
    // Round robin over the two store paths.
    let (_, body) = request(
        &mut client,
        Command::QueryStoreWithGroupOne,
        &encode_group("group1"),
    )
    .await;
    assert_eq!(QueryStoreReply::decode(&body).unwrap().store_path_index, 1);

    let (status, body) = request(&mut client, Command::QueryStoreWithoutGroupAll, &[]).await;
    assert_eq!(status, status::OK);
    assert_eq!(body.len(), 16 + 23 + 1);
    let all = QueryStoreAllReply::decode(&body).unwrap();
    assert_eq!(all.servers.len(), 1);
    let (status, body) = request(
        &mut client,
        Command::QueryStoreWithGroupAll,
        &encode_group("group1"),
    )
    .await;
    assert_eq!(status, status::OK);
    assert_eq!(QueryStoreAllReply::decode(&body).unwrap().group, "group1");
    tracker.stop().await;
}

#[tokio::test]
async fn read_and_update_queries_find_the_source() {
    let tracker = TestTracker::start("").await;
    let _first = active_storage(&tracker, "group1", 11, 23011).await;
    let _second = active_storage(&tracker, "group1", 12, 23012).await;
    let mut client = tracker.connect().await;
    let name = normal_name(12);
    for cmd in [
        Command::QueryFetchOne,
        Command::QueryFetchAll,
        Command::QueryUpdate,
    ] {
        let (status, body) = request(&mut client, cmd, &file_query("group1", &name)).await;
        assert_eq!(status, status::OK, "{cmd:?}");
        assert_eq!(body.len(), 39, "{cmd:?}");
        let reply = FetchReply::decode(&body).unwrap();
        assert_eq!(reply.servers[0].port, 23012, "{cmd:?}");
    }
    expect_status(
        &mut client,
        Command::QueryFetchOne,
        &file_query("nogroup", &name),
        status::ENOENT,
    )
    .await;
    let bad_name = name.replace("M00/00/00", "M00/0a/00");
    expect_status(
        &mut client,
        Command::QueryFetchOne,
        &file_query("group1", &bad_name),
        status::EINVAL,
    )
    .await;
    assert_open(&mut client).await;
    tracker.stop().await;
}

#[tokio::test]
async fn bad_lengths_get_einval_and_keep_the_connection() {
    let tracker = TestTracker::start("").await;
    let mut conn = tracker.connect().await;
    expect_status(
        &mut conn,
        Command::QueryStoreWithoutGroupOne,
        &[0; 3],
        status::EINVAL,
    )
    .await;
    assert_open(&mut conn).await;
    expect_status(
        &mut conn,
        Command::QueryStoreWithGroupOne,
        &[b'g'; 15],
        status::EINVAL,
    )
    .await;
    expect_status(
        &mut conn,
        Command::QueryStoreWithGroupAll,
        &[b'g'; 17],
        status::EINVAL,
    )
    .await;
    expect_status(
        &mut conn,
        Command::QueryFetchOne,
        &file_query("group1", "M00/00/00/short"),
        status::EINVAL,
    )
    .await;
    expect_status(
        &mut conn,
        Command::QueryUpdate,
        &file_query("group1", &"a".repeat(128)),
        status::EINVAL,
    )
    .await;
    expect_status(&mut conn, Command::ParameterReq, &[1], status::EINVAL).await;
    expect_status(&mut conn, Command::StorageJoin, &[0; 10], status::EINVAL).await;
    // Bodies above a command's limit but below the package limit are skipped, not obeyed.
    expect_status(
        &mut conn,
        Command::QueryStoreWithoutGroupOne,
        &[7; 100_000],
        status::EINVAL,
    )
    .await;
    // Commands that belong to storages are refused the same way.
    expect_status(&mut conn, Command::UploadFile, &[0; 30], status::EINVAL).await;
    expect_status(
        &mut conn,
        Command::QueryStoreWithGroupOne,
        &encode_group("nope"),
        status::ENOENT,
    )
    .await;
    assert_open(&mut conn).await;
    tracker.stop().await;
}

#[tokio::test]
async fn negative_or_oversized_packages_close_the_connection() {
    let tracker = TestTracker::start("").await;
    for pkg_len in [-1i64, i64::MIN, 256 * 1024 + 1] {
        let mut conn = tracker.connect().await;
        let header = Header {
            pkg_len,
            cmd: Command::QueryStoreWithoutGroupOne.code(),
            status: 0,
        };
        conn.write_all(&header.encode()).await.unwrap();
        conn.flush().await.unwrap();
        assert_closed(&mut conn).await;
    }
    // Exactly the maximum is still read (and refused with EINVAL).
    let mut conn = tracker.connect().await;
    expect_status(
        &mut conn,
        Command::QueryFetchOne,
        &vec![0; 256 * 1024],
        status::EINVAL,
    )
    .await;
    assert_open(&mut conn).await;
    tracker.stop().await;
}

#[tokio::test]
async fn beat_needs_a_join_and_ids_are_not_shared() {
    let tracker = TestTracker::start("").await;
    let mut stranger = tracker.connect().await;
    expect_status(
        &mut stranger,
        Command::StorageBeat,
        &beat_request(),
        status::EACCES,
    )
    .await;
    let _report = active_storage(&tracker, "group1", 5, 23005).await;
    // The same id from another port while the first one is connected.
    expect_status(
        &mut stranger,
        Command::StorageJoin,
        &join_request("group1", 5, 23006).encode(),
        status::EEXIST,
    )
    .await;
    // A different store path layout in the same group.
    let mut other = join_request("group1", 6, 23006);
    other.store_path_count = 1;
    expect_status(
        &mut stranger,
        Command::StorageJoin,
        &other.encode(),
        status::EINVAL,
    )
    .await;
    expect_status(
        &mut stranger,
        Command::StorageBeat,
        &beat_request(),
        status::EACCES,
    )
    .await;
    assert_open(&mut stranger).await;
    tracker.stop().await;
}

#[tokio::test]
async fn closing_the_report_connection_makes_the_storage_offline() {
    let tracker = TestTracker::start("").await;
    let report = active_storage(&tracker, "group1", 1, 23001).await;
    let mut client = tracker.connect().await;
    wait_for_store_status(&mut client, "group1", status::OK).await;
    drop(report);
    wait_for_store_status(&mut client, "group1", status::ENOENT).await;
    // Joining again on a new connection and beating makes it writable again.
    let _report = active_storage(&tracker, "group1", 1, 23001).await;
    wait_for_store_status(&mut client, "group1", status::OK).await;
    tracker.stop().await;
}

#[tokio::test]
async fn silent_storages_expire_until_their_next_beat() {
    let tracker = TestTracker::start("check_active_interval = \"1s\"").await;
    let mut report = active_storage(&tracker, "group1", 1, 23001).await;
    let mut client = tracker.connect().await;
    wait_for_store_status(&mut client, "group1", status::ENOENT).await;
    let (status, body) = request(&mut report, Command::StorageBeat, &beat_request()).await;
    assert_eq!(status, status::OK);
    let members = BeatReply::decode(&body).unwrap().members.unwrap();
    assert_eq!(members[0].status, storage_status::ACTIVE);
    let (status, _) = request(
        &mut client,
        Command::QueryStoreWithGroupOne,
        &encode_group("group1"),
    )
    .await;
    assert_eq!(status, status::OK);
    tracker.stop().await;
}

#[tokio::test]
async fn parameter_request_reports_our_settings() {
    let tracker = TestTracker::start("reserved_storage_space = \"20%\"\nstore_path = 2").await;
    let mut conn = tracker.connect().await;
    let (status, body) = request(&mut conn, Command::ParameterReq, &[]).await;
    assert_eq!(status, status::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.starts_with("use_storage_id=1\nid_type_in_filename=id\n"),
        "{text}"
    );
    for line in [
        "response_ip_addr_size=16",
        "store_path=2",
        "reserved_storage_space=20.00%",
        "storage_sync_file_max_delay=86400",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from {text}"
        );
    }
    tracker.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_nothing_when_idle() {
    let tracker = TestTracker::start("").await;
    let mut conn = tracker.connect().await;
    assert_open(&mut conn).await;
    let addr = tracker.addr;
    tracker.stop().await;
    assert_closed(&mut conn).await;
    assert!(TcpStream::connect(addr).await.is_err());
}
