//! Appender and slave operations on the wire (F.1, F.2, F.8–F.11, P.6), against in-process
//! fake servers.

mod common;

use common::{hex, FakeServer, Reply, Request};
use fdfs_client::{Client, ClientConfig, ClientError, FileId, UploadOptions};
use fdfs_proto::storage_msg::UploadReply;
use fdfs_proto::tracker_msg::{FetchReply, QueryStoreReply, StorageAddr};

const APPENDER: &str = "M00/00/00/fwAAH2sDbeuEAzFAAAAAADY6MCA790.txt";
const APPENDER_HEX: &str =
    "4d30302f30302f30302f667741414832734462657545417a464141414141414459364d43413739302e747874";
const REGENERATED: &str = "M00/00/00/fwAAH2sDb2eAIcp1AAAADC_HDHc440.txt";
const MASTER: &str = "M00/00/00/fwAAH2sDbfeAf-LuAAAABjY6MCA716.txt";
const SLAVE: &str = "M00/00/00/fwAAH2sDbfeAf-LuAAAABjY6MCA7161024x1024.txt";

fn reply_name(name: &str) -> Reply {
    Reply::ok(
        UploadReply {
            group: "group1".into(),
            name: name.into(),
        }
        .encode(),
    )
}

/// A storage answering every appender/slave command, and a tracker pointing at it.
async fn cluster() -> (FakeServer, FakeServer, Client) {
    let storage = FakeServer::start(|req: &Request| match req.header.cmd {
        23 => reply_name(APPENDER),
        21 => reply_name(SLAVE),
        38 => reply_name(REGENERATED),
        24 | 34 | 36 => Reply::ok(Vec::new()),
        _ => Reply::status(22),
    })
    .await;
    let port = storage.port;
    let addr = StorageAddr {
        ip: "127.0.0.1".into(),
        port,
    };
    let tracker = FakeServer::start(move |req: &Request| match req.header.cmd {
        101 => Reply::ok(
            QueryStoreReply {
                group: "group1".into(),
                server: addr.clone(),
                store_path_index: 0,
            }
            .encode(),
        ),
        103 => Reply::ok(
            FetchReply {
                group: "group1".into(),
                servers: vec![addr.clone()],
            }
            .encode(),
        ),
        _ => Reply::status(22),
    })
    .await;
    let client = Client::new(ClientConfig::new(vec![tracker.addr.clone()])).unwrap();
    (tracker, storage, client)
}

fn appender() -> FileId {
    FileId::parse(&format!("group1/{APPENDER}")).unwrap()
}

#[tokio::test]
async fn appender_upload_uses_command_23() {
    let (tracker, storage, client) = cluster().await;
    let options = UploadOptions {
        ext: "txt".into(),
        ..Default::default()
    };
    let id = client
        .upload_appender_bytes(b"hello\n", &options)
        .await
        .unwrap();
    assert_eq!(id, appender());
    assert_eq!(tracker.requests()[0].header.cmd, 101);
    assert_eq!(
        storage.requests()[0].raw(),
        hex("0000000000000015 1700 00 0000000000000006 747874000000 68656c6c6f0a")
    );
}

#[tokio::test]
async fn append_modify_truncate_and_regenerate_bytes() {
    let (tracker, storage, client) = cluster().await;
    let id = appender();
    client.append_bytes(&id, b"hello\n").await.unwrap();
    client.modify_bytes(&id, 3, b"LO").await.unwrap();
    client.truncate(&id, 4).await.unwrap();
    let new_id = client.regenerate(&id).await.unwrap();
    assert_eq!(new_id.to_string(), format!("group1/{REGENERATED}"));

    // every update is routed by QUERY_UPDATE with the appender's name
    for query in tracker.requests() {
        assert_eq!(query.header.cmd, 103);
        assert_eq!(
            query.body,
            hex(&format!("67726f75703100000000000000000000 {APPENDER_HEX}"))
        );
    }
    let requests = storage.requests();
    // F.8: name_len, append_size, name, content (no group)
    assert_eq!(
        requests[0].raw(),
        hex(&format!(
            "0000000000000042 1800 000000000000002c 0000000000000006 {APPENDER_HEX} 68656c6c6f0a"
        ))
    );
    // F.9: name_len, offset, size, name, content
    assert_eq!(
        requests[1].raw(),
        hex(&format!(
            "0000000000000046 2200 000000000000002c 0000000000000003 0000000000000002 {APPENDER_HEX} 4c4f"
        ))
    );
    // F.10: name_len, new_size, name
    assert_eq!(
        requests[2].raw(),
        hex(&format!(
            "000000000000003c 2400 000000000000002c 0000000000000004 {APPENDER_HEX}"
        ))
    );
    // F.11: the bare name
    assert_eq!(
        requests[3].raw(),
        hex(&format!("000000000000002c 2600 {APPENDER_HEX}"))
    );
}

