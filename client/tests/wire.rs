//! The bytes the client puts on the wire, checked against the captures of the spec (P.*)
//! with fake trackers and storages running in-process.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{dead_addr, hex, FakeServer, Reply, Request};
use fdfs_client::{
    Client, ClientConfig, ClientError, FileId, FileKind, MetadataOp, Source, UploadOptions,
};
use fdfs_proto::storage_msg::{DownloadRequest, FileInfoReply, UploadReply};
use fdfs_proto::tracker_msg::{FetchReply, QueryStoreAllReply, QueryStoreReply, StorageAddr};

const NAME: &str = "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt";
const NAME_HEX: &str =
    "4d30302f30302f30302f66774141483273446265474156577a6b41414141426a59364d43413237352e747874";
const GROUP_HEX: &str = "67726f75703100000000000000000000";

fn id() -> FileId {
    FileId::parse(&format!("group1/{NAME}")).unwrap()
}

fn local(port: u16) -> StorageAddr {
    StorageAddr {
        ip: "127.0.0.1".into(),
        port,
    }
}

/// A tracker that sends every query to the storage on `port`, store path `path_index`.
async fn tracker_for(port: u16, path_index: u8) -> FakeServer {
    FakeServer::start(move |req: &Request| match req.header.cmd {
        101 | 104 => Reply::ok(
            QueryStoreReply {
                group: "group1".into(),
                server: local(port),
                store_path_index: path_index,
            }
            .encode(),
        ),
        102 | 103 => Reply::ok(
            FetchReply {
                group: "group1".into(),
                servers: vec![local(port)],
            }
            .encode(),
        ),
        106 | 107 => Reply::ok(
            QueryStoreAllReply {
                group: "group1".into(),
                servers: vec![local(port), local(port + 1)],
                store_path_index: path_index,
            }
            .encode(),
        ),
        _ => Reply::status(22),
    })
    .await
}

fn client(trackers: &[&str]) -> Client {
    let mut config = ClientConfig::new(trackers.iter().map(|t| t.to_string()).collect());
    config.connect_timeout = Duration::from_secs(5);
    config.network_timeout = Duration::from_secs(10);
    Client::new(config).unwrap()
}

fn upload_reply(name: &str) -> Reply {
    Reply::ok(
        UploadReply {
            group: "group1".into(),
            name: name.into(),
        }
        .encode(),
    )
}

fn cmds(server: &FakeServer) -> Vec<u8> {
    server.requests().iter().map(|r| r.header.cmd).collect()
}

#[tokio::test]
async fn upload_sends_the_captured_bytes() {
    let storage = FakeServer::start(|req: &Request| match req.header.cmd {
        11 => upload_reply(NAME),
        _ => Reply::status(22),
    })
    .await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    let options = UploadOptions {
        ext: "txt".into(),
        ..Default::default()
    };
    let id = client.upload_bytes(b"hello\n", &options).await.unwrap();
    assert_eq!(id.to_string(), format!("group1/{NAME}"));

    // P.1 and P.2
    assert_eq!(tracker.requests()[0].raw(), hex("00000000000000006500"));
    assert_eq!(
        storage.requests()[0].raw(),
        hex("00000000000000150b00 00 0000000000000006 747874000000 68656c6c6f0a")
    );
}

#[tokio::test]
async fn upload_to_a_group_streams_with_the_tracker_store_path() {
    let storage = FakeServer::start(|_: &Request| upload_reply(NAME)).await;
    let tracker = tracker_for(storage.port, 3).await;
    let client = client(&[&tracker.addr]);
    let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
    let options = UploadOptions {
        group: Some("group1".into()),
        ..Default::default()
    };
    client
        .upload_reader(&data[..], data.len() as u64, &options)
        .await
        .unwrap();
    let query = &tracker.requests()[0];
    assert_eq!(
        query.raw(),
        hex(&format!("0000000000000010 6800 {GROUP_HEX}"))
    );
    let upload = &storage.requests()[0];
    assert_eq!(upload.header.cmd, 11);
    assert_eq!(upload.header.pkg_len, 15 + data.len() as i64);
    assert_eq!(upload.body[0], 3, "store path index from the tracker");
    assert_eq!(&upload.body[1..9], &(data.len() as u64).to_be_bytes());
    assert_eq!(&upload.body[9..15], &[0u8; 6], "no extension");
    assert!(upload.body[15..] == data[..], "content differs");
}

