//! The storage's built-in HTTP server and nginx in front of the store directories, exercised
//! with real HTTP requests (a raw HTTP/1.1 client, so hostile request lines reach the server
//! exactly as written).
//!
//! nginx: the binary is `$FDFS_NGINX`, else `nginx` on PATH (Debian: /usr/sbin). A missing
//! nginx fails the test unless `FDFS_SKIP_NGINX=1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use fdfs_client::UploadOptions;
use fdfs_proto::name::{base_name, size_field, suffix, NameFields, Source};
use fdfs_tests::{wait_for, Cluster, StorageSpec};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------
// a small HTTP/1.1 client

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Reply> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    raw_request(addr, head.as_bytes(), method == "HEAD").await
}

async fn get(addr: SocketAddr, target: &str) -> Result<Reply> {
    request(addr, "GET", target, &[]).await
}

/// Sends raw bytes and parses what comes back until the server closes.
async fn raw_request(addr: SocketAddr, bytes: &[u8], head: bool) -> Result<Reply> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(bytes).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_reply(&raw, head)
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .context("http request timed out")?
}

fn parse_reply(raw: &[u8], head: bool) -> Result<Reply> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no header end in {:?}", String::from_utf8_lossy(raw)))?;
    let text = std::str::from_utf8(&raw[..end])?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().context("empty reply")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if head || status == 304 {
        Vec::new()
    } else if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    let reply = Reply {
        status,
        headers,
        body,
    };
    if let (Some(len), false) = (reply.header("content-length"), head) {
        if status != 304 {
            assert_eq!(
                len.parse::<usize>()?,
                reply.body.len(),
                "Content-Length vs body"
            );
        }
    }
    Ok(reply)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).context("short chunk")?);
        rest = &rest[size + 2..];
    }
}

