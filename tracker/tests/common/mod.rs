//! An in-process tracker on 127.0.0.1:0 and raw request helpers, shared by the wire and
//! operations tests.

#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fdfs_proto::cmd::Command;
use fdfs_proto::conn::Connection;
use fdfs_tracker::{run, TrackerConfig, TrackerError};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type Conn = Connection<TcpStream>;

pub struct TestTracker {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), TrackerError>>,
    _base: Option<tempfile::TempDir>,
}

impl TestTracker {
    /// A tracker with its own temporary base path.
    pub async fn start(extra_config: &str) -> Self {
        let base = tempfile::tempdir().unwrap();
        let mut tracker = Self::start_in(base.path(), extra_config).await;
        tracker._base = Some(base);
        tracker
    }

    /// A tracker on a given base path (for restarts on the same state).
    pub async fn start_in(base: &Path, extra_config: &str) -> Self {
        let config = TrackerConfig::from_toml(&format!(
            "bind_addr = \"127.0.0.1\"\nport = 0\nbase_path = \"{}\"\n{extra_config}",
            base.display()
        ))
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, listener, shutdown.clone()));
        TestTracker {
            addr,
            shutdown,
            task,
            _base: None,
        }
    }

    pub async fn connect(&self) -> Conn {
        Connection::new(TcpStream::connect(self.addr).await.unwrap())
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.task).await;
        result.expect("tracker stops in time").unwrap().unwrap();
    }
}

/// Sends a request and returns the reply's status and body, checking the header.
pub async fn request(conn: &mut Conn, cmd: Command, body: &[u8]) -> (u8, Vec<u8>) {
    conn.send_request(cmd.code(), body).await.unwrap();
    let header = conn.read_header().await.unwrap().expect("a reply");
    assert_eq!(header.cmd, 100);
    let len = header.body_len().unwrap();
    if header.status != 0 {
        assert_eq!(len, 0, "error replies have empty bodies");
    }
    (header.status, conn.read_body(len, 1 << 20).await.unwrap())
}

/// Sends a request, checks its status and returns the reply body.
pub async fn expect_status(conn: &mut Conn, cmd: Command, body: &[u8], expected: u8) -> Vec<u8> {
    let (status, reply) = request(conn, cmd, body).await;
    assert_eq!(status, expected, "{cmd:?} with a {}-byte body", body.len());
    reply
}
