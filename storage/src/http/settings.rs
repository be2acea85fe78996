//! The `http_*` keys of `storage.toml`: their types, defaults and checks, and the resolved
//! [`HttpSettings`] the server runs with.
//!
//! Peers' HTTP addresses (for redirects and proxying, M.2 step 5) are not in the tracker's
//! member list, which only carries storage ports. They come from `http_peers` (storage id →
//! "host:port") when listed there, else from the convention that every storage of a group keeps
//! the same distance between its storage port and its HTTP port: peer HTTP port = peer storage
//! port + (`http_port` − `port`). With the same ports everywhere (the usual deployment) that is
//! simply "the same `http_port`"; `scripts/cluster` gives storage i ports Q+i and H+i, which
//! keeps the distance too. A storage on an ephemeral HTTP or storage port (tests) only finds
//! the peers listed in `http_peers`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use fdfs_proto::units::serde_duration;
use hyper::header::HeaderValue;
use serde::Deserialize;

use super::mime::MimeTable;
use crate::config::{ConfigError, StorageConfig};

/// Default HTTP port (FastDFS's `http.server_port`).
pub const DEFAULT_PORT: u16 = 8888;
/// Cache policy of files that never change under their name.
pub const DEFAULT_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Cache policy of appender files, whose content changes under the same name.
pub const APPENDER_CACHE_CONTROL: &str = "no-cache";
/// Default limit of the request path, in bytes.
pub const DEFAULT_MAX_PATH: usize = 512;

pub fn default_port() -> u16 {
    DEFAULT_PORT
}

pub fn default_cache_control() -> String {
    DEFAULT_CACHE_CONTROL.to_string()
}

pub fn default_max_path() -> usize {
    DEFAULT_MAX_PATH
}

/// `http_anti_steal.*`: FastDFS's anti-steal token (M.1).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AntiStealConfig {
    /// Require `?token=&ts=` on every file request.
    pub check_token: bool,
    /// A token is expired once `now - ts` exceeds this.
    #[serde(with = "serde_duration")]
    pub token_ttl: Duration,
    /// Shared with whoever signs URLs (the client's `http_secret_key`).
    pub secret_key: String,
    /// File answered with 200 when a token check fails (an image saying so); empty = 400.
    pub token_check_fail: PathBuf,
    /// FastDFS accepts `ts=0` as "never expires"; fdfs-rs refuses it unless this is set.
    pub allow_ts_zero: bool,
}

impl Default for AntiStealConfig {
    fn default() -> Self {
        AntiStealConfig {
            check_token: false,
            token_ttl: Duration::from_secs(900),
            secret_key: String::new(),
            token_check_fail: PathBuf::new(),
            allow_ts_zero: false,
        }
    }
}

/// `http_not_local`: what to do with a request for a file this storage does not have.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotLocalMode {
    /// 302 to a storage of the group that has it (`?redirect=1` added).
    Redirect,
    /// Fetch it from that storage and stream the answer.
    #[default]
    Proxy,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Checks the `http_*` keys (called by [`StorageConfig::validate`]).
pub fn validate(config: &StorageConfig) -> Result<(), ConfigError> {
    if !config.http_enabled {
        return Ok(());
    }
    HeaderValue::from_str(&config.http_cache_control)
        .map_err(|_| invalid("http_cache_control", "not a valid header value"))?;
    MimeTable::new(&config.http_mime_types).map_err(|reason| invalid("http_mime_types", reason))?;
    let anti = &config.http_anti_steal;
    if anti.check_token && anti.secret_key.is_empty() {
        return Err(invalid(
            "http_anti_steal.secret_key",
            "required when check_token is true",
        ));
    }
    if anti.check_token && anti.token_ttl.is_zero() {
        return Err(invalid("http_anti_steal.token_ttl", "must be above zero"));
    }
    if !(64..=4096).contains(&config.http_max_path) {
        return Err(invalid(
            "http_max_path",
            format!("{} outside 64..=4096", config.http_max_path),
        ));
    }
    for pattern in &config.http_referer_allow {
        let host = pattern
            .strip_prefix("*.")
            .or_else(|| pattern.strip_prefix('.'))
            .unwrap_or(pattern);
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        {
            return Err(invalid(
                "http_referer_allow",
                format!("{pattern:?} is not a host name, *.domain or .domain"),
            ));
        }
    }
    for (id, addr) in &config.http_peers {
        if !id.parse::<u32>().is_ok_and(|n| n > 0) {
            return Err(invalid("http_peers", format!("{id:?} is not a storage id")));
        }
        if !valid_host_port(addr) {
            return Err(invalid("http_peers", format!("{addr:?} is not host:port")));
        }
    }
    Ok(())
}