/// The parts of a `multipart/byteranges` body: (Content-Range, bytes).
fn multipart_parts(reply: &Reply) -> Result<Vec<(String, Vec<u8>)>> {
    let content_type = reply.header("content-type").context("content-type")?;
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .context("boundary")?
        .trim_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    let body = &reply.body;
    let mut parts = Vec::new();
    let mut pos = find(body, delimiter.as_bytes(), 0).context("first delimiter")?;
    loop {
        pos += delimiter.len();
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        let head_end = find(body, b"\r\n\r\n", pos).context("part head")?;
        let head = std::str::from_utf8(&body[pos..head_end])?;
        let range = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .context("part Content-Range")?
            .to_string();
        let next = find(body, delimiter.as_bytes(), head_end + 4).context("next delimiter")?;
        parts.push((range, body[head_end + 4..next].to_vec()));
        pos = next;
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

// ---------------------------------------------------------------------------------------
// helpers

fn opts(ext: &str) -> UploadOptions {
    UploadOptions {
        ext: ext.into(),
        ..Default::default()
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Puts a file straight into storage `index`'s store path 0 under a valid name whose source
/// is storage `source_id`: a file "not yet replicated" anywhere else, whatever replication
/// does meanwhile (it only copies what its binlog records). Returns the file ID.
fn plant(cluster: &Cluster, index: usize, source_id: u32, content: &[u8], ext: &str) -> String {
    let fields = NameFields {
        source: Source::Id(source_id),
        timestamp: unix_now() as u32,
        size_field: size_field(content.len() as u64, false, rand::random()),
        crc32: crc32fast::hash(content),
    };
    let base = base_name(&fields, &suffix(ext, "4242424"));
    let dir = cluster.store_path(index, 0).join("data/00/00");
    std::fs::create_dir_all(&dir).expect("data dir");
    std::fs::write(dir.join(&base), content).expect("planted file");
    format!("group1/M00/00/00/{base}")
}

/// A tracker and storages 100001.. in group1, each with a fixed HTTP port and every other
/// one listed in `http_peers`; `extra[i]` is added to storage i's config.
async fn cluster_with_peers(extra: &[&str]) -> Result<(Cluster, Vec<u16>)> {
    let mut cluster = Cluster::builder()
        .groups(&[])
        .start_without_waiting()
        .await?;
    let ports: Vec<u16> = extra.iter().map(|_| free_port()).collect();
    for (i, more) in extra.iter().enumerate() {
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, port)| format!("\"{}\" = \"127.0.0.1:{port}\"", 100_001 + j))
            .collect();
        cluster
            .add_storage(StorageSpec {
                group: "group1".into(),
                server_id: 100_001 + i as u32,
                store_path_count: 1,
                extra: format!(
                    "http_port = {}\nhttp_peers = {{ {} }}\n{more}\n",
                    ports[i],
                    peers.join(", ")
                ),
            })
            .await?;
    }
    cluster.wait_active("group1", extra.len()).await?;
    Ok((cluster, ports))
}

// ---------------------------------------------------------------------------------------
// the built-in server

#[tokio::test]
async fn files_are_served_with_types_validators_and_ranges() -> Result<()> {
    let mut cluster = Cluster::builder().start().await?;
    let http = cluster.storages[0].http_addr().await?;
    let client = cluster.client();

    let health = get(http, "/healthz").await?;
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));

    // small (read at once) and large (streamed in chunks) files
    for (len, ext, content_type) in [
        (6usize, "txt", "text/plain; charset=utf-8"),
        (700 * 1024 + 3, "png", "image/png"),
        (0, "", "application/octet-stream"),
    ] {
        let content = pattern(len, len as u32);
        let id = client.upload_bytes(&content, &opts(ext)).await?;
        let url = format!("/{id}");
        let reply = get(http, &url).await?;
        assert_eq!(reply.status, 200, "{url}: {}", reply.text());
        assert!(reply.body == content, "{url}: body differs");
        assert_eq!(reply.header("content-type"), Some(content_type));
        assert_eq!(reply.header("accept-ranges"), Some("bytes"));
        assert_eq!(
            reply.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        let fields = NameFields::from_logical_name(&id.name.to_string())?;
        let etag = format!("\"{:08x}-{:x}\"", crc32fast::hash(&content), len);
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
        let last_modified = reply.header("last-modified").context("last-modified")?;
        assert_eq!(
            httpdate_secs(last_modified),
            u64::from(fields.timestamp),
            "Last-Modified is the name's timestamp"
        );

        let head = request(http, "HEAD", &url, &[]).await?;
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(len.to_string().as_str())
        );
        assert_eq!(head.header("etag"), Some(etag.as_str()));

        // conditional requests
        let reply = request(http, "GET", &url, &[("If-None-Match", &etag)]).await?;
        assert_eq!(reply.status, 304);
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
        let reply = request(http, "GET", &url, &[("If-None-Match", "\"other\"")]).await?;
        assert_eq!(reply.status, 200);
        let reply = request(http, "GET", &url, &[("If-Modified-Since", last_modified)]).await?;
        assert_eq!(reply.status, 304);
        let earlier = http_date(u64::from(fields.timestamp) - 10);
        let reply = request(http, "GET", &url, &[("If-Modified-Since", &earlier)]).await?;
        assert_eq!(reply.status, 200);

        if len == 0 {
            let reply = request(http, "GET", &url, &[("Range", "bytes=0-0")]).await?;
            assert_eq!(reply.status, 416);
            assert_eq!(reply.header("content-range"), Some("bytes */0"));
            continue;
        }
        // ranges
        let reply = request(http, "GET", &url, &[("Range", "bytes=1-3")]).await?;
        assert_eq!(reply.status, 206);
        assert_eq!(reply.body, content[1..4]);
        assert_eq!(
            reply.header("content-range"),
            Some(format!("bytes 1-3/{len}").as_str())
        );
        let reply = request(http, "GET", &url, &[("Range", "bytes=-2")]).await?;
        assert_eq!((reply.status, &reply.body[..]), (206, &content[len - 2..]));
        let reply = request(
            http,
            "GET",
            &url,
            &[("Range", "bytes=0-0,4-"), ("If-Range", &etag)],
        )
        .await?;
        assert_eq!(reply.status, 206);
        let parts = multipart_parts(&reply)?;
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            (
                "bytes 0-0/".to_string() + &len.to_string(),
                content[..1].to_vec()
            )
        );
        assert_eq!(parts[1].0, format!("bytes 4-{}/{len}", len - 1));
        assert!(parts[1].1 == content[4..]);
        let stale = request(
            http,
            "GET",
            &url,
            &[("Range", "bytes=0-0"), ("If-Range", "\"stale\"")],
        )
        .await?;
        assert_eq!(stale.status, 200, "a stale If-Range gets the whole file");
        for bad in [
            format!("bytes={len}-"),
            "bytes=5-2".to_string(),
            "bytes=x".into(),
        ] {
            let reply = request(http, "GET", &url, &[("Range", &bad)]).await?;
            assert_eq!(reply.status, 416, "{bad}");
            assert_eq!(
                reply.header("content-range"),
                Some(format!("bytes */{len}").as_str())
            );
        }

        // download name
        let reply = get(
            http,
            &format!("{url}?filename=caf%C3%A9%20%22menu%22.{ext}"),
        )
        .await?;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-disposition"),
            Some(
                format!(
                    "attachment; filename=\"caf_ _menu_.{ext}\"; filename*=UTF-8''caf%C3%A9%20%22menu%22.{ext}"
                )
                .as_str()
            )
        );
    }

    // other methods
    let reply = request(http, "POST", "/healthz", &[("Content-Length", "0")]).await?;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));

    // a deleted file is gone (this storage is its source: no peer is asked)
    let id = client.upload_bytes(b"short-lived", &opts("txt")).await?;
    assert_eq!(get(http, &format!("/{id}")).await?.status, 200);
    client.delete(&id).await?;
    assert_eq!(get(http, &format!("/{id}")).await?.status, 404);

    // SIGTERM stops both servers cleanly
    assert_eq!(
        cluster.storages[0].terminate(Duration::from_secs(20))?,
        Some(0)
    );
    Ok(())
}

