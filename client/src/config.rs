//! `ClientConfig`: the client's TOML configuration (`conf/client.toml`), parsed strictly
//! (unknown keys are errors) and validated before a [`Client`](crate::Client) uses it.

use std::path::Path;
use std::time::Duration;

use fdfs_proto::units::serde_duration;
use serde::Deserialize;

use crate::error::ClientError;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_POOL_MAX_IDLE: usize = 8;
const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_HTTP_TOKEN_TTL: Duration = Duration::from_secs(900);

/// Settings of a [`Client`](crate::Client).
///
/// ```
/// use std::time::Duration;
/// use fdfs_client::ClientConfig;
///
/// let mut config = ClientConfig::new(vec!["127.0.0.1:22122".to_string()]);
/// config.network_timeout = Duration::from_secs(10);
/// assert_eq!(config.pool_max_idle_per_server, 8);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Trackers as `host:port`; requests go to the first that answers.
    pub tracker_servers: Vec<String>,
    /// Timeout for establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Timeout of each read or write.
    pub network_timeout: Duration,
    /// Idle connections kept per server for reuse (0 disables pooling).
    pub pool_max_idle_per_server: usize,
    /// How long an idle connection may stay in the pool.
    pub pool_idle_timeout: Duration,
    /// Secret of the storages' anti-steal tokens (`http_anti_steal.secret_key`), for signed
    /// URLs (`fdfs url`, [`http_url`](crate::http_url)); empty = URLs are not signed.
    pub http_secret_key: String,
    /// Base of HTTP URLs, e.g. `http://img.example.com` (a storage's HTTP address or nginx).
    pub http_base_url: String,
    /// The storages' `http_anti_steal.token_ttl`, to sign URLs for a given lifetime.
    pub http_token_ttl: Duration,
}

/// The file form: exactly the keys of `conf/client.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tracker_servers: Vec<String>,
    #[serde(default = "default_connect_timeout", with = "serde_duration")]
    connect_timeout: Duration,
    #[serde(default = "default_network_timeout", with = "serde_duration")]
    network_timeout: Duration,
    #[serde(default = "default_pool_max_idle")]
    pool_max_idle_per_server: usize,
    #[serde(default = "default_pool_idle_timeout", with = "serde_duration")]
    pool_idle_timeout: Duration,
    #[serde(default)]
    http_secret_key: String,
    #[serde(default)]
    http_base_url: String,
    #[serde(default = "default_http_token_ttl", with = "serde_duration")]
    http_token_ttl: Duration,
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_network_timeout() -> Duration {
    DEFAULT_NETWORK_TIMEOUT
}
fn default_pool_max_idle() -> usize {
    DEFAULT_POOL_MAX_IDLE
}
fn default_pool_idle_timeout() -> Duration {
    DEFAULT_POOL_IDLE_TIMEOUT
}
fn default_http_token_ttl() -> Duration {
    DEFAULT_HTTP_TOKEN_TTL
}

impl ClientConfig {
    /// A configuration with these trackers and every other field at its default.
    pub fn new(tracker_servers: Vec<String>) -> Self {
        ClientConfig {
            tracker_servers,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            network_timeout: DEFAULT_NETWORK_TIMEOUT,
            pool_max_idle_per_server: DEFAULT_POOL_MAX_IDLE,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            http_secret_key: String::new(),
            http_base_url: String::new(),
            http_token_ttl: DEFAULT_HTTP_TOKEN_TTL,
        }
    }

