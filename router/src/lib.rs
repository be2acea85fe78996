//! fdfs-router: keeps the URLs of an old image server working after its files moved into an
//! fdfs-rs cluster (`fdfs import`).
//!
//! An ordered list of rules (`router.toml`) matches the decoded request path by prefix or
//! regex and redirects, proxies to the old server, answers from the migration map (serving
//! the file from the cluster or redirecting to its storage URL) or denies.
//!
//! Modules: `config` (router.toml), `path` (request path normalization), `template` (URL
//! templates), `rules` (matching), `mapview` (the refreshing map snapshot), `handler` (the
//! actions), `server` (the accept loop).

pub mod config;
pub mod handler;
pub mod mapview;
pub mod path;
pub mod rules;
pub mod server;
pub mod template;

use std::sync::Arc;

use anyhow::Context;
use fdfs_client::{Client, ClientConfig};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::RouterConfig;

/// Runs the router on `listener` until `shutdown`; `ready` is called once the rules and the
/// map are loaded, before the first connection is accepted.
pub async fn run(
    config: RouterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    ready: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let rules = rules::Rules::compile(&config)?;
    let client = if rules.needs_client() {
        if config.client_config.as_os_str().is_empty() {
            anyhow::bail!("map rules with mode = \"serve\" need client_config (a client.toml with the trackers)");
        }
        let client_config = ClientConfig::from_file(&config.client_config)?;
        Some(Client::new(client_config)?)
    } else {
        None
    };
    let map = if rules.uses_map() {
        let view = mapview::MapView::new(config.map.clone());
        view.refresh(false)
            .await
            .with_context(|| format!("reading the migration map {}", config.map.display()))?;
        tracing::info!(map = %config.map.display(), entries = view.len(), "migration map loaded");
        tokio::spawn(
            view.clone()
                .run_refresher(config.map_refresh_interval, shutdown.clone()),
        );
        Some(view)
    } else {
        None
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.proxy_timeout));
    connector.set_nodelay(true);
    let proxy = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let state = Arc::new(handler::State {
        config,
        rules,
        map,
        client,
        proxy,
    });
    ready()?;
    server::serve(listener, state, shutdown).await;
    Ok(())
}
