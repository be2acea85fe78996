//! Operator-facing tracker features over the wire: the list commands (90, 91, 92) decoded
//! with a decoder written here from the spec's offsets (E.1–E.3), delete storage/group
//! (93, 108), state persisted across a restart, and the Prometheus endpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use fdfs_proto::cmd::Command;
use fdfs_proto::status;
use fdfs_proto::tracker_msg::{encode_group, BeatRequest, JoinRequest, PathUsage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::{expect_status, request, Conn, TestTracker};

const GB: u64 = 1 << 30;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---- what a fake storage sends -------------------------------------------------------------

fn join_body(id: u32, port: u16) -> Vec<u8> {
    JoinRequest {
        group: "group1".into(),
        storage_id: id,
        port,
        store_path_count: 2,
        subdir_count_per_path: 256,
        upload_priority: 10,
        join_time: 1_600_000_000 + i64::from(id % 100),
        up_time: 1_700_000_000,
        version: "6.16.1".into(),
    }
    .encode()
}

/// Counters a storage reports after its BEAT usage, laid out by hand from E.3.
#[derive(Clone, Copy, Default)]
struct Counters {
    connections: i32,
    total_upload: i64,
    success_upload: i64,
    success_download: i64,
    last_source_update: i64,
}

fn stat_block(counters: Counters) -> Vec<u8> {
    let mut block = vec![0u8; 348];
    let mut put = |offset: usize, bytes: &[u8]| {
        block[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(4, &counters.connections.to_be_bytes());
    put(12, &counters.total_upload.to_be_bytes());
    put(20, &counters.success_upload.to_be_bytes());
    put(116, &counters.success_download.to_be_bytes());
    put(316, &counters.last_source_update.to_be_bytes());
    block
}

/// BEAT body: two store paths of `total` with `free` each, then the counters if any.
fn beat_body(total: u64, free: u64, counters: Option<Counters>) -> Vec<u8> {
    let path = PathUsage {
        total_bytes: total,
        free_bytes: free,
    };
    let mut body = BeatRequest {
        paths: vec![path, path],
    }
    .encode();
    if let Some(counters) = counters {
        body.extend_from_slice(&stat_block(counters));
    }
    body
}

/// A report connection that has joined and beaten once.
async fn storage(
    tracker: &TestTracker,
    id: u32,
    port: u16,
    free: u64,
    counters: Option<Counters>,
) -> Conn {
    let mut conn = tracker.connect().await;
    expect_status(&mut conn, Command::StorageJoin, &join_body(id, port), 0).await;
    expect_status(
        &mut conn,
        Command::StorageBeat,
        &beat_body(100 * GB, free, counters),
        0,
    )
    .await;
    conn
}

// ---- independent decoder of the list replies (spec E.1–E.3) -------------------------------

fn be64(body: &[u8], offset: usize) -> i64 {
    i64::from_be_bytes(body[offset..offset + 8].try_into().unwrap())
}

fn be32(body: &[u8], offset: usize) -> i32 {
    i32::from_be_bytes(body[offset..offset + 4].try_into().unwrap())
}

fn text_field(body: &[u8], offset: usize, width: usize) -> String {
    let field = &body[offset..offset + width];
    let end = field.iter().position(|&b| b == 0).unwrap_or(width);
    String::from_utf8(field[..end].to_vec()).unwrap()
}

#[derive(Debug, PartialEq)]
struct Group {
    name: String,
    total_mb: i64,
    free_mb: i64,
    reserved_mb: i64,
    trunk_free_mb: i64,
    storage_count: i64,
    storage_port: i64,
    readable: i64,
    writable: i64,
    current_write_server: i64,
    store_path_count: i64,
    subdirs: i64,
    trunk_file_id: i64,
}

fn groups(body: &[u8]) -> Vec<Group> {
    assert_eq!(body.len() % 113, 0, "group stats are 113 bytes each");
    body.chunks(113)
        .map(|g| Group {
            name: text_field(g, 0, 17),
            total_mb: be64(g, 17),
            free_mb: be64(g, 25),
            reserved_mb: be64(g, 33),
            trunk_free_mb: be64(g, 41),
            storage_count: be64(g, 49),
            storage_port: be64(g, 57),
            readable: be64(g, 65),
            writable: be64(g, 73),
            current_write_server: be64(g, 81),
            store_path_count: be64(g, 89),
            subdirs: be64(g, 97),
            trunk_file_id: be64(g, 105),
        })
        .collect()
}

#[derive(Debug)]
struct StorageRecord {
    status: u8,
    rw_mode: u8,
    id: String,
    ip: String,
    src_id: String,
    version: String,
    join_time: i64,
    up_time: i64,
    total_mb: i64,
    free_mb: i64,
    reserved_mb: i64,
    upload_priority: i64,
    store_path_count: i64,
    subdirs: i64,
    port: i64,
    connections_current: i32,
    total_upload: i64,
    success_upload: i64,
    success_download: i64,
    last_source_update: i64,
    last_synced_timestamp: i64,
    last_heart_beat_time: i64,
    if_trunk_server: u8,
}

fn storages(body: &[u8]) -> Vec<StorageRecord> {
    assert_eq!(
        body.len() % 487,
        0,
        "storage stats are 487 bytes each (W = 16)"
    );
    body.chunks(487)
        .map(|s| {
            let stat = 138;
            StorageRecord {
                status: s[0],
                rw_mode: s[1],
                id: text_field(s, 2, 16),
                ip: text_field(s, 18, 16),
                src_id: text_field(s, 34, 16),
                version: text_field(s, 50, 8),
                join_time: be64(s, 58),
                up_time: be64(s, 66),
                total_mb: be64(s, 74),
                free_mb: be64(s, 82),
                reserved_mb: be64(s, 90),
                upload_priority: be64(s, 98),
                store_path_count: be64(s, 106),
                subdirs: be64(s, 114),
                port: be64(s, 130),
                connections_current: be32(s, stat + 4),
                total_upload: be64(s, stat + 12),
                success_upload: be64(s, stat + 20),
                success_download: be64(s, stat + 116),
                last_source_update: be64(s, stat + 316),
                last_synced_timestamp: be64(s, stat + 332),
                last_heart_beat_time: be64(s, stat + 340),
                if_trunk_server: s[486],
            }
        })
        .collect()
}

fn list_storage_body(group: &str, id: &str) -> Vec<u8> {
    let mut body = encode_group(group);
    body.extend_from_slice(id.as_bytes());
    body
}

async fn list_storages(conn: &mut Conn, group: &str) -> Vec<StorageRecord> {
    storages(&expect_status(conn, Command::ListStorage, &encode_group(group), 0).await)
}

/// Polls LIST_STORAGE until storage `id` has `status`.
async fn wait_for_status(conn: &mut Conn, id: &str, status: u8) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = list_storages(conn, "group1").await;
        let now = records.iter().find(|r| r.id == id).map(|r| r.status);
        if now == Some(status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "storage {id} still has status {now:?}, want {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn list_commands_show_what_storages_reported() {
    let base = tempfile::tempdir().unwrap();
    let tracker = TestTracker::start_in(base.path(), "").await;
    let mut client = tracker.connect().await;
    // No groups yet: an empty list, and unknown groups are 2.
    assert!(expect_status(&mut client, Command::ListAllGroups, &[], 0)
        .await
        .is_empty());
    expect_status(
        &mut client,
        Command::ListOneGroup,
        &encode_group("group1"),
        status::ENOENT,
    )
    .await;

    let before = unix_now();
    let counters = Counters {
        connections: 3,
        total_upload: 11,
        success_upload: 10,
        success_download: 7,
        last_source_update: 1_700_000_500,
    };
    let _a = storage(&tracker, 100001, 23000, 60 * GB, Some(counters)).await;
    // The least free writable storage decides the group's space (J.5).
    let _b = storage(&tracker, 100002, 23001, 30 * GB, None).await;
    let after = unix_now();

    let all = expect_status(&mut client, Command::ListAllGroups, &[], 0).await;
    assert_eq!(all.len(), 113);
    let one = expect_status(
        &mut client,
        Command::ListOneGroup,
        &encode_group("group1"),
        0,
    )
    .await;
    assert_eq!(one, all);
    let group = &groups(&all)[0];
    let total_mb = 200 * 1024;
    assert_eq!(
        group,
        &Group {
            name: "group1".into(),
            total_mb,
            free_mb: 60 * 1024,
            // reserved_storage_space = 1% of the group's total (MB).
            reserved_mb: total_mb / 100,
            trunk_free_mb: 0,
            storage_count: 2,
            storage_port: 23000,
            readable: 2,
            writable: 2,
            current_write_server: 0,
            store_path_count: 2,
            subdirs: 256,
            trunk_file_id: -1,
        }
    );

    let records = list_storages(&mut client, "group1").await;
    assert_eq!(records.len(), 2);
    let a = &records[0];
    assert_eq!((a.id.as_str(), a.ip.as_str()), ("100001", "127.0.0.1"));
    assert_eq!((a.status, a.rw_mode), (7, 6));
    assert_eq!(a.src_id, "");
    assert_eq!(a.version, "6.16.1");
    assert_eq!((a.join_time, a.up_time), (1_600_000_001, 1_700_000_000));
    assert_eq!((a.total_mb, a.free_mb), (200 * 1024, 120 * 1024));
    assert_eq!(a.reserved_mb, 2048);
    assert_eq!(a.upload_priority, 10);
    assert_eq!((a.store_path_count, a.subdirs), (2, 256));
    assert_eq!(a.port, 23000);
    assert_eq!(a.connections_current, 3);
    assert_eq!((a.total_upload, a.success_upload), (11, 10));
    assert_eq!(a.success_download, 7);
    assert_eq!(a.last_source_update, 1_700_000_500);
    assert_eq!(a.last_synced_timestamp, 0);
    assert!(
        (before..=after).contains(&a.last_heart_beat_time),
        "heartbeat time {} not in {before}..={after}",
        a.last_heart_beat_time
    );
    assert_eq!(a.if_trunk_server, 0);
    let b = &records[1];
    assert_eq!((b.id.as_str(), b.port, b.status), ("100002", 23001, 7));
    assert_eq!(b.free_mb, 60 * 1024);
    // No counters sent: zeros, but the tracker's own heartbeat time is there.
    assert_eq!((b.total_upload, b.connections_current), (0, 0));
    assert!(b.last_heart_beat_time >= before);

    // One storage by id.
    let body = expect_status(
        &mut client,
        Command::ListStorage,
        &list_storage_body("group1", "100002"),
        0,
    )
    .await;
    let only = storages(&body);
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].id, "100002");
    expect_status(
        &mut client,
        Command::ListStorage,
        &list_storage_body("group1", "999"),
        status::ENOENT,
    )
    .await;
    expect_status(
        &mut client,
        Command::ListStorage,
        &encode_group("group9"),
        status::ENOENT,
    )
    .await;
    // Bad lengths: 22, and the connection stays usable.
    expect_status(
        &mut client,
        Command::ListOneGroup,
        &[b'g'; 15],
        status::EINVAL,
    )
    .await;
    expect_status(&mut client, Command::ListAllGroups, &[0], status::EINVAL).await;
    expect_status(
        &mut client,
        Command::ListStorage,
        &list_storage_body("group1", "1234567890123456"),
        status::EINVAL,
    )
    .await;
    expect_status(
        &mut client,
        Command::ListStorage,
        &[b'g'; 15],
        status::EINVAL,
    )
    .await;
    expect_status(&mut client, Command::ActiveTest, &[], 0).await;
    tracker.stop().await;
}

#[tokio::test]
async fn delete_storage_and_group_status_codes() {
    let base = tempfile::tempdir().unwrap();
    let tracker = TestTracker::start_in(base.path(), "").await;
    let mut client = tracker.connect().await;
    let report = storage(&tracker, 7, 23007, 50 * GB, None).await;
    let _other = storage(&tracker, 8, 23008, 50 * GB, None).await;

    let delete = |id: &str| list_storage_body("group1", id);
    // ACTIVE: busy.
    expect_status(
        &mut client,
        Command::DeleteStorage,
        &delete("7"),
        status::EBUSY,
    )
    .await;
    expect_status(
        &mut client,
        Command::DeleteStorage,
        &delete("9"),
        status::ENOENT,
    )
    .await;
    expect_status(
        &mut client,
        Command::DeleteStorage,
        &list_storage_body("group9", "7"),
        status::ENOENT,
    )
    .await;
    // The id is required: a bare group is a bad length.
    expect_status(
        &mut client,
        Command::DeleteStorage,
        &encode_group("group1"),
        status::EINVAL,
    )
    .await;

    drop(report);
    wait_for_status(&mut client, "7", 5).await;
    assert!(
        expect_status(&mut client, Command::DeleteStorage, &delete("7"), 0)
            .await
            .is_empty()
    );
    expect_status(
        &mut client,
        Command::DeleteStorage,
        &delete("7"),
        status::EALREADY,
    )
    .await;
    // Still listed, as DELETED, and still counted in the group.
    let records = list_storages(&mut client, "group1").await;
    assert_eq!(
        records
            .iter()
            .map(|r| (r.id.as_str(), r.status))
            .collect::<Vec<_>>(),
        [("7", 4), ("8", 7)]
    );
    let all = expect_status(&mut client, Command::ListAllGroups, &[], 0).await;
    assert_eq!(groups(&all)[0].storage_count, 2);
    assert_eq!(groups(&all)[0].writable, 1);

    expect_status(
        &mut client,
        Command::DeleteGroup,
        &encode_group("group1"),
        status::EBUSY,
    )
    .await;
    expect_status(
        &mut client,
        Command::DeleteGroup,
        &encode_group("group9"),
        status::ENOENT,
    )
    .await;
    expect_status(
        &mut client,
        Command::DeleteGroup,
        &[b'g'; 17],
        status::EINVAL,
    )
    .await;

    // A deleted storage that joins again is a member again.
    let _back = storage(&tracker, 7, 23007, 50 * GB, None).await;
    wait_for_status(&mut client, "7", 7).await;
    tracker.stop().await;
}

#[tokio::test]
async fn a_restarted_tracker_remembers_the_cluster() {
    let base = tempfile::tempdir().unwrap();
    let counters = Counters {
        success_upload: 10,
        total_upload: 10,
        ..Counters::default()
    };
    let first = TestTracker::start_in(base.path(), "").await;
    let a = storage(&first, 100001, 23000, 60 * GB, Some(counters)).await;
    let b = storage(&first, 100002, 23001, 30 * GB, None).await;
    let c = storage(&first, 100003, 23002, 30 * GB, None).await;
    let mut client = first.connect().await;
    drop(c);
    wait_for_status(&mut client, "100003", 5).await;
    expect_status(
        &mut client,
        Command::DeleteStorage,
        &list_storage_body("group1", "100003"),
        0,
    )
    .await;
    first.stop().await;
    drop((a, b));
    assert!(base.path().join("data/cluster_state.toml").is_file());

    let second = TestTracker::start_in(base.path(), "").await;
    let mut client = second.connect().await;
    // Everyone is listed before anyone rejoins: OFFLINE, the deleted one still deleted.
    let records = list_storages(&mut client, "group1").await;
    assert_eq!(
        records
            .iter()
            .map(|r| (r.id.as_str(), r.status, r.port))
            .collect::<Vec<_>>(),
        [
            ("100001", 5, 23000),
            ("100002", 5, 23001),
            ("100003", 4, 23002)
        ]
    );
    // Disks and counters as last reported.
    assert_eq!(records[0].free_mb, 120 * 1024);
    assert_eq!(records[0].success_upload, 10);
    assert!(records[0].last_heart_beat_time > 0);
    let group = &groups(&expect_status(&mut client, Command::ListAllGroups, &[], 0).await)[0];
    assert_eq!((group.storage_count, group.writable), (3, 0));
    // Nobody is sent to a storage that has not come back.
    expect_status(
        &mut client,
        Command::QueryStoreWithoutGroupOne,
        &[],
        status::ENOENT,
    )
    .await;

    let _a = storage(&second, 100001, 23000, 59 * GB, None).await;
    wait_for_status(&mut client, "100001", 7).await;
    let (status, body) = request(&mut client, Command::QueryStoreWithoutGroupOne, &[]).await;
    assert_eq!(status, 0);
    assert_eq!(i64::from_be_bytes(body[31..39].try_into().unwrap()), 23000);
    second.stop().await;
}

#[tokio::test]
async fn a_corrupt_state_file_is_set_aside() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("cluster_state.toml"),
        "format = 1\n[[groups]]\nna",
    )
    .unwrap();
    let tracker = TestTracker::start_in(base.path(), "").await;
    let mut client = tracker.connect().await;
    assert!(expect_status(&mut client, Command::ListAllGroups, &[], 0)
        .await
        .is_empty());
    assert!(data.join("cluster_state.toml.corrupt").is_file());
    // The tracker works normally and writes a good state again.
    let _a = storage(&tracker, 1, 23000, GB, None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(data.join("cluster_state.toml")).unwrap_or_default();
        if text.contains("id = \"1\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "state never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracker.stop().await;
}

// ---- metrics -------------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 GET; returns the status code and body.
async fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => break stream,
            Err(err) => {
                assert!(tokio::time::Instant::now() < deadline, "no http: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
        .await
        .expect("http reply in time")
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete reply");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// A series: metric name and its labels sorted by name.
type Series = (String, Vec<(String, String)>);
type Samples = BTreeMap<Series, f64>;

/// Samples of the Prometheus text format.
fn parse_metrics(text: &str) -> Samples {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap();
                let mut labels: Vec<(String, String)> = inner
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap();
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                labels.sort();
                (name.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        samples.insert((name, labels), value);
    }
    samples
}

fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    samples.get(&(name.to_string(), labels)).copied()
}

#[tokio::test]
async fn metrics_are_served_over_http() {
    let base = tempfile::tempdir().unwrap();
    let port = free_port();
    let tracker = TestTracker::start_in(base.path(), &format!("http_port = {port}")).await;
    let _a = storage(&tracker, 100001, 23000, 60 * GB, None).await;
    let mut client = tracker.connect().await;
    const QUERIES: usize = 7;
    for _ in 0..QUERIES {
        expect_status(&mut client, Command::QueryStoreWithoutGroupOne, &[], 0).await;
    }
    expect_status(
        &mut client,
        Command::QueryStoreWithGroupOne,
        &encode_group("nogroup"),
        status::ENOENT,
    )
    .await;

    // The counter is bumped once the reply is written, so poll for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let (code, body) = http(port, "GET", "/metrics").await;
        assert_eq!(code, 200);
        let samples = parse_metrics(&body);
        let ok = sample(
            &samples,
            "fdfs_tracker_requests_total",
            &[
                ("command", "query_store_without_group_one"),
                ("status", "0"),
            ],
        );
        let missing = sample(
            &samples,
            "fdfs_tracker_requests_total",
            &[("command", "query_store_with_group_one"), ("status", "2")],
        );
        if ok == Some(QUERIES as f64) && missing == Some(1.0) {
            break samples;
        }
        assert!(ok.unwrap_or(0.0) <= QUERIES as f64, "over-counted: {ok:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests_total stuck at {ok:?} / {missing:?}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let storage_labels = [("group", "group1"), ("storage", "100001")];
    assert_eq!(
        sample(
            &samples,
            "fdfs_tracker_storages",
            &[("group", "group1"), ("status", "active")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "fdfs_tracker_storages",
            &[("group", "group1"), ("status", "offline")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&samples, "fdfs_tracker_storage_free_bytes", &storage_labels),
        Some((120 * GB) as f64)
    );
    assert_eq!(
        sample(
            &samples,
            "fdfs_tracker_storage_total_bytes",
            &storage_labels
        ),
        Some((200 * GB) as f64)
    );
    let age = sample(
        &samples,
        "fdfs_tracker_storage_heartbeat_age_seconds",
        &storage_labels,
    )
    .expect("heartbeat age");
    assert!((0.0..60.0).contains(&age), "{age}");
    // The storage's report connection and this client.
    assert!(sample(&samples, "fdfs_tracker_connections_open", &[]).unwrap() >= 2.0);
    let count = sample(
        &samples,
        "fdfs_tracker_request_duration_seconds_count",
        &[("command", "query_store_without_group_one")],
    );
    assert_eq!(count, Some(QUERIES as f64));
    let inf = sample(
        &samples,
        "fdfs_tracker_request_duration_seconds_bucket",
        &[("command", "query_store_without_group_one"), ("le", "+Inf")],
    );
    assert_eq!(inf, Some(QUERIES as f64));

    assert_eq!(http(port, "GET", "/healthz").await, (200, "ok".into()));
    assert_eq!(http(port, "GET", "/nothing").await.0, 404);
    assert_eq!(http(port, "POST", "/metrics").await.0, 405);
    tracker.stop().await;
    // The HTTP endpoint stops with the tracker.
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
}

#[tokio::test]
async fn http_port_in_use_is_an_error() {
    let base = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tracker = TestTracker::start_in(base.path(), &format!("http_port = {port}")).await;
    let result = tokio::time::timeout(Duration::from_secs(10), tracker.task)
        .await
        .expect("run returns at once")
        .unwrap();
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("HTTP") && err.contains(&port.to_string()),
        "{err}"
    );
}
