//! Streaming with bounded memory, crashes in the middle of an upload, graceful shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fdfs_client::UploadOptions;
use fdfs_proto::conn::Connection;
use fdfs_proto::storage_msg::UploadPrefix;
use fdfs_tests::{files_under, stored_files, wait_for, Cluster, HashingWriter, PatternReader};
use tokio::net::TcpStream;

const BIG: u64 = 256 << 20;

/// Samples the RSS of `pid` every 20 ms until stopped; returns the peak in KiB.
fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(0));
    let peak_out = peak.clone();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some(rss) = fdfs_tests::rss_kib(pid) {
                peak.fetch_max(rss, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (peak_out, handle)
}

#[tokio::test]
async fn a_256_mib_upload_and_download_stream_with_bounded_storage_memory() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let pid = cluster.storages[0].pid().expect("pid");
    let idle = cluster.storages[0].rss_kib().expect("rss");
    let stop = Arc::new(AtomicBool::new(false));
    let (peak, sampler) = rss_sampler(pid, stop.clone());

    let id = client
        .upload_reader(
            PatternReader::new(42, BIG),
            BIG,
            &UploadOptions {
                ext: "bin".into(),
                ..Default::default()
            },
        )
        .await?;
    let mut sink = HashingWriter::default();
    let received = client.download_to_writer(&id, 0, 0, &mut sink).await?;

    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert_eq!(received, BIG);
    assert_eq!(sink.len, BIG);
    let expected_crc = PatternReader::crc_of(42, BIG);
    assert_eq!(sink.hasher.finalize(), expected_crc);
    let info = client.file_info(&id).await?;
    assert_eq!((info.size, info.crc32), (BIG, expected_crc));
    let grown_mib = peak.load(Ordering::Relaxed).saturating_sub(idle) / 1024;
    assert!(
        grown_mib < 64,
        "storage RSS grew by {grown_mib} MiB (idle {idle} KiB) during a 256 MiB transfer"
    );
    Ok(())
}

#[tokio::test]
async fn kill_9_during_an_upload_leaves_no_file_under_a_final_name() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().start().await?;
    let data = cluster.store_path(0, 0).join("data");
    // Announce 64 MiB, send 1 MiB, then kill the storage.
    let mut conn = Connection::new(TcpStream::connect(cluster.storages[0].addr).await?);
    let size = 64u64 << 20;
    let prefix = UploadPrefix {
        store_path_index: Some(0),
        file_size: size,
        ext: "bin".into(),
    };
    let mut packet = fdfs_proto::Header::request(11, UploadPrefix::LEN as u64 + size)
        .encode()
        .to_vec();
    packet.extend_from_slice(&prefix.encode());
    conn.write_all(&packet).await?;
    conn.write_all(&vec![0xAB; 1 << 20]).await?;
    conn.flush().await?;
    // the temp file exists and is growing before we pull the plug
    let tmp = data.join(".tmp");
    wait_for("partial temp file", Duration::from_secs(10), || async {
        files_under(&tmp)
            .into_iter()
            .any(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
            .then_some(())
    })
    .await?;
    cluster.storages[0].kill();
    drop(conn);

    assert!(
        stored_files(&data).is_empty(),
        "a partial upload is visible: {:?}",
        stored_files(&data)
    );
    cluster.restart_storage(0).await?;
    assert!(
        files_under(&tmp).is_empty(),
        "start-up sweeps temp files: {:?}",
        files_under(&tmp)
    );
    assert!(stored_files(&data).is_empty());
    // and the restarted storage works
    cluster.wait_active("group1", 1).await?;
    let client = cluster.client();
    let id = client
        .upload_bytes(b"after the crash", &UploadOptions::default())
        .await?;
    assert_eq!(client.download_bytes(&id, 0, 0).await?, b"after the crash");
    Ok(())
}

#[tokio::test]
async fn an_acknowledged_upload_survives_kill_9() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let id = client
        .upload_bytes(b"durable", &UploadOptions::default())
        .await?;
    cluster.storages[0].kill();
    cluster.restart_storage(0).await?;
    cluster.wait_active("group1", 1).await?;
    assert_eq!(client.download_bytes(&id, 0, 0).await?, b"durable");
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_both_daemons_cleanly() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    client.upload_bytes(b"x", &UploadOptions::default()).await?;
    assert_eq!(
        cluster.storages[0].terminate(Duration::from_secs(15))?,
        Some(0)
    );
    assert_eq!(cluster.tracker.terminate(Duration::from_secs(15))?, Some(0));
    Ok(())
}

/// A power loss, simulated: a small file made durable through the journal is written and
/// linked without syncs of its own, so after the power comes back it may be missing or torn,
/// and a delete may not have reached the disk. With no checkpoint since (interval 1 h), the
/// next start must restore every acknowledged upload and redo every acknowledged delete.
#[tokio::test]
async fn the_journal_restores_what_a_power_loss_took() -> anyhow::Result<()> {
    power_loss(false).await
}

/// The same with the journal switched off for the next start: what it holds is still
/// replayed, or the torn files would stay and the deleted ones come back.
#[tokio::test]
async fn the_journal_is_replayed_after_it_was_switched_off() -> anyhow::Result<()> {
    power_loss(true).await
}

