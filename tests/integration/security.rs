//! Who may talk to whom (issue 8): `allow_hosts` at accept, the cluster secret on tracker
//! joins and storage ↔ storage sync, `admin_hosts` for admin commands (the tracker's and the
//! storage's SCRUB), `http_allow_hosts` on the storage's HTTP port and `metrics_allow_hosts` on
//! both daemons' `/metrics`. Linux loopback answers the whole 127/8, so a socket bound to
//! 127.0.0.2 is a second host; sockets that do not bind come from 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use fdfs_client::UploadOptions;
use fdfs_proto::auth::{self, AuthError, ClusterSecret, Purpose};
use fdfs_proto::cmd::Command;
use fdfs_proto::conn::Connection;
use fdfs_proto::scrub_msg::ScrubAction;
use fdfs_proto::sync_msg::{self, FileListRequest, SyncFilePrefix};
use fdfs_proto::{status, Header, ProtoError};
use fdfs_tests::{stored_files, wait_for, Cluster, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "integration-test-cluster-secret";
const WAIT: Duration = Duration::from_secs(20);

/// A connection to `addr` from the loopback address `source`.
async fn connect_from(source: &str, addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    Ok(socket.connect(addr).await?)
}

/// Whether the peer closed the connection (EOF or reset) without sending anything.
async fn closed_silently(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// The status byte of a request's reply (0 for success).
async fn status_of<S>(conn: &mut Connection<S>, cmd: u8, body: &[u8]) -> anyhow::Result<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match conn.call(cmd, body, 1 << 20).await {
        Ok(_) => Ok(status::OK),
        Err(ProtoError::Status { status }) => Ok(status),
        Err(err) => Err(err.into()),
    }
}

/// Waits until `daemon`'s log holds every one of `needles`.
async fn wait_log(daemon: &Daemon, needles: &[&str]) -> anyhow::Result<()> {
    let what = format!("{} to log {needles:?}", daemon.name);
    wait_for(&what, WAIT, || async {
        let log = daemon.log();
        needles.iter().all(|n| log.contains(n)).then_some(())
    })
    .await
}

fn secret_line(secret: &str) -> String {
    format!("cluster_secret = \"{secret}\"\n")
}

/// The groups LIST_ALL_GROUPS reports, asked from 127.0.0.2 when the tracker only lets
/// that address in.
async fn group_count(tracker: SocketAddr, source: &str) -> anyhow::Result<usize> {
    let mut conn = Connection::new(connect_from(source, tracker).await?);
    let reply = conn
        .call(Command::ListAllGroups.code(), &[], 1 << 20)
        .await?;
    Ok(reply.len() / fdfs_proto::stat::GroupStat::LEN)
}

#[tokio::test]
async fn a_storage_outside_allow_hosts_cannot_join() -> anyhow::Result<()> {
    // the storage reaches the tracker from 127.0.0.1; only 127.0.0.2 is let in
    let cluster = Cluster::builder()
        .tracker_config("allow_hosts = [\"127.0.0.2/32\", \"::1\"]")
        .start_without_waiting()
        .await?;
    let tracker = cluster.tracker.addr;
    let refused = "connection refused: peer not in allow_hosts";
    wait_log(&cluster.tracker, &[refused]).await?;
    // the storage tells why it is not joining
    wait_log(&cluster.storages[0], &["tracker connection failed"]).await?;
    // an allowed host is served, and sees no group: nobody joined
    let mut conn = Connection::new(connect_from("127.0.0.2", tracker).await?);
    let active_test = Command::ActiveTest.code();
    assert_eq!(status_of(&mut conn, active_test, &[]).await?, 0);
    assert_eq!(group_count(tracker, "127.0.0.2").await?, 0);
    // any other host is closed before a byte is read
    let mut stream = TcpStream::connect(tracker).await?;
    stream
        .write_all(&Header::request(active_test, 0).encode())
        .await?;
    assert!(closed_silently(&mut stream).await);
    Ok(())
}

#[tokio::test]
async fn a_storage_without_the_right_secret_cannot_join() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder()
        .groups(&[])
        .tracker_config(&secret_line(SECRET))
        .start()
        .await?;
    let spec = |server_id, extra: String| fdfs_tests::StorageSpec {
        group: "group1".into(),
        server_id,
        store_path_count: 1,
        extra,
    };
    cluster
        .add_storage(spec(100_001, secret_line("not-the-cluster-secret-at-all")))
        .await?;
    wait_log(&cluster.tracker, &["storage failed cluster authentication"]).await?;
    // the storage saw the tracker's proof fail first and never sent its own
    wait_log(&cluster.storages[0], &["does not hold the cluster secret"]).await?;
    // a storage without any secret gets EACCES for its JOIN
    cluster.add_storage(spec(100_002, String::new())).await?;
    let refused = "tracker refused to let this storage join";
    wait_log(&cluster.storages[1], &[refused, "status=13"]).await?;
    let why = "storage command before proving the cluster secret";
    wait_log(&cluster.tracker, &[why]).await?;
    // clients are unaffected and see no member in any group
    assert_eq!(group_count(cluster.tracker.addr, "127.0.0.1").await?, 0);
    assert_eq!(cluster.active_count("group1").await, 0);
    Ok(())
}

