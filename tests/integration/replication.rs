//! Group replication: convergence, read-your-writes, crashes, joining storages, disk
//! recovery and `write_ack = "all"`, against real processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use fdfs_client::{Client, ClientError, FileId, MetadataOp, UploadOptions};
use fdfs_proto::cmd::Command;
use fdfs_proto::conn::Connection;
use fdfs_proto::tracker_msg::FetchReply;
use fdfs_tests::{files_under, wait_for, Cluster, HashingWriter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;

/// How long replication may take to settle after the last change.
const SETTLE: Duration = Duration::from_secs(120);

fn addr(cluster: &Cluster, index: usize) -> String {
    cluster.storages[index].addr.to_string()
}

fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    data
}

/// Sizes from 0 B to 2 MiB, mostly small (as images are) so 1,000 uploads stay quick.
fn random_size(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..10) {
        0 => 0,
        1 => rng.gen_range(1 << 20..=2 << 20),
        2..=4 => rng.gen_range(64 << 10..1 << 20),
        _ => rng.gen_range(1..64 << 10),
    }
}

/// Size, mtime and CRC of `id` on the storage at `storage`, downloading it to check the
/// bytes; `None` when the storage does not hold it.
async fn state_on(
    client: &Client,
    storage: &str,
    id: &FileId,
) -> anyhow::Result<Option<(u64, u64, u32)>> {
    let info = match client.file_info_from(storage, id).await {
        Ok(info) => info,
        Err(ClientError::NotFound) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let mut sink = HashingWriter::default();
    client.download_from(storage, id, 0, 0, &mut sink).await?;
    let got = sink.hasher.finalize();
    anyhow::ensure!(
        sink.len == info.size,
        "{id} on {storage}: downloaded {} bytes, info says {}",
        sink.len,
        info.size
    );
    Ok(Some((info.size, info.create_timestamp, got)))
}

/// Every regular file below a storage's data directory (relative path → size and CRC),
/// without temp files and the store path marker.
fn disk_listing(root: &Path) -> BTreeMap<String, (u64, u32)> {
    let data = root.join("data");
    files_under(&data)
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&data).ok()?.to_str()?.to_string();
            if rel.starts_with('.') {
                return None;
            }
            let bytes = std::fs::read(&path).ok()?;
            Some((rel, (bytes.len() as u64, crc(&bytes))))
        })
        .collect()
}

/// Waits until every storage of the cluster holds each of `expected` (name → content CRC
/// and size) with the same size, mtime and bytes, and none of `gone`.
async fn wait_converged(
    cluster: &Cluster,
    expected: &[(FileId, u64, u32)],
    gone: &[FileId],
) -> anyhow::Result<()> {
    let client = cluster.client();
    let storages: Vec<String> = (0..cluster.storages.len())
        .map(|i| addr(cluster, i))
        .collect();
    let last_miss = std::sync::Mutex::new(String::new());
    let result = wait_for("every storage to hold the same files", SETTLE, || async {
        let miss = |what: String| {
            *last_miss.lock().unwrap() = what;
            None
        };
        for (id, size, content_crc) in expected {
            let mut mtimes = BTreeSet::new();
            for storage in &storages {
                match state_on(&client, storage, id).await {
                    Ok(Some((s, mtime, c))) if s == *size && c == *content_crc => {
                        mtimes.insert(mtime);
                    }
                    other => {
                        return miss(format!(
                            "{id} on {storage}: {other:?}, want size {size} crc {content_crc:08x}"
                        ))
                    }
                }
            }
            if mtimes.len() != 1 {
                return miss(format!("{id}: mtimes differ {mtimes:?}"));
            }
        }
        for id in gone {
            for storage in &storages {
                if !matches!(
                    client.file_info_from(storage, id).await,
                    Err(ClientError::NotFound)
                ) {
                    return miss(format!("deleted {id} still on {storage}"));
                }
            }
        }
        Some(())
    })
    .await;
    result.map_err(|err| {
        let logs: Vec<String> = cluster.storages.iter().map(|s| s.log()).collect();
        err.context(format!(
            "last difference: {}\nstorage logs:\n{}",
            last_miss.lock().unwrap(),
            logs.join("\n----\n")
        ))
    })
}

/// The storages QUERY_FETCH_ALL (105) names for `id`, as ports.
pub(crate) async fn fetch_all(cluster: &Cluster, id: &FileId) -> anyhow::Result<Vec<u16>> {
    let stream = TcpStream::connect(cluster.tracker.addr).await?;
    let mut conn = Connection::new(stream);
    let body = fdfs_proto::storage_msg::GroupAndName {
        group: id.group.clone(),
        name: id.name.to_string(),
    }
    .encode();
    match conn.call(Command::QueryFetchAll.code(), &body, 4096).await {
        Ok(reply) => Ok(FetchReply::decode(&reply)?
            .servers
            .iter()
            .map(|s| s.port)
            .collect()),
        Err(fdfs_proto::ProtoError::Status { status: 2 }) => Ok(Vec::new()),
        Err(err) => Err(err.into()),
    }
}