fn valid_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(['/', '?', '#', '@', ' '])
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

/// Everything the HTTP server needs, resolved from the config at start-up.
#[derive(Debug)]
pub struct HttpSettings {
    pub group: String,
    pub server_id: u32,
    pub url_have_group_name: bool,
    pub mime: MimeTable,
    pub cache_control: HeaderValue,
    pub anti_steal: Option<AntiStealConfig>,
    pub token_check_fail: Option<PathBuf>,
    pub referer_allow: Vec<String>,
    pub not_local: NotLocalMode,
    pub default_image: Option<PathBuf>,
    pub max_path: usize,
    pub network_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
    /// Peers that may use the HTTP port (`http_allow_hosts`, else `allow_hosts`); others get
    /// 403 Forbidden.
    pub allow_hosts: fdfs_proto::acl::HostList,
    /// Peers that may read `/metrics` (`metrics_allow_hosts`, else `allow_hosts`); others get
    /// 403 Forbidden for it.
    pub metrics_allow_hosts: fdfs_proto::acl::HostList,
    peers: HashMap<String, String>,
    /// `http_port - port` when both are fixed: how to guess a peer's HTTP port.
    port_offset: Option<i32>,
}

impl HttpSettings {
    pub fn from_config(config: &StorageConfig) -> Result<HttpSettings, ConfigError> {
        validate(config)?;
        let non_empty = |path: &PathBuf| (!path.as_os_str().is_empty()).then(|| path.clone());
        let anti = &config.http_anti_steal;
        let port_offset = (config.port != 0 && config.http_port != 0)
            .then(|| i32::from(config.http_port) - i32::from(config.port));
        Ok(HttpSettings {
            group: config.group_name.clone(),
            server_id: config.server_id,
            url_have_group_name: config.http_url_have_group_name,
            mime: MimeTable::new(&config.http_mime_types)
                .map_err(|reason| invalid("http_mime_types", reason))?,
            cache_control: HeaderValue::from_str(&config.http_cache_control)
                .map_err(|_| invalid("http_cache_control", "not a valid header value"))?,
            anti_steal: anti.check_token.then(|| anti.clone()),
            token_check_fail: non_empty(&anti.token_check_fail),
            referer_allow: config
                .http_referer_allow
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
            not_local: config.http_not_local,
            default_image: non_empty(&config.http_default_image),
            max_path: config.http_max_path,
            network_timeout: config.network_timeout,
            shutdown_timeout: config.shutdown_timeout,
            max_connections: config.max_connections,
            allow_hosts: config
                .http_allow_hosts
                .clone()
                .unwrap_or_else(|| config.allow_hosts.clone()),
            metrics_allow_hosts: config
                .metrics_allow_hosts
                .clone()
                .unwrap_or_else(|| config.allow_hosts.clone()),
            peers: config
                .http_peers
                .iter()
                .map(|(id, addr)| (id.clone(), addr.clone()))
                .collect(),
            port_offset,
        })
    }

