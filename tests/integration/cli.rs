//! The `fdfs` command line against a real cluster.

use std::process::{Command, Output};

use fdfs_tests::{bin_path, Cluster};

fn fdfs(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(bin_path("fdfs"))
        .arg("--tracker")
        .arg(cluster.tracker_addr())
        .args(args)
        .output()
        .expect("run fdfs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "fdfs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[tokio::test]
async fn upload_download_info_meta_delete_from_the_command_line() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("test.jpg");
    std::fs::write(&source, b"\xff\xd8\xff\xe0 not really a jpeg")?;

    let out = stdout(&fdfs(
        &cluster,
        &[
            "upload",
            source.to_str().unwrap(),
            "--meta",
            "width=160",
            "--meta",
            "author=me",
        ],
    ));
    let id = out.trim();
    assert_eq!(out, format!("{id}\n"), "upload prints the file ID alone");
    assert!(
        id.starts_with("group1/M00/") && id.ends_with(".jpg"),
        "{id}"
    );

    let target = dir.path().join("back.jpg");
    stdout(&fdfs(&cluster, &["download", id, target.to_str().unwrap()]));
    assert_eq!(std::fs::read(&target)?, std::fs::read(&source)?);
    let piped = fdfs(&cluster, &["download", id, "-"]);
    assert!(piped.status.success());
    assert_eq!(piped.stdout, std::fs::read(&source)?);

    let info = stdout(&fdfs(&cluster, &["info", id]));
    assert!(info.contains("100001"), "source id shown: {info}");
    assert!(
        info.contains(&format!("{}", std::fs::metadata(&source)?.len())),
        "size shown: {info}"
    );
    let crc = format!("{:08x}", crc32fast::hash(&std::fs::read(&source)?));
    assert!(info.to_lowercase().contains(&crc), "crc shown: {info}");

    assert_eq!(
        stdout(&fdfs(&cluster, &["meta", "get", id])),
        "author=me\nwidth=160\n"
    );
    stdout(&fdfs(
        &cluster,
        &["meta", "set", id, "width=999", "zeta=z", "--merge"],
    ));
    assert_eq!(
        stdout(&fdfs(&cluster, &["meta", "get", id])),
        "author=me\nwidth=999\nzeta=z\n"
    );

    stdout(&fdfs(&cluster, &["delete", id]));
    let missing = fdfs(&cluster, &["download", id, "-"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    assert!(err.to_lowercase().contains("not found"), "{err}");
    Ok(())
}

#[tokio::test]
async fn cli_errors_say_what_to_do() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let bad_id = fdfs(&cluster, &["download", "not-a-file-id", "-"]);
    assert_eq!(bad_id.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad_id.stderr);
    assert!(
        err.contains("GROUP/M"),
        "explains the expected shape: {err}"
    );

    let no_tracker = Command::new(bin_path("fdfs"))
        .args(["--tracker", "127.0.0.1:1", "upload", "/etc/hostname"])
        .output()?;
    assert_eq!(no_tracker.status.code(), Some(1));
    let err = String::from_utf8_lossy(&no_tracker.stderr);
    assert!(
        err.contains("127.0.0.1:1"),
        "names the tracker it tried: {err}"
    );

    let listed = stdout(&fdfs(&cluster, &["storages", "group1"]));
    assert_eq!(listed.trim(), cluster.storages[0].addr.to_string());
    Ok(())
}

#[tokio::test]
async fn appender_and_slave_commands_from_the_command_line() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let dir = tempfile::tempdir()?;
    let write = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path.to_str().expect("utf-8").to_string()
    };
    let first = write("first.log", b"hello\n");
    let more = write("more.log", b"world\n");
    let patch = write("patch.bin", b"HE");
    let thumb = write("thumb.jpg", b"small");

    let id = stdout(&fdfs(&cluster, &["upload", "--appender", &first]))
        .trim()
        .to_string();
    stdout(&fdfs(&cluster, &["append", &id, &more]));
    stdout(&fdfs(&cluster, &["modify", &id, "0", &patch]));
    assert_eq!(
        fdfs(&cluster, &["download", &id, "-"]).stdout,
        b"HEllo\nworld\n"
    );
    stdout(&fdfs(&cluster, &["truncate", &id, "5"]));
    assert_eq!(fdfs(&cluster, &["download", &id, "-"]).stdout, b"HEllo");
    let grow = fdfs(&cluster, &["truncate", &id, "50"]);
    assert_eq!(
        grow.status.code(),
        Some(1),
        "growing by truncate is refused"
    );
    let normal = stdout(&fdfs(&cluster, &["regenerate", &id]))
        .trim()
        .to_string();
    assert_ne!(normal, id);
    assert_eq!(fdfs(&cluster, &["download", &normal, "-"]).stdout, b"HEllo");

    let slave = stdout(&fdfs(&cluster, &["upload-slave", &normal, "_t", &thumb]))
        .trim()
        .to_string();
    assert_eq!(slave, format!("{}_t.jpg", &normal[..normal.len() - 4]));
    assert_eq!(fdfs(&cluster, &["download", &slave, "-"]).stdout, b"small");
    let on_normal = fdfs(&cluster, &["append", &normal, &more]);
    assert_eq!(
        on_normal.status.code(),
        Some(1),
        "append to a normal file is refused"
    );
    // truncate without a size empties the file
    let second = stdout(&fdfs(&cluster, &["upload", "--appender", &first]));
    stdout(&fdfs(&cluster, &["truncate", second.trim()]));
    assert!(fdfs(&cluster, &["download", second.trim(), "-"])
        .stdout
        .is_empty());
    Ok(())
}
