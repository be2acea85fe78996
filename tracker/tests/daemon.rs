//! The `fdfs-trackerd` binary: config loading, runtime files, signals and exit codes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fdfs-trackerd");

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("tracker.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path) -> Child {
    Command::new(BIN)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the child to exit, killing it if it does not within the deadline.
fn wait_exit(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("fdfs-trackerd did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn runs_until_sigterm_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let config = write_config(
        dir.path(),
        &format!(
            "bind_addr = \"127.0.0.1\"\nport = 0\nbase_path = \"{}\"\n",
            base.display()
        ),
    );
    let child = spawn(&config);
    let addr = wait_for_file(&base.join("fdfs-trackerd.addr"));
    let pid = wait_for_file(&base.join("fdfs-trackerd.pid"));
    assert_eq!(pid.trim(), child.id().to_string());

    // ACTIVE_TEST answered with an empty success.
    let mut stream = TcpStream::connect(addr.trim()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&[0, 0, 0, 0, 0, 0, 0, 0, 111, 0]).unwrap();
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [0, 0, 0, 0, 0, 0, 0, 0, 100, 0]);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = wait_exit(child, Duration::from_secs(20));
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn bad_configs_are_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "bind_addr = \"127.0.0.1\"\nprot = 1\n");
    let output = wait_exit(spawn(&config), Duration::from_secs(20));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read config"), "{stderr}");
    assert!(stderr.contains("prot"), "{stderr}");

    let config = write_config(dir.path(), "store_lookup = 1\n");
    let output = wait_exit(spawn(&config), Duration::from_secs(20));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("store_group"));

    let missing = dir.path().join("missing.toml");
    let output = wait_exit(spawn(&missing), Duration::from_secs(20));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot read config {}", missing.display())),
        "{stderr}"
    );
}

/// Reads an HTTP/1.1 reply to a GET with `Connection: close`.
fn http_get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(err) => {
                assert!(Instant::now() < deadline, "no http endpoint: {err}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn http_endpoint_serves_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(
        dir.path(),
        &format!(
            "bind_addr = \"127.0.0.1\"\nport = 0\nhttp_port = {http_port}\nbase_path = \"{}\"\n",
            base.display()
        ),
    );
    let child = spawn(&config);
    wait_for_file(&base.join("fdfs-trackerd.addr"));
    let health = http_get(http_port, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("\r\n\r\nok"), "{health}");
    let metrics = http_get(http_port, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("fdfs_tracker_connections_open 0"),
        "{metrics}"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = wait_exit(child, Duration::from_secs(20));
    assert!(output.status.success(), "{output:?}");
    // The state was written on the way out.
    assert!(base.join("data/cluster_state.toml").is_file());
}