    /// The HTTP "host:port" of the storage `id` at `ip`, whose storage port is `port`.
    pub fn peer_http_addr(&self, id: &str, ip: &str, port: u16) -> Option<String> {
        if let Some(addr) = self.peers.get(id) {
            return Some(addr.clone());
        }
        let offset = self.port_offset?;
        let http = u16::try_from(i32::from(port) + offset).ok()?;
        if http == 0 || ip.is_empty() {
            return None;
        }
        Some(if ip.contains(':') {
            format!("[{ip}]:{http}")
        } else {
            format!("{ip}:{http}")
        })
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

    fn parse(extra: &str) -> Result<StorageConfig, ConfigError> {
        StorageConfig::from_toml(&format!("{MINIMAL}\n{extra}\n"))
    }

    #[test]
    fn defaults() {
        let config = parse("").unwrap();
        assert!(config.http_enabled);
        assert_eq!(config.http_port, 8888);
        assert_eq!(config.http_bind_addr, "");
        assert!(config.http_url_have_group_name);
        assert_eq!(config.http_cache_control, DEFAULT_CACHE_CONTROL);
        assert_eq!(config.http_anti_steal, AntiStealConfig::default());
        assert_eq!(config.http_not_local, NotLocalMode::Proxy);
        assert_eq!(config.http_max_path, 512);
        assert!(config.http_peers.is_empty());
        assert!(config.http_referer_allow.is_empty());
        assert!(config.http_default_image.as_os_str().is_empty());
    }

    #[test]
    fn shipped_config_has_the_defaults() {
        let text = include_str!("../../../conf/storage.toml");
        let shipped = StorageConfig::from_toml(text).unwrap();
        let defaults = parse("").unwrap();
        assert_eq!(shipped.http_enabled, defaults.http_enabled);
        assert_eq!(shipped.http_port, defaults.http_port);
        assert_eq!(shipped.http_bind_addr, defaults.http_bind_addr);
        assert_eq!(shipped.http_cache_control, defaults.http_cache_control);
        assert_eq!(shipped.http_anti_steal, defaults.http_anti_steal);
        assert_eq!(shipped.http_not_local, defaults.http_not_local);
        assert_eq!(shipped.http_max_path, defaults.http_max_path);
        assert_eq!(shipped.http_mime_types, defaults.http_mime_types);
        assert_eq!(shipped.http_peers, defaults.http_peers);
        assert_eq!(
            shipped.http_url_have_group_name,
            defaults.http_url_have_group_name
        );
    }

    #[test]
    fn dotted_and_inline_tables() {
        let config = parse(
            "http_anti_steal.check_token = true\nhttp_anti_steal.secret_key = \"k\"\n\
             http_anti_steal.token_ttl = \"60s\"\nhttp_not_local = \"redirect\"\n\
             http_mime_types = { heic = \"image/heic\" }\n\
             http_peers = { \"100002\" = \"127.0.0.1:8081\" }",
        )
        .unwrap();
        assert!(config.http_anti_steal.check_token);
        assert_eq!(config.http_anti_steal.token_ttl, Duration::from_secs(60));
        assert_eq!(config.http_not_local, NotLocalMode::Redirect);
        let settings = HttpSettings::from_config(&config).unwrap();
        assert_eq!(
            settings
                .peer_http_addr("100002", "10.0.0.2", 23001)
                .unwrap(),
            "127.0.0.1:8081"
        );
        // 8888 - 23000 applied to the peer's storage port
        assert_eq!(
            settings
                .peer_http_addr("100003", "10.0.0.3", 23001)
                .unwrap(),
            "10.0.0.3:8889"
        );
    }

    #[test]
    fn ephemeral_ports_only_know_listed_peers() {
        let config = parse("http_port = 0").unwrap();
        let settings = HttpSettings::from_config(&config).unwrap();
        assert_eq!(settings.peer_http_addr("100002", "10.0.0.2", 23000), None);
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            ("http_anti_steal.check_token = true", "secret_key"),
            ("http_anti_steal.bogus = 1", "bogus"),
            ("http_not_local = \"bounce\"", "bounce"),
            ("http_max_path = 10", "http_max_path"),
            (
                "http_referer_allow = [\"exa mple.com\"]",
                "http_referer_allow",
            ),
            ("http_peers = { x = \"127.0.0.1:1\" }", "http_peers"),
            ("http_peers = { \"2\" = \"127.0.0.1\" }", "http_peers"),
            (
                "http_mime_types = { jpg = \"bad\\ntype\" }",
                "http_mime_types",
            ),
            ("http_cache_control = \"a\\nb\"", "http_cache_control"),
        ];
        for (line, key) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
    }
}