fn http_date(unix: u64) -> String {
    // e.g. "Sun, 22 Nov 2026 22:34:09 GMT", built by hand to stay independent of the server
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn httpdate_secs(text: &str) -> u64 {
    // find the unix time whose formatting matches: the server formats whole seconds
    let mut parts = text.split([' ', ':']);
    let _weekday = parts.next();
    let day: i64 = parts.next().and_then(|d| d.parse().ok()).unwrap_or(0);
    let month = parts.next().unwrap_or("");
    let year: i64 = parts.next().and_then(|y| y.parse().ok()).unwrap_or(0);
    let h: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let m: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let s: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|n| *n == month).unwrap_or(0) as i64 + 1;
    let days = days_from_civil(year, month, day);
    days as u64 * 86_400 + h * 3600 + m * 60 + s
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// GET of `target`: after the headers, reads nothing until everyone at `gate` has come twice
/// (the server meets a full socket meanwhile), then reads the body to the end; returns
/// (status, body length, CRC32 of the body).
async fn stalled_get(
    addr: SocketAddr,
    target: &str,
    gate: std::sync::Arc<tokio::sync::Barrier>,
) -> Result<(u16, u64, u32)> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let header_end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("connection closed before the headers");
        }
        pending.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&pending, b"\r\n\r\n", 0) {
            break end;
        }
    };
    let status: u16 = std::str::from_utf8(&pending[9..12])?.parse()?;
    // every reader has its headers; then the memory is measured
    gate.wait().await;
    gate.wait().await;
    let mut hasher = crc32fast::Hasher::new();
    let mut len = (pending.len() - header_end - 4) as u64;
    hasher.update(&pending[header_end + 4..]);
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((status, len, hasher.finalize()))
}

