//! In-process tests of the appender commands (23, 24, 34, 36, 38) and slave uploads (21).

mod common;

use common::*;
use fdfs_proto::field::{put_fixed, put_i64};
use fdfs_proto::name::{classify, FileKind, NameFields};
use fdfs_proto::storage_msg::{FileInfoReply, UploadReply};

fn append_body(name: &str, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_i64(&mut out, name.len() as i64);
    put_i64(&mut out, content.len() as i64);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(content);
    out
}

fn modify_body(name: &str, offset: u64, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_i64(&mut out, name.len() as i64);
    put_i64(&mut out, offset as i64);
    put_i64(&mut out, content.len() as i64);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(content);
    out
}

fn truncate_body(name: &str, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_i64(&mut out, name.len() as i64);
    put_i64(&mut out, size as i64);
    out.extend_from_slice(name.as_bytes());
    out
}

fn slave_body(master: &str, prefix: &str, ext: &str, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_i64(&mut out, master.len() as i64);
    put_i64(&mut out, content.len() as i64);
    put_fixed(&mut out, prefix.as_bytes(), 16);
    put_fixed(&mut out, ext.as_bytes(), 6);
    out.extend_from_slice(master.as_bytes());
    out.extend_from_slice(content);
    out
}

async fn info(conn: &mut Conn, name: &str, flags: u8) -> FileInfoReply {
    FileInfoReply::decode(&query_info(conn, name, flags).await.unwrap()).unwrap()
}