async fn power_loss(switch_off: bool) -> anyhow::Result<()> {
    let mut cluster = Cluster::builder()
        .storage_config("journal_checkpoint_interval = \"1h\"")
        .start()
        .await?;
    let client = cluster.client();
    let data = cluster.store_path(0, 0).join("data");
    let path_of = |id: &fdfs_proto::file_id::FileId| data.join(id.name.data_relative_path());
    let mut kept = Vec::new();
    for i in 0..12usize {
        let content = format!("file {i} of the journal test. ").repeat(i * 150 + 1);
        let id = client
            .upload_bytes(content.as_bytes(), &UploadOptions::default())
            .await?;
        kept.push((id, content));
    }
    let mut deleted = Vec::new();
    for i in 0..3 {
        let content = format!("deleted file {i}");
        let id = client
            .upload_bytes(content.as_bytes(), &UploadOptions::default())
            .await?;
        client.delete(&id).await?;
        deleted.push((id, content));
    }
    cluster.storages[0].kill();

    // what the page cache held and the disk did not: files gone or torn, deletes undone
    for (n, (id, content)) in kept.iter().enumerate() {
        let path = path_of(id);
        assert_eq!(std::fs::read(&path)?, content.as_bytes());
        match n % 3 {
            0 => std::fs::remove_file(&path)?,
            1 => std::fs::write(&path, &content.as_bytes()[..content.len() / 2])?,
            _ => {}
        }
    }
    for (id, content) in &deleted {
        assert!(!path_of(id).exists());
        std::fs::write(path_of(id), content)?;
    }

    if switch_off {
        let config = cluster.storages[0].config.clone();
        let text = std::fs::read_to_string(&config)?;
        std::fs::write(&config, format!("{text}\njournal_max_file_size = 0\n"))?;
    }
    cluster.restart_storage(0).await?;
    cluster.wait_active("group1", 1).await?;
    let log = cluster.storages[0].log();
    assert!(
        log.contains("replayed the journal"),
        "no replay logged:\n{log}"
    );
    for (id, content) in &kept {
        assert_eq!(
            client.download_bytes(id, 0, 0).await?,
            content.as_bytes(),
            "{id}"
        );
    }
    for (id, _) in &deleted {
        assert!(!path_of(id).exists(), "{id} came back");
        assert!(client.download_bytes(id, 0, 0).await.is_err(), "{id}");
    }
    // replayed, then removed: only this run's (empty) segment is left, if any, and the
    // zero-filled spare prepared for its next one
    let left: Vec<_> = std::fs::read_dir(data.join(".journal"))?
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with("spare-"))
        .filter(|entry| entry.metadata().map(|m| m.len() > 0).unwrap_or(true))
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "replayed segments left: {left:?}");
    if !switch_off {
        // the uploads after the restart go through the journal again
        client
            .upload_bytes(b"after the restart", &UploadOptions::default())
            .await?;
        let http = cluster.storages[0].http_addr().await?;
        let metrics = crate::status::http_get(http, "/metrics").await?;
        let series =
            |name: &str| format!("{name}{{path=\"{}\"}}", cluster.store_path(0, 0).display());
        let value = |name: &str| crate::status::sample(&metrics, &series(name));
        assert_eq!(
            value("fdfs_storage_journal_healthy"),
            Some(1.0),
            "{metrics}"
        );
        assert!(
            value("fdfs_storage_journal_entries_total") >= Some(1.0),
            "{metrics}"
        );
        assert!(
            value("fdfs_storage_journal_commits_total") >= Some(1.0),
            "{metrics}"
        );
    }
    Ok(())
}

/// A journaled upload's binlog record is written lazily (nobody waits for it): a crash can
/// take the record while the upload was acknowledged. The journal's replay records the file
/// again, so it still reaches the peer. Here the records of every upload since the peer went
/// down are cut off the binlog after a kill -9, as a power loss could.
#[tokio::test]
async fn an_upload_whose_binlog_record_a_crash_took_still_reaches_the_peer() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder()
        .groups(&[("group1", 2)])
        // every upload goes to the first storage
        .tracker_config("store_server = 1")
        .storage_config("journal_checkpoint_interval = \"1h\"")
        .start()
        .await?;
    let client = cluster.client();
    cluster.storages[1].kill();
    let binlog = cluster.storage_base(0).join("data/sync/binlog.000");
    let recorded_before = std::fs::metadata(&binlog).map_or(0, |m| m.len());
    let mut uploaded = Vec::new();
    for i in 0..10usize {
        let content = format!("lazily recorded upload {i}. ").repeat(i * 40 + 1);
        let id = client
            .upload_bytes(content.as_bytes(), &UploadOptions::default())
            .await?;
        uploaded.push((id, content));
    }
    cluster.storages[0].kill();
    // (the binlog file appears with its first record written)
    let recorded_after = std::fs::metadata(&binlog).map_or(0, |m| m.len());
    if recorded_after > recorded_before {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&binlog)?
            .set_len(recorded_before)?;
    }

    cluster.restart_storage(0).await?;
    cluster.restart_storage(1).await?;
    cluster.wait_active("group1", 2).await?;
    let log = cluster.storages[0].log();
    assert!(
        log.contains("recorded the uploads replayed from the journal again"),
        "the replay recorded nothing (binlog {recorded_before} -> {recorded_after} bytes):\n{log}"
    );
    let peer = cluster.store_path(1, 0).join("data");
    for (id, content) in &uploaded {
        let path = peer.join(id.name.data_relative_path());
        wait_for(
            &format!("{id} on the peer"),
            Duration::from_secs(30),
            || async { (std::fs::read(&path).ok()? == content.as_bytes()).then_some(()) },
        )
        .await?;
    }
    Ok(())
}
