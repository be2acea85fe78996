//! `storage.toml`: every key of `conf/storage.toml`, with the same names and defaults.
//!
//! Parsing refuses unknown keys (naming them); [`StorageConfig::validate`] checks the values
//! the rest of the crate relies on (group name, storage id, directory and path counts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use fdfs_proto::acl::HostList;
use fdfs_proto::auth::ClusterSecret;
use fdfs_proto::units::{serde_duration, serde_reserved, serde_size, ReservedSpace};
use serde::Deserialize;

/// Largest number of store paths (`M00`..`MFF`).
pub const MAX_STORE_PATHS: usize = 256;
/// Smallest accepted `buff_size`: enough for every fixed request layout and a 127-byte name.
const MIN_BUFF_SIZE: u64 = 4096;
/// Largest `journal_max_file_size`: files up to this size are read whole before they are stored.
const MAX_JOURNAL_FILE_SIZE: u64 = 128 * 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub group_name: String,
    pub server_id: u32,
    #[serde(default = "default_bind_addr")]
    pub bind_addr: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub base_path: PathBuf,
    #[serde(default)]
    pub store_paths: Vec<PathBuf>,
    #[serde(default = "default_subdir_count")]
    pub subdir_count_per_path: u32,
    pub tracker_servers: Vec<String>,
    #[serde(default = "default_heart_beat", with = "serde_duration")]
    pub heart_beat_interval: Duration,
    #[serde(default = "default_reserved", with = "serde_reserved")]
    pub reserved_storage_space: ReservedSpace,
    #[serde(default)]
    pub file_distribute_path_mode: u8,
    #[serde(default = "default_rotate_count")]
    pub file_distribute_rotate_count: u32,
    #[serde(default = "default_true")]
    pub fsync: bool,
    /// With fsync on, new ordinary files up to this size (at most 128 KiB) are made durable
    /// through their store path's journal, many files per fdatasync; 0: each on its own.
    #[serde(default = "default_journal_max_file_size", with = "serde_size")]
    pub journal_max_file_size: u64,
    /// How long the journal fills a segment before sealing it; once the segment's files are
    /// written, one `syncfs` makes them durable and the segment goes. Bounds the replay.
    #[serde(
        default = "default_journal_checkpoint_interval",
        with = "serde_duration"
    )]
    pub journal_checkpoint_interval: Duration,
    /// One `access` log line (tracing target `access`) per request.
    #[serde(default)]
    pub access_log: bool,
    /// Store slave files as symbolic links to an ordinary file (FastDFS's
    /// `store_slave_file_use_link`).
    #[serde(default)]
    pub store_slave_file_use_link: bool,
    #[serde(default = "default_upload_priority")]
    pub upload_priority: i64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_network_timeout", with = "serde_duration")]
    pub network_timeout: Duration,
    #[serde(default = "default_idle_timeout", with = "serde_duration")]
    pub idle_timeout: Duration,
    #[serde(default = "default_shutdown_timeout", with = "serde_duration")]
    pub shutdown_timeout: Duration,
    #[serde(default = "default_buff_size", with = "serde_size")]
    pub buff_size: u64,
    /// Serve large DOWNLOAD_FILE bodies with sendfile(2) instead of buffered reads.
    #[serde(default = "default_true")]
    pub sendfile: bool,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    // Security: see the README, "Security".
    /// Peers that may connect to `port` (fdfs_proto::acl); everyone by default.
    #[serde(default)]
    pub allow_hosts: HostList,
    /// Peers that may use the HTTP port; unset means the same list as `allow_hosts`.
    #[serde(default)]
    pub http_allow_hosts: Option<HostList>,
    /// Peers that may send admin commands (SCRUB); everyone by default, as on the tracker.
    #[serde(default)]
    pub admin_hosts: HostList,
    /// Peers that may read `/metrics` on the HTTP port; unset means the same list as
    /// `allow_hosts` (not `http_allow_hosts`: opening downloads to the public must not
    /// publish the metrics).
    #[serde(default)]
    pub metrics_allow_hosts: Option<HostList>,
    /// Shared secret for tracker joins and storage ↔ storage sync (fdfs_proto::auth).
    #[serde(default)]
    pub cluster_secret: Option<ClusterSecret>,
    /// The same, read from a file (one trailing newline ignored).
    #[serde(default)]
    pub cluster_secret_file: Option<PathBuf>,
    // Faults: see crate::store (store path health) and crate::scrub.
    /// Every store path is probed this often; a failed one comes back once a probe passes.
    #[serde(default = "default_store_path_check", with = "serde_duration")]
    pub store_path_check_interval: Duration,
    /// A background scrub starts this often; 0 = never (scrubs then run only on request).
    #[serde(default, with = "serde_duration")]
    pub scrub_interval: Duration,
    /// Bytes per second a background scrub reads at most.
    #[serde(default = "default_scrub_rate", with = "serde_size")]
    pub scrub_rate: u64,
    /// Blocking disk calls in flight per store path, at most (crate::store::gate): a hung
    /// path holds no more pool threads than this.
    #[serde(default = "default_store_path_max_io")]
    pub store_path_max_io: usize,
    /// Threads of tokio's blocking pool, where disk calls run.
    #[serde(default = "default_max_blocking_threads")]
    pub max_blocking_threads: usize,
    /// Threads that run the network side (connections, protocol, replication); 0 = half the
    /// cores, at least one (fdfs_proto::server::worker_threads).
    #[serde(default)]
    pub worker_threads: usize,
    // Replication: see crate::replication.
    #[serde(default)]
    pub write_ack: crate::replication::WriteAck,
    #[serde(default = "default_write_ack_timeout", with = "serde_duration")]
    pub write_ack_timeout: Duration,
    /// Sync connections to each peer (replication::lanes).
    #[serde(default = "default_sync_lanes")]
    pub sync_lanes: usize,
    // Built-in HTTP server: see crate::http::settings for the meaning and checks of these.
    #[serde(default = "default_true")]
    pub http_enabled: bool,
    #[serde(default)]
    pub http_bind_addr: String,
    #[serde(default = "crate::http::settings::default_port")]
    pub http_port: u16,
    #[serde(default = "default_true")]
    pub http_url_have_group_name: bool,
    #[serde(default)]
    pub http_mime_types: std::collections::BTreeMap<String, String>,
    #[serde(default = "crate::http::settings::default_cache_control")]
    pub http_cache_control: String,
    #[serde(default)]
    pub http_anti_steal: crate::http::settings::AntiStealConfig,
    #[serde(default)]
    pub http_referer_allow: Vec<String>,
    #[serde(default)]
    pub http_not_local: crate::http::settings::NotLocalMode,
    #[serde(default)]
    pub http_default_image: PathBuf,
    #[serde(default = "crate::http::settings::default_max_path")]
    pub http_max_path: usize,
    #[serde(default)]
    pub http_peers: std::collections::BTreeMap<String, String>,
}

