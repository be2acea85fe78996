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
    wait_for(what, DEADLINE, || {
        let status = status_json(trackers).ok();
        let ok = status.as_ref().and_then(first_storage).is_some_and(&check);
        async move { status.filter(|_| ok) }
    })
    .await
}

/// One tracker request with a raw socket; returns the reply body (status must be 0).
async fn tracker_call(addr: &str, cmd: u8, body: &[u8]) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = (body.len() as u64).to_be_bytes().to_vec();
    request.extend_from_slice(&[cmd, 0]);
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    let mut header = [0u8; 10];
    stream.read_exact(&mut header).await?;
    let len = u64::from_be_bytes(header[..8].try_into()?);
    anyhow::ensure!(header[8] == 100, "reply command {}", header[8]);
    anyhow::ensure!(header[9] == 0, "reply status {}", header[9]);
    anyhow::ensure!(len < 1 << 20, "reply length {len}");
    let mut reply = vec![0u8; len as usize];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
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
    assert_eq!(errors(&http_get(http0, "/metrics").await?), Some(0.0));
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
            (errors(&text)? > 0.0).then_some(())
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
    let accepted = fdfs(&trackers, &["storage", "delete", "group1", "100001"]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
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
    while started.elapsed() < Duration::from_secs(4) {
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