#[tokio::test]
async fn three_storages_converge_after_uploads_deletes_metadata_and_appends() -> anyhow::Result<()>
{
    let cluster = Cluster::builder().groups(&[("group1", 3)]).start().await?;
    let client = cluster.client();
    let mut rng = StdRng::seed_from_u64(4);
    let mut expected: Vec<(FileId, u64, u32)> = Vec::new();
    let mut gone = Vec::new();
    for i in 0..1000 {
        let size = random_size(&mut rng);
        let data = random_bytes(&mut rng, size);
        let id = client
            .upload_bytes(
                &data,
                &UploadOptions {
                    ext: "bin".into(),
                    ..Default::default()
                },
            )
            .await?;
        if i % 9 == 4 {
            client.delete(&id).await?;
            gone.push(id);
            continue;
        }
        if i % 5 == 0 {
            let pairs = vec![("n".to_string(), i.to_string()), ("k".into(), "v".into())];
            client
                .set_metadata(&id, &pairs, MetadataOp::Overwrite)
                .await?;
        }
        if i % 25 == 0 {
            let pairs = vec![("more".to_string(), "x".to_string())];
            client.set_metadata(&id, &pairs, MetadataOp::Merge).await?;
        }
        if i % 30 == 1 {
            let thumb = random_bytes(&mut rng, 3000);
            let slave = client.upload_slave_bytes(&id, "_s", "bin", &thumb).await?;
            expected.push((slave, thumb.len() as u64, crc(&thumb)));
        }
        expected.push((id, data.len() as u64, crc(&data)));
    }
    // appender files: appended, modified, truncated
    for round in 0..6u8 {
        let mut content = random_bytes(&mut rng, 1000);
        let id = client
            .upload_appender_bytes(&content, &UploadOptions::default())
            .await?;
        for _ in 0..3 {
            let len = rng.gen_range(1..70_000);
            let more = random_bytes(&mut rng, len);
            client.append_bytes(&id, &more).await?;
            content.extend_from_slice(&more);
        }
        let patch = random_bytes(&mut rng, 100);
        client.modify_bytes(&id, 10, &patch).await?;
        content[10..110].copy_from_slice(&patch);
        if round % 2 == 0 {
            client.truncate(&id, 500).await?;
            content.truncate(500);
        }
        if round % 3 == 0 {
            // renamed to a normal file: the old name must disappear everywhere
            let normal = client.regenerate(&id).await?;
            gone.push(id);
            expected.push((normal, content.len() as u64, crc(&content)));
            continue;
        }
        expected.push((id, content.len() as u64, crc(&content)));
    }
    wait_converged(&cluster, &expected, &gone).await?;
    // byte for byte the same files on every disk, metadata sidecars included
    let listings: Vec<_> = (0..3)
        .map(|i| disk_listing(&cluster.store_path(i, 0)))
        .collect();
    let sidecars = listings[0].keys().filter(|k| k.ends_with("-m")).count();
    assert!(sidecars >= 40, "{sidecars} metadata files");
    for (i, listing) in listings.iter().enumerate().skip(1) {
        if listing != &listings[0] {
            let a: BTreeSet<_> = listings[0].iter().collect();
            let b: BTreeSet<_> = listing.iter().collect();
            panic!(
                "storage {i} differs from storage 0: only on 0: {:?}; only on {i}: {:?}",
                a.difference(&b).take(5).collect::<Vec<_>>(),
                b.difference(&a).take(5).collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn slaves_stored_as_links_replicate_as_links() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .groups(&[("group1", 2)])
        .storage_config("store_slave_file_use_link = true")
        .start()
        .await?;
    let client = cluster.client();
    let mut files = Vec::new();
    let mut slaves = Vec::new();
    for i in 0..6u8 {
        let master = vec![i; 1000];
        let id = client
            .upload_bytes(
                &master,
                &UploadOptions {
                    ext: "jpg".into(),
                    ..Default::default()
                },
            )
            .await?;
        let thumb = vec![i ^ 0x55; 100 + usize::from(i)];
        let slave = client.upload_slave_bytes(&id, "_t", "jpg", &thumb).await?;
        files.push((id, master.len() as u64, crc(&master)));
        files.push((slave.clone(), thumb.len() as u64, crc(&thumb)));
        slaves.push(slave);
    }
    wait_converged(&cluster, &files, &[]).await?;
    for slave in &slaves {
        for storage in 0..2 {
            let data = cluster.store_path(storage, 0).join("data");
            let path = data.join(slave.name.data_relative_path());
            let target = std::fs::read_link(&path)
                .map_err(|err| anyhow::anyhow!("{slave} on storage {storage}: {err}"))?;
            assert!(
                target.starts_with(&data),
                "{slave} on storage {storage} links to {}",
                target.display()
            );
        }
    }
    // deleting a slave removes link and content on both
    let before: Vec<usize> = (0..2)
        .map(|i| disk_listing(&cluster.store_path(i, 0)).len())
        .collect();
    assert_eq!(before[0], before[1]);
    client.delete(&slaves[0]).await?;
    wait_converged(&cluster, &files[2..], std::slice::from_ref(&slaves[0])).await?;
    wait_for("slave content deleted on both", SETTLE, || async {
        let now: Vec<usize> = (0..2)
            .map(|i| disk_listing(&cluster.store_path(i, 0)).len())
            .collect();
        (now[0] == now[1] && now[0] == before[0] - 1).then_some(())
    })
    .await?;
    Ok(())
}

/// With `fsync = false` small files (uploads and replicas, up to 128 KiB) are written by each
/// store path's small-file writer thread: every size class still lands on both storages with
/// the same bytes and mtime, reads back, and deletes reach the peer.
#[tokio::test]
async fn with_fsync_off_files_of_every_size_are_stored_replicated_and_deleted() -> anyhow::Result<()>
{
    let cluster = Cluster::builder()
        .groups(&[("group1", 2)])
        .storage_config("fsync = false")
        .start()
        .await?;
    let client = cluster.client();
    let mut rng = StdRng::seed_from_u64(11);
    let mut files = Vec::new();
    let mut gone = Vec::new();
    // small (the writer thread), at the small limit, and streamed
    for (i, len) in [0usize, 1, 4096, 100 * 1024, 128 * 1024, 300 * 1024]
        .into_iter()
        .cycle()
        .take(24)
        .enumerate()
    {
        let data = random_bytes(&mut rng, len);
        let id = client
            .upload_bytes(&data, &UploadOptions::default())
            .await?;
        assert_eq!(client.download_bytes(&id, 0, 0).await?, data, "{id}");
        if i % 5 == 0 {
            client.delete(&id).await?;
            gone.push(id);
        } else {
            files.push((id, len as u64, crc(&data)));
        }
    }
    wait_converged(&cluster, &files, &gone).await?;
    // the writes went through the writer thread, not the journal
    for storage in &cluster.storages {
        let pid = storage.pid().expect("the storage runs");
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))?
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect();
        assert!(
            threads.iter().any(|name| name == "small-writer-0"),
            "threads: {threads:?}"
        );
        assert!(
            !threads.iter().any(|name| name.starts_with("journal-")),
            "threads: {threads:?}"
        );
    }
    Ok(())
}

/// The timestamp of the binlog record (`<crc> <seq> <timestamp> <watermark> L <link>
/// <target>`) with which the storage at `base` recorded `link`.
fn link_record_timestamp(base: &Path, link: &str) -> anyhow::Result<u64> {
    let sync = base.join("data").join("sync");
    for entry in std::fs::read_dir(&sync)? {
        let path = entry?.path();
        let is_binlog = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("binlog."));
        if !is_binlog {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() == 7 && fields[4] == "L" && fields[5] == link {
                return Ok(fields[2].parse()?);
            }
        }
    }
    anyhow::bail!("no link record of {link} in {}", sync.display())
}

