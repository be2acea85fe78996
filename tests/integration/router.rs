//! `fdfs import` and `fdfs-router` end to end: a generated old image tree (nested dirs, names
//! with spaces and UTF-8) imported into a test cluster, interrupted with kill -9 and resumed,
//! changed files re-imported, `--verify` catching a tampered mapping; then every old URL
//! fetched through the router with the original bytes, and the redirect, deny, proxy, 404,
//! encoding, case and query-string behaviours; signed URLs from `fdfs url` checked by the
//! storage's own HTTP server.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use fdfs_client::migrate::{MigrationMap, Record};
use fdfs_client::ClientError;
use fdfs_tests::{bin_path, stored_files, wait_for, Cluster, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "RouterTestSecret42";
const FILES: usize = 2000;

// ---------------------------------------------------------------------------------------
// a minimal HTTP/1.1 client (Connection: close), so request targets go out exactly as written

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
}

async fn request(addr: SocketAddr, method: &str, target: &str) -> Result<Reply> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head =
            format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_reply(&raw, method == "HEAD")
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .with_context(|| format!("{method} {target} timed out"))?
}

async fn get(addr: SocketAddr, target: &str) -> Result<Reply> {
    request(addr, "GET", target).await
}

fn parse_reply(raw: &[u8], head: bool) -> Result<Reply> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no header end in {:?}", String::from_utf8_lossy(raw)))?;
    let text = std::str::from_utf8(&raw[..end])?;
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .context("no status")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
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
    if let (Some(len), false) = (reply.header("content-length"), head || status == 304) {
        ensure!(
            len.parse::<usize>()? == reply.body.len(),
            "Content-Length {len} but {} body bytes",
            reply.body.len()
        );
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
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end])?.trim(), 16)?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).context("short chunk")?);
        rest = &rest[size + 2..];
    }
}

