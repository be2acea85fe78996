//! Faults, injected for real into running storages: a peer without room (its reserve above
//! its free space) pauses replication without losing its place; a store path whose disk goes
//! away is reported to the tracker, skipped and taken back once it returns; damaged copies
//! are refused by downloads and repaired from a peer by `fdfs scrub`; storages whose clocks
//! are off (the storage's clock test hook) are still read only where the file is.
//!
//! Running as root, `chmod` cannot make a store path fail; removing the directory under it (as
//! an unmounted or dead disk does) gives the real errors a storage sees then.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use fdfs_client::{Client, ClientError, FileId, UploadOptions};
use fdfs_proto::conn::Connection;
use fdfs_proto::health_msg::{HealthReport, StorageHealth};
use fdfs_proto::scrub_msg::ScrubAction;
use fdfs_proto::tracker_msg::FetchReply;
use fdfs_tests::{bin_path, wait_for, Cluster, StorageSpec};
use tokio::net::TcpStream;

use crate::status::{http_get, sample};
use rand::{Rng, SeedableRng};

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    data
}

/// The whole content of `id` as the storage at `addr` serves it.
async fn content_on(client: &Client, addr: &str, id: &FileId) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    client.download_from(addr, id, 0, 0, &mut out).await?;
    Ok(out)
}

/// Where storage `index` of `cluster` keeps `id` (single store path storages).
fn path_on(cluster: &Cluster, index: usize, id: &FileId) -> PathBuf {
    cluster
        .store_path(index, usize::from(id.name.store_path()))
        .join("data")
        .join(id.name.data_relative_path())
}

/// Waits until the storage at `addr` serves `id` with exactly `data`.
async fn wait_content(client: &Client, addr: &str, id: &FileId, data: &[u8]) -> Result<()> {
    wait_for(
        &format!("{id} served by {addr}"),
        Duration::from_secs(60),
        || async {
            match content_on(client, addr, id).await {
                Ok(got) if got == data => Some(()),
                _ => None,
            }
        },
    )
    .await
}