#[tokio::test]
async fn large_files_stream_with_bounded_memory() -> Result<()> {
    const BIG: u64 = 128 << 20;
    let cluster = Cluster::builder().start().await?;
    let http = cluster.storages[0].http_addr().await?;
    let id = cluster
        .client()
        .upload_reader(fdfs_tests::PatternReader::new(9, BIG), BIG, &opts("bin"))
        .await?;
    let expected = fdfs_tests::PatternReader::crc_of(9, BIG);
    let idle = cluster.storages[0].rss_kib().context("rss")?;
    // four slow readers of the whole file at once, and two ranges
    let url = format!("/{id}");
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(5));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (url, gate) = (url.clone(), gate.clone());
            tokio::spawn(async move { stalled_get(http, &url, gate).await })
        })
        .collect();
    // all four stalled on a full socket with their downloads open
    tokio::time::timeout(Duration::from_secs(60), gate.wait())
        .await
        .context("the readers never all got their headers")?;
    let stalled = cluster.storages[0].rss_kib().context("rss")?;
    gate.wait().await;
    for reader in readers {
        let (status, len, crc) = reader.await??;
        assert_eq!((status, len, crc), (200, BIG, expected));
    }
    eprintln!("storage rss: {idle} KiB idle, {stalled} KiB with the stalled readers");
    let grown_mib = stalled.saturating_sub(idle) / 1024;
    assert!(
        grown_mib < 48,
        "storage RSS grew by {grown_mib} MiB with four stalled 128 MiB downloads"
    );
    let tail = request(http, "GET", &url, &[("Range", "bytes=-100,0-99")]).await?;
    assert_eq!(tail.status, 206);
    assert_eq!(multipart_parts(&tail)?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn appender_and_slave_files() -> Result<()> {
    let cluster = Cluster::builder().start().await?;
    let http = cluster.storages[0].http_addr().await?;
    let client = cluster.client();

    let appender = client
        .upload_appender_bytes(b"hello\n", &opts("log"))
        .await?;
    client.append_bytes(&appender, b"world\n").await?;
    let url = format!("/{appender}");
    let reply = get(http, &url).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"hello\nworld\n");
    assert_eq!(reply.header("cache-control"), Some("no-cache"));
    let etag = reply.header("etag").context("etag")?.to_string();
    assert!(etag.starts_with("W/\""), "appenders get weak ETags: {etag}");
    assert_eq!(
        request(http, "GET", &url, &[("If-None-Match", &etag)])
            .await?
            .status,
        304
    );
    // a weak ETag never satisfies If-Range: the whole (current) file comes back
    let reply = request(
        http,
        "GET",
        &url,
        &[("Range", "bytes=0-4"), ("If-Range", &etag)],
    )
    .await?;
    assert_eq!((reply.status, reply.body.len()), (200, 12));
    let info = client.file_info(&appender).await?;
    let last_modified = reply.header("last-modified").context("last-modified")?;
    assert_eq!(httpdate_secs(last_modified), info.create_timestamp);
    // the content changes: so does the answer
    client.append_bytes(&appender, b"again\n").await?;
    let reply = get(http, &url).await?;
    assert_eq!(reply.body, b"hello\nworld\nagain\n");
    let range = request(http, "GET", &url, &[("Range", "bytes=12-")]).await?;
    assert_eq!((range.status, &range.body[..]), (206, &b"again\n"[..]));

    let master = client.upload_bytes(&pattern(5000, 1), &opts("jpg")).await?;
    let thumb = pattern(300, 2);
    let slave = client
        .upload_slave_bytes(&master, "_150x150", "jpg", &thumb)
        .await?;
    let reply = get(http, &format!("/{slave}")).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, thumb);
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));
    // strong, from the slave's own content (its name carries the master's CRC)
    let etag = format!("\"{:08x}-{:x}\"", crc32fast::hash(&thumb), thumb.len());
    assert_eq!(reply.header("etag"), Some(etag.as_str()));
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let head = request(http, "HEAD", &format!("/{slave}"), &[]).await?;
    assert_eq!(
        head.header("etag"),
        Some(etag.as_str()),
        "HEAD and GET agree"
    );

    // a digit prefix without extension gives the slave a normal name's shape (H.8): it is
    // served as its own content, not refused as a damaged normal file, master or not
    let shaped = client
        .upload_slave_bytes(&master, "1234", "", &thumb)
        .await?;
    assert!(fdfs_proto::name::has_normal_suffix(shaped.name.base()));
    let reply = get(http, &format!("/{shaped}")).await?;
    assert_eq!((reply.status, &reply.body), (200, &thumb));
    client.delete(&master).await?;
    let reply = get(http, &format!("/{shaped}")).await?;
    assert_eq!((reply.status, &reply.body), (200, &thumb));
    Ok(())
}

