//! `router.toml`: listen address, the migration map, where map rules send or fetch files, and
//! the ordered rules. Unknown keys are errors; see conf/router.toml for every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fdfs_proto::units::serde_duration;
use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    #[serde(default = "default_bind_addr")]
    pub bind_addr: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Directory of `fdfs-router.addr` and `fdfs-router.pid`.
    #[serde(default = "default_base_path")]
    pub base_path: PathBuf,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The migration map written by `fdfs import` (relative paths: from the config's dir).
    #[serde(default = "default_map")]
    pub map: PathBuf,
    /// How often the router looks for new imports in the map.
    #[serde(default = "default_refresh", with = "serde_duration")]
    pub map_refresh_interval: Duration,
    /// Client configuration (trackers) for map rules with `mode = "serve"`.
    #[serde(default)]
    pub client_config: PathBuf,
    /// Base URL of map redirects without `to`, e.g. `http://127.0.0.1:8888`.
    #[serde(default)]
    pub storage_url: String,
    /// Anti-steal secret for rules with `sign = true`.
    #[serde(default)]
    pub secret_key: String,
    /// `Cache-Control` of files served by map rules (`""` = none).
    #[serde(default = "default_cache_control")]
    pub cache_control: String,
    /// Upstream connect + response-header timeout of proxy rules.
    #[serde(default = "default_proxy_timeout", with = "serde_duration")]
    pub proxy_timeout: Duration,
    /// Time allowed to send request headers (and for idle keep-alive connections).
    #[serde(default = "default_network_timeout", with = "serde_duration")]
    pub network_timeout: Duration,
    /// Time requests in flight get to finish on SIGTERM.
    #[serde(default = "default_shutdown_timeout", with = "serde_duration")]
    pub shutdown_timeout: Duration,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest request path (bytes, before decoding); longer → 414.
    #[serde(default = "default_max_path")]
    pub max_path: usize,
    /// Tried in order; the first that matches answers.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// What a rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Redirect,
    Proxy,
    Map,
    Deny,
}

/// How a map rule answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapMode {
    /// Stream the file from the cluster (fdfs client download).
    #[default]
    Serve,
    /// Redirect to the file's HTTP URL.
    Redirect,
}

/// One `[[rules]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Matches paths starting with this (decoded) prefix.
    pub prefix: Option<String>,
    /// Or: matches paths this regex (over the decoded path) finds a match in.
    pub regex: Option<String>,
    pub action: Action,
    /// redirect/proxy: the target URL template; map redirects: overrides
    /// `{storage_url}/{file_id}`.
    pub to: Option<String>,
    /// redirect (and map redirects): 301, 302, 303, 307 or 308.
    pub status: Option<u16>,
    /// map: serve or redirect.
    #[serde(default)]
    pub mode: MapMode,
    /// map: the key to look up (default `{path}`).
    pub key: Option<String>,
    /// Match (and look up in the map) ignoring case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// map redirects: add an anti-steal token (needs `secret_key`).
    #[serde(default)]
    pub sign: bool,
}

fn default_bind_addr() -> String {
    "0.0.0.0".into()
}
fn default_port() -> u16 {
    8090
}
fn default_base_path() -> PathBuf {
    PathBuf::from(".")
}
fn default_log_level() -> String {
    "info".into()
}
fn default_map() -> PathBuf {
    PathBuf::from("fdfs-migration.redb")
}
fn default_refresh() -> Duration {
    Duration::from_secs(1)
}
fn default_cache_control() -> String {
    "public, max-age=3600".into()
}
fn default_proxy_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_network_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_path() -> usize {
    1024
}

impl RouterConfig {
    /// Reads `path`; relative `map`, `client_config` and `base_path` are taken from the
    /// config file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
        let mut config = Self::from_toml(&text)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut config.map,
            &mut config.client_config,
            &mut config.base_path,
        ] {
            if !file.as_os_str().is_empty() && file.is_relative() {
                *file = dir.join(&*file);
            }
        }
        Ok(config)
    }

    /// Parses TOML text (rules are checked when compiled, see `rules::Rules::compile`).
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: RouterConfig = toml::from_str(text).map_err(|err| {
            let line = err
                .span()
                .map(|span| format!(" (line {})", text[..span.start].matches('\n').count() + 1))
                .unwrap_or_default();
            anyhow::anyhow!("{}{line}", err.message())
        })?;
        if config.map_refresh_interval.is_zero() {
            anyhow::bail!("map_refresh_interval must not be 0");
        }
        if config.max_connections == 0 {
            anyhow::bail!("max_connections must not be 0");
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_with_its_defaults() {
        let config = RouterConfig::from_toml(include_str!("../../conf/router.toml")).unwrap();
        let defaults = RouterConfig::from_toml("").unwrap();
        assert_eq!(config.bind_addr, defaults.bind_addr);
        assert_eq!(config.port, defaults.port);
        assert_eq!(config.base_path, defaults.base_path);
        assert_eq!(config.log_level, defaults.log_level);
        assert_eq!(config.map, defaults.map);
        assert_eq!(config.map_refresh_interval, defaults.map_refresh_interval);
        assert_eq!(config.client_config, defaults.client_config);
        assert_eq!(config.storage_url, defaults.storage_url);
        assert_eq!(config.secret_key, defaults.secret_key);
        assert_eq!(config.cache_control, defaults.cache_control);
        assert_eq!(config.proxy_timeout, defaults.proxy_timeout);
        assert_eq!(config.network_timeout, defaults.network_timeout);
        assert_eq!(config.shutdown_timeout, defaults.shutdown_timeout);
        assert_eq!(config.max_connections, defaults.max_connections);
        assert_eq!(config.max_path, defaults.max_path);
        assert!(!config.rules.is_empty(), "the example rules");
        crate::rules::Rules::compile(&config).unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = RouterConfig::from_toml("prot = 1").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
        let err = RouterConfig::from_toml("[[rules]]\nprefix = \"/\"\naction = \"deny\"\nfoo = 1")
            .unwrap_err();
        assert!(err.to_string().contains("foo"), "{err}");
        let err =
            RouterConfig::from_toml("[[rules]]\nprefix = \"/\"\naction = \"explode\"").unwrap_err();
        assert!(err.to_string().contains("explode"), "{err}");
        assert!(RouterConfig::from_toml("map_refresh_interval = \"0s\"").is_err());
    }
}
