//! Test harness for fdfs-rs: starts the real `fdfs-trackerd` and `fdfs-storaged` binaries on
//! ephemeral loopback ports in temp dirs, finds their bound addresses from the `.addr` files
//! they write, and kills them on drop.
//!
//! Binaries are taken from `FDFS_BIN_DIR`, else from the target directory this test binary
//! was built into (`target/<profile>/`).

pub mod soak;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fdfs_client::{Client, ClientConfig};

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Directory holding the server binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FDFS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/integration-xxxx → target/<profile>
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

pub fn bin_path(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A running daemon; killed (SIGKILL) when dropped.
pub struct Daemon {
    pub name: &'static str,
    pub config: PathBuf,
    pub base: PathBuf,
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Extra environment the process was started with (kept for restarts).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts `binary -c config` and waits for `<base>/<binary>.addr`. RUST_LOG is
    /// `FDFS_TEST_LOG`, else `info`.
    pub async fn start(binary: &'static str, config: &Path, base: &Path) -> Result<Daemon> {
        let level = std::env::var("FDFS_TEST_LOG").unwrap_or_else(|_| "info".into());
        Self::start_with_rust_log(binary, config, base, Some(&level)).await
    }

    /// [`Daemon::start`] with RUST_LOG set to `rust_log`, or unset (the config's
    /// `log_level` applies).
    pub async fn start_with_rust_log(
        binary: &'static str,
        config: &Path,
        base: &Path,
        rust_log: Option<&str>,
    ) -> Result<Daemon> {
        Self::spawn(binary, config, base, rust_log, Vec::new()).await
    }

    /// [`Daemon::start`] with extra environment variables (e.g. a test hook).
    pub async fn start_with_env(
        binary: &'static str,
        config: &Path,
        base: &Path,
        env: Vec<(String, String)>,
    ) -> Result<Daemon> {
        let level = std::env::var("FDFS_TEST_LOG").unwrap_or_else(|_| "info".into());
        Self::spawn(binary, config, base, Some(&level), env).await
    }

    async fn spawn(
        binary: &'static str,
        config: &Path,
        base: &Path,
        rust_log: Option<&str>,
        env: Vec<(String, String)>,
    ) -> Result<Daemon> {
        let addr_file = base.join(format!("{binary}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let _ = std::fs::remove_file(base.join(format!("{binary}.http.addr")));
        std::fs::create_dir_all(base)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(base.join(format!("{binary}.log")))?;
        let mut command = Command::new(bin_path(binary));
        command
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start {} (build it first: cargo build --workspace --bins)",
                bin_path(binary).display()
            )
        })?;
        let mut daemon = Daemon {
            name: binary,
            config: config.to_path_buf(),
            base: base.to_path_buf(),
            child: Some(child),
            addr: "0.0.0.0:0".parse()?,
            env,
        };
        let addr = {
            let child = daemon.child.as_mut().expect("child");
            let started = Instant::now();
            loop {
                if let Ok(text) = std::fs::read_to_string(&addr_file) {
                    if let Ok(addr) = text.trim().parse::<SocketAddr>() {
                        break addr;
                    }
                }
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{binary} exited with {status} before listening; log:\n{}",
                        daemon.log()
                    );
                }
                if started.elapsed() > Duration::from_secs(20) {
                    bail!(
                        "{binary} did not write {} within 20 s; log:\n{}",
                        addr_file.display(),
                        daemon.log()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        daemon.addr = addr;
        Ok(daemon)
    }

    /// The built-in HTTP server's address (`<base>/<binary>.http.addr`), waiting for it.
    pub async fn http_addr(&self) -> Result<SocketAddr> {
        let file = self.base.join(format!("{}.http.addr", self.name));
        wait_for(
            &format!("{}", file.display()),
            Duration::from_secs(20),
            || async {
                let text = std::fs::read_to_string(&file).ok()?;
                text.trim().parse::<SocketAddr>().ok()
            },
        )
        .await
        .with_context(|| format!("{} log:\n{}", self.name, self.log()))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// Sends a signal (e.g. `libc::SIGSTOP`) to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on a child we own.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            bail!("{} is not running", self.name)
        };
        // SAFETY: plain kill(2) on a child we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not exit within {timeout:?} after SIGTERM",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Settings of one storage in a test cluster.
#[derive(Clone, Debug)]
pub struct StorageSpec {
    pub group: String,
    pub server_id: u32,
    pub store_path_count: usize,
    /// Extra TOML lines appended to the generated config.
    pub extra: String,
}

/// A tracker and its storages, each in its own directory below one temp dir.
pub struct Cluster {
    pub tracker: Daemon,
    pub storages: Vec<Daemon>,
    pub specs: Vec<StorageSpec>,
    /// Last: fields drop in order, so the daemons are stopped before their directory goes.
    /// Removed first, it lost the race with daemons still writing into it and stayed behind.
    pub root: tempfile::TempDir,
}

/// Builds a test cluster. Heartbeats every second, OFFLINE after 3 s without one.
pub struct ClusterBuilder {
    groups: Vec<(String, usize)>,
    tracker_extra: String,
    storage_extra: String,
    store_path_count: usize,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            groups: vec![("group1".into(), 1)],
            tracker_extra: String::new(),
            storage_extra: String::new(),
            store_path_count: 1,
        }
    }
}

impl ClusterBuilder {
    pub fn groups(mut self, groups: &[(&str, usize)]) -> Self {
        self.groups = groups.iter().map(|(g, n)| (g.to_string(), *n)).collect();
        self
    }

    pub fn tracker_config(mut self, extra: &str) -> Self {
        self.tracker_extra = extra.to_string();
        self
    }

    pub fn storage_config(mut self, extra: &str) -> Self {
        self.storage_extra = extra.to_string();
        self
    }

    pub fn store_paths(mut self, count: usize) -> Self {
        self.store_path_count = count;
        self
    }

    /// Starts everything and waits until every storage is ACTIVE.
    pub async fn start(self) -> Result<Cluster> {
        let groups = self.groups.clone();
        let cluster = self.start_without_waiting().await?;
        for (group, count) in &groups {
            cluster.wait_active(group, *count).await?;
        }
        Ok(cluster)
    }

    /// Starts everything without waiting for the storages to become ACTIVE.
    pub async fn start_without_waiting(self) -> Result<Cluster> {
        let root = tempfile::Builder::new().prefix("fdfs-test-").tempdir()?;
        let tracker_base = root.path().join("tracker");
        std::fs::create_dir_all(&tracker_base)?;
        let tracker_conf = tracker_base.join("tracker.toml");
        std::fs::write(
            &tracker_conf,
            tracker_toml(&tracker_base, &self.tracker_extra),
        )?;
        let tracker = Daemon::start("fdfs-trackerd", &tracker_conf, &tracker_base).await?;
        let mut cluster = Cluster {
            tracker,
            storages: Vec::new(),
            specs: Vec::new(),
            root,
        };
        let mut next_id = 100_001;
        for (group, count) in &self.groups {
            for _ in 0..*count {
                let spec = StorageSpec {
                    group: group.clone(),
                    server_id: next_id,
                    store_path_count: self.store_path_count,
                    extra: self.storage_extra.clone(),
                };
                next_id += 1;
                cluster.add_storage(spec).await?;
            }
        }
        Ok(cluster)
    }
}

pub fn tracker_toml(base: &Path, extra: &str) -> String {
    format!(
        "bind_addr = \"127.0.0.1\"\nport = 0\nbase_path = \"{}\"\ncheck_active_interval = \"3s\"\n{extra}\n",
        base.display()
    )
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    pub fn tracker_addr(&self) -> String {
        self.tracker.addr.to_string()
    }

    pub fn storage_base(&self, index: usize) -> PathBuf {
        self.root
            .path()
            .join(format!("storage{}", self.specs[index].server_id))
    }

    /// Store path `path` of storage `index`.
    pub fn store_path(&self, index: usize, path: usize) -> PathBuf {
        self.storage_base(index).join(format!("store{path}"))
    }

    pub fn storage_toml(&self, spec: &StorageSpec) -> String {
        let base = self.root.path().join(format!("storage{}", spec.server_id));
        let paths: Vec<String> = (0..spec.store_path_count)
            .map(|i| format!("\"{}\"", base.join(format!("store{i}")).display()))
            .collect();
        // several storages share 127.0.0.1: built-in HTTP on a free port unless the test says
        let http = if spec.extra.contains("http_port") {
            ""
        } else {
            "http_port = 0\n"
        };
        format!(
            "group_name = \"{}\"\nserver_id = {}\nbind_addr = \"127.0.0.1\"\nport = 0\nbase_path = \"{}\"\nstore_paths = [{}]\nsubdir_count_per_path = 4\ntracker_servers = [\"{}\"]\nheart_beat_interval = \"1s\"\n{http}{}\n",
            spec.group,
            spec.server_id,
            base.display(),
            paths.join(", "),
            self.tracker.addr,
            spec.extra
        )
    }

    /// Writes the config of a new storage and starts it.
    pub async fn add_storage(&mut self, spec: StorageSpec) -> Result<usize> {
        self.add_storage_with_env(spec, Vec::new()).await
    }

    /// [`Cluster::add_storage`] with extra environment variables, kept across restarts.
    pub async fn add_storage_with_env(
        &mut self,
        spec: StorageSpec,
        env: Vec<(String, String)>,
    ) -> Result<usize> {
        let base = self.root.path().join(format!("storage{}", spec.server_id));
        std::fs::create_dir_all(&base)?;
        let conf = base.join("storage.toml");
        std::fs::write(&conf, self.storage_toml(&spec))?;
        let daemon = Daemon::start_with_env("fdfs-storaged", &conf, &base, env).await?;
        self.storages.push(daemon);
        self.specs.push(spec);
        Ok(self.storages.len() - 1)
    }

    /// Restarts storage `index` (after a kill) with the same config.
    pub async fn restart_storage(&mut self, index: usize) -> Result<()> {
        self.storages[index].kill();
        let conf = self.storages[index].config.clone();
        let base = self.storages[index].base.clone();
        let env = self.storages[index].env.clone();
        self.storages[index] = Daemon::start_with_env("fdfs-storaged", &conf, &base, env).await?;
        Ok(())
    }

    /// Restarts the tracker (after a kill) on the port it had, so the storages find it again.
    pub async fn restart_tracker(&mut self) -> Result<()> {
        self.tracker.kill();
        let conf = self.tracker.config.clone();
        let base = self.tracker.base.clone();
        let text = std::fs::read_to_string(&conf)?;
        let port = self.tracker.addr.port();
        let text: String = text
            .lines()
            .map(|line| {
                if line.starts_with("port = ") {
                    format!("port = {port}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(&conf, text)?;
        self.tracker = Daemon::start("fdfs-trackerd", &conf, &base).await?;
        Ok(())
    }

    pub fn client(&self) -> Client {
        Client::new(ClientConfig::new(vec![self.tracker_addr()])).expect("client")
    }

    /// Waits until `count` storages of `group` take uploads (QUERY_STORE_WITH_GROUP_ALL).
    pub async fn wait_active(&self, group: &str, count: usize) -> Result<()> {
        let client = self.client();
        wait_for(
            &format!("{count} active storages in {group}"),
            Duration::from_secs(20),
            || async {
                match client.query_store_all(Some(group)).await {
                    Ok(reply) if reply.servers.len() == count => Some(()),
                    _ => None,
                }
            },
        )
        .await
        .with_context(|| format!("tracker log:\n{}", self.tracker.log()))
    }

    /// Number of storages of `group` the tracker currently offers for uploads.
    pub async fn active_count(&self, group: &str) -> usize {
        match self.client().query_store_all(Some(group)).await {
            Ok(reply) => reply.servers.len(),
            Err(_) => 0,
        }
    }
}

/// All regular files below `dir` (recursively), for checking what a store path holds.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), so large test bodies need no memory.
pub struct PatternReader {
    state: u64,
    remaining: u64,
}

impl PatternReader {
    pub fn new(seed: u64, len: u64) -> Self {
        PatternReader {
            state: seed | 1,
            remaining: len,
        }
    }

    fn next_byte(&mut self) -> u8 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 24) as u8
    }

    /// CRC32 and length of the whole pattern, computed without holding it.
    pub fn crc_of(seed: u64, len: u64) -> u32 {
        let mut reader = PatternReader::new(seed, len);
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        while reader.remaining > 0 {
            let n = (buf.len() as u64).min(reader.remaining) as usize;
            for b in &mut buf[..n] {
                *b = reader.next_byte();
            }
            reader.remaining -= n as u64;
            hasher.update(&buf[..n]);
        }
        hasher.finalize()
    }
}

impl tokio::io::AsyncRead for PatternReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.remaining) as usize;
        let mut chunk = vec![0u8; n];
        for b in &mut chunk {
            *b = self.next_byte();
        }
        self.remaining -= n as u64;
        buf.put_slice(&chunk);
        std::task::Poll::Ready(Ok(()))
    }
}

/// An AsyncWrite that only hashes and counts what it receives.
#[derive(Default)]
pub struct HashingWriter {
    pub hasher: crc32fast::Hasher,
    pub len: u64,
}

impl tokio::io::AsyncWrite for HashingWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Files stored under final names below `<store path>/data`: `XX/YY/name`, leaving out the
/// temp dir and the store's own bookkeeping files.
pub fn stored_files(data: &Path) -> Vec<PathBuf> {
    files_under(data)
        .into_iter()
        .filter(|path| {
            let Ok(relative) = path.strip_prefix(data) else {
                return false;
            };
            let parts: Vec<_> = relative.iter().collect();
            parts.len() == 3
                && parts[..2]
                    .iter()
                    .all(|dir| dir.len() == 2 && !dir.to_string_lossy().starts_with('.'))
        })
        .collect()
}