/// A slave stored as a link shows the link's own mtime as its create time. The source
/// records the link with that time and every other storage gives its link the same, from the
/// record or from a full copy, however late it makes it. The source's clock runs a minute
/// behind, so a link stamped with anyone's "now" shows, not only one made a second later.
#[tokio::test]
async fn slave_links_keep_the_source_mtime_on_every_storage() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let mut cluster = Cluster::builder()
        .groups(&[])
        .start_without_waiting()
        .await?;
    let spec = |server_id: u32| fdfs_tests::StorageSpec {
        group: "group1".into(),
        server_id,
        store_path_count: 1,
        extra: "store_slave_file_use_link = true\n".into(),
    };
    let behind = vec![(crate::faults::OFFSET_ENV.to_string(), "-60".to_string())];
    cluster.add_storage_with_env(spec(100_001), behind).await?;
    cluster.add_storage(spec(100_002)).await?;
    cluster.wait_active("group1", 2).await?;
    let client = cluster.client();
    let master = vec![7u8; 1000];
    let master_id = client
        .upload_reader_to(&addr(&cluster, 0), None, &master[..], 1000, "jpg")
        .await?;
    let thumb = vec![9u8; 100];
    let slave = client
        .upload_slave_bytes(&master_id, "_t", "jpg", &thumb)
        .await?;
    let files = [
        (master_id, master.len() as u64, crc(&master)),
        (slave.clone(), thumb.len() as u64, crc(&thumb)),
    ];
    wait_converged(&cluster, &files, &[]).await?;
    let link_mtime = |cluster: &Cluster, storage: usize| -> anyhow::Result<u64> {
        let path = cluster
            .store_path(storage, 0)
            .join("data")
            .join(slave.name.data_relative_path());
        let meta = std::fs::symlink_metadata(&path)?;
        anyhow::ensure!(
            meta.file_type().is_symlink(),
            "{slave} on storage {storage} is not a link"
        );
        Ok(u64::try_from(meta.mtime())?)
    };
    let source = link_mtime(&cluster, 0)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    assert!(
        source + 30 < now,
        "the source's link has its shifted clock's time: {source}, now {now}"
    );
    let recorded = link_record_timestamp(&cluster.storage_base(0), &slave.name.to_string())?;
    assert_eq!(recorded, source, "the record carries the link's mtime");
    assert_eq!(link_mtime(&cluster, 1)?, source, "the replicated link");
    // a storage joining now copies the link with the source's time too
    let index = cluster.add_storage(spec(100_003)).await?;
    cluster.wait_active("group1", 3).await?;
    wait_converged(&cluster, &files, &[]).await?;
    assert_eq!(
        link_mtime(&cluster, index)?,
        source,
        "the link of the joined storage"
    );
    Ok(())
}

