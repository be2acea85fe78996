//! `fdfs bench` runs against an in-process fake cluster: a tracker and two storages that keep
//! file sizes in memory. Runs are bounded by count, so nothing here depends on timing.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{FakeServer, Reply, Request};
use fdfs_client::bench::{self, BenchConfig, Mode, SizeSpec};
use fdfs_client::ClientConfig;
use fdfs_proto::file_id::LogicalName;
use fdfs_proto::name::{base_name, size_field, NameFields, Source};
use fdfs_proto::storage_msg::{DownloadRequest, FileInfoReply, GroupAndName, UploadReply};
use fdfs_proto::tracker_msg::{FetchReply, QueryStoreAllReply, QueryStoreReply, StorageAddr};

/// Stored files: logical name → size.
type Files = Arc<Mutex<HashMap<String, u64>>>;

fn local(port: u16) -> StorageAddr {
    StorageAddr {
        ip: "127.0.0.1".into(),
        port,
    }
}

/// A storage over `files`; uploads answer `upload_status` when it is not 0.
async fn storage(files: Files, upload_status: u8) -> FakeServer {
    let serial = AtomicU32::new(1);
    FakeServer::start(move |req: &Request| {
        let mut files = files.lock().unwrap();
        match req.header.cmd {
            11 if upload_status != 0 => Reply::status(upload_status),
            11 => {
                let size = req.body.len() as u64 - 15;
                let fields = NameFields {
                    source: Source::Id(100_001),
                    timestamp: serial.fetch_add(1, Ordering::Relaxed),
                    size_field: size_field(size, false, 0),
                    crc32: 0,
                };
                let name = LogicalName::new(0, 0, 0, &base_name(&fields, "1234567"))
                    .unwrap()
                    .to_string();
                files.insert(name.clone(), size);
                Reply::ok(
                    UploadReply {
                        group: "group1".into(),
                        name,
                    }
                    .encode(),
                )
            }
            14 => {
                let request = DownloadRequest::decode(&req.body).unwrap();
                match files.get(&request.name) {
                    Some(size) => Reply::ok(vec![7u8; *size as usize]),
                    None => Reply::status(2),
                }
            }
            12 | 22 => {
                let request = GroupAndName::decode(&req.body).unwrap();
                let size = if req.header.cmd == 12 {
                    files.remove(&request.name)
                } else {
                    files.get(&request.name).copied()
                };
                match (req.header.cmd, size) {
                    (_, None) => Reply::status(2),
                    (12, Some(_)) => Reply::ok(Vec::new()),
                    (_, Some(size)) => Reply::ok(
                        FileInfoReply {
                            file_size: size,
                            create_timestamp: 1,
                            crc32: 0,
                            source_ip: "127.0.0.1".into(),
                        }
                        .encode(),
                    ),
                }
            }
            _ => Reply::status(22),
        }
    })
    .await
}

/// A tracker that sends uploads and reads to `source` and lists `source` and `peer`.
async fn tracker(source: u16, peer: u16) -> FakeServer {
    FakeServer::start(move |req: &Request| match req.header.cmd {
        101 | 104 => Reply::ok(
            QueryStoreReply {
                group: "group1".into(),
                server: local(source),
                store_path_index: 0,
            }
            .encode(),
        ),
        102 | 103 => Reply::ok(
            FetchReply {
                group: "group1".into(),
                servers: vec![local(source)],
            }
            .encode(),
        ),
        107 => Reply::ok(
            QueryStoreAllReply {
                group: "group1".into(),
                servers: vec![local(source), local(peer)],
                store_path_index: 0,
            }
            .encode(),
        ),
        _ => Reply::status(22),
    })
    .await
}

struct Cluster {
    tracker: FakeServer,
    source: FakeServer,
    source_files: Files,
}

/// A cluster whose second storage shares the first one's files (instant replication) or
/// has none of them.
async fn cluster(replicated: bool, upload_status: u8) -> Cluster {
    let source_files = Files::default();
    let source = storage(source_files.clone(), upload_status).await;
    let peer_files = if replicated {
        source_files.clone()
    } else {
        Files::default()
    };
    let peer = storage(peer_files, 0).await;
    // the fake's tasks serve until the test's runtime ends, handle or not
    let tracker = tracker(source.port, peer.port).await;
    Cluster {
        tracker,
        source,
        source_files,
    }
}

fn config(mode: Mode, count: u64, concurrency: usize) -> BenchConfig {
    let mut config = BenchConfig::new(mode);
    config.count = Some(count);
    config.duration = None;
    config.concurrency = concurrency;
    config.size = SizeSpec::fixed(1000);
    config
}

fn client_config(cluster: &Cluster) -> ClientConfig {
    ClientConfig::new(vec![cluster.tracker.addr.clone()])
}

