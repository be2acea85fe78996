//! Shared helpers of the in-process tests: a storage running `run()` on 127.0.0.1:0, request
//! builders speaking raw FastDFS bytes, and a fake tracker.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fdfs_proto::conn::Connection;
use fdfs_proto::field::{put_fixed, put_i64};
use fdfs_proto::storage_msg::{MetadataOp, SetMetadataRequest, UploadPrefix, UploadReply};
use fdfs_proto::tracker_msg::{BeatReply, BeatRequest, JoinReply, JoinRequest, StorageBrief};
use fdfs_proto::ProtoError;
use fdfs_storage::{StorageConfig, StorageError};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type Conn = Connection<TcpStream>;

const DEADLINE: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), StorageError>>,
}

impl TestServer {
    /// A storage whose only tracker is unreachable.
    pub async fn start(extra: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), "127.0.0.1:1", extra).await
    }

    pub async fn start_with_tracker(tracker: &str, extra: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), tracker, extra).await
    }

    pub async fn start_in(dir: TempDir, tracker: &str, extra: &str) -> Self {
        let text = format!(
            "group_name = \"group1\"\nserver_id = 100001\nbase_path = {:?}\n\
             tracker_servers = [\"{tracker}\"]\nsubdir_count_per_path = 4\n\
             bind_addr = \"127.0.0.1\"\nport = 0\nhttp_port = 0\n{extra}\n",
            dir.path().display().to_string()
        );
        let config = StorageConfig::from_toml(&text).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(fdfs_storage::run(config, listener, shutdown.clone()));
        TestServer {
            addr,
            dir,
            shutdown,
            handle,
        }
    }

    pub async fn connect(&self) -> Conn {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        Connection::new(stream)
    }

    /// Where a logical name lives on disk.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.path().join("data").join(&name[4..])
    }

    pub async fn stop(self) {
        let _ = self.stop_keep_dir().await;
    }

    pub async fn stop_keep_dir(self) -> TempDir {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("server did not stop in time")
            .expect("server task panicked");
        result.expect("server returned an error");
        self.dir
    }
}

pub fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-m");
    PathBuf::from(name)
}

/// The status of a failed request (panics on success or transport errors).
pub fn status_of<T: std::fmt::Debug>(result: Result<T, ProtoError>) -> u8 {
    match result {
        Err(ProtoError::Status { status }) => status,
        other => panic!("expected an error status, got {other:?}"),
    }
}

/// Sends one request and reads the whole answer.
pub async fn simple(conn: &mut Conn, cmd: u8, body: &[u8]) -> Result<Vec<u8>, ProtoError> {
    conn.call(cmd, body, 64 << 20).await
}

pub fn upload_prefix(index: Option<u8>, size: u64, ext: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(index.unwrap_or(0xFF));
    put_i64(&mut out, size as i64);
    put_fixed(&mut out, ext.as_bytes(), 6);
    let _ = UploadPrefix::LEN;
    out
}

/// UPLOAD_FILE (11) or UPLOAD_APPENDER_FILE (23); returns the logical name.
pub async fn upload(
    conn: &mut Conn,
    cmd: u8,
    ext: &str,
    content: &[u8],
) -> Result<String, ProtoError> {
    let mut body = upload_prefix(None, content.len() as u64, ext);
    body.extend_from_slice(content);
    let reply = simple(conn, cmd, &body).await?;
    let reply = UploadReply::decode(&reply).unwrap();
    assert_eq!(reply.group, "group1");
    Ok(reply.name)
}

pub fn group_and_name(group: &str, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    put_fixed(&mut out, group.as_bytes(), 16);
    out.extend_from_slice(name.as_bytes());
    out
}

pub fn download_body(group: &str, name: &str, offset: u64, length: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_i64(&mut out, offset as i64);
    put_i64(&mut out, length as i64);
    out.extend_from_slice(&group_and_name(group, name));
    out
}