#[tokio::test]
async fn anti_steal_tokens_and_referer_list() -> Result<()> {
    const KEY: &str = "FastDFS1234567890";
    // the M.1 vector was signed at 1795387000: a TTL that still covers it today
    let vector_ts = 1_795_387_000u64;
    let ttl = unix_now().saturating_sub(vector_ts) + 3600;
    let dir = tempfile::tempdir()?;
    let fail_image = dir.path().join("token-failed.png");
    std::fs::write(&fail_image, b"\x89PNG token failed")?;
    let cluster = Cluster::builder()
        .storage_config(&format!(
            "http_anti_steal.check_token = true\nhttp_anti_steal.secret_key = \"{KEY}\"\n\
             http_anti_steal.token_ttl = \"{ttl}s\"\n\
             http_anti_steal.token_check_fail = \"{}\"\n\
             http_referer_allow = [\"example.com\", \"*.example.org\"]\n",
            fail_image.display()
        ))
        .start()
        .await?;
    let http = cluster.storages[0].http_addr().await?;
    let client = cluster.client();
    let content = pattern(1000, 3);
    let id = client.upload_bytes(&content, &opts("jpg")).await?;
    let with_group = id.to_string();
    let without_group = id.name.to_string();
    let now = unix_now();
    let url = |token: &str, ts: u64| format!("/{with_group}?token={token}&ts={ts}");

    // unsigned → 400
    assert_eq!(get(http, &format!("/{with_group}")).await?.status, 400);
    assert_eq!(
        get(http, &format!("/{with_group}?token=abc")).await?.status,
        400
    );
    // valid, signed over the ID without the group (nginx module) and with it (FastDFS SDKs)
    for path in [&without_group, &with_group] {
        let token = md5_hex(&format!("{path}{KEY}{now}"));
        let reply = get(http, &url(&token, now)).await?;
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.body == content);
        assert_eq!(reply.header("x-fdfs-fallback"), None);
    }
    // upper-case hex is the same token
    let token = md5_hex(&format!("{without_group}{KEY}{now}")).to_uppercase();
    assert_eq!(get(http, &url(&token, now)).await?.status, 200);
    // expired, wrong, ts = 0 (refused by default) → the failure image with 200
    let old = now - ttl - 10;
    let cases = [
        (md5_hex(&format!("{without_group}{KEY}{old}")), old),
        (md5_hex(&format!("{without_group}wrong-key{now}")), now),
        (md5_hex(&format!("{without_group}{KEY}{now}")), now + 1),
        (md5_hex(&format!("{without_group}{KEY}0")), 0),
    ];
    for (token, ts) in &cases {
        let reply = get(http, &url(token, *ts)).await?;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"\x89PNG token failed", "ts {ts}");
        assert_eq!(reply.header("x-fdfs-fallback"), Some("token-check-fail"));
        assert_eq!(reply.header("content-type"), Some("image/png"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    // the spec vector passes the token check (the file itself is not in this cluster)
    let vector = "/group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt";
    for token in [
        "d30a1fe335f6c51b7f863df3a21946e8",
        "aa4c35dfb3c299e5ef18c60546b5236e",
    ] {
        let reply = get(http, &format!("{vector}?token={token}&ts={vector_ts}")).await?;
        assert_eq!(reply.status, 404, "token {token} accepted, file absent");
    }
    let reply = get(
        http,
        &format!("{vector}?token=d30a1fe335f6c51b7f863df3a21946e9&ts={vector_ts}"),
    )
    .await?;
    assert_eq!(reply.header("x-fdfs-fallback"), Some("token-check-fail"));

    // Referer allow-list
    let token = md5_hex(&format!("{without_group}{KEY}{now}"));
    let signed = url(&token, now);
    for (referer, status) in [
        ("https://example.com/gallery", 200),
        ("http://cdn.example.org/", 200),
        ("https://example.org/", 403),
        ("https://evil.example.com.attacker.net/", 403),
        ("garbage", 403),
    ] {
        let reply = request(http, "GET", &signed, &[("Referer", referer)]).await?;
        assert_eq!(reply.status, status, "{referer}");
    }
    Ok(())
}

#[tokio::test]
async fn group_less_urls() -> Result<()> {
    const KEY: &str = "k3y";
    let cluster = Cluster::builder()
        .storage_config(&format!(
            "http_url_have_group_name = false\nhttp_anti_steal.check_token = true\n\
             http_anti_steal.secret_key = \"{KEY}\"\n"
        ))
        .start()
        .await?;
    let http = cluster.storages[0].http_addr().await?;
    let id = cluster
        .client()
        .upload_bytes(b"no group in the URL", &opts("txt"))
        .await?;
    let name = id.name.to_string();
    let now = unix_now();
    // both token forms still work: the group comes from the storage's config
    for path in [name.clone(), id.to_string()] {
        let token = md5_hex(&format!("{path}{KEY}{now}"));
        let reply = get(http, &format!("/{name}?token={token}&ts={now}")).await?;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, b"no group in the URL");
    }
    let token = md5_hex(&format!("{name}{KEY}{now}"));
    let with_group = get(http, &format!("/{id}?token={token}&ts={now}")).await?;
    assert_eq!(with_group.status, 404, "the group form is not served");
    Ok(())
}

