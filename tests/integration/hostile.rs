//! Hostile clients over real sockets (issue 8, "Bad input"): slowloris, bodies shorter or
//! longer than announced, huge announced lengths, thousands of idle connections, floods past
//! the connection limit, half-closed sockets and garbage after QUIT — against the tracker, the
//! storage and the storage's HTTP port. Every case ends in a clear error status or a close,
//! well-behaved clients keep being served, the servers' memory stays bounded and nothing
//! panics. `bad_input.rs` covers malformed packets; this file covers abusive connections.
//!
//! The clusters run with short `network_timeout` / `idle_timeout` so the timeouts fire within
//! a second or two; waits are bounded by deadlines, never fixed sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use fdfs_client::UploadOptions;
use fdfs_proto::storage_msg::UploadPrefix;
use fdfs_proto::Header;
use fdfs_tests::{stored_files, wait_for, Cluster, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `network_timeout` (per read/write inside a request) and `idle_timeout` used below: short,
/// yet with room for a storage's 1 s heartbeat (and its answer) to arrive late on a loaded
/// machine, since the tracker holds that link to them too.
const SHORT_TIMEOUTS: &str = "network_timeout = \"2s\"\nidle_timeout = \"3s\"\n";
/// Generous ceiling on a server's peak resident memory: these cases must not make it grow
/// with what the clients announce or hold open.
const MAX_HWM_KIB: u64 = 512 * 1024;

/// A short-timeout cluster and the addresses under attack: tracker, storage, storage HTTP.
async fn targets() -> Result<(Cluster, SocketAddr, SocketAddr, SocketAddr)> {
    let cluster = Cluster::builder()
        .tracker_config(SHORT_TIMEOUTS)
        .storage_config(SHORT_TIMEOUTS)
        .start()
        .await?;
    let (tracker, storage) = (cluster.tracker.addr, cluster.storages[0].addr);
    let http = cluster.storages[0].http_addr().await?;
    Ok((cluster, tracker, storage, http))
}

/// The end of every case: abandoned uploads left no temp file, a normal client is served,
/// and the servers are healthy.
async fn still_sound(cluster: &Cluster, what: &str) -> Result<()> {
    wait_for("temp files removed", Duration::from_secs(10), || async {
        (temp_files(cluster) == 0).then_some(())
    })
    .await?;
    served(cluster, what).await?;
    assert_healthy(cluster)
}

/// What a server did with a connection: the bytes it sent, and whether it closed it.
#[derive(Debug)]
struct Outcome {
    reply: Vec<u8>,
    closed: bool,
}

impl Outcome {
    /// The first response header, if a whole one came back.
    fn header(&self) -> Option<Header> {
        let raw: [u8; 10] = self.reply.get(..10)?.try_into().ok()?;
        Some(Header::decode(&raw))
    }

    fn status(&self) -> Option<u8> {
        self.header().map(|h| h.status)
    }
}

/// Reads until the server closes (EOF or reset) or `wait` passes without a close.
async fn outcome(stream: &mut TcpStream, wait: Duration) -> Outcome {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    Outcome { reply, closed }
}

/// Sends `bytes` and waits (up to 10 s) for the server to answer and close.
async fn send_and_wait(addr: SocketAddr, bytes: &[u8]) -> Result<Outcome> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.write_all(bytes).await?;
    Ok(outcome(&mut stream, Duration::from_secs(10)).await)
}

/// Sends `bytes` one at a time, `gap` apart, and returns what the server sent once it closed
/// the connection. Fails if the server still holds the connection 10 s after the last byte.
async fn drip(addr: SocketAddr, bytes: &[u8], gap: Duration) -> Result<Vec<u8>> {
    drip_on(TcpStream::connect(addr).await?, bytes, gap).await
}

fn upload_packet(file_size: u64, announced_body: u64, content: &[u8]) -> Vec<u8> {
    let mut packet = Header::request(11, announced_body).encode().to_vec();
    packet.extend_from_slice(
        &UploadPrefix {
            store_path_index: Some(0),
            file_size,
            ext: "bin".into(),
        }
        .encode(),
    );
    packet.extend_from_slice(content);
    packet
}