fn default_bind_addr() -> String {
    "0.0.0.0".to_string()
}
fn default_port() -> u16 {
    fdfs_proto::DEFAULT_STORAGE_PORT
}
fn default_subdir_count() -> u32 {
    256
}
fn default_heart_beat() -> Duration {
    Duration::from_secs(30)
}
fn default_reserved() -> ReservedSpace {
    ReservedSpace::Ratio(0.01)
}
fn default_rotate_count() -> u32 {
    100
}
fn default_true() -> bool {
    true
}
fn default_upload_priority() -> i64 {
    10
}
fn default_store_path_max_io() -> usize {
    crate::store::DEFAULT_MAX_IO_PER_PATH
}
fn default_max_blocking_threads() -> usize {
    // tokio's own default
    512
}
/// Most sync connections to one peer: each costs a connection (and a buffer) on both sides.
pub const MAX_SYNC_LANES: usize = 64;
fn default_sync_lanes() -> usize {
    8
}
fn default_max_connections() -> usize {
    1024
}
fn default_network_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(900)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_buff_size() -> u64 {
    256 * 1024
}
fn default_write_ack_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_store_path_check() -> Duration {
    Duration::from_secs(10)
}
fn default_journal_max_file_size() -> u64 {
    64 * 1024
}
fn default_journal_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_scrub_rate() -> u64 {
    8 << 20
}
fn default_log_level() -> String {
    "info".to_string()
}