#[tokio::test]
async fn every_upload_is_readable_through_the_tracker_at_once() -> anyhow::Result<()> {
    let cluster = Cluster::builder().groups(&[("group1", 3)]).start().await?;
    let client = cluster.client();
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..300 {
        // every tenth upload is big, so replication lags behind the small ones after it
        let size = if i % 10 == 0 {
            2 << 20
        } else {
            rng.gen_range(0..4096)
        };
        let data = random_bytes(&mut rng, size);
        let id = client
            .upload_bytes(&data, &UploadOptions::default())
            .await?;
        let read = client
            .download_bytes(&id, 0, 0)
            .await
            .map_err(|err| anyhow::anyhow!("upload {i} ({id}) not readable at once: {err}"))?;
        assert_eq!(read.len(), data.len(), "upload {i}");
        assert_eq!(crc(&read), crc(&data), "upload {i}");
    }
    Ok(())
}

/// Uploads small files through the tracker until `stop`; returns the ones that succeeded.
fn upload_stream(
    client: Client,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seed: u64,
) -> tokio::task::JoinHandle<Vec<(FileId, u64, u32)>> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut done = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let size = rng.gen_range(0..20_000);
            let data = random_bytes(&mut rng, size);
            // failures while a server is down are expected; only successes count
            if let Ok(id) = client.upload_bytes(&data, &UploadOptions::default()).await {
                done.push((id, data.len() as u64, crc(&data)));
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        done
    })
}

async fn wait_uploads(
    count: &dyn Fn() -> usize,
    at_least: usize,
    what: &str,
) -> anyhow::Result<()> {
    wait_for(what, Duration::from_secs(30), || async {
        (count() >= at_least).then_some(())
    })
    .await
}

#[tokio::test]
async fn kill_9_of_a_storage_loses_no_acknowledged_upload() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut cluster = Cluster::builder().groups(&[("group1", 3)]).start().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|seed| upload_stream(cluster.client(), stop.clone(), seed))
        .collect();
    // some traffic, then a storage dies in the middle of uploads and syncs
    let data0 = cluster.store_path(0, 0).join("data");
    let data1 = cluster.store_path(1, 0).join("data");
    let on_1 = || files_under(&data1).len();
    wait_uploads(&on_1, 60, "uploads before the crash").await?;
    cluster.storages[1].kill();
    wait_for("storage 2 offline", Duration::from_secs(15), || async {
        (cluster.active_count("group1").await == 2).then_some(())
    })
    .await?;
    let survivor = || files_under(&data0).len();
    let before = survivor();
    wait_uploads(&survivor, before + 60, "uploads while it is down").await?;
    cluster.restart_storage(1).await?;
    cluster.wait_active("group1", 3).await?;
    let now = on_1();
    wait_uploads(&on_1, now + 30, "uploads after the restart").await?;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await?);
    }
    assert!(acknowledged.len() >= 150, "{} uploads", acknowledged.len());
    wait_converged(&cluster, &acknowledged, &[]).await?;
    // nothing torn, the same everywhere: the three disks hold the same files; at most the
    // uploads in flight at the crash (one per writer) exist without an answer
    wait_for("identical disks", SETTLE, || async {
        let listings: Vec<_> = (0..3)
            .map(|i| disk_listing(&cluster.store_path(i, 0)))
            .collect();
        listings.iter().all(|l| l == &listings[0]).then_some(())
    })
    .await?;
    let extra = disk_listing(&cluster.store_path(0, 0)).len() - acknowledged.len();
    assert!(extra <= 3, "{extra} unacknowledged files");
    Ok(())
}

#[tokio::test]
async fn kill_9_of_the_tracker_loses_no_acknowledged_upload() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = upload_stream(cluster.client(), stop.clone(), 11);
    let data0 = cluster.store_path(0, 0).join("data");
    let files = || files_under(&data0).len();
    wait_uploads(&files, 40, "uploads before the crash").await?;
    cluster.restart_tracker().await?;
    cluster.wait_active("group1", 2).await?;
    let now = files();
    wait_uploads(&files, now + 40, "uploads after the tracker restart").await?;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await?;
    wait_converged(&cluster, &acknowledged, &[]).await?;
    Ok(())
}