#[tokio::test]
async fn slave_upload_matches_the_capture() {
    let (tracker, storage, client) = cluster().await;
    let master = FileId::parse(&format!("group1/{MASTER}")).unwrap();
    let slave = client
        .upload_slave_bytes(&master, "1024x1024", "txt", b"hello\n")
        .await
        .unwrap();
    assert_eq!(slave.to_string(), format!("group1/{SLAVE}"));
    assert_eq!(tracker.requests()[0].header.cmd, 103);
    assert_eq!(&tracker.requests()[0].body[16..], MASTER.as_bytes());
    // P.6
    assert_eq!(
        storage.requests()[0].raw(),
        hex(
            "00000000000000581500 000000000000002c 0000000000000006
             31303234783130323400000000000000 747874000000
             4d30302f30302f30302f667741414832734462666541662d4c7541414141426a59364d43413731362e747874
             68656c6c6f0a"
        )
    );
}

#[tokio::test]
async fn slave_file_takes_the_extension_from_its_name() {
    let (_tracker, storage, client) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("thumb.png");
    std::fs::write(&path, b"png data").unwrap();
    let master = FileId::parse(&format!("group1/{MASTER}")).unwrap();
    client
        .upload_slave_file(&master, "_s", "", &path)
        .await
        .unwrap();
    let request = &storage.requests()[0];
    assert_eq!(&request.body[32..38], b"png\0\0\0");
    assert!(request.body.ends_with(b"png data"));
}

#[tokio::test]
async fn bad_requests_are_refused_locally() {
    let (tracker, _storage, client) = cluster().await;
    let normal = FileId::parse("group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt").unwrap();
    for result in [
        client.append_bytes(&normal, b"x").await,
        client.modify_bytes(&normal, 0, b"x").await,
        client.truncate(&normal, 0).await,
        client.regenerate(&normal).await.map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, ClientError::InvalidInput { .. }), "{err}");
        assert!(err.to_string().contains("not an appender"), "{err}");
    }
    let master = FileId::parse(&format!("group1/{MASTER}")).unwrap();
    for (prefix, ext) in [("", "txt"), ("a/b", ""), ("-m", ""), ("_s", "toolong")] {
        let err = client
            .upload_slave_bytes(&master, prefix, ext, b"x")
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidInput { .. }),
            "{prefix:?}: {err}"
        );
    }
    assert!(tracker.requests().is_empty(), "nothing may be sent");
}

#[tokio::test]
async fn status_answers_are_reported() {
    let storage = FakeServer::start(|_: &Request| Reply::status(2)).await;
    let port = storage.port;
    let tracker = FakeServer::start(move |_: &Request| {
        Reply::ok(
            FetchReply {
                group: "group1".into(),
                servers: vec![StorageAddr {
                    ip: "127.0.0.1".into(),
                    port,
                }],
            }
            .encode(),
        )
    })
    .await;
    let client = Client::new(ClientConfig::new(vec![tracker.addr.clone()])).unwrap();
    assert!(matches!(
        client.append_bytes(&appender(), b"x").await,
        Err(ClientError::NotFound)
    ));
    assert!(matches!(
        client.regenerate(&appender()).await,
        Err(ClientError::NotFound)
    ));
}
