//! Appender files (append, modify, truncate, regenerate) and slave files through our client,
//! with the server-side refusals checked over raw packets.

use fdfs_client::{ClientError, FileKind, UploadOptions};
use fdfs_proto::conn::Connection;
use fdfs_proto::storage_msg::{AppendPrefix, ModifyPrefix, SlavePrefix, TruncateRequest};
use fdfs_proto::ProtoError;
use fdfs_tests::Cluster;
use tokio::net::TcpStream;

fn txt() -> UploadOptions {
    UploadOptions {
        ext: "txt".into(),
        ..Default::default()
    }
}

/// Server answer for a raw request (the client refuses some of these locally).
async fn raw(cluster: &Cluster, cmd: u8, body: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let mut conn = Connection::new(TcpStream::connect(cluster.storages[0].addr).await?);
    conn.call(cmd, body, 1024).await
}

async fn check_content(
    cluster: &Cluster,
    id: &fdfs_client::FileId,
    expected: &[u8],
) -> anyhow::Result<()> {
    let client = cluster.client();
    assert_eq!(client.download_bytes(id, 0, 0).await?, expected);
    let info = client.file_info(id).await?;
    assert_eq!(
        info.size,
        expected.len() as u64,
        "size from QUERY_FILE_INFO"
    );
    assert_eq!(
        info.crc32,
        crc32fast::hash(expected),
        "CRC computed over the current content"
    );
    Ok(())
}

#[tokio::test]
async fn appender_life_cycle() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let id = client.upload_appender_bytes(b"hello\n", &txt()).await?;
    assert_eq!(id.name.to_string().len(), 44);
    let info = client.file_info(&id).await?;
    assert_eq!(info.kind, FileKind::Appender);
    check_content(&cluster, &id, b"hello\n").await?;

    client.append_bytes(&id, b"hello\n").await?;
    check_content(&cluster, &id, b"hello\nhello\n").await?;
    client.modify_bytes(&id, 0, b"HE").await?;
    check_content(&cluster, &id, b"HEllo\nhello\n").await?;
    client.modify_bytes(&id, 12, b"tail").await?; // offset == size acts as append
    check_content(&cluster, &id, b"HEllo\nhello\ntail").await?;
    client.truncate(&id, 5).await?;
    check_content(&cluster, &id, b"HEllo").await?;
    client.truncate(&id, 5).await?; // same size: no-op
    client.append_bytes(&id, b"").await?; // zero-length append answers an empty success
    check_content(&cluster, &id, b"HEllo").await?;

    let normal = client.regenerate(&id).await?;
    assert_ne!(normal, id);
    assert_eq!(
        normal.name.base()[27..],
        id.name.base()[27..],
        "the 7-character suffix is kept"
    );
    assert_eq!(
        (normal.name.dir_high(), normal.name.dir_low()),
        (id.name.dir_high(), id.name.dir_low())
    );
    let fields = fdfs_proto::name::NameFields::from_logical_name(&normal.name.to_string())?;
    assert!(!fields.is_appender());
    assert_eq!(fields.file_size(), 5);
    assert_eq!(fields.crc32, crc32fast::hash(b"HEllo"));
    check_content(&cluster, &normal, b"HEllo").await?;
    assert!(
        matches!(
            client.download_bytes(&id, 0, 0).await.unwrap_err(),
            ClientError::NotFound
        ),
        "the old name is gone"
    );
    Ok(())
}

