//! Heartbeats, OFFLINE/ACTIVE transitions and upload placement across groups.

use std::collections::BTreeMap;
use std::time::Duration;

use fdfs_client::{ClientError, UploadOptions};
use fdfs_tests::{wait_for, Cluster};

#[tokio::test]
async fn missed_heartbeats_make_a_storage_offline_and_a_beat_brings_it_back() -> anyhow::Result<()>
{
    let cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    // A stopped process keeps its connection open but stops beating: only the heartbeat
    // timeout (3 s in tests) can take it out.
    cluster.storages[1].signal(libc::SIGSTOP);
    wait_for("storage 2 offline", Duration::from_secs(15), || async {
        (cluster.active_count("group1").await == 1).then_some(())
    })
    .await?;
    // no upload goes to the stopped storage meanwhile
    let client = cluster.client();
    for _ in 0..4 {
        let id = client
            .upload_bytes(b"while one is down", &UploadOptions::default())
            .await?;
        assert_eq!(id.name.to_string().len(), 44);
        let info = client.file_info(&id).await?;
        assert_eq!(
            info.source,
            fdfs_client::Source::Id(cluster.specs[0].server_id)
        );
    }
    cluster.storages[1].signal(libc::SIGCONT);
    wait_for(
        "storage 2 active again",
        Duration::from_secs(15),
        || async { (cluster.active_count("group1").await == 2).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_killed_storage_goes_offline_and_comes_back_after_restart() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let id = client
        .upload_bytes(b"survives restarts", &UploadOptions::default())
        .await?;
    cluster.storages[0].kill();
    wait_for("no active storage", Duration::from_secs(10), || async {
        (cluster.active_count("group1").await == 0).then_some(())
    })
    .await?;
    let refused = client
        .upload_bytes(b"nowhere to go", &UploadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused.status(),
        Some(2),
        "no writable storage → ENOENT: {refused}"
    );
    cluster.restart_storage(0).await?;
    cluster.wait_active("group1", 1).await?;
    assert_eq!(
        client.download_bytes(&id, 0, 0).await?,
        b"survives restarts"
    );
    Ok(())
}

async fn groups_of(
    cluster: &Cluster,
    uploads: usize,
    group: Option<&str>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let client = cluster.client();
    let mut counts = BTreeMap::new();
    for i in 0..uploads {
        let options = UploadOptions {
            group: group.map(str::to_string),
            ..Default::default()
        };
        let id = client
            .upload_bytes(format!("file {i}").as_bytes(), &options)
            .await?;
        *counts.entry(id.group.clone()).or_insert(0) += 1;
    }
    Ok(counts)
}

#[tokio::test]
async fn store_lookup_round_robin_spreads_over_groups() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .groups(&[("group1", 1), ("group2", 1)])
        .tracker_config("store_lookup = 0")
        .start()
        .await?;
    let counts = groups_of(&cluster, 6, None).await?;
    assert_eq!(counts.get("group1"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("group2"), Some(&3), "{counts:?}");
    // a named group always wins
    let named = groups_of(&cluster, 3, Some("group2")).await?;
    assert_eq!(named.get("group2"), Some(&3));
    let unknown = cluster
        .client()
        .upload_bytes(
            b"x",
            &UploadOptions {
                group: Some("nosuch".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(2));
    Ok(())
}

#[tokio::test]
async fn store_lookup_specified_group_sends_everything_there() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .groups(&[("group1", 1), ("group2", 1)])
        .tracker_config("store_lookup = 1\nstore_group = \"group2\"")
        .start()
        .await?;
    let counts = groups_of(&cluster, 4, None).await?;
    assert_eq!(counts.get("group2"), Some(&4), "{counts:?}");
    Ok(())
}

#[tokio::test]
async fn store_lookup_load_balance_picks_one_group_with_room() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .groups(&[("group1", 1), ("group2", 1)])
        .tracker_config("store_lookup = 2")
        .start()
        .await?;
    let counts = groups_of(&cluster, 4, None).await?;
    assert_eq!(counts.values().sum::<usize>(), 4);
    Ok(())
}

#[tokio::test]
async fn store_server_round_robin_spreads_over_a_group() -> anyhow::Result<()> {
    let cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let client = cluster.client();
    let mut sources = BTreeMap::new();
    for i in 0..6 {
        let id = client
            .upload_bytes(format!("{i}").as_bytes(), &UploadOptions::default())
            .await?;
        let info = client.file_info(&id).await?;
        *sources.entry(format!("{:?}", info.source)).or_insert(0) += 1;
    }
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert!(sources.values().all(|&n| n == 3), "{sources:?}");
    Ok(())
}

#[tokio::test]
async fn a_full_cluster_answers_enospc_at_the_tracker() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .tracker_config("reserved_storage_space = \"100%\"")
        .start_without_waiting()
        .await?;
    let client = cluster.client();
    let err = wait_for(
        "tracker to answer ENOSPC",
        Duration::from_secs(15),
        || async {
            match client
                .upload_bytes(b"no room", &UploadOptions::default())
                .await
            {
                Err(err) if err.status() == Some(28) => Some(err),
                _ => None,
            }
        },
    )
    .await?;
    assert!(matches!(err, ClientError::NoSpace), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn a_full_storage_refuses_uploads_with_enospc_and_writes_nothing() -> anyhow::Result<()> {
    // The tracker thinks there is room, the storage's own reserve says there is not.
    let cluster = Cluster::builder()
        .storage_config("reserved_storage_space = \"100%\"")
        .start()
        .await?;
    let client = cluster.client();
    let err = client
        .upload_bytes(&vec![7u8; 10_000], &UploadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NoSpace), "{err:?}");
    let data = cluster.store_path(0, 0).join("data");
    let stored = fdfs_tests::stored_files(&data);
    assert!(stored.is_empty(), "{stored:?}");
    Ok(())
}