/// A well-behaved client round trip through tracker and storage.
async fn served(cluster: &Cluster, what: &str) -> Result<()> {
    let client = cluster.client();
    let content = format!("served during {what}");
    let id = client
        .upload_bytes(content.as_bytes(), &UploadOptions::default())
        .await
        .with_context(|| format!("upload during {what}"))?;
    ensure!(
        client.download_bytes(&id, 0, 0).await? == content.as_bytes(),
        "download during {what} returned other bytes"
    );
    Ok(())
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let got = outcome(&mut stream, Duration::from_secs(10)).await;
    Ok(String::from_utf8_lossy(&got.reply).into_owned())
}

/// Peak resident memory (VmHWM) of a daemon in KiB.
fn peak_kib(daemon: &Daemon) -> Result<u64> {
    let pid = daemon.pid().context("daemon not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc status")
}

/// Each daemon is alive, stayed under the memory ceiling and logged no panic.
fn assert_healthy(cluster: &Cluster) -> Result<()> {
    for daemon in std::iter::once(&cluster.tracker).chain(&cluster.storages) {
        let pid = daemon.pid().context("daemon not running")?;
        ensure!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{} exited; log:\n{}",
            daemon.name,
            daemon.log()
        );
        let peak = peak_kib(daemon)?;
        ensure!(
            peak < MAX_HWM_KIB,
            "{} peaked at {peak} KiB resident (ceiling {MAX_HWM_KIB} KiB)",
            daemon.name
        );
        let log = daemon.log();
        ensure!(
            !log.contains("panicked"),
            "{} panicked; log:\n{log}",
            daemon.name
        );
    }
    Ok(())
}

/// Files waiting in the storage's temp directory (uploads not finished or not cleaned up).
fn temp_files(cluster: &Cluster) -> usize {
    fdfs_tests::files_under(&cluster.store_path(0, 0).join("data/.tmp")).len()
}

