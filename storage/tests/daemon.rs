//! The `fdfs-storaged` binary: config errors, address file, SIGTERM → exit 0.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("storage.toml");
    let text = format!(
        "group_name = \"group1\"\nserver_id = 100001\nbind_addr = \"127.0.0.1\"\nport = 0\nhttp_port = 0\n\
         base_path = {:?}\ntracker_servers = [\"127.0.0.1:1\"]\nsubdir_count_per_path = 2\n{extra}\n",
        dir.join("base").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn unknown_key_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "no_such_key = 1");
    let output = Command::new(env!("CARGO_BIN_EXE_fdfs-storaged"))
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no_such_key"), "{stderr}");
}

#[test]
fn serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fdfs-storaged"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr_file = dir.path().join("base/fdfs-storaged.addr");
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            break text.trim().to_string();
        }
        assert!(Instant::now() < deadline, "address file never appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid: i32 = std::fs::read_to_string(dir.path().join("base/fdfs-storaged.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid as u32, child.id());

    // one ACTIVE_TEST round trip proves it serves
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&[0, 0, 0, 0, 0, 0, 0, 0, 111, 0]).unwrap();
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [0, 0, 0, 0, 0, 0, 0, 0, 100, 0]);
    drop(stream);

    // SAFETY: plain kill(2) on our own child
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daemon did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // the round-robin position was saved on the way out
    assert!(dir.path().join("base/data/storage_stat.toml").exists());
}