#[tokio::test]
async fn appender_operations_are_refused_on_normal_files_and_out_of_range() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let normal = client.upload_bytes(b"normal file", &txt()).await?;
    let name = normal.name.to_string();

    // append to a normal file → 22 from the server
    let mut body = AppendPrefix {
        name_len: name.len() as u64,
        size: 3,
    }
    .encode();
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(b"abc");
    assert!(matches!(
        raw(&cluster, 24, &body).await,
        Err(ProtoError::Status { status: 22 })
    ));
    // truncate / regenerate of a normal file → 22
    let trunc = TruncateRequest {
        new_size: 1,
        name: name.clone(),
    }
    .encode();
    assert!(matches!(
        raw(&cluster, 36, &trunc).await,
        Err(ProtoError::Status { status: 22 })
    ));
    assert!(matches!(
        raw(&cluster, 38, name.as_bytes()).await,
        Err(ProtoError::Status { status: 22 })
    ));
    check_content(&cluster, &normal, b"normal file").await?;

    let appender = client.upload_appender_bytes(b"0123456789", &txt()).await?;
    let app_name = appender.name.to_string();
    // modify past the end → 22
    let mut body = ModifyPrefix {
        name_len: app_name.len() as u64,
        offset: 11,
        size: 2,
    }
    .encode();
    body.extend_from_slice(app_name.as_bytes());
    body.extend_from_slice(b"xy");
    assert!(matches!(
        raw(&cluster, 34, &body).await,
        Err(ProtoError::Status { status: 22 })
    ));
    assert_eq!(
        client
            .modify_bytes(&appender, 11, b"xy")
            .await
            .unwrap_err()
            .status(),
        Some(22)
    );
    // truncate to more than the current size → 22
    assert_eq!(
        client.truncate(&appender, 11).await.unwrap_err().status(),
        Some(22)
    );
    // append to a missing appender → 2
    client.delete(&appender).await?;
    assert!(matches!(
        client.append_bytes(&appender, b"x").await.unwrap_err(),
        ClientError::NotFound
    ));
    Ok(())
}

#[tokio::test]
async fn slave_files_live_beside_their_master() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let master = client
        .upload_bytes(
            b"master image",
            &UploadOptions {
                ext: "jpg".into(),
                ..Default::default()
            },
        )
        .await?;
    let slave = client
        .upload_slave_bytes(&master, "_150x150", "jpg", b"thumbnail")
        .await?;
    let master_base = master.name.base();
    assert_eq!(
        slave.name.base(),
        format!("{}_150x150.jpg", &master_base[..master_base.len() - 4])
    );
    assert_eq!(
        (slave.name.dir_high(), slave.name.dir_low()),
        (master.name.dir_high(), master.name.dir_low())
    );
    let info = client.file_info(&slave).await?;
    assert_eq!(info.kind, FileKind::Slave);
    check_content(&cluster, &slave, b"thumbnail").await?;
    let on_disk = cluster
        .store_path(0, 0)
        .join("data")
        .join(slave.name.data_relative_path());
    assert_eq!(std::fs::read(on_disk)?, b"thumbnail");

    // the same slave twice → 17
    assert_eq!(
        client
            .upload_slave_bytes(&master, "_150x150", "jpg", b"again")
            .await
            .unwrap_err()
            .status(),
        Some(17)
    );
    // slave of a slave → 22 (sent raw: the master name is too long to be a master)
    let slave_name = slave.name.to_string();
    let mut body = SlavePrefix {
        master_name_len: slave_name.len() as u64,
        file_size: 1,
        prefix: "_x".into(),
        ext: "".into(),
    }
    .encode();
    body.extend_from_slice(slave_name.as_bytes());
    body.push(b'z');
    assert!(matches!(
        raw(&cluster, 21, &body).await,
        Err(ProtoError::Status { status: 22 })
    ));
    // bad prefixes: empty, too long (cut to 16 on the wire is impossible, so send a bad char)
    let master_name = master.name.to_string();
    for prefix in ["", "a/b", "-m"] {
        let mut body = SlavePrefix {
            master_name_len: master_name.len() as u64,
            file_size: 1,
            prefix: prefix.into(),
            ext: "".into(),
        }
        .encode();
        body.extend_from_slice(master_name.as_bytes());
        body.push(b'z');
        assert!(
            matches!(
                raw(&cluster, 21, &body).await,
                Err(ProtoError::Status { status: 22 })
            ),
            "prefix {prefix:?}"
        );
    }
    assert!(client
        .upload_slave_bytes(&master, "12345678901234567", "", b"x")
        .await
        .is_err());
    // slave of a missing master → 2
    client.delete(&slave).await?;
    client.delete(&master).await?;
    assert!(matches!(
        client
            .upload_slave_bytes(&master, "_s", "", b"x")
            .await
            .unwrap_err(),
        ClientError::NotFound
    ));
    Ok(())
}

