//! `tracker.toml`: every key of `conf/tracker.toml`, with the same names and defaults.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fdfs_proto::acl::HostList;
use fdfs_proto::auth::ClusterSecret;
use fdfs_proto::units::{serde_duration, serde_reserved, ReservedSpace};
use serde::Deserialize;

/// Errors while loading or validating a configuration (the caller names the file).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error(transparent)]
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

/// How an upload without a group picks its group (J.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub enum StoreLookup {
    RoundRobin,
    /// Always `store_group`.
    Specified,
    /// The group with the most free space.
    LoadBalance,
}

impl TryFrom<u8> for StoreLookup {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, String> {
        match value {
            0 => Ok(StoreLookup::RoundRobin),
            1 => Ok(StoreLookup::Specified),
            2 => Ok(StoreLookup::LoadBalance),
            other => Err(format!("store_lookup {other} is not 0, 1 or 2")),
        }
    }
}

/// Which storage of a group takes an upload (J.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub enum StoreServer {
    RoundRobin,
    FirstById,
    /// Lowest `upload_priority`.
    Priority,
}

impl TryFrom<u8> for StoreServer {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, String> {
        match value {
            0 => Ok(StoreServer::RoundRobin),
            1 => Ok(StoreServer::FirstById),
            2 => Ok(StoreServer::Priority),
            other => Err(format!("store_server {other} is not 0, 1 or 2")),
        }
    }
}

/// Which store path of the chosen storage takes an upload (J.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub enum StorePath {
    RoundRobin,
    /// The path with the most free space.
    LoadBalance,
}

impl StorePath {
    /// The FastDFS code, as reported by PARAMETER_REQ.
    pub fn code(self) -> u8 {
        match self {
            StorePath::RoundRobin => 0,
            StorePath::LoadBalance => 2,
        }
    }
}

impl TryFrom<u8> for StorePath {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, String> {
        match value {
            0 => Ok(StorePath::RoundRobin),
            2 => Ok(StorePath::LoadBalance),
            other => Err(format!("store_path {other} is not 0 or 2")),
        }
    }
}

/// Which storage serves a download (J.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub enum DownloadServer {
    /// Round robin among the storages that have the file.
    RoundRobin,
    /// The storage that accepted the upload, when it is readable.
    SourceFirst,
}

impl TryFrom<u8> for DownloadServer {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, String> {
        match value {
            0 => Ok(DownloadServer::RoundRobin),
            1 => Ok(DownloadServer::SourceFirst),
            other => Err(format!("download_server {other} is not 0 or 1")),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    pub bind_addr: IpAddr,
    pub port: u16,
    pub base_path: PathBuf,
    pub max_connections: usize,
    /// Async worker threads; 0 = half the cores, at least one
    /// (fdfs_proto::server::worker_threads).
    pub worker_threads: usize,
    #[serde(with = "serde_duration")]
    pub network_timeout: Duration,
    #[serde(with = "serde_duration")]
    pub idle_timeout: Duration,
    #[serde(with = "serde_duration")]
    pub shutdown_timeout: Duration,
    #[serde(with = "serde_duration")]
    pub check_active_interval: Duration,
    pub store_lookup: StoreLookup,
    pub store_group: String,
    pub store_server: StoreServer,
    pub store_path: StorePath,
    pub download_server: DownloadServer,
    #[serde(with = "serde_reserved")]
    pub reserved_storage_space: ReservedSpace,
    #[serde(with = "serde_duration")]
    pub storage_sync_file_max_delay: Duration,
    #[serde(with = "serde_duration")]
    pub storage_sync_file_max_time: Duration,
    pub log_level: String,
    /// One `access` log line per request; re-read on SIGHUP like `log_level`.
    pub access_log: bool,
    /// Port of the HTTP endpoint (`/metrics`, `/healthz`) on `bind_addr`; 0 disables it.
    pub http_port: u16,
    /// Peers that may connect to `port` (fdfs_proto::acl); everyone by default.
    pub allow_hosts: HostList,
    /// Peers that may send admin commands (DELETE_STORAGE, DELETE_GROUP); everyone by default.
    pub admin_hosts: HostList,
    /// Peers that may use `http_port` (`/metrics`, `/healthz`); unset means `allow_hosts`.
    pub metrics_allow_hosts: Option<HostList>,
    /// Shared secret storages must prove before JOIN (fdfs_proto::auth); off when unset.
    pub cluster_secret: Option<ClusterSecret>,
    /// The same, read from a file (one trailing newline ignored).
    pub cluster_secret_file: Option<PathBuf>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            bind_addr: IpAddr::from([0, 0, 0, 0]),
            port: fdfs_proto::DEFAULT_TRACKER_PORT,
            base_path: PathBuf::from("/var/lib/fdfs/tracker"),
            max_connections: 1024,
            worker_threads: 0,
            network_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(900),
            shutdown_timeout: Duration::from_secs(10),
            check_active_interval: Duration::from_secs(100),
            store_lookup: StoreLookup::RoundRobin,
            store_group: String::new(),
            store_server: StoreServer::RoundRobin,
            store_path: StorePath::RoundRobin,
            download_server: DownloadServer::RoundRobin,
            reserved_storage_space: ReservedSpace::Ratio(0.01),
            storage_sync_file_max_delay: Duration::from_secs(86400),
            storage_sync_file_max_time: Duration::from_secs(300),
            log_level: "info".to_string(),
            access_log: false,
            http_port: 0,
            allow_hosts: HostList::allow_all(),
            admin_hosts: HostList::allow_all(),
            metrics_allow_hosts: None,
            cluster_secret: None,
            cluster_secret_file: None,
        }
    }
}