#[tokio::test]
async fn files_on_a_peer_are_proxied_or_redirected() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let default_image = dir.path().join("default.jpg");
    std::fs::write(&default_image, b"default image bytes")?;
    // storage 0 redirects, storage 1 proxies and has a default image
    let (mut cluster, _) = cluster_with_peers(&[
        "http_not_local = \"redirect\"",
        &format!(
            "http_not_local = \"proxy\"\nhttp_default_image = \"{}\"",
            default_image.display()
        ),
    ])
    .await?;
    let a = cluster.storages[0].http_addr().await?;
    let b = cluster.storages[1].http_addr().await?;

    // only on A (created there): B proxies
    let on_a = pattern(300 * 1024, 7);
    let id_a = plant(&cluster, 0, 100_001, &on_a, "bin");
    let url_a = format!("/{id_a}");
    let reply = wait_for("B to know A", Duration::from_secs(20), || async {
        get(b, &url_a).await.ok().filter(|r| r.status == 200)
    })
    .await?;
    assert!(reply.body == on_a, "proxied body differs");
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    let range = request(b, "GET", &url_a, &[("Range", "bytes=100-199")]).await?;
    assert_eq!((range.status, &range.body[..]), (206, &on_a[100..200]));
    let head = request(b, "HEAD", &url_a, &[]).await?;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(on_a.len().to_string().as_str())
    );
    let etag = head.header("etag").context("etag")?.to_string();
    assert_eq!(
        request(b, "GET", &url_a, &[("If-None-Match", &etag)])
            .await?
            .status,
        304
    );

    // only on B: A redirects to B with the loop marker, and B serves it
    let on_b = b"only on B".to_vec();
    let id_b = plant(&cluster, 1, 100_002, &on_b, "txt");
    let url_b = format!("/{id_b}?ts=1&token=x");
    let reply = wait_for("A to know B", Duration::from_secs(20), || async {
        get(a, &url_b).await.ok().filter(|r| r.status == 302)
    })
    .await?;
    let location = reply.header("location").context("location")?.to_string();
    assert_eq!(
        location,
        format!("http://{b}/{id_b}?ts=1&token=x&redirect=1")
    );
    let target = location.strip_prefix(&format!("http://{b}")).unwrap_or("");
    let followed = get(b, target).await?;
    assert_eq!((followed.status, followed.body), (200, on_b));
    // loop protection: a redirected request that is not here stops
    assert_eq!(get(a, &format!("/{id_b}?redirect=1")).await?.status, 404);

    // created on A and gone from A (deleted): 404 everywhere, no default image
    let gone = plant(&cluster, 0, 100_001, b"deleted soon", "txt");
    std::fs::remove_file(
        cluster
            .store_path(0, 0)
            .join("data/00/00")
            .join(gone.rsplit('/').next().unwrap_or("")),
    )?;
    assert_eq!(get(a, &format!("/{gone}")).await?.status, 404);
    let reply = get(b, &format!("/{gone}")).await?;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-fdfs-fallback"), None);

    // A down: B cannot reach the only copy → default image
    cluster.storages[0].kill();
    let reply = get(b, &url_a).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"default image bytes");
    assert_eq!(reply.header("x-fdfs-fallback"), Some("default-image"));
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    Ok(())
}