/// Raises the soft open-files limit towards `want` (children inherit it), returning the limit
/// now in force.
fn raise_nofile(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[tokio::test]
async fn slowloris_is_cut_off_while_others_are_served() -> Result<()> {
    let (cluster, tracker, storage, http) = targets().await?;
    let gap = Duration::from_millis(400);
    let header = Header::request(111, 0).encode();

    // a header sent byte by byte takes 4 s, longer than the 3 s idle timeout: cut off without
    // an answer, on both servers, while a normal client is served next to it
    let slow_tracker = drip(tracker, &header, gap);
    let slow_storage = drip(storage, &header, gap);
    // an HTTP request head dribbled in slower than the header read timeout (network_timeout)
    let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let slow_http = drip(http, head, gap);
    // a storage request body whose bytes come further apart than network_timeout
    let mut body_drip = upload_packet(64, UploadPrefix::LEN as u64 + 64, &[]);
    let body_start = body_drip.len();
    body_drip.extend_from_slice(&[7u8; 64]);
    let slow_body = async {
        let mut stream = TcpStream::connect(storage).await?;
        stream.write_all(&body_drip[..body_start]).await?;
        drip_on(
            stream,
            &body_drip[body_start..],
            Duration::from_millis(3500),
        )
        .await
    };
    let (tracker_got, storage_got, http_got, body_got, ()) =
        tokio::join!(slow_tracker, slow_storage, slow_http, slow_body, async {
            served(&cluster, "slowloris").await.expect("normal client");
        });
    assert_eq!(
        tracker_got?, b"",
        "tracker answered a header it never got whole"
    );
    assert_eq!(
        storage_got?, b"",
        "storage answered a header it never got whole"
    );
    let http_got = String::from_utf8_lossy(&http_got?).into_owned();
    assert!(
        http_got.is_empty() || http_got.starts_with("HTTP/1.1 408"),
        "slow HTTP head got {http_got:?}"
    );
    // the upload is abandoned: no file, and its temp file is removed
    let body_got = body_got?;
    assert!(
        body_got.len() < 10 || Header::decode(body_got[..10].try_into()?).status != 0,
        "a trickled upload was stored"
    );
    assert!(http_get(http, "/healthz")
        .await?
        .starts_with("HTTP/1.1 200"));
    still_sound(&cluster, "after slowloris").await
}

/// [`drip`] on an already connected stream.
async fn drip_on(stream: TcpStream, bytes: &[u8], gap: Duration) -> Result<Vec<u8>> {
    let (mut read_half, mut write_half) = stream.into_split();
    let reader = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let writer = async {
        for byte in bytes {
            if write_half.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(gap).await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    tokio::select! {
        got = reader => Ok(got),
        _ = writer => bail!("the server kept a dripping connection open"),
    }
}

/// Stores what an UPLOAD_FILE reply names and returns it as a file id.
fn uploaded_id(reply: &[u8]) -> Result<fdfs_client::FileId> {
    let header = Header::decode(reply.get(..10).context("no reply")?.try_into()?);
    ensure!(
        header.status == 0,
        "upload answered status {}",
        header.status
    );
    let body = reply
        .get(10..10 + header.pkg_len as usize)
        .context("short upload reply")?;
    let group = String::from_utf8_lossy(&body[..16]);
    let name = String::from_utf8_lossy(&body[16..]);
    Ok(fdfs_client::parse_file_id(&format!(
        "{}/{}",
        group.trim_end_matches('\0'),
        name
    ))?)
}

#[tokio::test]
async fn short_long_and_huge_bodies_get_errors_or_closes() -> Result<()> {
    let (cluster, tracker, storage, http) = targets().await?;
    let wait = Duration::from_secs(10);

    // storage: a body shorter than announced, the client then silent: cut at network_timeout
    let mut stream = TcpStream::connect(storage).await?;
    stream
        .write_all(&upload_packet(
            100,
            UploadPrefix::LEN as u64 + 100,
            &[1u8; 40],
        ))
        .await?;
    let got = outcome(&mut stream, wait).await;
    assert!(got.closed, "storage kept a stalled upload open");
    assert!(got.status().is_none_or(|s| s != 0), "{got:?}");

    // storage: a body longer than announced: the upload is stored with the announced bytes,
    // the excess is read as the next header (garbage: a negative length) and closes
    let mut packet = upload_packet(10, UploadPrefix::LEN as u64 + 10, b"0123456789");
    packet.extend_from_slice(&[0xAB; 30]);
    let got = send_and_wait(storage, &packet).await?;
    assert!(got.closed, "storage kept a connection after garbage");
    let id = uploaded_id(&got.reply)?;
    assert_eq!(
        cluster.client().download_bytes(&id, 0, 0).await?,
        b"0123456789"
    );

    // storage: huge announced lengths are answered at once, nothing allocated or written
    let huge = i64::MAX as u64;
    let got = send_and_wait(
        storage,
        &upload_packet(huge - UploadPrefix::LEN as u64, huge, &[0u8; 1000]),
    )
    .await?;
    assert!(got.closed);
    assert!(
        matches!(got.status(), Some(22 | 28)),
        "huge upload → {got:?}"
    );
    for cmd in [13u8, 15, 22, 24, 34, 36] {
        let mut packet = Header::request(cmd, huge).encode().to_vec();
        packet.extend_from_slice(&[0u8; 1000]);
        let got = send_and_wait(storage, &packet).await?;
        assert!(got.closed, "cmd {cmd}: storage kept the connection");
        assert!(got.status().is_none_or(|s| s != 0), "cmd {cmd} → {got:?}");
    }

    // tracker: a short body is cut at network_timeout; a huge one closes at once
    let mut stream = TcpStream::connect(tracker).await?;
    let mut packet = Header::request(104, 16).encode().to_vec();
    packet.extend_from_slice(b"group1\0\0");
    stream.write_all(&packet).await?;
    let got = outcome(&mut stream, wait).await;
    assert!(got.closed, "tracker kept a stalled request open");
    assert!(got.status().is_none_or(|s| s != 0), "{got:?}");
    for cmd in [101u8, 104, 105, 90, 92] {
        let got = send_and_wait(tracker, &Header::request(cmd, huge).encode()).await?;
        assert!(got.closed, "cmd {cmd}: tracker kept the connection");
        assert!(got.status().is_none_or(|s| s != 0), "cmd {cmd} → {got:?}");
    }
    // tracker: a request followed by more bytes than it announced: answered, then the
    // excess (a negative length) closes the connection
    let mut packet = Header::request(111, 0).encode().to_vec();
    packet.extend_from_slice(&[0xAB; 30]);
    let got = send_and_wait(tracker, &packet).await?;
    assert_eq!(got.status(), Some(0));
    assert!(got.closed, "tracker kept a connection after garbage");

    // HTTP: an announced request body that never comes, an overflowing length, a 1 MiB head
    for (length, answer) in [
        ("99999999999999", "HTTP/1.1 "),
        ("18446744073709551616", "HTTP/1.1 4"),
    ] {
        let request =
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n");
        let got = send_and_wait(http, request.as_bytes()).await?;
        assert!(got.closed, "Content-Length {length}: kept open");
        let text = String::from_utf8_lossy(&got.reply);
        assert!(
            text.is_empty() || text.starts_with(answer),
            "Content-Length {length}: {text}"
        );
    }
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    head.resize(head.len() + (1 << 20), b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let mut stream = TcpStream::connect(http).await?;
    // the server may close before taking all of it; that is one of the answers we accept
    let _ = stream.write_all(&head).await;
    let got = outcome(&mut stream, wait).await;
    assert!(got.closed);
    let text = String::from_utf8_lossy(&got.reply);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");

    assert!(http_get(http, "/healthz")
        .await?
        .starts_with("HTTP/1.1 200"));
    still_sound(&cluster, "after bad bodies").await
}

#[tokio::test]
async fn half_closed_sockets_and_garbage_after_quit() -> Result<()> {
    let (cluster, tracker, storage, http) = targets().await?;
    let wait = Duration::from_secs(10);

    // a whole request, then the client shuts its write side: answered, then closed
    let mut stream = TcpStream::connect(tracker).await?;
    stream.write_all(&Header::request(111, 0).encode()).await?;
    stream.shutdown().await?;
    let got = outcome(&mut stream, wait).await;
    assert_eq!(got.status(), Some(0), "tracker: {got:?}");
    assert!(got.closed);
    let mut stream = TcpStream::connect(storage).await?;
    stream
        .write_all(&upload_packet(5, UploadPrefix::LEN as u64 + 5, b"half!"))
        .await?;
    stream.shutdown().await?;
    let got = outcome(&mut stream, wait).await;
    assert!(got.closed);
    let id = uploaded_id(&got.reply)?;
    assert_eq!(cluster.client().download_bytes(&id, 0, 0).await?, b"half!");
    let mut stream = TcpStream::connect(http).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await?;
    stream.shutdown().await?;
    let got = outcome(&mut stream, wait).await;
    assert!(got.closed);
    let text = String::from_utf8_lossy(&got.reply);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );

    // shut down in the middle of a header or a body: closed, nothing stored, no temp file
    for (addr, bytes) in [
        (tracker, Header::request(111, 0).encode()[..5].to_vec()),
        (storage, Header::request(111, 0).encode()[..5].to_vec()),
        (
            storage,
            upload_packet(100, UploadPrefix::LEN as u64 + 100, &[3u8; 50]),
        ),
        (http, b"GET /healthz HT".to_vec()),
    ] {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(&bytes).await?;
        stream.shutdown().await?;
        let got = outcome(&mut stream, wait).await;
        assert!(got.closed, "{addr} kept a half-closed connection");
        assert!(got.status().is_none_or(|s| s != 0), "{addr}: {got:?}");
    }

    // QUIT ends the connection: whatever follows it is never read, even a valid request
    let files_before = stored_files(&cluster.store_path(0, 0).join("data")).len();
    let mut after_quit = Header::request(82, 0).encode().to_vec();
    after_quit.extend_from_slice(&upload_packet(4, UploadPrefix::LEN as u64 + 4, b"nope"));
    after_quit.extend_from_slice(&[0xEE; 100]);
    let mut quit_with_body = Header::request(82, 1000).encode().to_vec();
    quit_with_body.extend_from_slice(&[0x55; 1000]);
    for addr in [tracker, storage] {
        for packet in [&after_quit, &quit_with_body] {
            let got = send_and_wait(addr, packet).await?;
            assert!(got.closed, "{addr} kept the connection after QUIT");
            assert_eq!(got.reply, b"", "{addr} answered after QUIT");
        }
    }
    assert_eq!(
        stored_files(&cluster.store_path(0, 0).join("data")).len(),
        files_before,
        "a request after QUIT was executed"
    );

    still_sound(&cluster, "after half-closed sockets").await
}

/// Opens `count` connections to `addr` (without sending anything).
async fn open_many(addr: SocketAddr, count: usize) -> Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        streams.push(TcpStream::connect(addr).await?);
    }
    Ok(streams)
}

/// Waits until the server has closed every one of `streams`.
async fn all_closed(streams: Vec<TcpStream>, deadline: Duration) -> Result<()> {
    let total = streams.len();
    let mut readers = tokio::task::JoinSet::new();
    for mut stream in streams {
        readers.spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
    }
    tokio::time::timeout(deadline, async {
        while readers.join_next().await.is_some() {}
    })
    .await
    .with_context(|| format!("not all of {total} idle connections were closed"))
}

#[tokio::test]
async fn thousands_of_idle_connections_are_held_then_timed_out() -> Result<()> {
    // each idle connection costs a descriptor here and one in the server
    let limit = raise_nofile(16_384);
    let per_server = 2000.min((limit as usize).saturating_sub(512) / 3);
    let cluster = Cluster::builder()
        .tracker_config("network_timeout = \"2s\"\nidle_timeout = \"5s\"\nmax_connections = 4096")
        .storage_config("network_timeout = \"2s\"\nidle_timeout = \"5s\"\nmax_connections = 4096")
        .start()
        .await?;
    let idle_tracker = open_many(cluster.tracker.addr, per_server).await?;
    let idle_storage = open_many(cluster.storages[0].addr, per_server).await?;
    served(&cluster, "thousands of idle connections").await?;
    assert_healthy(&cluster)?;
    // the idle timeout closes them all, and the servers carry on
    all_closed(idle_tracker, Duration::from_secs(30)).await?;
    all_closed(idle_storage, Duration::from_secs(30)).await?;
    served(&cluster, "after idle connections").await?;
    assert_healthy(&cluster)
}

/// Opens `count` connections at once, then sends `request` on each: returns how many were
/// answered with a reply starting with `ok` and how many were closed, keeping the answered
/// ones open until the caller drops them.
async fn flood(
    addr: SocketAddr,
    count: usize,
    request: &[u8],
    ok: &[u8],
) -> Result<(Vec<TcpStream>, usize)> {
    let streams = open_many(addr, count).await?;
    let mut probes = tokio::task::JoinSet::new();
    for mut stream in streams {
        let request = request.to_vec();
        let ok = ok.to_vec();
        probes.spawn(async move {
            // a refused connection may already be reset when we write
            let _ = stream.write_all(&request).await;
            let mut buf = vec![0u8; ok.len()];
            match tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf)).await {
                Ok(Ok(_)) if buf == ok => Ok(Some(stream)),
                Ok(_) => Ok(None),
                Err(_) => Err(anyhow::anyhow!("neither answered nor closed within 10 s")),
            }
        });
    }
    let mut answered = Vec::new();
    let mut closed = 0;
    while let Some(probe) = probes.join_next().await {
        match probe?? {
            Some(stream) => answered.push(stream),
            None => closed += 1,
        }
    }
    Ok((answered, closed))
}