pub async fn download(
    conn: &mut Conn,
    name: &str,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, ProtoError> {
    simple(conn, 14, &download_body("group1", name, offset, length)).await
}

pub async fn set_metadata(
    conn: &mut Conn,
    group: &str,
    name: &str,
    op: MetadataOp,
    metadata: &[u8],
) -> Result<Vec<u8>, ProtoError> {
    let body = SetMetadataRequest {
        op,
        group: group.into(),
        name: name.into(),
        metadata: metadata.to_vec(),
    }
    .encode();
    simple(conn, 13, &body).await
}

/// QUERY_FILE_INFO with request flags in the header status byte.
pub async fn query_info(conn: &mut Conn, name: &str, flags: u8) -> Result<Vec<u8>, ProtoError> {
    let body = group_and_name("group1", name);
    let header = fdfs_proto::Header {
        pkg_len: body.len() as i64,
        cmd: 22,
        status: flags,
    };
    conn.send(header, &body).await?;
    conn.read_response(1024).await
}

pub async fn active_test(conn: &mut Conn) {
    assert_eq!(simple(conn, 111, &[]).await.unwrap(), b"");
}

/// The server closed the connection (EOF or reset), without sending anything more.
pub async fn assert_closed(conn: &mut Conn) {
    match tokio::time::timeout(DEADLINE, conn.read_header()).await {
        Ok(Ok(None)) | Ok(Err(_)) => {}
        Ok(Ok(Some(header))) => panic!("expected a closed connection, got {header:?}"),
        Err(_) => panic!("connection still open"),
    }
}

pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Entries in a directory; 0 while it does not exist yet.
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

/// Files under `data/XX/YY/` (state files and `.tmp` are not stored files).
pub fn stored_files(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for level1 in std::fs::read_dir(data).unwrap() {
        let level1 = level1.unwrap();
        let name = level1.file_name().into_string().unwrap();
        if name.len() != 2 || !level1.file_type().unwrap().is_dir() {
            continue;
        }
        for level2 in std::fs::read_dir(level1.path()).unwrap() {
            for file in std::fs::read_dir(level2.unwrap().path()).unwrap() {
                out.push(file.unwrap().file_name().into_string().unwrap());
            }
        }
    }
    out
}

/// A tracker that accepts every JOIN and answers every BEAT with a one-member list
/// (id 100001 at 10.1.2.3); SYNC_DEST_REQ says there is nothing to copy.
pub struct FakeTracker {
    pub addr: SocketAddr,
    joins: mpsc::UnboundedReceiver<JoinRequest>,
    beats: mpsc::UnboundedReceiver<BeatRequest>,
}

impl FakeTracker {
    pub async fn start() -> Self {
        Self::start_with(0, None).await
    }

    /// `join_status` != 0 refuses every JOIN with that status; `close_after_beats` drops the
    /// connection after answering that many beats.
    pub async fn start_with(join_status: u8, close_after_beats: Option<usize>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (join_tx, joins) = mpsc::unbounded_channel();
        let (beat_tx, beats) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (join_tx, beat_tx) = (join_tx.clone(), beat_tx.clone());
                tokio::spawn(async move {
                    let mut conn = Connection::new(stream);
                    let mut port = 0;
                    let mut beats = 0;
                    while let Ok(Some(header)) = conn.read_header().await {
                        let Ok(body) = conn.read_body(header.body_len().unwrap(), 1 << 20).await
                        else {
                            break;
                        };
                        let reply = match header.cmd {
                            81 => {
                                let join = JoinRequest::decode(&body).unwrap();
                                port = join.port;
                                let _ = join_tx.send(join);
                                if join_status != 0 {
                                    let _ = conn.send_response(join_status, &[]).await;
                                    continue;
                                }
                                JoinReply {
                                    status: 6,
                                    sync_source_id: String::new(),
                                }
                                .encode()
                            }
                            83 => {
                                if close_after_beats.is_some_and(|limit| beats >= limit) {
                                    break;
                                }
                                beats += 1;
                                // every beat ends with the storage's stat block (E.3) and
                                // the IP it listens on
                                let paths_len = body
                                    .len()
                                    .checked_sub(
                                        fdfs_proto::stat::StatBlock::LEN
                                            + fdfs_proto::IP_WIDTH_LONG,
                                    )
                                    .expect("beat with a stat block and listen ip");
                                let stat_end = paths_len + fdfs_proto::stat::StatBlock::LEN;
                                fdfs_proto::stat::StatBlock::decode(&body[paths_len..stat_end])
                                    .unwrap();
                                let _ =
                                    beat_tx.send(BeatRequest::decode(&body[..paths_len]).unwrap());
                                BeatReply {
                                    members: Some(vec![StorageBrief {
                                        status: 7,
                                        port,
                                        id: "100001".into(),
                                        ip: "10.1.2.3".into(),
                                    }]),
                                }
                                .encode()
                            }
                            // replication: no copy source needed, status changes and
                            // progress reports accepted
                            87 | 59 => Vec::new(),
                            89 => BeatReply { members: None }.encode(),
                            _ => break,
                        };
                        if conn.send_response(0, &reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        FakeTracker { addr, joins, beats }
    }

    pub async fn join(&mut self) -> JoinRequest {
        tokio::time::timeout(DEADLINE, self.joins.recv())
            .await
            .unwrap()
            .unwrap()
    }

    pub async fn beat(&mut self) -> BeatRequest {
        tokio::time::timeout(DEADLINE, self.beats.recv())
            .await
            .unwrap()
            .unwrap()
    }
}