#[tokio::test]
async fn upload_runs_count_operations_and_cleans_up() {
    let cluster = cluster(false, 0).await;
    let report = bench::run(client_config(&cluster), &config(Mode::Upload, 20, 3))
        .await
        .unwrap();
    let upload = &report.ops["upload"];
    assert_eq!((upload.ops, upload.errors, upload.bytes), (20, 0, 20_000));
    assert!(upload.latency_ms.is_some());
    assert_eq!(report.total, *upload);
    assert_eq!(report.cleanup.deleted, 20);
    assert!(cluster.source_files.lock().unwrap().is_empty());
    // each upload asked the tracker first (101), then the storage (11)
    let queries = cluster
        .tracker
        .requests()
        .iter()
        .filter(|r| r.header.cmd == 101)
        .count();
    assert_eq!(queries, 20);
}

#[tokio::test]
async fn download_prepares_reads_and_deletes() {
    let cluster = cluster(false, 0).await;
    let mut config = config(Mode::Download, 30, 2);
    config.files = Some(5);
    config.size = "100..200".parse().unwrap();
    let report = bench::run(client_config(&cluster), &config).await.unwrap();
    assert_eq!(report.prepared_files, 5);
    let download = &report.ops["download"];
    assert_eq!((download.ops, download.errors), (30, 0));
    assert!((3000..=6000).contains(&download.bytes), "{download:?}");
    assert!(
        !report.ops.contains_key("upload"),
        "preparation is not measured"
    );
    assert_eq!(report.cleanup.deleted, 5);
    assert!(cluster.source_files.lock().unwrap().is_empty());
}

#[tokio::test]
async fn mixed_runs_every_kind_and_leaves_nothing() {
    let cluster = cluster(false, 0).await;
    let mut config = config(Mode::Mixed("1:1:1".parse().unwrap()), 60, 2);
    config.files = Some(10);
    let report = bench::run(client_config(&cluster), &config).await.unwrap();
    let attempts: u64 = report.ops.values().map(|s| s.ops + s.errors).sum();
    assert_eq!(attempts, 60);
    assert_eq!(report.total.ops + report.total.errors, 60);
    assert!(report.ops.contains_key("upload") && report.ops.contains_key("download"));
    assert!(cluster.source_files.lock().unwrap().is_empty());
    assert_eq!(report.ratio.as_deref(), Some("1:1:1"));
}

#[tokio::test]
async fn keep_leaves_the_files() {
    let cluster = cluster(false, 0).await;
    let mut config = config(Mode::Upload, 4, 1);
    config.keep = true;
    let report = bench::run(client_config(&cluster), &config).await.unwrap();
    assert_eq!(report.cleanup.kept, 4);
    assert_eq!(cluster.source_files.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn pinned_storage_skips_the_tracker() {
    let cluster = cluster(false, 0).await;
    let mut config = config(Mode::Upload, 5, 1);
    config.storage = Some(cluster.source.addr.clone());
    config.group = Some("group1".into());
    let report = bench::run(client_config(&cluster), &config).await.unwrap();
    assert_eq!(report.ops["upload"].ops, 5);
    assert_eq!(
        report.storage.as_deref(),
        Some(cluster.source.addr.as_str())
    );
    assert!(cluster.tracker.requests().is_empty());
    // store path 0xFF: the storage chooses
    assert!(cluster
        .source
        .requests()
        .iter()
        .filter(|r| r.header.cmd == 11)
        .all(|r| r.body[0] == 0xFF));
}

#[tokio::test]
async fn errors_are_counted_by_status() {
    let cluster = cluster(false, 28).await;
    let report = bench::run(client_config(&cluster), &config(Mode::Upload, 7, 1))
        .await
        .unwrap();
    let upload = &report.ops["upload"];
    assert_eq!((upload.ops, upload.errors), (0, 7));
    assert_eq!(upload.errors_by_kind["status_28"], 7);
    assert!(upload.latency_ms.is_none());
    assert_eq!(report.cleanup.deleted, 0);
}

#[tokio::test]
async fn lag_reports_a_peer_without_the_file_as_not_replicated() {
    let cluster = cluster(false, 0).await;
    let mut config = config(Mode::Lag, 2, 1);
    config.lag_timeout = Duration::from_millis(100);
    config.lag_poll = Duration::from_millis(10);
    let report = bench::run(client_config(&cluster), &config).await.unwrap();
    let lag = report.lag.unwrap();
    assert_eq!(lag.samples, 2);
    assert_eq!(lag.peers.len(), 1, "the source is not its own peer");
    let peer = &lag.peers[0];
    assert_eq!(
        (peer.samples, peer.replicated, peer.not_replicated),
        (2, 0, 2)
    );
    assert!(peer.lag_ms.is_none());
    assert!(
        peer.errors_by_kind.is_empty(),
        "missing files are not errors"
    );
    assert_eq!(report.ops["upload"].ops, 2);
    assert!(cluster.source_files.lock().unwrap().is_empty());
}

#[tokio::test]
async fn lag_measures_a_replicated_peer() {
    let cluster = cluster(true, 0).await;
    let mut config = config(Mode::Lag, 3, 1);
    config.lag_poll = Duration::from_millis(1);
    let report = bench::run(client_config(&cluster), &config).await.unwrap();
    let lag = report.lag.as_ref().unwrap();
    let peer = &lag.peers[0];
    assert_eq!((peer.replicated, peer.not_replicated), (3, 0));
    assert!(peer.lag_ms.is_some());
    assert!(report.to_json().contains("\"replicated\":3"));
}