/// A config that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl StorageConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: StorageConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The cluster secret, read from `cluster_secret_file` when that is how it is given.
    pub fn secret(&self) -> Result<Option<ClusterSecret>, ConfigError> {
        let file = self.cluster_secret_file.as_deref();
        ClusterSecret::from_config(self.cluster_secret.as_ref(), file)
            .map_err(|(key, err)| invalid(key, err.to_string()))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.secret()?;
        fdfs_proto::file_id::validate_group(&self.group_name)
            .map_err(|err| invalid("group_name", err.to_string()))?;
        if !(1..=fdfs_proto::name::MAX_STORAGE_ID).contains(&self.server_id) {
            return Err(invalid(
                "server_id",
                format!("{} outside 1..=16777215", self.server_id),
            ));
        }
        if self.base_path.as_os_str().is_empty() {
            return Err(invalid("base_path", "must not be empty"));
        }
        if self.store_paths.len() > MAX_STORE_PATHS {
            return Err(invalid(
                "store_paths",
                format!("{} paths, at most 256", self.store_paths.len()),
            ));
        }
        if self.store_paths.iter().any(|p| p.as_os_str().is_empty()) {
            return Err(invalid("store_paths", "empty path"));
        }
        if !(1..=256).contains(&self.subdir_count_per_path) {
            return Err(invalid(
                "subdir_count_per_path",
                format!("{} outside 1..=256", self.subdir_count_per_path),
            ));
        }
        if self.store_path_max_io == 0 {
            return Err(invalid("store_path_max_io", "must be at least 1"));
        }
        // the cap only protects the other paths if one path cannot fill the pool
        if self.store_path_max_io >= self.max_blocking_threads {
            return Err(invalid(
                "store_path_max_io",
                format!(
                    "{} must be below max_blocking_threads ({}), or one hung store path can take every disk thread",
                    self.store_path_max_io, self.max_blocking_threads
                ),
            ));
        }
        if self.tracker_servers.is_empty() {
            return Err(invalid(
                "tracker_servers",
                "at least one tracker is required",
            ));
        }
        if self.tracker_servers.len() > 16 {
            return Err(invalid("tracker_servers", "at most 16 trackers"));
        }
        for tracker in &self.tracker_servers {
            match tracker.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                _ => {
                    return Err(invalid(
                        "tracker_servers",
                        format!("{tracker:?} is not host:port"),
                    ))
                }
            }
        }
        if self.heart_beat_interval.is_zero() {
            return Err(invalid("heart_beat_interval", "must be above zero"));
        }
        if self.file_distribute_path_mode > 1 {
            return Err(invalid(
                "file_distribute_path_mode",
                format!("{} is not 0 or 1", self.file_distribute_path_mode),
            ));
        }
        if self.file_distribute_rotate_count == 0 {
            return Err(invalid(
                "file_distribute_rotate_count",
                "must be at least 1",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if !(1..=MAX_SYNC_LANES).contains(&self.sync_lanes) {
            return Err(invalid(
                "sync_lanes",
                format!("{} outside 1..={MAX_SYNC_LANES}", self.sync_lanes),
            ));
        }
        for (key, value) in [
            ("network_timeout", self.network_timeout),
            ("idle_timeout", self.idle_timeout),
            ("write_ack_timeout", self.write_ack_timeout),
            ("store_path_check_interval", self.store_path_check_interval),
            (
                "journal_checkpoint_interval",
                self.journal_checkpoint_interval,
            ),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be above zero"));
            }
        }
        if self.journal_max_file_size > MAX_JOURNAL_FILE_SIZE {
            return Err(invalid(
                "journal_max_file_size",
                format!(
                    "{} bytes, at most {MAX_JOURNAL_FILE_SIZE} (larger files are synced on their own)",
                    self.journal_max_file_size
                ),
            ));
        }
        if self.buff_size < MIN_BUFF_SIZE {
            return Err(invalid(
                "buff_size",
                format!("{} bytes, at least {MIN_BUFF_SIZE}", self.buff_size),
            ));
        }
        crate::http::settings::validate(self)?;
        Ok(())
    }

    /// The data roots in index order: `store_paths`, or `[base_path]` when it is empty.
    pub fn effective_store_paths(&self) -> Vec<PathBuf> {
        if self.store_paths.is_empty() {
            vec![self.base_path.clone()]
        } else {
            self.store_paths.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
group_name = "group1"
server_id = 100001
base_path = "/tmp/fdfs"
tracker_servers = ["127.0.0.1:22122"]
"#;

    #[test]
    fn defaults_match_the_shipped_config() {
        let config = StorageConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(config.port, 23000);
        assert_eq!(config.bind_addr, "0.0.0.0");
        assert_eq!(config.subdir_count_per_path, 256);
        assert_eq!(config.heart_beat_interval, Duration::from_secs(30));
        assert_eq!(config.reserved_storage_space, ReservedSpace::Ratio(0.01));
        assert_eq!(config.file_distribute_path_mode, 0);
        assert_eq!(config.file_distribute_rotate_count, 100);
        assert!(config.fsync);
        assert_eq!(config.upload_priority, 10);
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.sync_lanes, 8);
        assert_eq!(config.network_timeout, Duration::from_secs(30));
        assert_eq!(config.idle_timeout, Duration::from_secs(900));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.buff_size, 256 * 1024);
        assert!(config.sendfile);
        assert_eq!(config.log_level, "info");
        assert_eq!(
            config.effective_store_paths(),
            vec![PathBuf::from("/tmp/fdfs")]
        );
    }

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../../conf/storage.toml");
        let config = StorageConfig::from_toml(text).unwrap();
        assert_eq!(config.group_name, "group1");
        assert_eq!(config.server_id, 100_001);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = StorageConfig::from_toml(&format!("{MINIMAL}\nstore_path0 = \"/x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("store_path0"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            ("group_name = \"group_1\"", "group_name"),
            ("server_id = 0", "server_id"),
            ("server_id = 16777216", "server_id"),
            ("subdir_count_per_path = 0", "subdir_count_per_path"),
            ("subdir_count_per_path = 257", "subdir_count_per_path"),
            ("tracker_servers = []", "tracker_servers"),
            ("tracker_servers = [\"nohost\"]", "tracker_servers"),
            ("file_distribute_path_mode = 2", "file_distribute_path_mode"),
            ("buff_size = \"1KB\"", "buff_size"),
            ("sync_lanes = 0", "sync_lanes"),
            ("sync_lanes = 65", "sync_lanes"),
            ("journal_max_file_size = \"129KB\"", "journal_max_file_size"),
            (
                "journal_checkpoint_interval = \"0s\"",
                "journal_checkpoint_interval",
            ),
        ];
        for (line, key) in cases {
            let text: String = MINIMAL
                .lines()
                .filter(|l| {
                    let name = line.split(' ').next().unwrap();
                    !l.starts_with(name)
                })
                .chain(std::iter::once(line))
                .collect::<Vec<_>>()
                .join("\n");
            let err = StorageConfig::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
        let many: Vec<String> = (0..257).map(|i| format!("\"/p{i}\"")).collect();
        let text = format!("{MINIMAL}\nstore_paths = [{}]\n", many.join(","));
        assert!(StorageConfig::from_toml(&text).is_err());
    }

    #[test]
    fn disk_slots_stay_below_the_pool() {
        let config = StorageConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(
            (config.store_path_max_io, config.max_blocking_threads),
            (64, 512)
        );
        let ok = format!("{MINIMAL}\nstore_path_max_io = 4\nmax_blocking_threads = 8\n");
        assert!(StorageConfig::from_toml(&ok).is_ok());
        for line in [
            "store_path_max_io = 0",
            "store_path_max_io = 512",
            "max_blocking_threads = 64",
        ] {
            let err = StorageConfig::from_toml(&format!("{MINIMAL}\n{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("store_path_max_io"), "{line}: {err}");
        }
    }

    #[test]
    fn security_keys() {
        let config = StorageConfig::from_toml(MINIMAL).unwrap();
        assert!(config.allow_hosts.allows_all());
        assert!(config.http_allow_hosts.is_none());
        assert!(config.admin_hosts.allows_all());
        assert!(config.metrics_allow_hosts.is_none());
        assert!(config.secret().unwrap().is_none());
        let text = format!(
            "{MINIMAL}\nallow_hosts = [\"10.0.0.0/8\"]\nhttp_allow_hosts = [\"*\"]\nadmin_hosts = [\"10.1.0.0/16\"]\nmetrics_allow_hosts = [\"10.2.0.9\"]\ncluster_secret = \"0123456789abcdef\"\n"
        );
        let config = StorageConfig::from_toml(&text).unwrap();
        assert!(!config.allow_hosts.allows("127.0.0.1".parse().unwrap()));
        assert!(config.http_allow_hosts.as_ref().unwrap().allows_all());
        assert!(config.admin_hosts.allows("10.1.2.3".parse().unwrap()));
        assert!(!config.admin_hosts.allows("10.2.2.3".parse().unwrap()));
        let metrics = config.metrics_allow_hosts.as_ref().unwrap();
        assert!(metrics.allows("10.2.0.9".parse().unwrap()));
        assert!(!metrics.allows("10.2.0.8".parse().unwrap()));
        assert!(config.secret().unwrap().is_some());
        for (line, key) in [
            ("allow_hosts = [\"10.0.0.0/33\"]", "allow_hosts"),
            ("http_allow_hosts = [\"example.com\"]", "http_allow_hosts"),
            ("admin_hosts = []", "admin_hosts"),
            (
                "metrics_allow_hosts = [\"10.0.0.1/8\"]",
                "metrics_allow_hosts",
            ),
            ("cluster_secret = \"short\"", "cluster_secret"),
            (
                "cluster_secret_file = \"/nonexistent/secret\"",
                "cluster_secret_file",
            ),
        ] {
            let err = StorageConfig::from_toml(&format!("{MINIMAL}\n{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
    }

    #[test]
    fn units_are_parsed() {
        let text = format!(
            "{MINIMAL}\nheart_beat_interval = \"500ms\"\nreserved_storage_space = \"10GB\"\nbuff_size = \"64KB\"\n"
        );
        let config = StorageConfig::from_toml(&text).unwrap();
        assert_eq!(config.heart_beat_interval, Duration::from_millis(500));
        assert_eq!(
            config.reserved_storage_space,
            ReservedSpace::Bytes(10 << 30)
        );
        assert_eq!(config.buff_size, 64 * 1024);
    }
}