#[tokio::test]
async fn hostile_requests_are_refused() -> Result<()> {
    let cluster = Cluster::builder().start().await?;
    let http = cluster.storages[0].http_addr().await?;
    let client = cluster.client();
    let id = client
        .upload_bytes(
            b"secret-ish",
            &UploadOptions {
                ext: "txt".into(),
                metadata: vec![("owner".into(), "alice".into())],
                ..Default::default()
            },
        )
        .await?;
    // something outside the store the attacks aim at
    let outside = cluster.storage_base(0).join("outside.txt");
    std::fs::write(&outside, b"must never be served")?;
    let name = id.name.to_string();
    let base = name.rsplit('/').next().unwrap_or("").to_string();

    let cases: Vec<(String, u16)> = vec![
        ("/group1/M00/00/00/../../../outside.txt".into(), 400),
        ("/group1/M00/00/00/..%2F..%2F..%2Foutside.txt".into(), 400),
        ("/group1/M00/%2e%2e/%2e%2e/outside.txt".into(), 400),
        ("/group1/M00/00/00/%2e%2e%5coutside.txt".into(), 400),
        ("/group1/M00/00/00/%00".into(), 400),
        ("/group1/M00/00/00/%zz".into(), 400),
        ("/group1/M00/.tmp/x".into(), 400),
        ("/group1/M00/00/00/short".into(), 400),
        ("/group1/M00/00/0g/".to_string() + &base, 400),
        ("/group1/M07/00/00/".to_string() + &base, 400),
        (format!("/group1/M00/00/00/{}", "A".repeat(600)), 414),
        (format!("/group2/{name}"), 404),
        (format!("/group1/{name}-m"), 404),
        (format!("//group1/{name}"), 400),
        ("/".into(), 404),
        ("/etc/passwd".into(), 404),
    ];
    for (target, status) in &cases {
        let reply = get(http, target).await?;
        assert_eq!(reply.status, *status, "{target}: {}", reply.text());
        assert!(
            !reply.text().contains("must never be served") && !reply.text().contains("alice"),
            "{target} leaked"
        );
    }
    // not HTTP at all, absolute-form targets, huge headers
    let reply = raw_request(http, b"GARBAGE\r\n\r\n", false).await?;
    assert_eq!(reply.status, 400);
    let absolute =
        format!("GET http://{http}/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = raw_request(http, absolute.as_bytes(), false).await?;
    assert_eq!((reply.status, &reply.body[..]), (200, &b"secret-ish"[..]));
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let reply = raw_request(http, huge.as_bytes(), false).await;
    assert!(reply.map_or(true, |r| r.status >= 400));
    // many ranges do not multiply the answer
    let many: Vec<String> = (0..200).map(|_| "0-9".to_string()).collect();
    let reply = request(
        http,
        "GET",
        &format!("/{id}"),
        &[("Range", &format!("bytes={}", many.join(",")))],
    )
    .await?;
    assert!(reply.body.len() <= 10, "{}", reply.body.len());
    // still serving
    assert_eq!(get(http, "/healthz").await?.status, 200);
    assert_eq!(get(http, &format!("/{id}")).await?.status, 200);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// nginx in front of the store directories

/// nginx from `FDFS_NGINX` or PATH; None (test passes) only with `FDFS_SKIP_NGINX=1`.
fn nginx_binary() -> Result<Option<PathBuf>> {
    if std::env::var("FDFS_SKIP_NGINX").as_deref() == Ok("1") {
        eprintln!("FDFS_SKIP_NGINX=1: nginx test skipped");
        return Ok(None);
    }
    let wanted = std::env::var("FDFS_NGINX").unwrap_or_else(|_| "nginx".into());
    let candidates: Vec<PathBuf> = if wanted.contains('/') {
        vec![PathBuf::from(&wanted)]
    } else {
        std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"])
            .map(|dir| Path::new(dir).join(&wanted))
            .collect()
    };
    match candidates.into_iter().find(|p| p.is_file()) {
        Some(path) => Ok(Some(path)),
        None => bail!(
            "nginx not found ({wanted}): install it (apt-get install -y nginx-light), point \
             FDFS_NGINX at it, or set FDFS_SKIP_NGINX=1 to skip this test"
        ),
    }
}

/// A foreground nginx; stopped (SIGTERM, then SIGKILL) on drop.
struct Nginx {
    child: Child,
    prefix: PathBuf,
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_nginx(
    binary: &Path,
    storage_toml: &Path,
    prefix: &Path,
) -> Result<(Nginx, SocketAddr)> {
    let port = free_port();
    let conf = prefix.join("nginx.conf");
    let mut render = Command::new(repo_root().join("scripts/nginx-conf"));
    render
        .arg("-c")
        .arg(storage_toml)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--full")
        .arg("--workers")
        .arg("1")
        .arg("--prefix")
        .arg(prefix)
        .arg("-o")
        .arg(&conf);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // root's workers would run as nobody, who cannot enter the tests' 0700 temp dirs
        render.arg("--user").arg("root");
    }
    let output = render.output().context("running scripts/nginx-conf")?;
    if !output.status.success() {
        bail!(
            "scripts/nginx-conf failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let child = Command::new(binary)
        .arg("-p")
        .arg(prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut nginx = Nginx {
        child,
        prefix: prefix.to_path_buf(),
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let started = wait_for("nginx to listen", Duration::from_secs(20), || {
        let exited = matches!(nginx.child.try_wait(), Ok(Some(_)));
        async move {
            if exited {
                return Some(false);
            }
            match get(addr, "/healthz").await {
                Ok(reply) if reply.status == 200 => Some(true),
                _ => None,
            }
        }
    })
    .await;
    if !matches!(started, Ok(true)) {
        bail!("nginx did not start; error log:\n{}", nginx.error_log());
    }
    Ok((nginx, addr))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[tokio::test]
async fn nginx_serves_the_store_directories() -> Result<()> {
    let Some(nginx_bin) = nginx_binary()? else {
        return Ok(());
    };
    // B starts alone so that uploads land on its disk; A joins afterwards
    let mut cluster = Cluster::builder()
        .groups(&[])
        .start_without_waiting()
        .await?;
    let (port_a, port_b) = (free_port(), free_port());
    let spec = |id: u32, own: u16, peer_id: u32, peer: u16| StorageSpec {
        group: "group1".into(),
        server_id: id,
        store_path_count: 1,
        extra: format!(
            "http_port = {own}\nhttp_peers = {{ \"{peer_id}\" = \"127.0.0.1:{peer}\" }}\n"
        ),
    };
    cluster
        .add_storage(spec(100_002, port_b, 100_001, port_a))
        .await?;
    cluster.wait_active("group1", 1).await?;
    let client = cluster.client();
    let big = pattern(1024 * 1024 + 17, 11);
    let image = client.upload_bytes(&big, &opts("png")).await?;
    let text = client
        .upload_bytes(
            b"plain text\n",
            &UploadOptions {
                ext: "txt".into(),
                metadata: vec![("k".into(), "v".into())],
                ..Default::default()
            },
        )
        .await?;
    cluster
        .add_storage(spec(100_001, port_a, 100_002, port_b))
        .await?;
    cluster.wait_active("group1", 2).await?;
    let on_a_only = pattern(70_000, 12);
    let id_a = plant(&cluster, 1, 100_001, &on_a_only, "jpg");

    let prefix = tempfile::Builder::new().prefix("fdfs-nginx-").tempdir()?;
    let (nginx, addr) = start_nginx(&nginx_bin, &cluster.storages[0].config, prefix.path()).await?;
    let log = || nginx.error_log();

    let reply = get(addr, &format!("/{image}")).await?;
    assert_eq!(reply.status, 200, "{}", log());
    assert!(reply.body == big, "nginx body differs");
    assert_eq!(reply.header("content-type"), Some("image/png"));
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let range = request(
        addr,
        "GET",
        &format!("/{image}"),
        &[("Range", "bytes=1000-1999")],
    )
    .await?;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, big[1000..2000]);
    let reply = get(addr, &format!("/{text}")).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"plain text\n");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // the metadata sidecar and anything outside data/XX/YY are not served
    assert_eq!(get(addr, &format!("/{text}-m")).await?.status, 404);
    assert_eq!(
        get(addr, "/group1/M00/00/00/../../../storage.toml")
            .await?
            .status,
        404
    );
    assert_eq!(get(addr, "/group1/M00/.tmp/x").await?.status, 404);

    // not on this disk: nginx → B's built-in server → proxied from A
    let reply = wait_for(
        "the fallback through B to A",
        Duration::from_secs(20),
        || async {
            get(addr, &format!("/{id_a}"))
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await
    .with_context(log)?;
    assert!(reply.body == on_a_only, "fallback body differs");
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));
    Ok(())
}