#[tokio::test]
async fn storages_with_the_secret_replicate_and_raw_sync_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .groups(&[("group1", 2)])
        .tracker_config(&secret_line(SECRET))
        .storage_config(&secret_line(SECRET))
        .start()
        .await?;
    // clients upload as ever, and the file reaches the other storage
    let client = cluster.client();
    let content = b"replicated between authenticated storages".to_vec();
    let options = UploadOptions {
        ext: "txt".into(),
        ..Default::default()
    };
    let id = client.upload_bytes(&content, &options).await?;
    let relative = id.name.to_string()["M00/".len()..].to_string();
    for index in 0..2 {
        let path = cluster.store_path(index, 0).join("data").join(&relative);
        wait_for(&format!("{relative} on storage {index}"), WAIT, || async {
            (std::fs::read(&path).ok()? == content).then_some(())
        })
        .await?;
    }

    let storage = cluster.storages[1].addr;
    let data = cluster.store_path(1, 0).join("data");
    let before = stored_files(&data).len();
    // a push without authenticating: refused with 13, closed, nothing stored
    let name = format!("M00/{}", relative.replace(".txt", "x.txt"));
    let body_len = 64u64;
    let prefix = SyncFilePrefix {
        name_len: name.len() as u64,
        file_size: body_len,
        timestamp: 1_700_000_000,
        group: "group1".into(),
    };
    let mut request = Header::request(
        Command::SyncCreateFile.code(),
        (SyncFilePrefix::LEN + name.len()) as u64 + body_len,
    )
    .encode()
    .to_vec();
    request.extend_from_slice(&prefix.encode());
    request.extend_from_slice(name.as_bytes());
    request.extend_from_slice(&[b'x'; 64]);
    let mut stream = TcpStream::connect(storage).await?;
    stream.write_all(&request).await?;
    let mut raw = [0u8; 10];
    stream.read_exact(&mut raw).await?;
    assert_eq!(Header::decode(&raw).status, status::EACCES);
    assert!(closed_silently(&mut stream).await);
    // the other replication entry points are closed too
    for (cmd, body) in [
        (
            Command::ReportServerId.code(),
            sync_msg::encode_server_id("100009"),
        ),
        (
            sync_msg::FETCH_FILE_LIST,
            FileListRequest {
                group: "group1".into(),
                store_path: 0,
            }
            .encode(),
        ),
    ] {
        let mut conn = Connection::new(TcpStream::connect(storage).await?);
        assert_eq!(status_of(&mut conn, cmd, &body).await?, status::EACCES);
    }
    // a wrong secret: the storage's proof does not check out, and a forged proof gets EPERM
    let wrong = ClusterSecret::new(b"the-wrong-secret-entirely".to_vec())?;
    let mut conn = Connection::new(TcpStream::connect(storage).await?);
    let result = auth::initiate(&mut conn, &wrong, Purpose::Sync).await;
    assert!(matches!(result, Err(AuthError::BadMac)), "{result:?}");
    let mut conn = Connection::new(TcpStream::connect(storage).await?);
    let challenge = auth::Challenge {
        purpose: Purpose::Sync,
        nonce: auth::Nonce::random(),
    };
    conn.call(Command::AuthChallenge.code(), &challenge.encode(), 64)
        .await?;
    let forged = [0u8; auth::MAC_LEN];
    assert_eq!(
        status_of(&mut conn, Command::AuthProof.code(), &forged).await?,
        status::EPERM
    );
    // with the secret the same entry point answers (positive control)
    let right = ClusterSecret::new(SECRET.as_bytes().to_vec())?;
    let mut conn = Connection::new(TcpStream::connect(storage).await?);
    auth::initiate(&mut conn, &right, Purpose::Sync).await?;
    let id_body = sync_msg::encode_server_id("100009");
    assert_eq!(
        status_of(&mut conn, Command::ReportServerId.code(), &id_body).await?,
        0
    );
    assert_eq!(stored_files(&data).len(), before, "nothing was pushed in");
    // and clients still download from it
    assert_eq!(client.download_bytes(&id, 0, 0).await?, content);
    Ok(())
}

