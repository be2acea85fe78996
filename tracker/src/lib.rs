//! fdfs-trackerd: the FastDFS-compatible tracker of fdfs-rs.
//!
//! Storages join and heartbeat over a long-lived report connection; the tracker keeps the
//! resulting registry in memory ([`cluster`]) and answers client queries about where to upload
//! and where to read ([`select`]). [`cmd`] holds one module per command group, [`service`] the
//! framing rules around them, and [`run`] wires everything to a listener.

pub mod cluster;
mod cmd;
pub mod config;
pub mod select;
pub mod service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fdfs_proto::server::{serve, ServerOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, TrackerConfig};
pub use service::Tracker;

/// How often heartbeat expiry is checked.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Serves tracker requests on `listener` until `shutdown` is cancelled, then lets in-flight
/// requests finish within `shutdown_timeout`.
pub async fn run(
    config: TrackerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), TrackerError> {
    config.validate()?;
    let tracker = Arc::new(Tracker::new(&config));
    let expiry = tokio::spawn(expire_storages(tracker.clone(), shutdown.clone()));
    let options = ServerOptions {
        max_connections: config.max_connections,
        network_timeout: config.network_timeout,
        idle_timeout: config.idle_timeout,
        shutdown_timeout: config.shutdown_timeout,
    };
    serve(listener, options, tracker, shutdown).await;
    // serve returns once shutdown is cancelled, which also ends the expiry task.
    if let Err(err) = expiry.await {
        tracing::error!(error = %err, "heartbeat expiry task failed");
    }
    Ok(())
}

async fn expire_storages(tracker: Arc<Tracker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => tracker.expire(Instant::now()),
        }
    }
}
