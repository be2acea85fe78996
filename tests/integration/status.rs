//! Operations: the storage's counters as `fdfs status --json`, the raw list replies (decoded
//! here from the spec's offsets, independently of `fdfs_proto::stat`) and the storage's
//! `/metrics` show them; they survive a restart; two trackers with one killed; `fdfs storage
//! delete`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use fdfs_client::{Client, ClientConfig, UploadOptions};
use fdfs_tests::{bin_path, tracker_toml, wait_for, Cluster, Daemon};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);

fn fdfs(trackers: &[String], args: &[&str]) -> Output {
    let mut cmd = Command::new(bin_path("fdfs"));
    for tracker in trackers {
        cmd.arg("--tracker").arg(tracker);
    }
    cmd.args(args).output().expect("run fdfs")
}

/// `fdfs` that must succeed.
fn fdfs_ok(trackers: &[String], args: &[&str]) -> Output {
    let out = fdfs(trackers, args);
    assert!(
        out.status.success(),
        "fdfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn status_json(trackers: &[String]) -> Result<Value> {
    let out = fdfs(trackers, &["status", "--json"]);
    if !out.status.success() {
        return Err(anyhow!(
            "fdfs status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The first storage of the first group of the first tracker in a status object.
fn first_storage(status: &Value) -> Option<&Value> {
    status["trackers"][0]["groups"][0]["storages"].get(0)
}

fn counter(storage: &Value, name: &str) -> i64 {
    storage["stat"][name].as_i64().unwrap_or(-1)
}

/// Polls `fdfs status --json` until `check` holds for the first storage.
async fn wait_status(
    trackers: &[String],
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_cluster_status(trackers, what, |s| first_storage(s).is_some_and(&check)).await
}

/// One tracker request with a raw socket; returns the reply body (status must be 0).
async fn tracker_call(addr: &str, cmd: u8, body: &[u8]) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let (status, reply) = call_on(&mut stream, cmd, body).await?;
    anyhow::ensure!(status == 0, "reply status {status}");
    Ok(reply)
}

/// One request on an open tracker connection; returns the reply status and body.
async fn call_on(stream: &mut TcpStream, cmd: u8, body: &[u8]) -> Result<(u8, Vec<u8>)> {
    let mut request = (body.len() as u64).to_be_bytes().to_vec();
    request.extend_from_slice(&[cmd, 0]);
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    let mut header = [0u8; 10];
    stream.read_exact(&mut header).await?;
    let len = u64::from_be_bytes(header[..8].try_into()?);
    anyhow::ensure!(header[8] == 100, "reply command {}", header[8]);
    anyhow::ensure!(len < 1 << 20, "reply length {len}");
    let mut reply = vec![0u8; len as usize];
    stream.read_exact(&mut reply).await?;
    Ok((header[9], reply))
}

fn be64(bytes: &[u8], offset: usize) -> i64 {
    i64::from_be_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

fn text_field(bytes: &[u8], offset: usize, len: usize) -> String {
    let raw = &bytes[offset..offset + len];
    let end = raw.iter().position(|b| *b == 0).unwrap_or(len);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn padded_group(group: &str) -> Vec<u8> {
    let mut body = group.as_bytes().to_vec();
    body.resize(16, 0);
    body
}

/// E.1: name char[17], then 12 int64 (storage_count is the fifth).
struct RawGroup {
    name: String,
    storage_count: i64,
}

fn decode_groups(body: &[u8]) -> Result<Vec<RawGroup>> {
    anyhow::ensure!(
        body.len().is_multiple_of(113),
        "group list of {} bytes",
        body.len()
    );
    Ok(body
        .chunks(113)
        .map(|g| RawGroup {
            name: text_field(g, 0, 17),
            storage_count: be64(g, 17 + 4 * 8),
        })
        .collect())
}

/// E.2 with W = 16 (487 bytes): status, rw_mode, id[16], ip[16], src_id[16], version[8],
/// 10 int64, then the stat block: 3 int32 and 42 int64 from offset 138.
struct RawStorage {
    status: u8,
    id: String,
    total_upload: i64,
    success_upload: i64,
    success_delete: i64,
    success_download: i64,
    last_heart_beat_time: i64,
}

fn decode_storages(body: &[u8]) -> Result<Vec<RawStorage>> {
    anyhow::ensure!(
        body.len().is_multiple_of(487),
        "storage list of {} bytes",
        body.len()
    );
    let counter = |s: &[u8], index: usize| be64(s, 138 + 12 + index * 8);
    Ok(body
        .chunks(487)
        .map(|s| RawStorage {
            status: s[0],
            id: text_field(s, 2, 16),
            total_upload: counter(s, 0),
            success_upload: counter(s, 1),
            success_delete: counter(s, 11),
            success_download: counter(s, 13),
            last_heart_beat_time: counter(s, 41),
        })
        .collect())
}

pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no header end"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_string())
}

/// The value of the sample `name{labels}` (labels exactly as rendered, sorted by the exporter).
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == series).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn counters_show_in_status_list_replies_and_metrics_and_survive_restarts() -> Result<()> {
    let mut cluster = Cluster::builder().start().await?;
    let trackers = vec![cluster.tracker_addr()];
    let client = cluster.client();
    const N: i64 = 6;
    let mut ids = Vec::new();
    for i in 0..N {
        let data = format!("file number {i}");
        let id = client
            .upload_bytes(data.as_bytes(), &UploadOptions::default())
            .await?;
        assert_eq!(client.download_bytes(&id, 0, 0).await?, data.as_bytes());
        ids.push(id);
    }
    client.delete(&ids[0]).await?;
    client.delete(&ids[1]).await?;

    let status = wait_status(&trackers, "counters in fdfs status", |s| {
        counter(s, "success_upload_count") == N
            && counter(s, "success_download_count") == N
            && counter(s, "success_delete_count") == 2
    })
    .await?;
    let storage = first_storage(&status).unwrap();
    assert_eq!(storage["state"], "ACTIVE");
    assert_eq!(storage["id"], "100001");
    assert_eq!(counter(storage, "total_upload_count"), N);
    assert!(counter(storage, "success_upload_bytes") > 0);
    assert!(counter(storage, "last_source_update") > 0);
    assert_eq!(status["agree"], true);

    // the same numbers from the raw replies, decoded from the spec offsets
    let groups = decode_groups(&tracker_call(&trackers[0], 91, &[]).await?)?;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].name, "group1");
    assert_eq!(groups[0].storage_count, 1);
    let storages =
        decode_storages(&tracker_call(&trackers[0], 92, &padded_group("group1")).await?)?;
    assert_eq!(storages.len(), 1);
    let raw = &storages[0];
    assert_eq!(raw.id, "100001");
    assert_eq!(raw.status, 7, "ACTIVE");
    assert_eq!(raw.total_upload, N);
    assert_eq!(raw.success_upload, N);
    assert_eq!(raw.success_download, N);
    assert_eq!(raw.success_delete, 2);
    assert!(raw.last_heart_beat_time > 0);

    // the storage's own /metrics
    let http = cluster.storages[0].http_addr().await?;
    let text = http_get(http, "/metrics").await?;
    let uploads = sample(
        &text,
        "fdfs_storage_requests_total{command=\"upload_file\",status=\"0\"}",
    )
    .ok_or_else(|| anyhow!("no upload series in:\n{text}"))?;
    assert!(uploads >= N as f64, "{uploads}");
    let downloads = sample(
        &text,
        "fdfs_storage_requests_total{command=\"download_file\",status=\"0\"}",
    );
    assert_eq!(downloads, Some(N as f64));
    assert!(sample(&text, "fdfs_storage_bytes_sent_total").unwrap_or(0.0) > 0.0);
    assert!(
        text.contains("fdfs_storage_disk_free_bytes{path="),
        "{text}"
    );
    assert!(text.contains("fdfs_storage_request_duration_seconds_bucket{command=\"upload_file\""));

    // a graceful restart keeps the counters: one more upload makes N + 1, not 1
    cluster.storages[0].terminate(Duration::from_secs(10))?;
    let stat_file = cluster.storage_base(0).join("data/storage_counters.toml");
    let saved = std::fs::read_to_string(&stat_file).context("stat file")?;
    assert!(
        saved.contains(&format!("success_upload_count = {N}")),
        "{saved}"
    );
    let conf = cluster.storages[0].config.clone();
    let base = cluster.storages[0].base.clone();
    cluster.storages[0] = Daemon::start("fdfs-storaged", &conf, &base).await?;
    cluster.wait_active("group1", 1).await?;
    client
        .upload_bytes(b"after restart", &UploadOptions::default())
        .await?;
    wait_status(&trackers, "counters after restart", |s| {
        counter(s, "success_upload_count") == N + 1 && counter(s, "success_download_count") == N
    })
    .await?;
    Ok(())
}

/// Sum of the `fdfs_storage_files` samples (every store path) in a /metrics text.
fn stored_files_metric(text: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("fdfs_storage_files{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Polls every storage's /metrics until each shows `expected` stored files.
async fn wait_files_metric(cluster: &Cluster, expected: usize, what: &str) -> Result<()> {
    let mut addrs = Vec::new();
    for storage in &cluster.storages {
        addrs.push(storage.http_addr().await?);
    }
    wait_for(what, DEADLINE, || {
        let addrs = addrs.clone();
        async move {
            for addr in addrs {
                let text = http_get(addr, "/metrics").await.ok()?;
                if stored_files_metric(&text) != Some(expected as f64) {
                    return None;
                }
            }
            Some(())
        }
    })
    .await
}

#[tokio::test]
async fn files_per_store_path_and_sync_out_bytes_follow_replication() -> Result<()> {
    let mut cluster = Cluster::builder()
        .groups(&[("group1", 2)])
        .storage_config("access_log = true")
        .start()
        .await?;
    let trackers = vec![cluster.tracker_addr()];
    let client = cluster.client();
    const N: usize = 8;
    const M: usize = 3;
    let mut ids = Vec::new();
    let mut content_bytes = 0;
    for i in 0..N {
        let data = format!("replicated file {i}").repeat(i + 1);
        content_bytes += data.len() as i64;
        ids.push(
            client
                .upload_bytes(data.as_bytes(), &UploadOptions::default())
                .await?,
        );
    }
    // every upload on both storages before the deletes: a delete that overtook its file's
    // replication would keep that content from ever being pushed (and counted below)
    wait_files_metric(&cluster, N, "every upload on both storages").await?;
    for id in &ids[..M] {
        client.delete(id).await?;
    }
    // both storages: the source's own changes and the replicated ones
    wait_files_metric(&cluster, N - M, "fdfs_storage_files on both storages").await?;
    for index in 0..2 {
        let on_disk = fdfs_tests::stored_files(&cluster.store_path(index, 0).join("data"));
        assert_eq!(on_disk.len(), N - M, "storage {index}: {on_disk:?}");
    }

    // the content pushed to the peer shows as sync out bytes of the sources (E.3), and the
    // peer counted what it received
    let status = wait_for("sync out bytes in fdfs status", DEADLINE, || {
        let status = status_json(&trackers).ok();
        async move {
            let storages = status.as_ref()?["trackers"][0]["groups"][0]["storages"].as_array()?;
            let sum = |name: &str| storages.iter().map(|s| counter(s, name)).sum::<i64>();
            (storages.len() == 2
                && sum("success_sync_out_bytes") >= content_bytes
                && sum("success_sync_in_bytes") > 0)
                .then(|| status.clone())
                .flatten()
        }
    })
    .await?;
    let storages = status["trackers"][0]["groups"][0]["storages"]
        .as_array()
        .unwrap();
    for storage in storages {
        assert!(
            counter(storage, "total_sync_out_bytes") >= counter(storage, "success_sync_out_bytes"),
            "{storage}"
        );
    }
    // the raw 92 reply carries the same field (E.3: success_sync_out_bytes is counter 31)
    let raw = tracker_call(&trackers[0], 92, &padded_group("group1")).await?;
    anyhow::ensure!(raw.len() == 2 * 487, "storage list of {} bytes", raw.len());
    let sync_out: i64 = raw.chunks(487).map(|s| be64(s, 138 + 12 + 31 * 8)).sum();
    assert!(sync_out >= content_bytes, "{sync_out} < {content_bytes}");

    // the access log names the file: as an upload on one storage, as a replicated create
    // on the other
    let last = ids[N - 1].to_string();
    wait_for("the file ID in both access logs", DEADLINE, || {
        let logged = cluster.storages.iter().all(|s| {
            s.log()
                .lines()
                .any(|l| l.contains("access") && l.contains(&last))
        });
        async move { logged.then_some(()) }
    })
    .await?;

    // a peer that is down: the other storage's attempts to sync with it fail and are counted
    let errors = |text: &str| sample(text, "fdfs_storage_sync_errors_total{peer=\"100002\"}");
    let http0 = cluster.storages[0].http_addr().await?;
    // counted from here: a push that failed while the peer was starting counts too
    let before = errors(&http_get(http0, "/metrics").await?)
        .ok_or_else(|| anyhow::anyhow!("no sync error counter for the peer"))?;
    cluster.storages[1].terminate(Duration::from_secs(10))?;
    wait_for("one active storage", DEADLINE, || {
        let cluster = &cluster;
        async move { (cluster.active_count("group1").await == 1).then_some(()) }
    })
    .await?;
    let extra = client
        .upload_bytes(b"while the peer is down", &UploadOptions::default())
        .await?;
    wait_for(
        "sync errors for the stopped peer",
        DEADLINE,
        || async move {
            let text = http_get(http0, "/metrics").await.ok()?;
            (errors(&text)? > before).then_some(())
        },
    )
    .await?;

    // after a restart the count comes from the walk of the store path, and the file
    // uploaded meanwhile arrives
    let conf = cluster.storages[1].config.clone();
    let base = cluster.storages[1].base.clone();
    cluster.storages[1] = Daemon::start("fdfs-storaged", &conf, &base).await?;
    cluster.wait_active("group1", 2).await?;
    wait_files_metric(&cluster, N - M + 1, "fdfs_storage_files after a restart").await?;
    client.delete(&extra).await?;
    client.delete(&ids[M]).await?;
    wait_files_metric(&cluster, N - M - 1, "fdfs_storage_files after more deletes").await?;
    Ok(())
}

#[tokio::test]
async fn storage_delete_is_refused_while_active_and_accepted_once_offline() -> Result<()> {
    let mut cluster = Cluster::builder().start().await?;
    let trackers = vec![cluster.tracker_addr()];
    let refused = fdfs(&trackers, &["storage", "delete", "group1", "100001"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("stop the storage first"), "{stderr}");

    cluster.storages[0].terminate(Duration::from_secs(10))?;
    wait_status(&trackers, "storage offline", |s| s["state"] == "OFFLINE").await?;
    let text = String::from_utf8(fdfs(&trackers, &["status"]).stdout)?;
    assert!(
        text.contains("WARNING: group group1 storage 100001") && text.contains("is OFFLINE"),
        "{text}"
    );
    fdfs_ok(&trackers, &["storage", "delete", "group1", "100001"]);
    let status = status_json(&trackers)?;
    let left = status["trackers"][0]["groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .flat_map(|g| g["storages"].as_array().cloned().unwrap_or_default())
                .filter(|s| s["id"] == "100001" && s["state"] != "DELETED")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "{status}");
    Ok(())
}

async fn start_tracker(base: &Path, port: u16) -> Result<Daemon> {
    std::fs::create_dir_all(base)?;
    let conf = base.join("tracker.toml");
    let mut text = tracker_toml(base, "");
    text = text.replace("port = 0\n", &format!("port = {port}\n"));
    std::fs::write(&conf, text)?;
    Daemon::start("fdfs-trackerd", &conf, base).await
}

/// Retries a failed operation once, as the brief allows.
async fn twice<T, F, Fut>(mut op: F) -> std::result::Result<T, fdfs_client::ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, fdfs_client::ClientError>>,
{
    match op().await {
        Ok(value) => Ok(value),
        Err(_) => op().await,
    }
}

#[tokio::test]
async fn two_trackers_survive_a_kill_and_converge() -> Result<()> {
    let root = tempfile::Builder::new().prefix("fdfs-test-").tempdir()?;
    let mut first = start_tracker(&root.path().join("tracker1"), 0).await?;
    let second = start_tracker(&root.path().join("tracker2"), 0).await?;
    let trackers = vec![first.addr.to_string(), second.addr.to_string()];
    let base = root.path().join("storage100001");
    std::fs::create_dir_all(&base)?;
    let conf = base.join("storage.toml");
    std::fs::write(
        &conf,
        format!(
            "group_name = \"group1\"\nserver_id = 100001\nbind_addr = \"127.0.0.1\"\nport = 0\nbase_path = \"{}\"\nstore_paths = [\"{}\"]\nsubdir_count_per_path = 4\ntracker_servers = [\"{}\", \"{}\"]\nheart_beat_interval = \"1s\"\nhttp_port = 0\n",
            base.display(),
            base.join("store0").display(),
            trackers[0],
            trackers[1]
        ),
    )?;
    let _storage = Daemon::start("fdfs-storaged", &conf, &base).await?;
    let both_active = |status: &Value| {
        status["agree"] == true
            && status["trackers"].as_array().is_some_and(|ts| {
                ts.len() == 2
                    && ts.iter().all(|t| {
                        t["ok"] == true && t["groups"][0]["storages"][0]["state"] == "ACTIVE"
                    })
            })
    };
    wait_for("both trackers see the storage ACTIVE", DEADLINE, || {
        let ok = status_json(&trackers).is_ok_and(|s| both_active(&s));
        async move { ok.then_some(()) }
    })
    .await?;

    let client = Client::new(ClientConfig::new(trackers.clone()))?;
    let mut failures = Vec::new();
    let mut done = 0;
    let started = std::time::Instant::now();
    let mut killed = false;
    let options = UploadOptions::default();
    // at least 4 s of operations, and 10 before and 10 after the kill however slow they are
    while started.elapsed() < Duration::from_secs(60)
        && (started.elapsed() < Duration::from_secs(4) || done < 20)
    {
        if !killed && done >= 10 {
            first.kill();
            killed = true;
        }
        let data = format!("payload {done}");
        let result = async {
            let id = twice(|| client.upload_bytes(data.as_bytes(), &options)).await?;
            let back = twice(|| client.download_bytes(&id, 0, 0)).await?;
            Ok::<_, fdfs_client::ClientError>(back == data.as_bytes())
        }
        .await;
        match result {
            Ok(true) => done += 1,
            Ok(false) => failures.push(format!("op {done}: wrong content")),
            Err(err) => failures.push(format!("op {done}: {err}")),
        }
    }
    assert!(killed, "only {done} operations ran");
    assert!(failures.is_empty(), "{failures:?}");
    assert!(done > 10, "{done}");

    // the down tracker shows in the status; restarted on its port, it converges
    let status = status_json(&trackers)?;
    assert_eq!(status["trackers"][0]["ok"], false, "{status}");
    assert!(
        status["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("unreachable"))),
        "{status}"
    );
    let port = first.addr.port();
    let first_base = first.base.clone();
    drop(first);
    let _first = start_tracker(&first_base, port).await?;
    wait_for("both trackers agree after the restart", DEADLINE, || {
        let ok = status_json(&trackers)
            .is_ok_and(|s| both_active(&s) && s["warnings"] == serde_json::json!([]));
        async move { ok.then_some(()) }
    })
    .await?;
    Ok(())
}

/// The warning lines of a status object.
fn warnings_of(status: &Value) -> Vec<String> {
    status["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The storage `id` in a status object, from any group of the first tracker.
fn storage_in<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["trackers"][0]["groups"]
        .as_array()?
        .iter()
        .flat_map(|g| g["storages"].as_array().into_iter().flatten())
        .find(|s| s["id"] == id)
}

/// Polls `fdfs status --json` until `check` holds for the whole status.
async fn wait_cluster_status(
    trackers: &[String],
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(what, DEADLINE, || {
        let status = status_json(trackers).ok().filter(&check);
        async move { status }
    })
    .await
}

/// Writes the config of storage `id` of `group` with `edit` applied and starts it (the
/// harness's config otherwise).
async fn start_storage(
    cluster: &Cluster,
    group: &str,
    id: u32,
    edit: impl Fn(String) -> String,
) -> Result<Daemon> {
    let spec = fdfs_tests::StorageSpec {
        group: group.into(),
        server_id: id,
        store_path_count: 1,
        extra: String::new(),
    };
    let base = cluster.root.path().join(format!("storage{id}"));
    std::fs::create_dir_all(&base)?;
    let conf = base.join("storage.toml");
    std::fs::write(&conf, edit(cluster.storage_toml(&spec)))?;
    Daemon::start("fdfs-storaged", &conf, &base).await
}

#[tokio::test]
async fn status_warns_about_a_storage_listening_where_it_does_not_connect_from() -> Result<()> {
    let cluster = Cluster::builder().groups(&[]).start().await?;
    let trackers = vec![cluster.tracker_addr()];
    // listens on 127.0.0.2 but reaches the tracker from 127.0.0.1, the address the tracker
    // then hands to clients
    let storage = start_storage(&cluster, "group1", 100001, |text| {
        text.replace("bind_addr = \"127.0.0.1\"", "bind_addr = \"127.0.0.2\"")
    })
    .await?;
    assert_eq!(storage.addr.ip().to_string(), "127.0.0.2");
    let expected = format!(
        "group group1 storage 100001 (127.0.0.1:{}) address mismatch: it listens on 127.0.0.2 but connects to the tracker from 127.0.0.1",
        storage.addr.port()
    );
    let status = wait_cluster_status(&trackers, "the address mismatch warning", |s| {
        warnings_of(s).iter().any(|w| w.starts_with(&expected))
    })
    .await
    .with_context(|| format!("tracker log:\n{}", cluster.tracker.log()))?;
    let me = storage_in(&status, "100001").unwrap();
    assert_eq!(me["ip"], "127.0.0.1");
    assert_eq!(me["health"]["listen_ip"], "127.0.0.2");
    assert_eq!(status["trackers"][0]["health_supported"], true);
    let text = String::from_utf8(fdfs(&trackers, &["status"]).stdout)?;
    assert!(text.contains(&format!("WARNING: {expected}")), "{text}");
    assert!(
        cluster
            .tracker
            .log()
            .contains("storage listens on another IP than it connects from"),
        "{}",
        cluster.tracker.log()
    );
    Ok(())
}

#[tokio::test]
async fn status_warns_about_two_storages_at_one_address_until_the_stale_one_is_deleted(
) -> Result<()> {
    let mut cluster = Cluster::builder().start().await?;
    let trackers = vec![cluster.tracker_addr()];
    let port = cluster.storages[0].addr.port();
    // storage 100001 goes away; 100002 (another group: ids are unique across groups) comes
    // up on its address
    cluster.storages[0].kill();
    wait_status(&trackers, "storage offline", |s| s["state"] == "OFFLINE").await?;
    let second_storage = start_storage(&cluster, "group2", 100002, |text| {
        text.replace("\nport = 0\n", &format!("\nport = {port}\n"))
    })
    .await?;
    let first = format!(
        "group group1 storage 100001 (127.0.0.1:{port}) address mismatch: storage 100002 is registered at the same address"
    );
    let second = format!(
        "group group2 storage 100002 (127.0.0.1:{port}) address mismatch: storage 100001 is registered at the same address"
    );
    wait_cluster_status(&trackers, "both address warnings", |s| {
        let w = warnings_of(s);
        w.iter().any(|w| w.starts_with(&first)) && w.iter().any(|w| w.starts_with(&second))
    })
    .await
    .with_context(|| {
        format!(
            "tracker log:\n{}\nstorage 100002 log:\n{}",
            cluster.tracker.log(),
            second_storage.log()
        )
    })?;
    assert!(
        cluster
            .tracker
            .log()
            .contains("two storages are registered at the same address"),
        "{}",
        cluster.tracker.log()
    );
    fdfs_ok(&trackers, &["storage", "delete", "group1", "100001"]);
    let status = status_json(&trackers)?;
    let warnings = warnings_of(&status);
    assert!(
        !warnings.iter().any(|w| w.contains("address mismatch")),
        "{warnings:?}"
    );
    assert_eq!(
        storage_in(&status, "100002").unwrap()["health"]["same_address_as"],
        ""
    );
    Ok(())
}

#[tokio::test]
async fn status_shows_replication_lag_per_peer() -> Result<()> {
    let cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let trackers = vec![cluster.tracker_addr()];
    let client = cluster.client();
    for i in 0..5 {
        client
            .upload_bytes(format!("lag {i}").as_bytes(), &UploadOptions::default())
            .await?;
    }
    // each storage shows how far the other's changes reached it: caught up, in records and
    // seconds, reported by the other storage
    let caught_up = |status: &Value, id: &str, source: &str| {
        storage_in(status, id).is_some_and(|s| {
            s["health"]["replication"].as_array().is_some_and(|peers| {
                peers.iter().any(|p| {
                    p["source"] == source
                        && p["records_behind"] == 0
                        && p["seconds_behind"] == 0
                        && p["report_age_seconds"].as_i64().is_some_and(|age| age >= 0)
                })
            })
        })
    };
    // one clock on this machine: at most a second apart from rounding, in a report that was
    // not delayed (a report handled a second late reads as a skew; a real one never passes)
    let no_skew = |s: &serde_json::Value| {
        ["100001", "100002"].iter().all(|id| {
            storage_in(s, id).is_some_and(|st| {
                st["health"]["clock_skew_seconds"]
                    .as_i64()
                    .is_some_and(|skew| skew.abs() <= 1)
            })
        })
    };
    let status = wait_cluster_status(&trackers, "per-peer replication figures", |s| {
        caught_up(s, "100001", "100002") && caught_up(s, "100002", "100001") && no_skew(s)
    })
    .await?;
    let warnings = warnings_of(&status);
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("clock skew") || w.contains("lags")),
        "{warnings:?}"
    );
    let text = String::from_utf8(fdfs(&trackers, &["status"]).stdout)?;
    assert!(
        text.contains("    replication from 100002: 0 records, 0s behind")
            && text.contains("    replication from 100001: 0 records, 0s behind"),
        "{text}"
    );
    Ok(())
}

/// A FastDFS-like tracker for the list commands: one group without storages; any other
/// command (STORAGE_HEALTH included) is answered EINVAL and the connection kept (A.2, A.4).
async fn fastdfs_like_tracker() -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut header = [0u8; 10];
                while stream.read_exact(&mut header).await.is_ok() {
                    let len = u64::from_be_bytes(header[..8].try_into().unwrap());
                    let mut body = vec![0u8; len.min(1024) as usize];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let (status, reply) = match header[8] {
                        91 => {
                            // E.1: name char[17] and 12 int64, all zero but the name
                            let mut group = b"group1".to_vec();
                            group.resize(113, 0);
                            (0, group)
                        }
                        92 => (0, Vec::new()),
                        _ => (22, Vec::new()),
                    };
                    let mut out = (reply.len() as u64).to_be_bytes().to_vec();
                    out.extend_from_slice(&[100, status]);
                    out.extend_from_slice(&reply);
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn status_degrades_to_the_list_replies_against_a_tracker_without_storage_health() -> Result<()>
{
    let (addr, server) = fastdfs_like_tracker().await?;
    let trackers = vec![addr];
    let out = tokio::task::spawn_blocking({
        let trackers = trackers.clone();
        move || fdfs(&trackers, &["status", "--json"])
    })
    .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout)?;
    let tracker = &status["trackers"][0];
    assert_eq!(tracker["ok"], true, "{status}");
    assert_eq!(tracker["health_supported"], false, "{status}");
    assert_eq!(tracker["groups"][0]["name"], "group1", "{status}");
    server.abort();
    Ok(())
}

/// QUERY_FETCH_ONE for a file of an unknown group (ENOENT), then ACTIVE_TEST: once that is
/// answered, the tracker has finished with the query, its log lines included.
async fn query_unknown_group(stream: &mut TcpStream, group: &str) -> Result<()> {
    let mut body = padded_group(group);
    body.extend_from_slice(b"M00/00/00/wKgAAWXXXXXXXXXXXXXXXXXXXXXX.txt");
    assert_eq!(call_on(stream, 102, &body).await?.0, 2);
    assert_eq!(call_on(stream, 111, &[]).await?.0, 0);
    Ok(())
}

async fn wait_log(daemon: &Daemon, what: &str, needle: &str) -> Result<()> {
    wait_for(what, DEADLINE, || {
        let found = daemon.log().contains(needle);
        async move { found.then_some(()) }
    })
    .await
    .with_context(|| format!("{} log:\n{}", daemon.name, daemon.log()))
}

#[tokio::test]
async fn tracker_sighup_reloads_log_level_and_access_log_and_keeps_connections() -> Result<()> {
    let root = tempfile::Builder::new().prefix("fdfs-test-").tempdir()?;
    let base = root.path().join("tracker");
    std::fs::create_dir_all(&base)?;
    let conf = base.join("tracker.toml");
    let write = |extra: &str| std::fs::write(&conf, tracker_toml(&base, extra));
    write("log_level = \"warn\"\naccess_log = false")?;
    // without RUST_LOG, which would override log_level
    let tracker = Daemon::start_with_rust_log("fdfs-trackerd", &conf, &base, None).await?;
    let mut stream = TcpStream::connect(tracker.addr).await?;
    query_unknown_group(&mut stream, "grpbefore").await?;

    write("log_level = \"debug\"\naccess_log = true")?;
    tracker.signal(libc::SIGHUP);
    wait_log(&tracker, "the reload", "log_level and access_log reloaded").await?;
    // the same connection still works; its requests are in the access log now, and the
    // debug line of the refused query shows the new level
    query_unknown_group(&mut stream, "grpafter").await?;
    wait_log(&tracker, "an access log line", "file=\"grpafter/M00/00/00/").await?;
    let log = tracker.log();
    let access = log
        .lines()
        .find(|l| l.contains(" access: ") && l.contains("grpafter"))
        .ok_or_else(|| anyhow!("no access line:\n{log}"))?;
    for field in [
        "client=127.0.0.1:",
        "command=query_fetch_one",
        "status=2",
        "duration_us=",
    ] {
        assert!(access.contains(field), "{field} missing in {access}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("request failed")),
        "{log}"
    );
    assert!(!log.contains("grpbefore"), "{log}");

    // an invalid config is refused and the running one kept
    write("log_level = \"[[[\"\naccess_log = false")?;
    tracker.signal(libc::SIGHUP);
    wait_log(&tracker, "the refusal", "config not reloaded").await?;
    let refusal = tracker.log();
    let refusal = refusal
        .lines()
        .find(|l| l.contains("config not reloaded"))
        .unwrap_or_default()
        .to_string();
    assert!(
        refusal.contains("log_level") && refusal.contains(&conf.display().to_string()),
        "{refusal}"
    );
    query_unknown_group(&mut stream, "grpstill").await?;
    wait_log(
        &tracker,
        "access log still on",
        "file=\"grpstill/M00/00/00/",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn storage_sighup_switches_the_access_log_and_keeps_its_tracker_link() -> Result<()> {
    let cluster = Cluster::builder().start().await?;
    let storage = &cluster.storages[0];
    let client = cluster.client();
    // uploaded on a connection of our own: once the ACTIVE_TEST after it is answered, the
    // storage is done with the upload, its access log decision included
    let mut stream = TcpStream::connect(storage.addr).await?;
    let content = b"before the reload";
    let mut body = vec![0u8];
    body.extend_from_slice(&(content.len() as u64).to_be_bytes());
    body.extend_from_slice(b"txt\0\0\0");
    body.extend_from_slice(content);
    let (status, reply) = call_on(&mut stream, 11, &body).await?;
    assert_eq!(status, 0);
    let before = String::from_utf8_lossy(&reply[16..]).into_owned();
    assert_eq!(call_on(&mut stream, 111, &[]).await?.0, 0);
    let conf_text = std::fs::read_to_string(&storage.config)?;
    std::fs::write(&storage.config, format!("{conf_text}access_log = true\n"))?;
    storage.signal(libc::SIGHUP);
    wait_log(storage, "the reload", "log_level and access_log reloaded").await?;
    let after = client
        .upload_bytes(b"after the reload", &UploadOptions::default())
        .await?;
    let name = |id: &fdfs_client::FileId| id.to_string();
    wait_log(storage, "an access log line", &name(&after)).await?;
    let log = storage.log();
    assert!(!log.contains(&before), "{before} in:\n{log}");
    let access = log
        .lines()
        .find(|l| l.contains(" access: ") && l.contains(&name(&after)))
        .ok_or_else(|| anyhow!("no access line:\n{log}"))?;
    assert!(
        access.contains("command=upload_file") && access.contains("status=0"),
        "{access}"
    );

    // invalid: the running config stays, the access log keeps going
    std::fs::write(&storage.config, format!("{conf_text}access_log = 1\n"))?;
    storage.signal(libc::SIGHUP);
    wait_log(storage, "the refusal", "config not reloaded").await?;
    let still = client
        .upload_bytes(b"after the refusal", &UploadOptions::default())
        .await?;
    wait_log(storage, "access log still on", &name(&still)).await?;
    // one report connection all along: no second join
    assert_eq!(
        storage.log().matches("joined tracker").count(),
        1,
        "{}",
        storage.log()
    );
    Ok(())
}

#[tokio::test]
async fn config_errors_at_start_name_the_key_and_the_file() -> Result<()> {
    let root = tempfile::Builder::new().prefix("fdfs-test-").tempdir()?;
    let cases = [
        ("fdfs-trackerd", "prot = 1\n", "prot"),
        ("fdfs-trackerd", "max_connections = 0\n", "max_connections"),
        ("fdfs-trackerd", "log_level = \"[[[\"\n", "log_level"),
        (
            "fdfs-storaged",
            "group_name = \"group1\"\nserver_id = 1\nbase_path = \"/tmp\"\ntracker_servers = []\n",
            "tracker_servers",
        ),
        (
            "fdfs-storaged",
            "group_name = \"group1\"\nserver_id = 1\nbase_path = \"/tmp\"\ntracker_servers = [\"127.0.0.1:1\"]\nheart_beat_intervall = \"1s\"\n",
            "heart_beat_intervall",
        ),
    ];
    for (i, (binary, text, key)) in cases.into_iter().enumerate() {
        let conf = root.path().join(format!("bad{i}.toml"));
        std::fs::write(&conf, text)?;
        let out = Command::new(bin_path(binary))
            .arg("-c")
            .arg(&conf)
            .env_remove("RUST_LOG")
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{binary} {text}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(&conf.display().to_string()),
            "{binary} with {text:?} should name {key} and the file: {stderr}"
        );
    }
    Ok(())
}
