//! fdfs-trackerd: the FastDFS-compatible tracker of fdfs-rs.
//!
//! Storages join and heartbeat over a long-lived report connection; the tracker keeps the
//! resulting registry in memory ([`cluster`]) and answers client queries about where to upload
//! and where to read ([`select`]) and the list commands operators use. [`cmd`] holds one module
//! per command group, [`service`] the framing rules around them, [`persist`] the copy of the
//! registry that survives restarts, [`metrics`] and the HTTP endpoint what Prometheus scrapes,
//! and [`run`] wires everything to a listener.

pub mod cluster;
mod cmd;
pub mod config;
pub mod guard;
mod http;
pub mod metrics;
pub mod persist;
pub mod select;
pub mod service;
pub mod sync;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fdfs_proto::logging::AccessLog;
use fdfs_proto::server::{serve, ServerOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::{ConfigError, TrackerConfig};
pub use service::Tracker;

use persist::State;

/// How often heartbeat expiry is checked.
const EXPIRY_TICK: Duration = Duration::from_secs(1);
/// How often the registry is compared with what was last persisted. Membership and status
/// changes are written at the next tick.
const PERSIST_TICK: Duration = Duration::from_secs(1);
/// Usage, counters and cursors alone are written at most this often.
const PERSIST_INTERVAL: Duration = Duration::from_secs(5);
/// How often recorded histogram samples are folded into buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves tracker requests on `listener` until `shutdown` is cancelled, then lets in-flight
/// requests finish within `shutdown_timeout`.
///
/// The registry is restored from `<base_path>/data/cluster_state.toml` first and written back
/// while running and once more on the way out. With `http_port` set, `/metrics` and
/// `/healthz` are served on `bind_addr:http_port`.
pub async fn run(
    config: TrackerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), TrackerError> {
    let access_log = AccessLog::new(config.access_log);
    run_with_access_log(config, listener, shutdown, access_log).await
}

/// [`run`], with the access log following `access_log`, which the caller may switch while
/// the tracker runs (fdfs-trackerd does on SIGHUP).
pub async fn run_with_access_log(
    config: TrackerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    access_log: AccessLog,
) -> Result<(), TrackerError> {
    config.validate()?;
    let secret = config.secret()?;
    if secret.is_some() {
        info!("cluster secret set: storages must authenticate before joining");
    }
    let tracker = Arc::new(
        Tracker::new(&config)
            .with_secret(secret)
            .with_access_log(access_log),
    );
    let state_path = persist::state_path(&config.base_path);
    let restored = restore_state(&tracker, &state_path);

    let http = if config.http_port == 0 {
        None
    } else {
        let addr = SocketAddr::new(config.bind_addr, config.http_port);
        let http_listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TrackerError::HttpBind { addr, source })?;
        info!(%addr, "http endpoint listening (/metrics, /healthz)");
        Some(tokio::spawn(http::serve(
            http_listener,
            tracker.clone(),
            config.metrics_hosts().clone(),
            shutdown.clone(),
            config.shutdown_timeout,
        )))
    };
    let background = [
        tokio::spawn(expire_storages(tracker.clone(), shutdown.clone())),
        tokio::spawn(persist_state(
            tracker.clone(),
            state_path.clone(),
            restored,
            shutdown.clone(),
        )),
        tokio::spawn(metrics_upkeep(tracker.clone(), shutdown.clone())),
    ];
    let options = ServerOptions {
        max_connections: config.max_connections,
        network_timeout: config.network_timeout,
        idle_timeout: config.idle_timeout,
        shutdown_timeout: config.shutdown_timeout,
        allow_hosts: config.allow_hosts.clone(),
        // requests to a tracker are a few hundred bytes
        read_buffer: 4 * 1024,
    };
    serve(listener, options, tracker.clone(), shutdown).await;
    // serve returns once shutdown is cancelled, which also ends the other tasks.
    for task in background.into_iter().chain(http) {
        if let Err(err) = task.await {
            error!(error = %err, "background task failed");
        }
    }
    // Connections closed while draining changed statuses: keep the final view.
    let state = State::capture(&tracker.cluster());
    if let Err(err) = save_state(state_path, state).await {
        warn!(error = %err, "cannot write the final cluster state");
    }
    Ok(())
}

/// Loads the persisted registry into `tracker`; returns what was loaded. A state file that
/// cannot be trusted is logged, set aside and ignored.
fn restore_state(tracker: &Tracker, path: &Path) -> Option<State> {
    let loaded = persist::load(path).and_then(|state| match state {
        Some(state) => Ok(Some((state.restore(Instant::now())?, state))),
        None => Ok(None),
    });
    match loaded {
        Ok(Some((cluster, state))) => {
            info!(
                path = %path.display(),
                groups = state.groups.len(),
                storages = state.storage_count,
                "cluster state restored; storages are OFFLINE until they join again"
            );
            tracker.restore(cluster);
            Some(state)
        }
        Ok(None) => None,
        Err(err) => {
            match persist::set_aside(path) {
                Ok(aside) => {
                    warn!(path = %path.display(), moved_to = %aside.display(), error = %err, "ignoring unreadable cluster state")
                }
                Err(move_err) => {
                    warn!(path = %path.display(), error = %err, move_error = %move_err, "ignoring unreadable cluster state")
                }
            }
            None
        }
    }
}

async fn save_state(path: PathBuf, state: State) -> Result<(), persist::PersistError> {
    // fsync blocks: keep it off the request workers.
    match tokio::task::spawn_blocking(move || persist::save(&path, &state)).await {
        Ok(result) => result,
        Err(join) => Err(persist::PersistError::Io(std::io::Error::other(join))),
    }
}

/// Writes the registry when its membership or statuses change (at the next tick) and when
/// only usage or counters changed, at most every [`PERSIST_INTERVAL`].
async fn persist_state(
    tracker: Arc<Tracker>,
    path: PathBuf,
    mut written: Option<State>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(PERSIST_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_write: Option<Instant> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let state = State::capture(&tracker.cluster());
        let due = match &written {
            None => true,
            Some(previous) if !previous.same_membership(&state) => true,
            Some(previous) => {
                *previous != state && last_write.is_none_or(|t| t.elapsed() >= PERSIST_INTERVAL)
            }
        };
        if !due {
            continue;
        }
        match save_state(path.clone(), state.clone()).await {
            Ok(()) => {
                if failing {
                    info!(path = %path.display(), "cluster state written again");
                }
                failing = false;
                written = Some(state);
                last_write = Some(Instant::now());
            }
            Err(err) => {
                // Logged once per failure streak; retried at every tick.
                if !failing {
                    error!(path = %path.display(), error = %err, "cannot write the cluster state");
                }
                failing = true;
            }
        }
    }
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

async fn metrics_upkeep(tracker: Arc<Tracker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => tracker.metrics().upkeep(),
        }
    }
}