/// Waits until `count` storages of group1 are ACTIVE, failing if meanwhile the tracker names
/// storage `port` for a read of any of `ids`. (Each answer is checked against a status read
/// after it: statuses only move forward here, so a storage named and not ACTIVE afterwards
/// was named before it was ACTIVE.)
async fn wait_active_unrouted(
    cluster: &Cluster,
    index: usize,
    count: usize,
    ids: &[FileId],
) -> anyhow::Result<()> {
    let port = cluster.storages[index].addr.port();
    let started = Instant::now();
    loop {
        let mut named = Vec::new();
        for id in ids {
            if fetch_all(cluster, id).await?.contains(&port) {
                named.push(id.clone());
            }
        }
        if cluster.active_count("group1").await == count {
            return Ok(());
        }
        anyhow::ensure!(
            named.is_empty(),
            "reads of {named:?} were routed to the storage on port {port} before it was ACTIVE"
        );
        anyhow::ensure!(
            started.elapsed() < SETTLE,
            "storage {index} did not become ACTIVE; log:\n{}",
            cluster.storages[index].log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A third storage for group1, joining a running cluster.
fn third_storage() -> fdfs_tests::StorageSpec {
    fdfs_tests::StorageSpec {
        group: "group1".into(),
        server_id: 100_003,
        store_path_count: 1,
        extra: String::new(),
    }
}

#[tokio::test]
async fn a_joining_storage_is_active_only_once_it_holds_every_file() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let client = cluster.client();
    let mut rng = StdRng::seed_from_u64(21);
    let mut files = Vec::new();
    for i in 0..80 {
        let size = random_size(&mut rng);
        let data = random_bytes(&mut rng, size);
        let id = client
            .upload_bytes(&data, &UploadOptions::default())
            .await?;
        if i % 4 == 0 {
            let pairs = vec![("i".to_string(), i.to_string())];
            client
                .set_metadata(&id, &pairs, MetadataOp::Overwrite)
                .await?;
        }
        files.push((id, data.len() as u64, crc(&data)));
    }
    let ids: Vec<FileId> = files.iter().map(|f| f.0.clone()).collect();
    let index = cluster.add_storage(third_storage()).await?;
    wait_active_unrouted(&cluster, index, 3, &ids[..10]).await?;
    // ACTIVE: it must hold everything already, without waiting
    let new = addr(&cluster, index);
    for (id, size, content_crc) in &files {
        let state = state_on(&client, &new, id).await?;
        assert_eq!(
            state.map(|(s, _, c)| (s, c)),
            Some((*size, *content_crc)),
            "{id} on the new storage"
        );
    }
    // and converge with the others, metadata included
    wait_converged(&cluster, &files, &[]).await?;
    wait_for("identical disks", SETTLE, || async {
        let a = disk_listing(&cluster.store_path(0, 0));
        (a == disk_listing(&cluster.store_path(index, 0))).then_some(())
    })
    .await?;
    Ok(())
}

/// A master (`.jpg`) and two slaves of it with digit prefixes and no extension, shaped like
/// normal names (one small, one above the small-file size), each with its size and CRC32.
async fn master_and_shaped_slaves(
    client: &Client,
) -> anyhow::Result<((FileId, u64, u32), Vec<(FileId, u64, u32)>)> {
    let jpg = UploadOptions {
        ext: "jpg".into(),
        ..Default::default()
    };
    let content = b"the master image";
    let master = client.upload_bytes(content, &jpg).await?;
    let large = vec![0x5Au8; 200 * 1024];
    let mut slaves = Vec::new();
    for (prefix, content) in [("1234", &b"a thumbnail"[..]), ("5678", &large[..])] {
        let slave = client
            .upload_slave_bytes(&master, prefix, "", content)
            .await?;
        assert!(fdfs_proto::name::has_normal_suffix(slave.name.base()));
        slaves.push((slave, content.len() as u64, crc(content)));
    }
    Ok(((master, content.len() as u64, crc(content)), slaves))
}

/// A slave shaped like a normal name whose master was deleted before a storage joined: no
/// master vouches for it on the new storage, so the source's file list says what it is and
/// the joining storage stores it (small and large) instead of refusing it as damaged.
#[tokio::test]
async fn a_joining_storage_takes_slaves_whose_master_is_gone() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let client = cluster.client();
    let (master, slaves) = master_and_shaped_slaves(&client).await?;
    let mut all = vec![master.clone()];
    all.extend(slaves.iter().cloned());
    let master = master.0;
    wait_converged(&cluster, &all, &[]).await?;
    client.delete(&master).await?;
    wait_converged(&cluster, &slaves, std::slice::from_ref(&master)).await?;

    let index = cluster.add_storage(third_storage()).await?;
    let ids: Vec<FileId> = slaves.iter().map(|f| f.0.clone()).collect();
    wait_active_unrouted(&cluster, index, 3, &ids).await?;
    let new = addr(&cluster, index);
    for (id, size, content_crc) in &slaves {
        let state = state_on(&client, &new, id).await?;
        assert_eq!(
            state.map(|(s, _, c)| (s, c)),
            Some((*size, *content_crc)),
            "{id} on the new storage"
        );
    }
    wait_converged(&cluster, &slaves, std::slice::from_ref(&master)).await?;
    Ok(())
}

/// The same for a storage that was down while a slave shaped like a normal name was uploaded
/// and its master deleted: the binlog replay pushes the slave to it flagged as one (its master
/// is gone), so it is stored instead of being refused as damaged.
#[tokio::test]
async fn a_returning_storage_takes_slaves_whose_master_is_gone() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    cluster.storages[1].kill();
    cluster.wait_active("group1", 1).await?;
    let client = cluster.client();
    let (master, slaves) = master_and_shaped_slaves(&client).await?;
    let master = master.0;
    client.delete(&master).await?;
    cluster.restart_storage(1).await?;
    wait_converged(&cluster, &slaves, std::slice::from_ref(&master)).await?;
    Ok(())
}