#[tokio::test]
async fn upload_refuses_bad_input_and_short_readers() {
    let storage = FakeServer::start(|_: &Request| upload_reply(NAME)).await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    for options in [
        UploadOptions {
            ext: "t/t".into(),
            ..Default::default()
        },
        UploadOptions {
            group: Some("bad group".into()),
            ..Default::default()
        },
        UploadOptions {
            metadata: vec![("a\u{1}".into(), "v".into())],
            ..Default::default()
        },
    ] {
        let err = client.upload_bytes(b"x", &options).await.unwrap_err();
        assert!(matches!(err, ClientError::InvalidInput { .. }), "{err}");
    }
    assert!(
        tracker.requests().is_empty(),
        "nothing is sent for bad input"
    );

    let err = client
        .upload_reader(&b"short"[..], 10, &UploadOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("5 of 10 bytes"), "{err}");
}

#[tokio::test]
async fn upload_with_metadata_sets_it_on_the_same_connection() {
    let storage = FakeServer::start(|req: &Request| match req.header.cmd {
        11 => upload_reply(NAME),
        13 => Reply::ok(Vec::new()),
        _ => Reply::status(22),
    })
    .await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    let options = UploadOptions {
        ext: "txt".into(),
        group: None,
        metadata: vec![
            ("width".into(), "160".into()),
            ("author".into(), "me".into()),
        ],
    };
    client.upload_bytes(b"hello\n", &options).await.unwrap();
    let requests = storage.requests();
    assert_eq!(cmds(&storage), [11, 13]);
    assert_eq!(requests[0].conn, requests[1].conn);
    let meta = b"width\x02160\x01author\x02me";
    let mut expected = hex(&format!(
        "{:016x}0d00 000000000000002c {:016x} 4f {GROUP_HEX} {NAME_HEX}",
        33 + 44 + meta.len(),
        meta.len()
    ));
    expected.extend_from_slice(meta);
    assert_eq!(requests[1].raw(), expected);
}

#[tokio::test]
async fn failed_metadata_deletes_the_upload() {
    let storage = FakeServer::start(|req: &Request| match req.header.cmd {
        11 => upload_reply(NAME),
        // the storage closes after EINVAL (A.4)
        13 => Reply::AnswerAndClose(22, Vec::new()),
        12 => Reply::ok(Vec::new()),
        _ => Reply::status(22),
    })
    .await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    let options = UploadOptions {
        metadata: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    let err = client.upload_bytes(b"hello\n", &options).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidArgument), "{err}");
    let requests = storage.requests();
    assert_eq!(cmds(&storage), [11, 13, 12]);
    assert_ne!(
        requests[2].conn, requests[1].conn,
        "closed connection reused"
    );
    assert_eq!(
        requests[2].raw(),
        hex(&format!("000000000000003c0c00 {GROUP_HEX} {NAME_HEX}"))
    );
}

/// A storage holding `content` under every name, answering downloads as F.3 says.
async fn storage_with(content: &'static [u8]) -> FakeServer {
    FakeServer::start(move |req: &Request| match req.header.cmd {
        14 => {
            let request = DownloadRequest::decode(&req.body).unwrap();
            let start = request.offset as usize;
            if start >= content.len() {
                return Reply::status(22);
            }
            let rest = content.len() - start;
            let len = match request.length as usize {
                0 => rest,
                n => n.min(rest),
            };
            Reply::ok(content[start..start + len].to_vec())
        }
        _ => Reply::status(22),
    })
    .await
}

#[tokio::test]
async fn download_sends_the_captured_bytes() {
    let storage = storage_with(b"hello world, fastdfs!\n").await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    assert_eq!(
        client.download_bytes(&id(), 0, 0).await.unwrap(),
        b"hello world, fastdfs!\n"
    );
    // P.3 and P.4
    assert_eq!(
        tracker.requests()[0].raw(),
        hex(&format!("000000000000003c6600 {GROUP_HEX} {NAME_HEX}"))
    );
    assert_eq!(
        storage.requests()[0].raw(),
        hex(&format!(
            "000000000000004c0e00 0000000000000000 0000000000000000 {GROUP_HEX} {NAME_HEX}"
        ))
    );

    // a range (F.3), streamed into a writer on the same pooled connection
    let mut out = Vec::new();
    let written = client
        .download_to_writer(&id(), 6, 5, &mut out)
        .await
        .unwrap();
    assert_eq!((written, out.as_slice()), (5, &b"world"[..]));
    let requests = storage.requests();
    assert_eq!(
        &requests[1].body[..16],
        &hex("0000000000000006 0000000000000005")[..]
    );
    assert_eq!(requests[0].conn, requests[1].conn);
}

#[tokio::test]
async fn download_longer_than_requested_is_a_protocol_error() {
    let storage = FakeServer::start(|_: &Request| Reply::ok(b"hello\n".to_vec())).await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    let err = client.download_bytes(&id(), 0, 3).await.unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err}");
    // the unread body leaves the connection out of sync: the next request uses a new one
    assert_eq!(
        client.download_bytes(&id(), 0, 0).await.unwrap(),
        b"hello\n"
    );
    let requests = storage.requests();
    assert_ne!(requests[0].conn, requests[1].conn);
}