impl TrackerConfig {
    /// Parses and validates a TOML document; unknown keys are errors naming the key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: TrackerConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&std::fs::read_to_string(path)?)
    }

    /// The cluster secret, read from `cluster_secret_file` when that is how it is given.
    pub fn secret(&self) -> Result<Option<ClusterSecret>, ConfigError> {
        let file = self.cluster_secret_file.as_deref();
        ClusterSecret::from_config(self.cluster_secret.as_ref(), file)
            .map_err(|(key, err)| invalid(key, err.to_string()))
    }

    /// Who may use `http_port`: `metrics_allow_hosts`, else `allow_hosts`.
    pub fn metrics_hosts(&self) -> &HostList {
        self.metrics_allow_hosts
            .as_ref()
            .unwrap_or(&self.allow_hosts)
    }

    /// Checks the values serde cannot check on its own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.secret()?;
        if self.base_path.as_os_str().is_empty() {
            return Err(invalid("base_path", "must not be empty"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        let positive = [
            ("network_timeout", self.network_timeout),
            ("idle_timeout", self.idle_timeout),
            ("check_active_interval", self.check_active_interval),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.store_lookup == StoreLookup::Specified {
            fdfs_proto::file_id::validate_group(&self.store_group).map_err(|err| {
                invalid(
                    "store_group",
                    format!("{err} (required by store_lookup = 1)"),
                )
            })?;
        } else if !self.store_group.is_empty() {
            fdfs_proto::file_id::validate_group(&self.store_group)
                .map_err(|err| invalid("store_group", err.to_string()))?;
        }
        if self.http_port != 0 && self.http_port == self.port {
            return Err(invalid("http_port", "must differ from port"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(invalid(
                "log_level",
                format!("{:?} is not a log filter", self.log_level),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TrackerConfig, ConfigError> {
        TrackerConfig::from_toml(text)
    }

    #[test]
    fn shipped_config_matches_defaults() {
        let text = include_str!("../../conf/tracker.toml");
        let config = parse(text).unwrap();
        let default = TrackerConfig::default();
        assert_eq!(config.bind_addr, default.bind_addr);
        assert_eq!(config.port, 22122);
        assert_eq!(config.base_path, default.base_path);
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.network_timeout, Duration::from_secs(30));
        assert_eq!(config.idle_timeout, Duration::from_secs(900));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.check_active_interval, Duration::from_secs(100));
        assert_eq!(config.store_lookup, StoreLookup::RoundRobin);
        assert_eq!(config.store_group, "");
        assert_eq!(config.store_server, StoreServer::RoundRobin);
        assert_eq!(config.store_path, StorePath::RoundRobin);
        assert_eq!(config.download_server, DownloadServer::RoundRobin);
        assert_eq!(config.reserved_storage_space, ReservedSpace::Ratio(0.01));
        assert_eq!(
            config.storage_sync_file_max_delay,
            Duration::from_secs(86400)
        );
        assert_eq!(config.storage_sync_file_max_time, Duration::from_secs(300));
        assert_eq!(config.log_level, "info");
        assert!(!config.access_log);
        assert_eq!(config.http_port, 0);
        assert!(config.allow_hosts.allows_all());
        assert!(config.admin_hosts.allows_all());
        assert!(config.secret().unwrap().is_none());
        // An empty file is the defaults too.
        assert_eq!(parse("").unwrap().port, 22122);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("prot = 1").unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn security_keys() {
        let config = parse(
            "allow_hosts = [\"10.0.0.0/8\", \"::1\"]\nadmin_hosts = [\"127.0.0.1\"]\ncluster_secret = \"0123456789abcdef\"",
        )
        .unwrap();
        assert!(config.allow_hosts.allows("10.9.8.7".parse().unwrap()));
        assert!(!config.allow_hosts.allows("11.0.0.1".parse().unwrap()));
        assert!(!config.admin_hosts.allows("127.0.0.2".parse().unwrap()));
        assert!(config.secret().unwrap().is_some());
        // /metrics follows allow_hosts unless it has a list of its own
        assert_eq!(config.metrics_hosts(), &config.allow_hosts);
        let own =
            parse("allow_hosts = [\"10.0.0.0/8\"]\nmetrics_allow_hosts = [\"192.0.2.7\"]").unwrap();
        assert!(own.metrics_hosts().allows("192.0.2.7".parse().unwrap()));
        assert!(!own.metrics_hosts().allows("10.0.0.1".parse().unwrap()));
        for (text, key) in [
            ("allow_hosts = [\"10.0.0.1/8\"]", "allow_hosts"),
            ("metrics_allow_hosts = [\"::1/129\"]", "metrics_allow_hosts"),
            ("admin_hosts = [\"somehost\"]", "admin_hosts"),
            ("allow_hosts = []", "allow_hosts"),
            ("cluster_secret = \"short\"", "cluster_secret"),
            (
                "cluster_secret_file = \"/nonexistent/secret\"",
                "cluster_secret_file",
            ),
            (
                "cluster_secret = \"0123456789abcdef\"\ncluster_secret_file = \"/x\"",
                "cluster_secret",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn policies_are_checked() {
        assert!(parse("store_lookup = 3").is_err());
        assert!(parse("store_server = 3").is_err());
        assert!(parse("store_path = 1").is_err());
        assert!(parse("download_server = 2").is_err());
        assert_eq!(
            parse("store_path = 2").unwrap().store_path,
            StorePath::LoadBalance
        );
        let err = parse("store_lookup = 1").unwrap_err().to_string();
        assert!(err.contains("store_group"), "{err}");
        assert!(parse("store_lookup = 1\nstore_group = \"bad-name\"").is_err());
        let config = parse("store_lookup = 1\nstore_group = \"group2\"").unwrap();
        assert_eq!(config.store_lookup, StoreLookup::Specified);
        assert_eq!(config.store_group, "group2");
    }

    #[test]
    fn units_and_values() {
        let config = parse(
            "reserved_storage_space = \"10GB\"\ncheck_active_interval = \"2s\"\nport = 0\nbind_addr = \"127.0.0.1\"",
        )
        .unwrap();
        assert_eq!(
            config.reserved_storage_space,
            ReservedSpace::Bytes(10 << 30)
        );
        assert_eq!(config.check_active_interval, Duration::from_secs(2));
        assert_eq!(config.port, 0);
        assert_eq!(parse("http_port = 9181").unwrap().http_port, 9181);
        assert!(parse("http_port = -1").is_err());
        let err = parse("port = 9000\nhttp_port = 9000")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http_port"), "{err}");
        assert!(parse("check_active_interval = \"0s\"").is_err());
        assert!(parse("max_connections = 0").is_err());
        assert!(parse("reserved_storage_space = \"200%\"").is_err());
        assert!(parse("bind_addr = \"not an ip\"").is_err());
        assert!(parse("log_level = \"[[[\"").is_err());
    }
}