#[tokio::test]
async fn a_wiped_store_path_is_rebuilt_from_the_peers() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let client = cluster.client();
    let mut rng = StdRng::seed_from_u64(33);
    let mut files = Vec::new();
    for _ in 0..60 {
        let size = random_size(&mut rng);
        let data = random_bytes(&mut rng, size);
        let id = client
            .upload_bytes(&data, &UploadOptions::default())
            .await?;
        files.push((id, data.len() as u64, crc(&data)));
    }
    wait_converged(&cluster, &files, &[]).await?;
    let before = disk_listing(&cluster.store_path(1, 0));
    cluster.storages[1].kill();
    std::fs::remove_dir_all(cluster.store_path(1, 0))?;
    cluster.restart_storage(1).await?;
    let ids: Vec<FileId> = files.iter().map(|f| f.0.clone()).collect();
    wait_active_unrouted(&cluster, 1, 2, &ids[..10]).await?;
    assert_eq!(disk_listing(&cluster.store_path(1, 0)), before);
    wait_converged(&cluster, &files, &[]).await?;
    assert!(
        cluster.storages[1].log().contains("recovering"),
        "the storage should say it recovers"
    );
    Ok(())
}

#[tokio::test]
async fn write_ack_all_never_reports_success_with_a_silent_peer() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .groups(&[("group1", 2)])
        .storage_config("write_ack = \"all\"\nwrite_ack_timeout = \"1s\"")
        .start()
        .await?;
    let client = cluster.client();
    let first = addr(&cluster, 0);
    // both up: uploads are confirmed by both
    let id = client
        .upload_reader_to(&first, None, &b"on both disks"[..], 13, "txt")
        .await?;
    let on_peer = client.file_info_from(&addr(&cluster, 1), &id).await?;
    assert_eq!(on_peer.size, 13, "acknowledged before the peer had it");

    cluster.storages[1].signal(libc::SIGSTOP);
    let mut outcomes = Vec::new();
    let mut acknowledged = Vec::new();
    let started = Instant::now();
    // until the stopped peer is dropped from ACTIVE and uploads succeed again
    loop {
        anyhow::ensure!(started.elapsed() < SETTLE, "uploads never succeeded again");
        let data = format!("upload {}", outcomes.len()).into_bytes();
        let result = client
            .upload_reader_to(&first, None, &data[..], data.len() as u64, "txt")
            .await;
        match result {
            Ok(id) => {
                // a success is only allowed once the silent peer is no longer ACTIVE
                assert_eq!(
                    cluster.active_count("group1").await,
                    1,
                    "success while the stopped peer was still ACTIVE"
                );
                acknowledged.push((id, data.len() as u64, crc(&data)));
                outcomes.push(true);
                break;
            }
            Err(err) => {
                assert_eq!(err.status(), Some(110), "a clear error: {err}");
                outcomes.push(false);
            }
        }
    }
    assert!(
        !outcomes[0],
        "the first upload after SIGSTOP must not succeed"
    );
    cluster.storages[1].signal(libc::SIGCONT);
    cluster.wait_active("group1", 2).await?;
    wait_converged(&cluster, &acknowledged, &[]).await?;
    Ok(())
}