#[tokio::test]
async fn replication_into_a_full_peer_pauses_and_resumes_in_place() -> Result<()> {
    let mut cluster = Cluster::builder().start().await?;
    // the second storage keeps its whole disk in reserve: no room for anything
    cluster
        .add_storage(StorageSpec {
            group: "group1".into(),
            server_id: 100_002,
            store_path_count: 1,
            extra: "reserved_storage_space = \"100%\"\n".into(),
        })
        .await?;
    cluster.wait_active("group1", 2).await?;
    let client = cluster.client();
    let source = cluster.storages[0].addr.to_string();
    let full = cluster.storages[1].addr.to_string();

    // uploads to the full storage are refused before anything is written
    let refused = client
        .upload_reader_to(&full, None, &b"nothing"[..], 7, "txt")
        .await;
    assert!(matches!(refused, Err(ClientError::NoSpace)), "{refused:?}");

    let mut files = Vec::new();
    for seed in 0..4u64 {
        let data = random_bytes(seed, 1000 + seed as usize * 70_000);
        let id = client
            .upload_reader_to(&source, None, &data[..], data.len() as u64, "bin")
            .await?;
        files.push((id, data));
    }
    // the peer answers 28; the source pauses on the first record instead of skipping it
    wait_for("the source to pause", Duration::from_secs(30), || async {
        cluster.storages[0]
            .log()
            .contains("peer has no space left: replication to it paused")
            .then_some(())
    })
    .await?;
    for (id, _) in &files {
        let held = client.file_info_from(&full, id).await;
        assert!(matches!(held, Err(ClientError::NotFound)), "{id}: {held:?}");
    }
    let tmp = cluster.store_path(1, 0).join("data/.tmp");
    assert_eq!(std::fs::read_dir(&tmp)?.count(), 0, "temp files left");

    // room again: the peer comes back without the reserve
    let conf = cluster.storages[1].config.clone();
    let text = std::fs::read_to_string(&conf)?.replace("reserved_storage_space = \"100%\"", "");
    std::fs::write(&conf, text)?;
    cluster.restart_storage(1).await?;
    let full = cluster.storages[1].addr.to_string();
    // and a change made after the pause goes out after the earlier ones
    let data = random_bytes(99, 5000);
    let id = client
        .upload_reader_to(&source, None, &data[..], data.len() as u64, "bin")
        .await?;
    files.push((id, data));

    for (id, data) in &files {
        wait_content(&client, &full, id, data).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_store_path_is_skipped_reported_and_taken_back() -> Result<()> {
    let cluster = Cluster::builder()
        .store_paths(2)
        .storage_config("store_path_check_interval = \"1s\"\n")
        .start()
        .await?;
    let client = cluster.client();
    let http = cluster.storages[0].http_addr().await?;
    let store1 = cluster.store_path(0, 1);
    let series = format!(
        "fdfs_storage_store_path_healthy{{path=\"{}\"}}",
        store1.display()
    );
    let healthy = |want: f64| {
        let series = series.clone();
        async move {
            let text = http_get(http, "/metrics").await.ok()?;
            (sample(&text, &series)? == want).then_some(())
        }
    };
    wait_for("store path 1 healthy", Duration::from_secs(20), || {
        healthy(1.0)
    })
    .await?;

    // the disk under store path 1 goes away
    std::fs::rename(store1.join("data"), store1.join("data.away"))?;
    wait_for("store path 1 marked bad", Duration::from_secs(30), || {
        healthy(0.0)
    })
    .await?;
    // the tracker hears of it with the next beat: uploads are sent to path 0 only
    let offered = || async {
        let mut paths = Vec::new();
        for _ in 0..4 {
            paths.push(
                client
                    .query_store(Some("group1"))
                    .await
                    .ok()?
                    .store_path_index,
            );
        }
        Some(paths)
    };
    wait_for(
        "the tracker to offer path 0 only",
        Duration::from_secs(20),
        || async { offered().await.filter(|p| p.iter().all(|&i| i == 0)) },
    )
    .await?;
    let options = UploadOptions::default();
    for seed in 0..6u64 {
        let data = random_bytes(seed, 3000);
        let id = client.upload_bytes(&data, &options).await?;
        assert_eq!(id.name.store_path(), 0, "{id}");
        assert_eq!(client.download_bytes(&id, 0, 0).await?, data);
    }
    // even a client that asks for path 1 gets a file on path 0
    let direct = cluster.storages[0].addr.to_string();
    let id = client
        .upload_reader_to(&direct, Some(1), &b"redirected"[..], 10, "txt")
        .await?;
    assert_eq!(id.name.store_path(), 0, "{id}");

    // the disk returns: the periodic probe takes the path back, the tracker offers it again
    std::fs::rename(store1.join("data.away"), store1.join("data"))?;
    wait_for(
        "store path 1 healthy again",
        Duration::from_secs(30),
        || healthy(1.0),
    )
    .await?;
    wait_for(
        "the tracker to offer path 1 again",
        Duration::from_secs(20),
        || async { offered().await.filter(|p| p.contains(&1)) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn damaged_copies_are_refused_and_repaired_from_a_peer() -> Result<()> {
    let cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let client = cluster.client();
    let a = cluster.storages[0].addr.to_string();
    let b = cluster.storages[1].addr.to_string();
    let options = UploadOptions::default();
    // the files come from b, whose damaged copies are then repaired from a: b is the source,
    // so a replication replay cannot put them right first (and a refuses damaged pushes)
    let mut files = Vec::new();
    for seed in 0..4u64 {
        let data = random_bytes(seed, 20_000 + seed as usize * 1000);
        let id = client
            .upload_reader_to(&b, None, &data[..], data.len() as u64, "bin")
            .await?;
        files.push((id, data));
    }
    let appender = client.upload_appender_bytes(b"grows", &options).await?;
    for (id, data) in &files {
        wait_content(&client, &a, id, data).await?;
    }
    wait_for("the appender on both", Duration::from_secs(30), || async {
        content_on(&client, &a, &appender).await.ok()?;
        content_on(&client, &b, &appender).await.ok().map(|_| ())
    })
    .await?;

    // damage on b: a flipped byte (same size), a cut file, and one damaged on both storages
    let flip = |path: &PathBuf, at: usize| -> Result<()> {
        let mut bytes = std::fs::read(path)?;
        bytes[at] ^= 0xFF;
        std::fs::write(path, bytes)?;
        Ok(())
    };
    flip(&path_on(&cluster, 1, &files[0].0), 100)?;
    let cut = path_on(&cluster, 1, &files[1].0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)?
        .set_len(files[1].1.len() as u64 / 2)?;
    flip(&path_on(&cluster, 1, &files[2].0), 7)?;
    flip(&path_on(&cluster, 0, &files[2].0), 9)?;

    // served over HTTP neither
    let http_b = cluster.storages[1].http_addr().await?;
    let refused = http_get(http_b, &format!("/{}", files[1].0)).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|err| err.to_string().contains("HTTP/1.1 500")),
        "{refused:?}"
    );
    // a download of a copy of the wrong size is refused, not served short
    let refused = content_on(&client, &b, &files[1].0).await;
    assert!(
        matches!(refused, Err(ClientError::Status(5))),
        "{refused:?}"
    );
    // the storage then repairs that file on its own
    wait_content(&client, &b, &files[1].0, &files[1].1).await?;

    // `fdfs scrub` on b: checks every normal file, repairs the flipped one, cannot repair the
    // one damaged everywhere (exit code 1), skips the appender
    let args = [
        "--tracker".to_string(),
        cluster.tracker_addr(),
        "scrub".to_string(),
        "--storage".to_string(),
        b.clone(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin_path("fdfs"))
            .args(&args)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "{b}: finished: checked 4 corrupt 2 repaired 1 unrepairable 1 skipped 1 "
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 damaged file(s) had no good copy"),
        "{stderr}"
    );
    assert_eq!(content_on(&client, &b, &files[0].0).await?, files[0].1);
    assert_eq!(content_on(&client, &b, &files[3].0).await?, files[3].1);
    // the copy without a good twin is left as it was (and still served: same size)
    assert_ne!(content_on(&client, &b, &files[2].0).await?, files[2].1);

    // the counts stay readable, and the metrics show them
    let report = client.scrub(&b, ScrubAction::Status).await?;
    assert!(!report.running);
    assert_eq!((report.corrupt, report.repaired), (2, 1));
    let text = http_get(http_b, "/metrics").await?;
    assert_eq!(
        sample(&text, "fdfs_storage_scrub_repaired_files_total"),
        Some(2.0),
        "the download-triggered repair and the scrub's"
    );
    assert_eq!(
        sample(&text, "fdfs_storage_scrub_unrepairable_files_total"),
        Some(1.0)
    );
    Ok(())
}

#[tokio::test]
async fn the_background_scrub_finds_damage_at_its_own_pace() -> Result<()> {
    let cluster = Cluster::builder()
        .storage_config("scrub_interval = \"1s\"\nscrub_rate = \"1MB\"\n")
        .start()
        .await?;
    let client = cluster.client();
    let mut ids = Vec::new();
    for seed in 0..3u64 {
        let data = random_bytes(seed, 50_000);
        ids.push(
            client
                .upload_bytes(&data, &UploadOptions::default())
                .await?,
        );
    }
    let path = path_on(&cluster, 0, &ids[1]);
    let mut bytes = std::fs::read(&path)?;
    bytes[10] ^= 1;
    std::fs::write(&path, bytes)?;
    // one storage: no peer to repair from
    let http = cluster.storages[0].http_addr().await?;
    let text = wait_for(
        "a background scrub to find the damage",
        Duration::from_secs(30),
        || async {
            let text = http_get(http, "/metrics").await.ok()?;
            let unrepairable = sample(&text, "fdfs_storage_scrub_unrepairable_files_total")?;
            // every file of a whole run checked, not just the ones before the damaged one
            let checked = sample(&text, "fdfs_storage_scrub_checked_files_total")?;
            (unrepairable >= 1.0 && checked >= 3.0).then_some(text)
        },
    )
    .await?;
    assert_eq!(
        sample(&text, "fdfs_storage_scrub_repaired_files_total"),
        Some(0.0)
    );
    // `fdfs scrub --status` finds the storages through the tracker
    let tracker = cluster.tracker_addr();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin_path("fdfs"))
            .args(["--tracker", &tracker, "scrub", "group1", "--status"])
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let addr = cluster.storages[0].addr.to_string();
    assert!(stdout.starts_with(&format!("{addr}: ")), "{stdout}");
    assert!(stdout.contains(" unrepairable "), "{stdout}");
    Ok(())
}

#[tokio::test]
async fn a_hanging_store_path_does_not_stall_the_others() -> Result<()> {
    // a small blocking pool, and at most 4 disk calls in flight per store path: without the
    // cap, the hung requests below would take all 8 pool threads and stall path 0 as well
    const MAX_IO: usize = 4;
    let cluster = Cluster::builder()
        .store_paths(2)
        .storage_config(&format!(
            "store_path_max_io = {MAX_IO}\nmax_blocking_threads = 8\nnetwork_timeout = \"4s\"\n"
        ))
        .start()
        .await?;
    let client = cluster.client();
    let addr = cluster.storages[0].addr.to_string();
    // text, so the HTTP helper can read it back
    let data: Vec<u8> = random_bytes(5, 4000)
        .iter()
        .map(|b| b'a' + b % 26)
        .collect();
    let good = client
        .upload_reader_to(&addr, Some(0), &data[..], data.len() as u64, "bin")
        .await?;
    assert_eq!(good.name.store_path(), 0);
    // a file on path 1 whose open(2) does not return, as an open that must read a directory
    // or inode from a disk that stopped answering: a FIFO nobody writes to. Requests for it
    // must wait off the threads that serve connections (the blocking pool), and no more of
    // them than the path's cap may hold pool threads
    let hanging = FileId::new(
        "group1",
        fdfs_proto::file_id::LogicalName::parse(&good.name.to_string().replacen("M00", "M01", 1))?,
    )?;
    let fifo = cluster
        .store_path(0, 1)
        .join("data")
        .join(hanging.name.data_relative_path());
    std::fs::create_dir_all(fifo.parent().unwrap())?;
    let status = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    anyhow::ensure!(status.success(), "mkfifo failed");

    // three times the cap, more than the pool has threads: the downloads first, so the hung
    // opens holding the slots are theirs (taking them first, HTTP requests would leave every
    // download waiting for a slot, and answered EBUSY after network_timeout, before the check
    // below on a slow run); HTTP requests then queue for the same slots (their answers are
    // not checked here), and the other path must still serve both ports
    let http = cluster.storages[0].http_addr().await?;
    // the hung downloads wait for the writer below, however long the checks before it take
    let patient = {
        let mut config = fdfs_client::ClientConfig::new(vec![cluster.tracker_addr()]);
        config.network_timeout = Duration::from_secs(300);
        fdfs_client::Client::new(config)?
    };
    let mut stuck = Vec::new();
    for _ in 0..8 {
        let (client, addr, id) = (patient.clone(), addr.clone(), hanging.clone());
        stuck.push(tokio::spawn(async move {
            let mut sink = Vec::new();
            client.download_from(&addr, &id, 0, 0, &mut sink).await
        }));
    }
    // every slot of path 1 is held by a hung open
    let in_use = format!(
        "fdfs_storage_store_path_io_in_use{{path=\"{}\"}}",
        cluster.store_path(0, 1).display()
    );
    wait_for(
        "path 1's slots all taken",
        Duration::from_secs(60),
        || async {
            let text = http_get(http, "/metrics").await.ok()?;
            (sample(&text, &in_use)? == MAX_IO as f64).then_some(())
        },
    )
    .await?;
    let mut queued_http = Vec::new();
    for _ in 0..4 {
        let path = format!("/{hanging}");
        queued_http.push(tokio::spawn(async move { http_get(http, &path).await }));
    }
    assert!(
        stuck.iter().any(|task| !task.is_finished()),
        "the FIFO does not hang"
    );
    // the other path still serves downloads and uploads over both ports
    for seed in 0..3u64 {
        let got = tokio::time::timeout(Duration::from_secs(10), content_on(&client, &addr, &good))
            .await
            .map_err(|_| anyhow::anyhow!("a download from path 0 waited for path 1"))??;
        assert_eq!(got, data);
        let served =
            tokio::time::timeout(Duration::from_secs(10), http_get(http, &format!("/{good}")))
                .await
                .map_err(|_| anyhow::anyhow!("an HTTP GET from path 0 waited for path 1"))??;
        assert_eq!(served.as_bytes(), &data[..]);
        let more = random_bytes(100 + seed, 300_000);
        let id = tokio::time::timeout(
            Duration::from_secs(10),
            client.upload_reader_to(&addr, Some(0), &more[..], more.len() as u64, "bin"),
        )
        .await
        .map_err(|_| anyhow::anyhow!("an upload to path 0 waited for path 1"))??;
        assert_eq!(content_on(&client, &addr, &id).await?, more);
    }
    // requests over the cap do not wait for the disk forever: EBUSY after network_timeout
    wait_for(
        "a request over the cap to be refused",
        Duration::from_secs(60),
        || async { stuck.iter().any(|task| task.is_finished()).then_some(()) },
    )
    .await?;
    // a writer releases the hung opens: they end with "not a regular file", and the ones
    // still waiting open the FIFO while the writer keeps it open
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo)?;
    let mut answers = Vec::new();
    for task in stuck {
        let result = tokio::time::timeout(Duration::from_secs(30), task).await??;
        match result {
            Err(ClientError::Status(code @ (16 | 21))) => answers.push(code),
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }
    assert!(answers.contains(&16), "{answers:?}");
    // the HTTP requests end too (refused or "not a regular file") while the writer is still
    // there: one taking a slot after the writer left would hang in its open again
    for task in queued_http {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await?;
    }
    wait_for(
        "path 1's slots free again",
        Duration::from_secs(30),
        || async {
            let text = http_get(http, "/metrics").await.ok()?;
            (sample(&text, &in_use)? == 0.0).then_some(())
        },
    )
    .await?;
    drop(writer);
    Ok(())
}

/// The storage's clock test hook (`fdfs_storage::clock`): seconds added to its clock.
pub(crate) const OFFSET_ENV: &str = "FDFS_TEST_CLOCK_OFFSET_SECS";

/// The health record the tracker keeps of storage `id` (STORAGE_HEALTH, fdfs-rs 200).
async fn health_of(cluster: &Cluster, id: &str) -> Result<Option<StorageHealth>> {
    let mut conn = Connection::new(TcpStream::connect(cluster.tracker.addr).await?);
    let reply = conn
        .call(fdfs_proto::cmd::Command::StorageHealth.code(), &[], 1 << 20)
        .await?;
    Ok(HealthReport::decode(&reply)?
        .storages
        .into_iter()
        .find(|s| s.id == id))
}

/// The storage QUERY_FETCH_ONE (102) names for `id`, as a port.
async fn fetch_one(cluster: &Cluster, id: &FileId) -> Result<u16> {
    let mut conn = Connection::new(TcpStream::connect(cluster.tracker.addr).await?);
    let body = fdfs_proto::storage_msg::GroupAndName {
        group: id.group.clone(),
        name: id.name.to_string(),
    }
    .encode();
    let reply = conn
        .call(fdfs_proto::cmd::Command::QueryFetchOne.code(), &body, 4096)
        .await?;
    let servers = FetchReply::decode(&reply)?.servers;
    anyhow::ensure!(servers.len() == 1, "{servers:?}");
    Ok(servers[0].port)
}

/// Clock skew (issue 8): the source of a file runs 5 s behind the tracker, its peer 5 s
/// ahead, and the tracker guesses "replicated everywhere" for files older than 3 s
/// (`storage_sync_file_max_delay`). FastDFS's rule would name the peer for a file it never
/// received at once (the file looks 5 s old to the tracker); ours names only storages that
/// have it, for as long as they do not, and the peer once it does.
#[tokio::test]
async fn reads_follow_the_files_not_the_clocks() -> Result<()> {
    let shifted = |secs: i64| vec![(OFFSET_ENV.to_string(), secs.to_string())];
    let mut cluster = Cluster::builder()
        .groups(&[])
        .tracker_config("storage_sync_file_max_delay = \"3s\"\n")
        .start_without_waiting()
        .await?;
    let spec = |server_id: u32, extra: &str| StorageSpec {
        group: "group1".into(),
        server_id,
        store_path_count: 1,
        extra: extra.into(),
    };
    cluster
        .add_storage_with_env(spec(100_001, ""), shifted(-5))
        .await?;
    // the peer has no room: replication to it pauses on the first record
    cluster
        .add_storage_with_env(
            spec(100_002, "reserved_storage_space = \"100%\"\n"),
            shifted(5),
        )
        .await?;
    cluster.wait_active("group1", 2).await?;
    let client = cluster.client();
    let source = cluster.storages[0].addr;
    let peer = cluster.storages[1].addr;

    let data = random_bytes(7, 20_000);
    let id = client
        .upload_reader_to(
            &source.to_string(),
            None,
            &data[..],
            data.len() as u64,
            "bin",
        )
        .await?;
    // the tracker knows both clocks, and has the source's word that the file has not
    // reached the peer (reported for the peer's current data)
    let known = wait_for(
        "the source's report of the paused peer",
        Duration::from_secs(30),
        || async {
            let source = health_of(&cluster, "100001").await.ok()??;
            let peer = health_of(&cluster, "100002").await.ok()??;
            let behind = peer
                .peers
                .iter()
                .any(|p| p.source_id == "100001" && p.records_behind >= 1);
            (source.clock_skew.is_some() && peer.clock_skew.is_some() && behind)
                .then_some((source.clock_skew?, peer.clock_skew?))
        },
    )
    .await?;
    // report-to-receipt delays can add a second either way
    assert!((-7..=-3).contains(&known.0), "source skew {}", known.0);
    assert!((3..=7).contains(&known.1), "peer skew {}", known.1);
    assert!(matches!(
        client.file_info_from(&peer.to_string(), &id).await,
        Err(ClientError::NotFound)
    ));

    // every answer names the source only, and every download through the tracker works
    for _ in 0..6 {
        assert_eq!(fetch_one(&cluster, &id).await?, source.port());
        assert_eq!(client.download_bytes(&id, 0, 0).await?, data);
    }
    assert_eq!(
        crate::replication::fetch_all(&cluster, &id).await?,
        [source.port()]
    );

    // room again: the file reaches the peer, and only then is the peer named
    let conf = cluster.storages[1].config.clone();
    let text = std::fs::read_to_string(&conf)?.replace("reserved_storage_space = \"100%\"", "");
    std::fs::write(&conf, text)?;
    cluster.restart_storage(1).await?;
    let peer = cluster.storages[1].addr;
    wait_for("the peer to be named", Duration::from_secs(60), || async {
        let named = crate::replication::fetch_all(&cluster, &id).await.ok()?;
        named.contains(&peer.port()).then_some(())
    })
    .await?;
    assert_eq!(content_on(&client, &peer.to_string(), &id).await?, data);
    Ok(())
}