#[tokio::test]
async fn appender_lifecycle() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let name = upload(&mut conn, 23, "txt", b"hello\n").await.unwrap();
    let fields = NameFields::from_logical_name(&name).unwrap();
    assert_eq!(classify(&name, &fields), FileKind::Appender);

    assert_eq!(
        simple(&mut conn, 24, &append_body(&name, b"hello\n"))
            .await
            .unwrap(),
        b""
    );
    assert_eq!(
        download(&mut conn, &name, 0, 0).await.unwrap(),
        b"hello\nhello\n"
    );
    let got = info(&mut conn, &name, 0).await;
    assert_eq!((got.file_size, got.crc32), (12, 0x2FC7_0C77));

    // zero-length append: empty success, connection usable
    assert_eq!(
        simple(&mut conn, 24, &append_body(&name, b""))
            .await
            .unwrap(),
        b""
    );
    active_test(&mut conn).await;

    simple(&mut conn, 34, &modify_body(&name, 0, b"HELLO"))
        .await
        .unwrap();
    simple(&mut conn, 34, &modify_body(&name, 12, b"!"))
        .await
        .unwrap();
    assert_eq!(
        download(&mut conn, &name, 0, 0).await.unwrap(),
        b"HELLO\nhello\n!"
    );
    assert_eq!(
        simple(&mut conn, 34, &modify_body(&name, 13, b""))
            .await
            .unwrap(),
        b""
    );

    simple(&mut conn, 36, &truncate_body(&name, 5))
        .await
        .unwrap();
    assert_eq!(download(&mut conn, &name, 0, 0).await.unwrap(), b"HELLO");
    // growing by truncate is refused (EINVAL closes the connection)
    let mut refused = server.connect().await;
    assert_eq!(
        status_of(simple(&mut refused, 36, &truncate_body(&name, 8)).await),
        22
    );
    assert_eq!(download(&mut conn, &name, 0, 0).await.unwrap(), b"HELLO");
    simple(&mut conn, 36, &truncate_body(&name, 5))
        .await
        .unwrap();
    simple(&mut conn, 36, &truncate_body(&name, 0))
        .await
        .unwrap();
    simple(&mut conn, 24, &append_body(&name, b"hello\nhello\n"))
        .await
        .unwrap();

    let reply = simple(&mut conn, 38, name.as_bytes()).await.unwrap();
    let reply = UploadReply::decode(&reply).unwrap();
    assert_eq!(reply.group, "group1");
    let renamed = reply.name;
    assert_eq!(renamed.len(), 44);
    assert_eq!(&renamed[37..], &name[37..], "suffix kept");
    assert_eq!(&renamed[..10], &name[..10], "directory kept");
    let fields = NameFields::from_logical_name(&renamed).unwrap();
    assert_eq!(classify(&renamed, &fields), FileKind::Normal);
    assert_eq!((fields.file_size(), fields.crc32), (12, 0x2FC7_0C77));
    assert_eq!(
        download(&mut conn, &renamed, 0, 0).await.unwrap(),
        b"hello\nhello\n"
    );
    assert_eq!(status_of(download(&mut conn, &name, 0, 0).await), 2);
    // the renamed file is no longer an appender
    assert_eq!(
        status_of(simple(&mut conn, 24, &append_body(&renamed, b"x")).await),
        22
    );
    assert_closed(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn appender_errors() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let normal = upload(&mut conn, 11, "txt", b"hello\n").await.unwrap();
    let appender = upload(&mut conn, 23, "txt", b"hello\n").await.unwrap();
    for (cmd, body) in [
        (24u8, append_body(&normal, b"x")),
        (34, modify_body(&normal, 0, b"x")),
        (36, truncate_body(&normal, 1)),
        (38, normal.as_bytes().to_vec()),
        // offset beyond the end
        (34, modify_body(&appender, 7, b"x")),
        // name shorter than a normal name
        (24, append_body("M00/00/00/abc", b"x")),
        (38, b"M00/00/00/abc".to_vec()),
        // traversal
        (
            36,
            truncate_body("M00/00/00/../../../../../../etc/passwd", 0),
        ),
    ] {
        let mut conn = server.connect().await;
        assert_eq!(
            status_of(simple(&mut conn, cmd, &body).await),
            22,
            "cmd {cmd}"
        );
        assert_closed(&mut conn).await;
    }
    assert_eq!(
        download(&mut conn, &normal, 0, 0).await.unwrap(),
        b"hello\n"
    );
    assert_eq!(
        download(&mut conn, &appender, 0, 0).await.unwrap(),
        b"hello\n"
    );

    // a missing appender: 2; with nothing left unread the connection stays open
    simple(&mut conn, 12, &group_and_name("group1", &appender))
        .await
        .unwrap();
    assert_eq!(
        status_of(simple(&mut conn, 24, &append_body(&appender, b"")).await),
        2
    );
    assert_eq!(
        status_of(simple(&mut conn, 36, &truncate_body(&appender, 0)).await),
        2
    );
    assert_eq!(
        status_of(simple(&mut conn, 38, appender.as_bytes()).await),
        2
    );
    active_test(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn concurrent_appends_never_interleave() {
    const BLOCK: usize = 8 * 1024;
    const ROUNDS: usize = 40;
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let name = upload(&mut conn, 23, "bin", b"").await.unwrap();
    let mut tasks = Vec::new();
    for byte in [b'a', b'b', b'c'] {
        let mut conn = server.connect().await;
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                simple(&mut conn, 24, &append_body(&name, &[byte; BLOCK]))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let content = download(&mut conn, &name, 0, 0).await.unwrap();
    assert_eq!(content.len(), 3 * ROUNDS * BLOCK);
    let mut counts = [0usize; 3];
    for block in content.chunks(BLOCK) {
        assert!(block.iter().all(|&b| b == block[0]), "interleaved block");
        counts[usize::from(block[0] - b'a')] += 1;
    }
    assert_eq!(counts, [ROUNDS; 3]);
    server.stop().await;
}

#[tokio::test]
async fn interrupted_append_leaves_file_unchanged() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let name = upload(&mut conn, 23, "txt", b"base").await.unwrap();
    let mut broken = server.connect().await;
    let body = append_body(&name, &[7u8; 300_000]);
    let header = fdfs_proto::Header::request(24, 16 + name.len() as u64 + 1_000_000);
    broken.send(header, &body).await.unwrap();
    drop(broken);
    // the next append waits for the broken one (same file lock), then lands after "base"
    simple(&mut conn, 24, &append_body(&name, b"+next"))
        .await
        .unwrap();
    assert_eq!(
        download(&mut conn, &name, 0, 0).await.unwrap(),
        b"base+next"
    );
    server.stop().await;
}

#[tokio::test]
async fn slave_uploads() {
    let server = TestServer::start("").await;
    let mut conn = server.connect().await;
    let master = upload(&mut conn, 11, "txt", b"hello\n").await.unwrap();
    let reply = simple(
        &mut conn,
        21,
        &slave_body(&master, "1024x1024", "txt", b"slave!\n"),
    )
    .await
    .unwrap();
    let reply = UploadReply::decode(&reply).unwrap();
    assert_eq!(reply.group, "group1");
    let slave = reply.name;
    assert_eq!(slave, format!("{}1024x1024.txt", &master[..40]));
    assert_eq!(
        download(&mut conn, &slave, 0, 0).await.unwrap(),
        b"slave!\n"
    );
    // file info of a slave: current size, crc computed over the content
    let got = info(&mut conn, &slave, 0).await;
    assert_eq!(
        (got.file_size, got.crc32),
        (7, crc32fast::hash(b"slave!\n"))
    );
    assert_eq!(info(&mut conn, &slave, 1).await.crc32, 0);

    let bare = UploadReply::decode(
        &simple(&mut conn, 21, &slave_body(&master, "_s", "", b"x"))
            .await
            .unwrap(),
    )
    .unwrap()
    .name;
    assert_eq!(bare, format!("{}_s", &master[..40]));

    // exists: 17
    let mut other = server.connect().await;
    assert_eq!(
        status_of(simple(&mut other, 21, &slave_body(&master, "_s", "", b"y")).await),
        17
    );
    assert_eq!(download(&mut conn, &bare, 0, 0).await.unwrap(), b"x");
    // slave of a slave, -m without extension, empty prefix: 22
    for body in [
        slave_body(&slave, "_t", "txt", b"y"),
        slave_body(&master, "-m", "", b"y"),
        slave_body(&master, "", "txt", b"y"),
        slave_body(&master, "a/b", "txt", b"y"),
    ] {
        let mut other = server.connect().await;
        assert_eq!(status_of(simple(&mut other, 21, &body).await), 22);
        assert_closed(&mut other).await;
    }
    // master missing: 2
    simple(&mut conn, 12, &group_and_name("group1", &master))
        .await
        .unwrap();
    let mut other = server.connect().await;
    assert_eq!(
        status_of(simple(&mut other, 21, &slave_body(&master, "_q", "", b"y")).await),
        2
    );
    server.stop().await;
}