/// A peer that was down gets the backlog through parallel lanes (`sync_lanes`, 8 by default):
/// chains of changes to one file (appends, modifies, truncates, metadata set, merged and
/// cleared, deletes) arrive in order, and slave links and appender renames, which name two
/// files, arrive after what they depend on. The disks end up identical, sidecars included.
#[tokio::test]
async fn a_backlog_replays_through_parallel_lanes_in_file_order() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder()
        .groups(&[("group1", 2)])
        // every upload goes to the first storage, the live one
        .tracker_config("store_server = 1")
        .storage_config("store_slave_file_use_link = true")
        .start()
        .await?;
    let client = cluster.client();
    cluster.storages[1].kill();
    let mut rng = StdRng::seed_from_u64(7);
    let mut masters = Vec::new();
    for i in 0..150u32 {
        let len = rng.gen_range(1..20_000);
        let data = random_bytes(&mut rng, len);
        let options = UploadOptions {
            ext: "bin".into(),
            ..Default::default()
        };
        let id = client.upload_bytes(&data, &options).await?;
        if i % 3 == 0 {
            let pairs = vec![("n".to_string(), i.to_string())];
            client
                .set_metadata(&id, &pairs, MetadataOp::Overwrite)
                .await?;
        }
        if i % 5 == 0 {
            let pairs = vec![("m".to_string(), "x".to_string())];
            client.set_metadata(&id, &pairs, MetadataOp::Merge).await?;
        }
        if i % 7 == 0 {
            // cleared: the sidecar is deleted
            client.set_metadata(&id, &[], MetadataOp::Overwrite).await?;
        }
        if i % 10 == 0 {
            let thumb = random_bytes(&mut rng, 500);
            let slave = client.upload_slave_bytes(&id, "_t", "bin", &thumb).await?;
            if i % 20 == 0 {
                client.delete(&slave).await?;
            }
        }
        if i % 11 == 0 {
            client.delete(&id).await?;
        } else {
            masters.push(id);
        }
    }
    for round in 0..8u8 {
        let id = client
            .upload_appender_bytes(&random_bytes(&mut rng, 300), &UploadOptions::default())
            .await?;
        for step in 0..12u32 {
            let len = rng.gen_range(1..5_000);
            let more = random_bytes(&mut rng, len);
            client.append_bytes(&id, &more).await?;
            if step % 4 == 3 {
                client
                    .modify_bytes(&id, 5, &random_bytes(&mut rng, 50))
                    .await?;
                client.truncate(&id, 200 + u64::from(step) * 10).await?;
            }
            if step % 5 == 0 {
                let pairs = vec![("step".to_string(), step.to_string())];
                client
                    .set_metadata(&id, &pairs, MetadataOp::Overwrite)
                    .await?;
            }
        }
        if round % 2 == 0 {
            let normal = client.regenerate(&id).await?;
            let pairs = vec![("renamed".to_string(), round.to_string())];
            client
                .set_metadata(&normal, &pairs, MetadataOp::Merge)
                .await?;
        }
    }
    let source = disk_listing(&cluster.store_path(0, 0));
    assert!(source.len() >= 200, "{} files on the source", source.len());

    cluster.restart_storage(1).await?;
    let last = std::sync::Mutex::new(String::new());
    let converged = wait_for("the backlog to replay", SETTLE, || async {
        let peer = disk_listing(&cluster.store_path(1, 0));
        if peer == source {
            return Some(());
        }
        let a: BTreeSet<_> = source.iter().collect();
        let b: BTreeSet<_> = peer.iter().collect();
        *last.lock().unwrap() = format!(
            "only on the source: {:?}; only on the peer: {:?}",
            a.difference(&b).take(5).collect::<Vec<_>>(),
            b.difference(&a).take(5).collect::<Vec<_>>()
        );
        None
    })
    .await;
    converged.map_err(|err| err.context(last.lock().unwrap().clone()))?;
    assert!(
        cluster.storages[0].log().contains("lanes=8"),
        "the source syncs through 8 lanes"
    );
    for id in &masters[..10] {
        assert!(state_on(&client, &addr(&cluster, 1), id).await?.is_some());
    }
    Ok(())
}