#[tokio::test]
async fn download_file_writes_through_a_temporary_file() {
    let served = AtomicUsize::new(0);
    let storage = FakeServer::start(move |_: &Request| {
        if served.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::ok(b"hello\n".to_vec())
        } else {
            Reply::status(2)
        }
    })
    .await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.txt");
    assert_eq!(client.download_file(&id(), &path).await.unwrap(), 6);
    assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
    // a failed download leaves the old file and no temporary file behind
    let err = client.download_file(&id(), &path).await;
    assert!(matches!(err, Err(ClientError::NotFound)), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn metadata_requests_match_the_capture() {
    let master = "M00/00/00/fwAAH2sDbfeAf-LuAAAABjY6MCA716.txt";
    let stored = b"ext_name\x02jpg\x01file_size\x02115120".to_vec();
    let storage = FakeServer::start(move |req: &Request| match req.header.cmd {
        13 => Reply::ok(Vec::new()),
        15 => Reply::ok(stored.clone()),
        _ => Reply::status(22),
    })
    .await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    let id = FileId::parse(&format!("group1/{master}")).unwrap();
    let pairs: Vec<(String, String)> = [
        ("ext_name", "jpg"),
        ("width", "160"),
        ("height", "80"),
        ("file_size", "115120"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    client
        .set_metadata(&id, &pairs, MetadataOp::Overwrite)
        .await
        .unwrap();
    // P.5, after a QUERY_UPDATE (103)
    assert_eq!(tracker.requests()[0].header.cmd, 103);
    assert_eq!(
        storage.requests()[0].raw(),
        hex(
            "000000000000007e0d00 000000000000002c 0000000000000031 4f
             67726f75703100000000000000000000
             4d30302f30302f30302f667741414832734462666541662d4c7541414141426a59364d43413731362e747874
             6578745f6e616d65026a706701776964746802313630016865696768740238300166696c655f73697a6502313135313230"
        )
    );
    client
        .set_metadata(&id, &pairs[..1], MetadataOp::Merge)
        .await
        .unwrap();
    assert_eq!(storage.requests()[1].body[16], b'M');

    // GET_METADATA also goes through 103 (D.2)
    let got = client.get_metadata(&id).await.unwrap();
    assert_eq!(
        got,
        [
            ("ext_name".to_string(), "jpg".to_string()),
            ("file_size".to_string(), "115120".to_string())
        ]
    );
    assert_eq!(tracker.requests()[2].header.cmd, 103);
    let get = &storage.requests()[2];
    assert_eq!(get.header.cmd, 15);
    assert_eq!(
        get.body,
        [hex(GROUP_HEX), master.as_bytes().to_vec()].concat()
    );
}

#[tokio::test]
async fn file_info_asks_the_storage_and_decodes_the_name() {
    let storage = FakeServer::start(|req: &Request| match req.header.cmd {
        22 => Reply::ok(
            FileInfoReply {
                file_size: 6,
                create_timestamp: 0x6b036deb,
                crc32: 0x8036CEA3,
                source_ip: "127.0.0.31".into(),
            }
            .encode(),
        ),
        _ => Reply::status(22),
    })
    .await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    let appender = FileId::parse("group1/M00/00/00/fwAAH2sDbeuEAzFAAAAAADY6MCA790.txt").unwrap();
    let info = client.file_info(&appender).await.unwrap();
    assert_eq!(info.size, 6);
    assert_eq!(info.create_timestamp, 0x6b036deb);
    assert_eq!(info.crc32, 0x8036CEA3);
    assert_eq!(info.source_ip, "127.0.0.31");
    assert_eq!(info.kind, FileKind::Appender);
    assert_eq!(info.source, Source::Ip("127.0.0.31".parse().unwrap()));
    assert_eq!(tracker.requests()[0].header.cmd, 102);
    let query = &storage.requests()[0];
    assert_eq!((query.header.cmd, query.header.status), (22, 0));

    // a name too short to decode is refused before anything is sent
    let short = FileId::parse("group1/M00/00/00/abcdefgh").unwrap();
    assert!(matches!(
        client.file_info(&short).await,
        Err(ClientError::InvalidFileId(_))
    ));
    assert_eq!(tracker.requests().len(), 1);
}

#[tokio::test]
async fn connections_with_einval_are_not_reused_but_other_statuses_are() {
    let storage = FakeServer::start(|req: &Request| match req.conn {
        0 => Reply::status(22),
        _ => Reply::status(2),
    })
    .await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    assert!(matches!(
        client.delete(&id()).await,
        Err(ClientError::InvalidArgument)
    ));
    assert!(matches!(
        client.delete(&id()).await,
        Err(ClientError::NotFound)
    ));
    assert!(matches!(
        client.delete(&id()).await,
        Err(ClientError::NotFound)
    ));
    let conns: Vec<usize> = storage.requests().iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0, 1, 1]);
    // the tracker connection was reused all along
    assert!(tracker.requests().iter().all(|r| r.conn == 0));
}

#[tokio::test]
async fn connections_closed_by_the_server_are_replaced() {
    let storage =
        FakeServer::start(|_: &Request| Reply::AnswerAndClose(0, b"hello\n".to_vec())).await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    for _ in 0..3 {
        assert_eq!(
            client.download_bytes(&id(), 0, 0).await.unwrap(),
            b"hello\n"
        );
    }
    let conns: Vec<usize> = storage.requests().iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0, 1, 2]);
}