#[tokio::test]
async fn admin_commands_only_from_admin_hosts_and_http_allow_list() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .tracker_config("admin_hosts = [\"127.0.0.2\"]")
        .storage_config("http_allow_hosts = [\"127.0.0.2\"]")
        .start()
        .await?;
    let tracker = cluster.tracker.addr;
    // DELETE_STORAGE of an unknown id: EPERM from 127.0.0.1, ENOENT (it went through) from .2
    let mut body = vec![0u8; fdfs_proto::GROUP_NAME_LEN];
    body[..6].copy_from_slice(b"group1");
    body.extend_from_slice(b"999999");
    let mut conn = Connection::new(TcpStream::connect(tracker).await?);
    let code = Command::DeleteStorage.code();
    assert_eq!(status_of(&mut conn, code, &body).await?, status::EPERM);
    // the connection stays usable, and non-admin commands are served
    assert_eq!(
        status_of(&mut conn, Command::ActiveTest.code(), &[]).await?,
        0
    );
    let mut admin = Connection::new(connect_from("127.0.0.2", tracker).await?);
    assert_eq!(status_of(&mut admin, code, &body).await?, status::ENOENT);
    assert!(cluster
        .tracker
        .log()
        .contains("admin command from a host not in admin_hosts"));

    // the storage's HTTP port answers 403 to 127.0.0.1 and serves 127.0.0.2
    let http = cluster.storages[0].http_addr().await?;
    for (source, expected) in [("127.0.0.1", "403"), ("127.0.0.2", "200")] {
        let mut stream = connect_from(source, http).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut reply = String::new();
        tokio::time::timeout(WAIT, stream.read_to_string(&mut reply)).await??;
        let status_line = reply.lines().next().unwrap_or_default();
        assert!(status_line.contains(expected), "{source}: {status_line}");
    }
    Ok(())
}

/// The status line of `GET path` sent to `addr` from the loopback address `source`.
async fn http_status_from(source: &str, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = connect_from(source, addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut reply)).await??;
    let reply = String::from_utf8_lossy(&reply);
    Ok(reply.lines().next().unwrap_or_default().to_string())
}

