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
const SETTLE: Duration = Duration::from_secs(60);

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

/// Sizes from 0 B to 2 MiB, mostly small so the test stays quick.
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
    wait_for("every storage to hold the same files", SETTLE, || async {
        for (id, size, content_crc) in expected {
            let (size, content_crc) = (*size, *content_crc);
            let mut mtimes = BTreeSet::new();
            for storage in &storages {
                match state_on(&client, storage, id).await {
                    Ok(Some((s, mtime, c))) if s == size && c == content_crc => {
                        mtimes.insert(mtime);
                    }
                    _ => return None,
                }
            }
            if mtimes.len() != 1 {
                return None;
            }
        }
        for id in gone {
            for storage in &storages {
                if !matches!(
                    client.file_info_from(storage, id).await,
                    Err(ClientError::NotFound)
                ) {
                    return None;
                }
            }
        }
        Some(())
    })
    .await
    .map_err(|err| {
        let logs: Vec<String> = cluster.storages.iter().map(|s| s.log()).collect();
        err.context(format!("storage logs:\n{}", logs.join("\n----\n")))
    })
}

/// The storages QUERY_FETCH_ALL (105) names for `id`, as ports.
async fn fetch_all(cluster: &Cluster, id: &FileId) -> anyhow::Result<Vec<u16>> {
    let stream = TcpStream::connect(cluster.tracker.addr).await?;
    let mut conn = Connection::new(stream);
    let body = fdfs_proto::storage_msg::GroupAndName {
        group: id.group.clone(),
        name: id.name.to_string(),
    }
    .encode();
    match conn
        .call(Command::QueryFetchAll.code(), &body, 4096)
        .await
    {
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
async fn three_storages_converge_after_uploads_deletes_metadata_and_appends() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .groups(&[("group1", 3)])
        .start()
        .await?;
    let client = cluster.client();
    let mut rng = StdRng::seed_from_u64(4);
    let mut expected: Vec<(FileId, u64, u32)> = Vec::new();
    let mut gone = Vec::new();
    for i in 0..240 {
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
            client.set_metadata(&id, &pairs, MetadataOp::Overwrite).await?;
        }
        if i % 25 == 0 {
            let pairs = vec![("more".to_string(), "x".to_string())];
            client.set_metadata(&id, &pairs, MetadataOp::Merge).await?;
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
        expected.push((id, content.len() as u64, crc(&content)));
    }
    wait_converged(&cluster, &expected, &gone).await?;
    // byte for byte the same files on every disk, metadata sidecars included
    let listings: Vec<_> = (0..3).map(|i| disk_listing(&cluster.store_path(i, 0))).collect();
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