    /// Reads and validates a TOML file such as `conf/client.toml`.
    ///
    /// ```no_run
    /// let config = fdfs_client::ClientConfig::from_file("/etc/fdfs/client.toml")?;
    /// # Ok::<(), fdfs_client::ClientError>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|err| ClientError::Config(format!("cannot read {}: {err}", path.display())))?;
        Self::from_toml(&text).map_err(|err| match err {
            ClientError::Config(msg) => ClientError::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses and validates the TOML text of a configuration file.
    pub fn from_toml(text: &str) -> Result<Self, ClientError> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| {
            // one line (the default rendering quotes the file over several lines)
            let line = err
                .span()
                .map(|span| format!(" (line {})", text[..span.start].matches('\n').count() + 1))
                .unwrap_or_default();
            ClientError::Config(format!("{}{line}", err.message()))
        })?;
        let config = ClientConfig {
            tracker_servers: raw.tracker_servers,
            connect_timeout: raw.connect_timeout,
            network_timeout: raw.network_timeout,
            pool_max_idle_per_server: raw.pool_max_idle_per_server,
            pool_idle_timeout: raw.pool_idle_timeout,
            http_secret_key: raw.http_secret_key,
            http_base_url: raw.http_base_url,
            http_token_ttl: raw.http_token_ttl,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values: at least one tracker, each `host:port`, non-zero timeouts.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.tracker_servers.is_empty() {
            return Err(ClientError::Config(
                "tracker_servers is empty: give at least one \"host:port\"".into(),
            ));
        }
        for server in &self.tracker_servers {
            validate_addr(server)?;
        }
        if self.connect_timeout.is_zero() {
            return Err(ClientError::Config("connect_timeout must not be 0".into()));
        }
        if self.network_timeout.is_zero() {
            return Err(ClientError::Config("network_timeout must not be 0".into()));
        }
        Ok(())
    }
}

/// Checks a `host:port` server address (the host may be a name, an IPv4 or a `[IPv6]`).
pub(crate) fn validate_addr(addr: &str) -> Result<(), ClientError> {
    let bad = |why: &str| {
        ClientError::Config(format!(
            "bad server address {addr:?}: {why} (expected host:port, e.g. 127.0.0.1:22122)"
        ))
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("IPv6 addresses must be written [addr]:port"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad("port must be 1..65535")),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_with_its_defaults() {
        let text = include_str!("../../conf/client.toml");
        let config = ClientConfig::from_toml(text).unwrap();
        assert_eq!(
            config,
            ClientConfig::new(vec!["127.0.0.1:22122".to_string()])
        );
    }

    #[test]
    fn defaults_apply_to_missing_keys() {
        let config = ClientConfig::from_toml(
            "tracker_servers = [\"a:1\", \"b:2\"]\nnetwork_timeout = \"2s\"",
        )
        .unwrap();
        assert_eq!(config.tracker_servers, ["a:1", "b:2"]);
        assert_eq!(config.network_timeout, Duration::from_secs(2));
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.pool_max_idle_per_server, 8);
        assert_eq!(config.pool_idle_timeout, Duration::from_secs(60));
        let config = ClientConfig::from_toml(
            "tracker_servers = [\"[::1]:22122\"]\nconnect_timeout = \"250ms\"\n\
             pool_max_idle_per_server = 0\npool_idle_timeout = \"5m\"",
        )
        .unwrap();
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.pool_max_idle_per_server, 0);
        assert_eq!(config.pool_idle_timeout, Duration::from_secs(300));
        let config = ClientConfig::from_toml(
            "tracker_servers = [\"h:1\"]\nhttp_secret_key = \"k\"\n\
             http_base_url = \"http://img:8888\"\nhttp_token_ttl = \"1h\"",
        )
        .unwrap();
        assert_eq!(config.http_secret_key, "k");
        assert_eq!(config.http_base_url, "http://img:8888");
        assert_eq!(config.http_token_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let err = ClientConfig::from_toml("tracker_servers = [\"a:1\"]\nbase_path = \"/tmp\"")
            .unwrap_err();
        assert!(err.to_string().contains("base_path"), "{err}");
        let err = ClientConfig::from_toml("connect_timeout = \"5s\"").unwrap_err();
        assert!(err.to_string().contains("tracker_servers"), "{err}");
        for bad in [
            "tracker_servers = []",
            "tracker_servers = [\"nohost\"]",
            "tracker_servers = [\"h:0\"]",
            "tracker_servers = [\"h:99999\"]",
            "tracker_servers = [\":22122\"]",
            "tracker_servers = [\"::1:22122\"]",
            "tracker_servers = [\"h:1\"]\nconnect_timeout = \"0s\"",
            "tracker_servers = [\"h:1\"]\nnetwork_timeout = \"soon\"",
        ] {
            let err = ClientConfig::from_toml(bad).unwrap_err();
            assert!(matches!(err, ClientError::Config(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = ClientConfig::from_file("/nonexistent/client.toml").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/client.toml"),
            "{err}"
        );
    }
}