/// Percent-encodes a decoded path as a browser would (unreserved characters and `/` kept).
fn encode(path: &str) -> String {
    let mut out = String::new();
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// the old tree and the tools

/// Relative path and content of file `i`: nested dirs, spaces, UTF-8, mixed case.
fn tree_file(i: usize) -> (String, Vec<u8>) {
    let dir = format!("d{:02}/sub {}", i % 23, i % 5);
    let name = match i % 4 {
        0 => format!("img {i}.jpg"),
        1 => format!("фото_{i}.png"),
        2 => format!("图片 {i}.gif"),
        _ => format!("Mixed Case {i}.JPG"),
    };
    let len = 1 + (i * 7919) % 3000;
    let content = (0..len)
        .map(|j| ((i * 31 + j * 17) ^ (j >> 3)) as u8)
        .collect();
    (format!("{dir}/{name}"), content)
}

fn write_tree(root: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for i in 0..FILES {
        let (relative, content) = tree_file(i);
        let path = root.join(&relative);
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(&path, &content)?;
        files.insert(relative, content);
    }
    let private = "private/secret plan.txt".to_string();
    std::fs::create_dir_all(root.join("private"))?;
    std::fs::write(root.join(&private), b"top secret")?;
    files.insert(private, b"top secret".to_vec());
    Ok(files)
}

fn fdfs(client_conf: &Path, args: &[&str]) -> Result<Output> {
    let output = Command::new(bin_path("fdfs"))
        .arg("-c")
        .arg(client_conf)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running fdfs (build it first: cargo build --workspace --bins)")?;
    Ok(output)
}

fn import_args<'a>(tree: &'a str, map: &'a str) -> Vec<&'a str> {
    vec![
        "import",
        tree,
        "--prefix",
        "/upload/",
        "--map",
        map,
        "--concurrency",
        "4",
        "--quiet",
    ]
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn read_map(map: &Path) -> Result<BTreeMap<String, String>> {
    let map = MigrationMap::new(map, Duration::from_secs(10));
    let Some((entries, _)) = map.read_since(0)? else {
        return Ok(BTreeMap::new());
    };
    Ok(entries
        .into_iter()
        .map(|(path, entry)| (path, entry.file_id))
        .collect())
}

fn stored(cluster: &Cluster) -> usize {
    stored_files(&cluster.store_path(0, 0).join("data")).len()
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_then_serve_old_urls_through_the_router() -> Result<()> {
    let cluster = Cluster::builder()
        .storage_config(&format!(
            "http_anti_steal.check_token = true\nhttp_anti_steal.secret_key = \"{KEY}\"\n"
        ))
        .start()
        .await?;
    let work = tempfile::tempdir()?;
    let tree = work.path().join("old site root");
    let files = write_tree(&tree)?;
    let client_conf = work.path().join("client.toml");
    let storage_http = cluster.storages[0].http_addr().await?;
    std::fs::write(
        &client_conf,
        format!(
            "tracker_servers = [\"{}\"]\nhttp_secret_key = \"{KEY}\"\nhttp_base_url = \"http://{storage_http}\"\n",
            cluster.tracker_addr()
        ),
    )?;
    let map_path = work.path().join("map").join("migration.redb");
    let tree_arg = tree.to_str().context("utf-8 temp dir")?.to_string();
    let map_arg = map_path.to_str().context("utf-8 temp dir")?.to_string();

    // 1. an import killed midway maps only files that are stored
    let mut child = Command::new(bin_path("fdfs"))
        .arg("-c")
        .arg(&client_conf)
        .args(import_args(&tree_arg, &map_arg))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for(
        "a third of the tree uploaded",
        Duration::from_secs(120),
        || async { (stored(&cluster) >= FILES / 3).then_some(()) },
    )
    .await?;
    ensure!(
        child.try_wait()?.is_none(),
        "the import finished before it could be interrupted"
    );
    child.kill()?;
    child.wait()?;
    let partial = read_map(&map_path)?;
    ensure!(
        !partial.is_empty() && partial.len() < files.len(),
        "{} mapped",
        partial.len()
    );
    let client = cluster.client();
    for id in partial.values().take(50) {
        client.file_info(&fdfs_client::parse_file_id(id)?).await?;
    }
    let stored_after_kill = stored(&cluster);
    ensure!(
        stored_after_kill >= partial.len() && stored_after_kill <= partial.len() + 13,
        "{stored_after_kill} stored, {} mapped: at most ~3x concurrency may be unmapped",
        partial.len()
    );

    // 2. resumed: the rest is uploaded, nothing mapped before is uploaded again
    let output = fdfs(&client_conf, &import_args(&tree_arg, &map_arg))?;
    ensure!(output.status.success(), "resume: {}", describe(&output));
    let summary = String::from_utf8_lossy(&output.stdout).to_string();
    ensure!(
        summary.contains(&format!("{} unchanged", partial.len())),
        "resume summary: {summary}"
    );
    let full = read_map(&map_path)?;
    ensure!(
        full.len() == files.len(),
        "{} of {} mapped",
        full.len(),
        files.len()
    );
    for (path, id) in &partial {
        ensure!(full.get(path) == Some(id), "{path} re-uploaded");
    }
    let distinct: HashSet<&String> = full.values().collect();
    ensure!(distinct.len() == files.len(), "file ids are shared");
    let stored_full = stored(&cluster);
    let orphans = stored_full - files.len();
    ensure!(orphans <= 13, "{orphans} files stored but unmapped");

    // 3. a third run changes nothing
    let output = fdfs(&client_conf, &import_args(&tree_arg, &map_arg))?;
    ensure!(output.status.success(), "{}", describe(&output));
    ensure!(
        String::from_utf8_lossy(&output.stdout).contains(&format!(
            " 0 uploaded, 0 re-uploaded (changed), {} unchanged",
            files.len()
        )),
        "{}",
        describe(&output)
    );
    ensure!(
        stored(&cluster) == stored_full,
        "a no-op import stored files"
    );

    // 4. a changed file is detected, re-imported, and its old copy deleted
    let changed = tree_file(6).0;
    let changed_key = format!("/upload/{changed}");
    let old_id = full[&changed_key].clone();
    let new_content = b"a new version of this picture".to_vec();
    std::fs::write(tree.join(&changed), &new_content)?;
    let output = fdfs(&client_conf, &import_args(&tree_arg, &map_arg))?;
    ensure!(output.status.success(), "{}", describe(&output));
    let out = String::from_utf8_lossy(&output.stdout).to_string();
    ensure!(
        out.contains(" 0 uploaded, 1 re-uploaded") && out.contains("1 superseded deleted"),
        "{out}"
    );
    let after = read_map(&map_path)?;
    let new_id = after[&changed_key].clone();
    ensure!(new_id != old_id);
    ensure!(
        client
            .download_bytes(&fdfs_client::parse_file_id(&new_id)?, 0, 0)
            .await?
            == new_content
    );
    ensure!(
        matches!(
            client
                .file_info(&fdfs_client::parse_file_id(&old_id)?)
                .await,
            Err(ClientError::NotFound)
        ),
        "the superseded file is still stored"
    );
    ensure!(stored(&cluster) == stored_full);
    let mut files = files;
    files.insert(changed.clone(), new_content);

    // 5. --verify passes, then catches a mapping pointing at another file
    let mut verify = import_args(&tree_arg, &map_arg);
    verify.push("--verify");
    let output = fdfs(&client_conf, &verify)?;
    ensure!(output.status.success(), "verify: {}", describe(&output));
    ensure!(String::from_utf8_lossy(&output.stdout).contains(&format!(
        "verified {} mapped files: 0 mismatches",
        files.len()
    )));
    let victim = format!("/upload/{}", tree_file(1).0);
    let other = format!("/upload/{}", tree_file(2).0);
    let map = MigrationMap::new(&map_path, Duration::from_secs(10));
    let (entries, _) = map.read_since(0)?.context("map")?;
    let original = entries
        .iter()
        .find(|(p, _)| *p == victim)
        .context("victim")?
        .1
        .clone();
    let mut tampered = original.clone();
    tampered.file_id = after[&other].clone();
    map.commit(&[Record {
        path: victim.clone(),
        entry: tampered,
        superseded: None,
    }])?;
    let output = fdfs(&client_conf, &verify)?;
    ensure!(
        !output.status.success(),
        "verify missed the tampered mapping"
    );
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    ensure!(
        stdout.contains(&format!("MISMATCH {victim}")) && stdout.contains("1 mismatches"),
        "{stdout}"
    );
    map.commit(&[Record {
        path: victim,
        entry: original,
        superseded: None,
    }])?;

    // 6. the router
    let router_base = work.path().join("router");
    std::fs::create_dir_all(&router_base)?;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?;
    let router_conf = router_base.join("router.toml");
    std::fs::write(
        &router_conf,
        format!(
            r#"bind_addr = "127.0.0.1"
port = 0
base_path = "{base}"
map = "{map}"
map_refresh_interval = "200ms"
client_config = "{client}"
storage_url = "http://{storage_http}"
secret_key = "{KEY}"
proxy_timeout = "5s"
shutdown_timeout = "5s"

[[rules]]
prefix = "/upload/private/"
action = "deny"

[[rules]]
regex = "^/old/(.*)$"
action = "redirect"
to = "/upload/{{1}}"
status = 301

[[rules]]
prefix = "/ci/"
case_insensitive = true
action = "map"
key = "/upload/{{rest}}"

[[rules]]
prefix = "/direct/"
action = "map"
mode = "redirect"
key = "/upload/{{rest}}"
sign = true

[[rules]]
prefix = "/upload/"
action = "map"
mode = "serve"

[[rules]]
prefix = "/legacy/"
action = "proxy"
to = "http://{storage_http}/{{rest}}?{{query}}"

[[rules]]
prefix = "/slow/"
action = "proxy"
to = "http://{silent_addr}/{{rest}}"
"#,
            base = router_base.display(),
            map = map_path.display(),
            client = client_conf.display(),
        ),
    )?;
    let mut router = Daemon::start("fdfs-router", &router_conf, &router_base).await?;
    let addr = router.addr;

    // every old URL, encoded as a browser sends it, gives the original bytes
    let mut tasks = tokio::task::JoinSet::new();
    let public: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|(path, _)| !path.starts_with("private/"))
        .map(|(p, c)| (p.clone(), c.clone()))
        .collect();
    for chunk in public.chunks(public.len().div_ceil(8)) {
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            for (path, content) in chunk {
                let reply = get(addr, &encode(&format!("/upload/{path}"))).await?;
                if reply.status != 200 || reply.body != content {
                    bail!(
                        "/upload/{path}: status {}, {} bytes",
                        reply.status,
                        reply.body.len()
                    );
                }
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }

    let (sample, content) = public
        .iter()
        .find(|(p, _)| p.contains("Mixed Case"))
        .context("sample")?;
    let target = encode(&format!("/upload/{sample}"));
    // headers and conditional requests
    let reply = request(addr, "HEAD", &target).await?;
    ensure!(reply.status == 200 && reply.body.is_empty());
    ensure!(reply.header("content-length") == Some(content.len().to_string().as_str()));
    ensure!(reply.header("content-type") == Some("image/jpeg"));
    let etag = reply.header("etag").context("etag")?.to_string();
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    ensure!(parse_reply(&raw, false)?.status == 304);
    // query strings are not part of the path
    let reply = get(addr, &format!("{target}?v=123&w=a%20b")).await?;
    ensure!(reply.status == 200 && reply.body == *content);
    // encoded differently: every byte escaped, lower-case hex
    let all_escaped: String = format!("/upload/{sample}")
        .bytes()
        .map(|b| {
            if b == b'/' {
                "/".to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    let reply = get(addr, &all_escaped).await?;
    ensure!(reply.status == 200 && reply.body == *content);
    // mixed case: the case-insensitive rule finds it, the case-sensitive one does not
    let upper = encode(&format!("/CI/{}", sample.to_uppercase()));
    let reply = get(addr, &upper).await?;
    ensure!(
        reply.status == 200 && reply.body == *content,
        "{upper}: {}",
        reply.status
    );
    ensure!(
        get(addr, &encode(&format!("/upload/{}", sample.to_uppercase())))
            .await?
            .status
            == 404
    );
    // 404s, deny, traversal, encoded slashes
    ensure!(get(addr, "/upload/no/such/file.jpg").await?.status == 404);
    ensure!(get(addr, "/nowhere").await?.status == 404);
    ensure!(
        get(addr, &encode("/upload/private/secret plan.txt"))
            .await?
            .status
            == 403
    );
    for bad in [
        "/upload/../upload/private/x",
        "/upload/%2e%2e/etc/passwd",
        "/upload/d01%2Fsub",
        "/upload/%zz",
        "/upload/a%00b",
    ] {
        let reply = get(addr, bad).await?;
        ensure!(reply.status == 400, "{bad}: {}", reply.status);
    }
    ensure!(
        get(addr, &format!("/upload/{}", "x".repeat(2000)))
            .await?
            .status
            == 414
    );
    ensure!(request(addr, "DELETE", &target).await?.status == 405);
    ensure!(get(addr, "/healthz").await?.status == 200);
    // redirect with a capture
    let reply = get(addr, &encode(&format!("/old/{sample}"))).await?;
    ensure!(reply.status == 301);
    ensure!(
        reply.header("location") == Some(target.as_str()),
        "{:?}",
        reply.header("location")
    );
    // a signed redirect to the storage, which accepts the token
    let reply = get(addr, &encode(&format!("/direct/{sample}"))).await?;
    ensure!(reply.status == 302, "direct: {}", reply.status);
    let location = reply.header("location").context("location")?.to_string();
    let storage_target = location
        .strip_prefix(&format!("http://{storage_http}"))
        .with_context(|| format!("location {location}"))?;
    ensure!(storage_target.contains("token=") && storage_target.contains("&ts="));
    let reply = get(storage_http, storage_target).await?;
    ensure!(
        reply.status == 200 && reply.body == *content,
        "storage: {}",
        reply.status
    );
    // proxy: the storage's HTTP stands in for the old server (the query carries the token)
    let id = after[&format!("/upload/{sample}")].clone();
    let token_query = storage_target.split_once('?').context("query")?.1;
    let reply = get(addr, &format!("/legacy/{id}?{token_query}")).await?;
    ensure!(
        reply.status == 200 && reply.body == *content,
        "proxy: {}",
        reply.status
    );
    ensure!(
        get(addr, &format!("/legacy/{id}")).await?.status == 400,
        "the storage wants a token"
    );
    // an old server that never answers: 504 after proxy_timeout
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    ensure!(get(addr, "/slow/x.jpg").await?.status == 504);

    // fdfs url: signed with the config's secret and base, accepted by the storage
    let output = fdfs(&client_conf, &["url", &id])?;
    ensure!(output.status.success(), "{}", describe(&output));
    let url = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let path = url
        .strip_prefix(&format!("http://{storage_http}"))
        .with_context(|| format!("url {url}"))?;
    let reply = get(storage_http, path).await?;
    ensure!(
        reply.status == 200 && reply.body == *content,
        "fdfs url: {}",
        reply.status
    );
    let output = fdfs(
        &client_conf,
        &["url", &id, "--secret", "wrong", "--ttl", "60"],
    )?;
    let url = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let path = url
        .strip_prefix(&format!("http://{storage_http}"))
        .context("url")?;
    ensure!(
        get(storage_http, path).await?.status == 400,
        "a wrong secret passed"
    );

    // an import while the router runs: the new old URL works without a restart
    let added = "d03/added later.jpg";
    std::fs::write(tree.join(added), b"new upload")?;
    let output = fdfs(&client_conf, &import_args(&tree_arg, &map_arg))?;
    ensure!(output.status.success(), "{}", describe(&output));
    let reply = wait_for(
        "the router to see the new import",
        Duration::from_secs(10),
        || async {
            get(addr, &encode(&format!("/upload/{added}")))
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await?;
    ensure!(reply.body == b"new upload");

    // graceful stop
    let code = router.terminate(Duration::from_secs(10))?;
    ensure!(code == Some(0), "router exit code {code:?}");
    Ok(())
}
