//! The storage's built-in HTTP server: `GET`/`HEAD /{group}/M{nn}/XX/YY/{name}` for every
//! stored file (normal, appender, slave), the way FastDFS sites serve them through nginx and
//! `fastdfs-nginx-module` (spec I.6, M), plus `GET /healthz`.
//!
//! Modules: [`settings`] (the `http_*` config keys), [`server`] (accept loop, limits, graceful
//! stop), [`handler`] (the request pipeline of M.2), [`path`] and [`query`] (request target),
//! [`token`] (anti-steal tokens, M.1), [`referer`] (Referer allow-list), [`local`] (opening and
//! answering for local files), [`range`] and [`conditional`] (byte ranges, validators),
//! [`body`] (streamed bodies), [`nowait`] (page-cache reads without blocking), [`mime`]
//! (content types), [`disposition`] (`?filename=`), [`peer`] (files that are on another
//! storage of the group).

pub mod body;
pub mod conditional;
pub mod disposition;
pub mod handler;
pub mod local;
pub mod mime;
pub use crate::nowait;
pub mod path;
pub mod peer;
pub mod query;
pub mod range;
pub mod referer;
pub mod server;
pub mod settings;
pub mod token;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{ConfigError, StorageConfig};
use crate::store::Store;
use crate::tracker_link::Members;
pub use settings::HttpSettings;

/// File in `base_path` holding the bound HTTP address (useful with `http_port = 0`).
pub const ADDR_FILE: &str = "fdfs-storaged.http.addr";

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind the http port {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    AddrFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the HTTP port (when `http_enabled`), writes `<base_path>/fdfs-storaged.http.addr`
/// and serves until `shutdown`. The returned task ends once the server has drained.
pub async fn start(
    config: &StorageConfig,
    store: Arc<Store>,
    members: Arc<Members>,
    exporter: Option<Arc<crate::metrics::Exporter>>,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>, HttpError> {
    let addr_file = config.base_path.join(ADDR_FILE);
    // a stale file from an earlier run must not point anybody at the wrong port
    let _ = std::fs::remove_file(&addr_file);
    if !config.http_enabled {
        return Ok(None);
    }
    let settings = HttpSettings::from_config(config)?;
    let host = if config.http_bind_addr.is_empty() {
        &config.bind_addr
    } else {
        &config.http_bind_addr
    };
    let listener = TcpListener::bind((host.as_str(), config.http_port))
        .await
        .map_err(|source| HttpError::Bind {
            addr: format!("{host}:{}", config.http_port),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: format!("{host}:{}", config.http_port),
        source,
    })?;
    write_addr_file(&addr_file, bound).map_err(|source| HttpError::AddrFile {
        path: addr_file.clone(),
        source,
    })?;
    info!(addr = %bound, "http serving");
    let mut state = handler::State::new(settings, store, members);
    state.exporter = exporter;
    let state = Arc::new(state);
    Ok(Some(tokio::spawn(server::serve(listener, state, shutdown))))
}

fn write_addr_file(path: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("addr.tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, path)
}