/// Runs the `fdfs` CLI; returns its exit code, stdout and stderr.
async fn fdfs_cli(args: Vec<String>) -> anyhow::Result<(Option<i32>, String, String)> {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(fdfs_tests::bin_path("fdfs"))
            .args(&args)
            .output()
    })
    .await??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn scrub_only_from_the_storages_admin_hosts() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder()
        .storage_config("admin_hosts = [\"127.0.0.2\"]\n")
        .start()
        .await?;
    // a second storage whose operators work from 127.0.0.1
    cluster
        .add_storage(fdfs_tests::StorageSpec {
            group: "group1".into(),
            server_id: 100_002,
            store_path_count: 1,
            extra: "admin_hosts = [\"127.0.0.1\", \"127.0.0.2\"]\n".into(),
        })
        .await?;
    cluster.wait_active("group1", 2).await?;
    let restricted = cluster.storages[0].addr;
    let open = cluster.storages[1].addr;
    let scrub = Command::Scrub.code();
    for action in [ScrubAction::Start, ScrubAction::Status] {
        // EPERM from 127.0.0.1, and the connection stays usable
        let mut conn = Connection::new(TcpStream::connect(restricted).await?);
        assert_eq!(
            status_of(&mut conn, scrub, &action.encode()).await?,
            status::EPERM
        );
        assert_eq!(
            status_of(&mut conn, Command::ActiveTest.code(), &[]).await?,
            0
        );
        // served from 127.0.0.2
        let mut admin = Connection::new(connect_from("127.0.0.2", restricted).await?);
        assert_eq!(status_of(&mut admin, scrub, &action.encode()).await?, 0);
    }
    wait_log(
        &cluster.storages[0],
        &["admin command from a host not in admin_hosts: refused"],
    )
    .await?;
    let http = cluster.storages[0].http_addr().await?;
    let metrics = crate::status::http_get(http, "/metrics").await?;
    assert_eq!(
        crate::status::sample(
            &metrics,
            "fdfs_storage_refused_total{reason=\"admin_hosts\"}"
        ),
        Some(2.0),
        "{metrics}"
    );

    // `fdfs scrub` says what to do where it is refused, and works where it is allowed
    let cli = |storage: SocketAddr| {
        vec![
            "--tracker".to_string(),
            cluster.tracker_addr(),
            "scrub".to_string(),
            "--storage".to_string(),
            storage.to_string(),
        ]
    };
    let (code, stdout, stderr) = fdfs_cli(cli(restricted)).await?;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "scrub {restricted}: refused (status 1, EPERM): this host is not in the storage's admin_hosts"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("run fdfs scrub from a host listed in their admin_hosts"),
        "{stderr}"
    );
    let (code, stdout, stderr) = fdfs_cli(cli(open)).await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(&format!("{open}: finished: checked ")),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn metrics_follow_allow_hosts_unless_listed_apart() -> anyhow::Result<()> {
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // the tracker lets 127.0.0.1 (its storages) and .2 in; /metrics follows that list
    let cluster = Cluster::builder()
        .tracker_config(&format!(
            "http_port = {http_port}\nallow_hosts = [\"127.0.0.1\", \"127.0.0.2\"]\n"
        ))
        // the storage serves files to everyone, /metrics only to the scraper at .3
        .storage_config("http_allow_hosts = [\"*\"]\nmetrics_allow_hosts = [\"127.0.0.3\"]\n")
        .start()
        .await?;
    let tracker_http: SocketAddr = format!("127.0.0.1:{http_port}").parse()?;
    for (source, expected) in [
        ("127.0.0.1", "200"),
        ("127.0.0.2", "200"),
        ("127.0.0.4", "403"),
    ] {
        for path in ["/metrics", "/healthz"] {
            let line = http_status_from(source, tracker_http, path).await?;
            assert!(line.contains(expected), "tracker {source} {path}: {line}");
        }
    }
    let text = crate::status::http_get(tracker_http, "/metrics").await?;
    assert_eq!(
        crate::status::sample(
            &text,
            "fdfs_tracker_refused_total{reason=\"metrics_allow_hosts\"}"
        ),
        Some(2.0),
        "{text}"
    );

    let storage_http = cluster.storages[0].http_addr().await?;
    for (source, metrics, files) in [
        ("127.0.0.1", "403", "200"),
        ("127.0.0.3", "200", "200"),
        ("127.0.0.4", "403", "200"),
    ] {
        let line = http_status_from(source, storage_http, "/metrics").await?;
        assert!(line.contains(metrics), "storage {source} /metrics: {line}");
        let line = http_status_from(source, storage_http, "/healthz").await?;
        assert!(line.contains(files), "storage {source} /healthz: {line}");
    }
    // one keep-alive connection from a files-only peer: the refused scrape does not end it
    let mut stream = connect_from("127.0.0.4", storage_http).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut reply)).await??;
    let statuses: Vec<&str> = reply
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(statuses.len(), 2, "{reply}");
    assert!(
        statuses[0].contains("403") && statuses[1].contains("200"),
        "{reply}"
    );
    Ok(())
}