/// A slave whose prefix is all digits can have exactly a normal file's name shape (H.8 cannot
/// tell them apart), recording its master's size and CRC32: downloads, replication and the
/// scrub must take its own content, not call it damaged.
#[tokio::test]
async fn slaves_shaped_like_normal_files_download_replicate_and_pass_the_scrub(
) -> anyhow::Result<()> {
    let cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let client = cluster.client();
    let master_content = b"the master image".to_vec();
    let jpg = UploadOptions {
        ext: "jpg".into(),
        ..Default::default()
    };
    let master = client.upload_bytes(&master_content, &jpg).await?;
    let mut files = vec![(
        master.clone(),
        master_content.len() as u64,
        crc(&master_content),
    )];
    // the master's 3 suffix digits and "1234": 7 digits; its 3 digits, "1" and ".ab": 7 too
    for (prefix, ext, content) in [
        ("1234", "", &b"a thumbnail"[..]),
        ("1", "ab", &b"another, longer thumbnail"[..]),
    ] {
        let slave = client
            .upload_slave_bytes(&master, prefix, ext, content)
            .await?;
        assert!(
            fdfs_proto::name::has_normal_suffix(slave.name.base()),
            "{slave} should look like a normal name"
        );
        files.push((slave, content.len() as u64, crc(content)));
    }
    // downloads and file info from both storages: the source and the replica
    wait_converged(&cluster, &files, &[]).await?;
    for storage in 0..2 {
        let addr = addr(&cluster, storage);
        client
            .scrub(&addr, fdfs_proto::scrub_msg::ScrubAction::Start)
            .await?;
        let report = wait_for("the scrub to finish", SETTLE, || async {
            let report = client
                .scrub(&addr, fdfs_proto::scrub_msg::ScrubAction::Status)
                .await
                .ok()?;
            (!report.running && report.finished_at > 0).then_some(report)
        })
        .await?;
        assert_eq!(report.corrupt, 0, "storage {storage}: {report:?}");
    }

    // FastDFS deletes a master without its slaves: they stay downloadable, replicated and
    // clean for the scrub, though nothing beside them vouches for their names any more
    client.delete(&master).await?;
    let slaves: Vec<_> = files[1..].to_vec();
    wait_converged(&cluster, &slaves, std::slice::from_ref(&master)).await?;
    for storage in 0..2 {
        let addr = addr(&cluster, storage);
        let start = client
            .scrub(&addr, fdfs_proto::scrub_msg::ScrubAction::Start)
            .await?;
        assert!(start.started_now, "storage {storage}: {start:?}");
        let report = wait_for("the second scrub to finish", SETTLE, || async {
            let report = client
                .scrub(&addr, fdfs_proto::scrub_msg::ScrubAction::Status)
                .await
                .ok()?;
            (!report.running).then_some(report)
        })
        .await?;
        assert!(
            report.checked + report.skipped >= 2,
            "storage {storage}: {report:?}"
        );
        assert_eq!(report.corrupt, 0, "storage {storage}: {report:?}");
    }
    Ok(())
}

/// Whether the file at `path` carries the slave mark (the storage's `user.fdfs.slave`).
fn slave_marked(path: &Path) -> bool {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path and name; a size query writes nothing
    unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"user.fdfs.slave".as_ptr(),
            std::ptr::null_mut(),
            0,
        ) >= 0
    }
}

/// A large slave shaped like a normal name that a peer holds without the slave mark (a copy
/// stored before slaves were marked): the source's replay of its create marks it there, so
/// the peer still serves it once the master is deleted. (The sender used to probe such a
/// file first, the peer answered that it had it, and its copy stayed unmarked, then
/// "damaged" once the master was gone.)
#[tokio::test]
async fn a_replayed_create_marks_a_peers_unmarked_slave() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let client = cluster.client();
    let content = b"the master image";
    let master = client
        .upload_reader_to(
            &addr(&cluster, 0),
            None,
            &content[..],
            content.len() as u64,
            "jpg",
        )
        .await?;
    // one read whole by the peer (up to 128 KiB) and one streamed through a temp file
    let mut slaves = Vec::new();
    for (prefix, size) in [("4321", 100 * 1024), ("8765", 150 * 1024)] {
        let body = vec![0x6Bu8; size];
        let slave = client
            .upload_slave_bytes(&master, prefix, "", &body)
            .await?;
        assert!(fdfs_proto::name::has_normal_suffix(slave.name.base()));
        slaves.push((slave, size as u64, crc(&body)));
    }
    let mut all = slaves.clone();
    all.push((master.clone(), content.len() as u64, crc(content)));
    wait_converged(&cluster, &all, &[]).await?;

    // the peer's copies lose their marks, and storage 0 forgets how far the peer is: it
    // replays its whole binlog there (no download from the peer before the master is gone:
    // a read beside the master would mark a copy on its own)
    let copies: Vec<_> = slaves
        .iter()
        .map(|(id, ..)| {
            cluster
                .store_path(1, 0)
                .join("data")
                .join(id.name.data_relative_path())
        })
        .collect();
    for copy in &copies {
        let c_path = std::ffi::CString::new(copy.as_os_str().as_encoded_bytes())?;
        // SAFETY: NUL-terminated path and name
        if unsafe { libc::lremovexattr(c_path.as_ptr(), c"user.fdfs.slave".as_ptr()) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
                eprintln!(
                    "skipped: no user extended attributes under {}",
                    copy.display()
                );
                return Ok(());
            }
            anyhow::bail!("the peer's copy was not marked: {err}");
        }
    }
    cluster.storages[0].kill();
    for entry in std::fs::read_dir(cluster.storage_base(0).join("data").join("sync"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "mark") {
            std::fs::remove_file(path)?;
        }
    }
    cluster.restart_storage(0).await?;
    wait_for("the replay to mark the peer's copies", SETTLE, || async {
        copies.iter().all(|copy| slave_marked(copy)).then_some(())
    })
    .await?;

    client.delete(&master).await?;
    wait_converged(&cluster, &slaves, std::slice::from_ref(&master)).await?;
    Ok(())
}