#[tokio::test]
async fn connection_floods_past_the_limit_are_closed_and_service_resumes() -> Result<()> {
    const MAX: usize = 32;
    const EXTRA: usize = 40;
    raise_nofile(4096);
    // a long idle timeout, so the only reason to close an idle connection here is the limit
    let config =
        format!("network_timeout = \"2s\"\nidle_timeout = \"60s\"\nmax_connections = {MAX}");
    let cluster = Cluster::builder()
        .tracker_config(&config)
        .storage_config(&config)
        .start()
        .await?;
    let http = cluster.storages[0].http_addr().await?;
    let active_test = Header::request(111, 0).encode();
    let active_ok = Header::response(0, 0).encode();
    let targets: [(&str, SocketAddr, &[u8], &[u8]); 3] = [
        ("tracker", cluster.tracker.addr, &active_test, &active_ok),
        (
            "storage",
            cluster.storages[0].addr,
            &active_test,
            &active_ok,
        ),
        (
            "storage http",
            http,
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
            b"HTTP/1.1 200",
        ),
    ];
    for (name, addr, request, ok) in targets {
        let (held, closed) = flood(addr, MAX + EXTRA, request, ok).await?;
        // the storage keeps a connection or two to the tracker: those count against its limit
        assert!(
            held.len() <= MAX && held.len() + 4 >= MAX,
            "{name}: {} connections served with a limit of {MAX}",
            held.len()
        );
        assert_eq!(held.len() + closed, MAX + EXTRA, "{name}");
        drop(held);
        // once the flood is gone, normal clients get in again
        wait_for(
            &format!("{name} serving after the flood"),
            Duration::from_secs(10),
            || async {
                let mut stream = TcpStream::connect(addr).await.ok()?;
                stream.write_all(request).await.ok()?;
                let mut buf = vec![0u8; ok.len()];
                stream.read_exact(&mut buf).await.ok()?;
                (buf == ok).then_some(())
            },
        )
        .await?;
    }
    served(&cluster, "after the floods").await?;
    assert_healthy(&cluster)
}