#[tokio::test]
async fn concurrent_appenders_never_interleave_inside_a_block() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let id = client.upload_appender_bytes(b"", &txt()).await?;
    const TASKS: u8 = 6;
    const APPENDS: usize = 25;
    const BLOCK: usize = 3000;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        let id = id.clone();
        handles.push(tokio::spawn(async move {
            for n in 0..APPENDS {
                // each block: task byte repeated, then its sequence number
                let mut block = vec![b'A' + task; BLOCK];
                block[BLOCK - 2..].copy_from_slice(&(n as u16).to_be_bytes());
                client.append_bytes(&id, &block).await?;
            }
            Ok::<_, ClientError>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let content = client.download_bytes(&id, 0, 0).await?;
    assert_eq!(
        content.len(),
        TASKS as usize * APPENDS * BLOCK,
        "final size is the sum of the appends"
    );
    let mut next = vec![0u16; TASKS as usize];
    for block in content.chunks(BLOCK) {
        let task = block[0];
        assert!((b'A'..b'A' + TASKS).contains(&task));
        assert!(
            block[..BLOCK - 2].iter().all(|&b| b == task),
            "bytes of two appends interleaved"
        );
        let seq = u16::from_be_bytes([block[BLOCK - 2], block[BLOCK - 1]]);
        assert_eq!(
            seq,
            next[(task - b'A') as usize],
            "appends of one task arrive in order"
        );
        next[(task - b'A') as usize] += 1;
    }
    assert_eq!(
        client.file_info(&id).await?.crc32,
        crc32fast::hash(&content)
    );
    Ok(())
}

/// A random sequence of append/modify/truncate applied to the server and to a Vec gives the
/// same bytes.
#[tokio::test]
async fn random_edits_match_an_in_memory_model() -> anyhow::Result<()> {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    #[derive(Debug, Clone)]
    enum Edit {
        Append(Vec<u8>),
        Modify(u16, Vec<u8>),
        Truncate(u16),
    }
    let edit = proptest::prop_oneof![
        proptest::collection::vec(proptest::num::u8::ANY, 0..300).prop_map(Edit::Append),
        (
            proptest::num::u16::ANY,
            proptest::collection::vec(proptest::num::u8::ANY, 1..200)
        )
            .prop_map(|(o, d)| Edit::Modify(o, d)),
        proptest::num::u16::ANY.prop_map(Edit::Truncate),
    ];
    let cluster = Cluster::builder().start().await?;
    let client = cluster.client();
    let mut runner = TestRunner::deterministic();
    for case in 0..8 {
        let edits = proptest::collection::vec(edit.clone(), 1..25)
            .new_tree(&mut runner)
            .expect("strategy")
            .current();
        let mut model = format!("case {case}\n").into_bytes();
        let id = client.upload_appender_bytes(&model, &txt()).await?;
        for edit in edits {
            match edit {
                Edit::Append(data) => {
                    client.append_bytes(&id, &data).await?;
                    model.extend_from_slice(&data);
                }
                Edit::Modify(offset, data) => {
                    let offset = offset as usize % (model.len() + 1);
                    client.modify_bytes(&id, offset as u64, &data).await?;
                    let end = offset + data.len();
                    if end > model.len() {
                        model.resize(end, 0);
                    }
                    model[offset..end].copy_from_slice(&data);
                }
                Edit::Truncate(size) => {
                    let size = size as usize % (model.len() + 1);
                    client.truncate(&id, size as u64).await?;
                    model.truncate(size);
                }
            }
            assert_eq!(
                client
                    .download_bytes(&id, 0, 0)
                    .await
                    .or_else(|e| if model.is_empty() {
                        Ok(Vec::new())
                    } else {
                        Err(e)
                    })?,
                model
            );
        }
        check_content(&cluster, &id, &model).await?;
    }
    Ok(())
}
