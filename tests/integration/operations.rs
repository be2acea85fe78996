//! Upload, download, delete, file info and metadata through our client library.

use fdfs_client::{ClientError, FileKind, MetadataOp, Source, UploadOptions};
use fdfs_tests::Cluster;

fn opts(ext: &str) -> UploadOptions {
    UploadOptions {
        ext: ext.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn upload_download_delete_round_trip() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let content = b"hello world, fastdfs!\n".to_vec();
    let id = client.upload_bytes(&content, &opts("txt")).await?;
    assert_eq!(id.group, "group1");
    let text = id.to_string();
    assert!(text.ends_with(".txt"), "{text}");
    assert_eq!(
        id.name.to_string().len(),
        44,
        "normal logical names are 44 characters: {text}"
    );

    assert_eq!(client.download_bytes(&id, 0, 0).await?, content);
    assert_eq!(client.download_bytes(&id, 6, 0).await?, &content[6..]);
    assert_eq!(client.download_bytes(&id, 6, 5).await?, &content[6..11]);
    assert_eq!(
        client.download_bytes(&id, 0, 1000).await?,
        content,
        "too-long lengths are clamped"
    );
    assert_eq!(client.download_bytes(&id, 21, 0).await?, &content[21..]);
    let past_end = client.download_bytes(&id, 22, 0).await;
    assert_eq!(past_end.unwrap_err().status(), Some(22));

    // the file sits where nginx expects it: <store_path>/data/XX/YY/name
    let on_disk = cluster
        .store_path(0, 0)
        .join("data")
        .join(id.name.data_relative_path());
    assert_eq!(std::fs::read(&on_disk)?, content);

    client.delete(&id).await?;
    assert!(!on_disk.exists());
    let gone = client.download_bytes(&id, 0, 0).await.unwrap_err();
    assert!(matches!(gone, ClientError::NotFound), "{gone:?}");
    assert!(matches!(
        client.delete(&id).await.unwrap_err(),
        ClientError::NotFound
    ));
    Ok(())
}

#[tokio::test]
async fn file_info_matches_the_name_and_the_content() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let content = b"hello world, fastdfs!\n";
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let id = client.upload_bytes(content, &opts("txt")).await?;
    let info = client.file_info(&id).await?;
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(info.crc32, crc32fast::hash(content));
    assert_eq!(
        info.crc32, 0x8036_CEA3,
        "CRC with the top bit set survives sign extension"
    );
    assert_eq!(info.kind, FileKind::Normal);
    assert_eq!(info.source, Source::Id(cluster.specs[0].server_id));
    assert_eq!(info.source_ip, "127.0.0.1");
    assert!(info.create_timestamp >= before - 1 && info.create_timestamp <= before + 60);

    let empty = client.upload_bytes(b"", &opts("")).await?;
    assert_eq!(empty.name.base().len(), 34, "no extension: 7 random digits");
    assert!(empty.name.base()[27..].bytes().all(|b| b.is_ascii_digit()));
    let info = client.file_info(&empty).await?;
    assert_eq!((info.size, info.crc32), (0, 0));
    Ok(())
}

#[tokio::test]
async fn metadata_overwrite_merge_and_clear() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let pairs = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let id = client
        .upload_bytes(
            b"image",
            &UploadOptions {
                ext: "jpg".into(),
                metadata: pairs(&[("width", "160"), ("height", "80"), ("author", "me")]),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(
        client.get_metadata(&id).await?,
        pairs(&[("author", "me"), ("height", "80"), ("width", "160")])
    );
    client
        .set_metadata(
            &id,
            &pairs(&[("width", "999"), ("zeta", "z")]),
            MetadataOp::Merge,
        )
        .await?;
    assert_eq!(
        client.get_metadata(&id).await?,
        pairs(&[
            ("author", "me"),
            ("height", "80"),
            ("width", "999"),
            ("zeta", "z")
        ])
    );
    client
        .set_metadata(&id, &pairs(&[("only", "one")]), MetadataOp::Overwrite)
        .await?;
    assert_eq!(client.get_metadata(&id).await?, pairs(&[("only", "one")]));
    let sidecar = cluster
        .store_path(0, 0)
        .join("data")
        .join(format!("{}-m", id.name.data_relative_path()));
    assert_eq!(std::fs::read(&sidecar)?, b"only\x02one");
    client.set_metadata(&id, &[], MetadataOp::Overwrite).await?;
    assert!(matches!(
        client.get_metadata(&id).await.unwrap_err(),
        ClientError::NotFound
    ));
    assert!(!sidecar.exists());

    let plain = client.upload_bytes(b"x", &opts("")).await?;
    assert!(
        matches!(
            client.get_metadata(&plain).await.unwrap_err(),
            ClientError::NotFound
        ),
        "no sidecar → not found"
    );
    // deleting a file removes its metadata too
    client
        .set_metadata(&plain, &pairs(&[("k", "v")]), MetadataOp::Overwrite)
        .await?;
    client.delete(&plain).await?;
    let plain_sidecar = cluster
        .store_path(0, 0)
        .join("data")
        .join(format!("{}-m", plain.name.data_relative_path()));
    assert!(!plain_sidecar.exists());
    Ok(())
}

#[tokio::test]
async fn several_store_paths_are_all_used() -> anyhow::Result<()> {
    let cluster = Cluster::builder().store_paths(2).start().await?;
    let client = cluster.client();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..6u8 {
        let id = client.upload_bytes(&[i; 100], &opts("bin")).await?;
        seen.insert(id.name.store_path());
        let path = cluster
            .store_path(0, id.name.store_path() as usize)
            .join("data")
            .join(id.name.data_relative_path());
        assert_eq!(std::fs::read(path)?, vec![i; 100]);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![0, 1],
        "round robin over store paths"
    );
    Ok(())
}

#[tokio::test]
async fn upload_from_file_and_download_to_file() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("photo.png");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&source, &content)?;
    let id = client
        .upload_file(&source, &UploadOptions::default())
        .await?;
    assert!(
        id.name.base().ends_with(".png"),
        "extension taken from the file name: {id}"
    );
    let target = dir.path().join("out.png");
    assert_eq!(
        client.download_file(&id, &target).await?,
        content.len() as u64
    );
    assert_eq!(std::fs::read(&target)?, content);
    Ok(())
}

/// A test cluster's directory goes with it: its daemons stop before the directory is
/// removed, so none of them writes into it meanwhile (test runs used to leave partial trees
/// of ~128 MB in the temp directory).
#[tokio::test]
async fn a_dropped_test_cluster_leaves_no_directory() -> anyhow::Result<()> {
    let cluster = Cluster::builder().groups(&[("group1", 2)]).start().await?;
    let root = cluster.root.path().to_path_buf();
    assert!(root.join("tracker").is_dir());
    drop(cluster);
    assert!(!root.exists(), "{} left behind", root.display());
    Ok(())
}