#[tokio::test]
async fn dead_pooled_connections_are_retried_for_idempotent_requests_only() {
    // every connection serves one request; the second one finds it closed, unanswered
    let storage = FakeServer::start(|req: &Request| match (req.seq, req.header.cmd) {
        (0, 14) => Reply::ok(b"hello\n".to_vec()),
        (0, _) => Reply::ok(Vec::new()),
        _ => Reply::Close,
    })
    .await;
    let tracker = tracker_for(storage.port, 0).await;
    let client = client(&[&tracker.addr]);
    for _ in 0..2 {
        assert_eq!(
            client.download_bytes(&id(), 0, 0).await.unwrap(),
            b"hello\n"
        );
    }
    let conns: Vec<usize> = storage.requests().iter().map(|r| r.conn).collect();
    assert_eq!(
        conns,
        [0, 0, 1],
        "the download was not retried on a new connection"
    );

    // a delete might have happened before the connection died: never sent twice
    let err = client.delete(&id()).await.unwrap_err();
    assert!(matches!(err, ClientError::Io(_)), "{err}");
    assert_eq!(cmds(&storage), [14, 14, 14, 12]);
}

#[tokio::test]
async fn trackers_fail_over_on_connection_errors_only() {
    let dead = dead_addr().await;
    let storage = FakeServer::start(|_: &Request| Reply::ok(b"x".to_vec())).await;
    let live = tracker_for(storage.port, 0).await;
    let client = client(&[&dead, &live.addr]);
    assert_eq!(client.download_bytes(&id(), 0, 0).await.unwrap(), b"x");
    assert_eq!(live.requests().len(), 1);

    // a status answer is final: the second tracker is not asked
    let refusing = FakeServer::start(|_: &Request| Reply::status(2)).await;
    let other = tracker_for(storage.port, 0).await;
    let client = self::client(&[&refusing.addr, &other.addr]);
    assert!(matches!(
        client.download_bytes(&id(), 0, 0).await,
        Err(ClientError::NotFound)
    ));
    assert!(other.requests().is_empty());
    // the next request starts from the next tracker
    assert_eq!(client.download_bytes(&id(), 0, 0).await.unwrap(), b"x");
    assert_eq!(other.requests().len(), 1);
}

#[tokio::test]
async fn no_tracker_reachable_names_what_was_tried() {
    let first = dead_addr().await;
    let second = dead_addr().await;
    let client = client(&[&first, &second]);
    let err = client.query_store_all(None).await.unwrap_err();
    match &err {
        ClientError::NoTracker { tried, last } => {
            assert_eq!(tried, &[first.clone(), second.clone()]);
            assert_eq!(last, "connection refused");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("is fdfs-trackerd running?"));
}

#[tokio::test]
async fn query_store_all_lists_the_storages() {
    let tracker = tracker_for(23000, 1).await;
    let client = client(&[&tracker.addr]);
    let reply = client.query_store_all(None).await.unwrap();
    let servers: Vec<String> = reply.servers.iter().map(ToString::to_string).collect();
    assert_eq!(servers, ["127.0.0.1:23000", "127.0.0.1:23001"]);
    assert_eq!(reply.store_path_index, 1);
    client.query_store_all(Some("group1")).await.unwrap();
    let requests = tracker.requests();
    assert_eq!(requests[0].raw(), hex("0000000000000000 6a00"));
    assert_eq!(
        requests[1].raw(),
        hex(&format!("0000000000000010 6b00 {GROUP_HEX}"))
    );
}

#[tokio::test]
async fn network_timeout_applies_to_each_read() {
    let storage = FakeServer::start(|_: &Request| Reply::Hang).await;
    let tracker = tracker_for(storage.port, 0).await;
    let mut config = ClientConfig::new(vec![tracker.addr.clone()]);
    config.network_timeout = Duration::from_millis(300);
    let client = Client::new(config).unwrap();
    let started = Instant::now();
    let err = client.download_bytes(&id(), 0, 0).await.unwrap_err();
    match &err {
        ClientError::Io(io) => assert_eq!(io.kind(), std::io::ErrorKind::TimedOut),
        other => panic!("unexpected {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}
