//! fdfs-storage: the storage server of fdfs-rs.
//!
//! Layout: [`store`] is the disk layer (store paths, data directories, temp + rename writes,
//! metadata sidecars); [`cmd`] holds one module per storage command on top of it;
//! [`tracker_link`] keeps the JOIN/BEAT connection to every tracker; [`run`] wires them to the
//! shared accept loop of `fdfs_proto::server`.

pub mod clock;
pub mod cmd;
pub mod config;
pub mod http;
pub mod metrics;
pub mod nowait;
pub mod persist;
pub mod replication;
pub mod scrub;
pub mod sendfile;
pub mod stats;
pub mod store;
pub mod tracker_link;

use std::sync::Arc;
use std::time::Duration;

use fdfs_proto::logging::AccessLog;
use fdfs_proto::server::{serve, ServerOptions};
use fdfs_proto::tracker_msg::JoinRequest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use config::{ConfigError, StorageConfig};
use store::{DistributeMode, Store, StoreError, StoreOptions};
use tracker_link::{LinkSettings, Members};

/// Why the storage could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("http: {0}")]
    Http(#[from] http::HttpError),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn unix_now() -> i64 {
    crate::clock::unix_now()
}

/// Builds the disk layer's options from the config.
pub fn store_options(config: &StorageConfig) -> StoreOptions {
    StoreOptions {
        base_path: config.base_path.clone(),
        store_paths: config.effective_store_paths(),
        subdir_count: config.subdir_count_per_path,
        server_id: config.server_id,
        fsync: config.fsync,
        slave_use_link: config.store_slave_file_use_link,
        distribute: if config.file_distribute_path_mode == 1 {
            DistributeMode::Hash
        } else {
            DistributeMode::RoundRobin {
                rotate_count: config.file_distribute_rotate_count,
            }
        },
        reserved: config.reserved_storage_space,
        max_io_per_path: config.store_path_max_io,
        io_wait: config.network_timeout,
        journal_max_file: config.journal_max_file_size,
        journal_checkpoint: config.journal_checkpoint_interval,
    }
}

/// Builds replication's settings from the config.
pub fn replication_config(
    config: &StorageConfig,
    cluster_secret: Option<fdfs_proto::auth::ClusterSecret>,
) -> replication::ReplicationConfig {
    replication::ReplicationConfig {
        group: config.group_name.clone(),
        self_id: config.server_id.to_string(),
        sync_dir: config.base_path.join("data").join("sync"),
        store_paths: config.effective_store_paths(),
        fsync: config.fsync,
        write_ack: config.write_ack,
        write_ack_timeout: config.write_ack_timeout,
        network_timeout: config.network_timeout,
        keepalive: config.heart_beat_interval,
        sync_lanes: config.sync_lanes,
        binlog_rotate_size: replication::binlog::DEFAULT_ROTATE_SIZE,
        cluster_secret,
    }
}

/// Runs a storage on `listener` until `shutdown` is cancelled: prepares the store paths,
/// starts one tracker link per tracker, serves requests, then drains and saves state.
pub async fn run(
    config: StorageConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StorageError> {
    let access_log = AccessLog::new(config.access_log);
    run_with_access_log(config, listener, shutdown, access_log).await
}

/// [`run`], with the access log following `access_log`, which the caller may switch while
/// the storage runs (fdfs-storaged does on SIGHUP).
pub async fn run_with_access_log(
    config: StorageConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    access_log: AccessLog,
) -> Result<(), StorageError> {
    config.validate()?;
    // read once: every user of the secret sees the same one
    let secret = config.secret()?;
    clock::init();
    let up_time = unix_now();
    let local = listener.local_addr().map_err(|source| StorageError::Io {
        context: "reading the bound address",
        source,
    })?;
    let base = config.base_path.clone();
    let join_time = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&base)?;
        persist::load_or_init_join_time(&base, unix_now())
    })
    .await
    .map_err(|err| StorageError::Io {
        context: "preparing base_path",
        source: std::io::Error::other(err.to_string()),
    })?
    .map_err(|source| StorageError::Io {
        context: "preparing base_path",
        source,
    })?;

    let stats_base = config.base_path.clone();
    let stats = Arc::new(
        tokio::task::spawn_blocking(move || stats::Stats::load(&stats_base))
            .await
            .map_err(|err| StorageError::Io {
                context: "loading the stat file",
                source: std::io::Error::other(err.to_string()),
            })?
            .map_err(|source| StorageError::Io {
                context: "loading the stat file",
                source,
            })?,
    );
    let metrics = Arc::new(metrics::Metrics::new(access_log, &config.group_name));

    let started = std::time::Instant::now();
    let store = Arc::new(Store::open(store_options(&config)).await?);
    info!(
        paths = store.store_path_count(),
        elapsed = ?started.elapsed(),
        "store paths ready"
    );
    fdfs_proto::server::write_runtime_files(&config.base_path, "fdfs-storaged", local).map_err(
        |source| StorageError::Io {
            context: "writing the pid and address files",
            source,
        },
    )?;
    let members = Arc::new(Members::default());
    let repl = Arc::new(
        replication::Replication::open(
            replication_config(&config, secret.clone()),
            store.clone(),
            members.clone(),
            stats.clone(),
        )
        .await
        .map_err(|source| StorageError::Io {
            context: "opening the binlog",
            source,
        })?,
    );
    // a journaled upload's record is written lazily (Binlog::append_lazy): durable before
    // the checkpoint that drops the journal entry which would record it again
    let binlog_owner = Arc::downgrade(&repl);
    store.before_journal_checkpoints(Arc::new(move || match binlog_owner.upgrade() {
        Some(repl) => repl.sync_binlog(),
        None => Err(std::io::Error::other("the binlog is closed")),
    }));
    // uploads a crash left in the journal without their binlog record reach the peers too
    let replayed = store.take_replayed_uploads();
    if !replayed.is_empty() {
        let mut recording = tokio::task::JoinSet::new();
        for name in replayed {
            let repl = repl.clone();
            recording.spawn(async move {
                let op = replication::record::Op::Create {
                    name: name.to_string(),
                };
                repl.record(repl.ticket(), op).await.map(|_| ())
            });
        }
        let count = recording.len();
        while let Some(recorded) = recording.join_next().await {
            if let Ok(Err(err)) = recorded {
                return Err(StorageError::Io {
                    context: "recording the uploads replayed from the journal",
                    source: std::io::Error::other(err.to_string()),
                });
            }
        }
        info!(
            files = count,
            "recorded the uploads replayed from the journal again"
        );
    }
    store
        .finish_replay()
        .await
        .map_err(|err| StorageError::Io {
            context: "removing the replayed journal",
            source: std::io::Error::other(err.to_string()),
        })?;
    // not a child of `shutdown` either: a repair in progress finishes its rename first
    let scrub_stop = CancellationToken::new();
    let scrub = scrub::Scrubber::new(repl.clone(), scrub_stop.clone());
    let exporter = Arc::new(metrics::Exporter {
        metrics: metrics.clone(),
        repl: repl.clone(),
        scrub: scrub.clone(),
        paths: config
            .effective_store_paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
    });
    let http = http::start(
        &config,
        store.clone(),
        members.clone(),
        Some(exporter),
        shutdown.clone(),
    )
    .await?;
    // creating 65,536 directories takes seconds on a fresh disk: do it while serving
    let background = TaskTracker::new();
    {
        let store = store.clone();
        let stop = shutdown.child_token();
        background.spawn(async move {
            let started = std::time::Instant::now();
            match store.create_subdirs(&stop).await {
                Ok(()) if stop.is_cancelled() => {}
                Ok(()) => info!(elapsed = ?started.elapsed(), "data directories ready"),
                Err(err) => error!(error = %err, "cannot create data directories"),
            }
        });
    }

    // the files-per-path gauge: one walk of every store path, then kept up to date
    {
        let store = store.clone();
        let stop = shutdown.child_token();
        background.spawn(async move {
            let started = std::time::Instant::now();
            match store.count_files(&stop).await {
                Ok(()) if stop.is_cancelled() => {}
                Ok(()) => info!(
                    files = ?store.file_counts(),
                    elapsed = ?started.elapsed(),
                    "stored files counted"
                ),
                Err(err) => error!(error = %err, "cannot count stored files"),
            }
        });
    }

    // failed store paths come back once a probe passes (crate::store::health)
    background.spawn(
        store
            .clone()
            .run_health_checks(config.store_path_check_interval, shutdown.child_token()),
    );
    if !config.scrub_interval.is_zero() {
        background.spawn(
            scrub
                .clone()
                .run_periodic(config.scrub_interval, Some(config.scrub_rate)),
        );
    }

    // saved once more after the requests have drained
    let stats_stop = CancellationToken::new();
    background.spawn(stats.clone().run_saver(stats_stop.clone()));

    // not a child of `shutdown`: requests still being drained need the binlog
    let repl_stop = CancellationToken::new();
    background.spawn(repl.clone().run(repl_stop.clone()));

    let settings = Arc::new(LinkSettings {
        join: JoinRequest {
            group: config.group_name.clone(),
            storage_id: config.server_id,
            port: local.port(),
            store_path_count: store.store_path_count() as u32,
            subdir_count_per_path: config.subdir_count_per_path,
            upload_priority: config.upload_priority,
            join_time,
            up_time,
            version: fdfs_proto::VERSION.to_string(),
        },
        heart_beat_interval: config.heart_beat_interval,
        network_timeout: config.network_timeout,
        stats: stats.clone(),
        listen_ip: if local.ip().is_unspecified() {
            String::new()
        } else {
            local.ip().to_canonical().to_string()
        },
    });
    let links = TaskTracker::new();
    let link_shutdown = shutdown.child_token();
    for tracker in &config.tracker_servers {
        links.spawn(tracker_link::run(
            tracker.clone(),
            settings.clone(),
            repl.clone(),
            link_shutdown.clone(),
        ));
    }
    links.close();

    let ctx = Arc::new(cmd::Ctx {
        group: config.group_name.clone(),
        buff_size: config.buff_size,
        sendfile: config.sendfile,
        network_timeout: config.network_timeout,
        store: store.clone(),
        members,
        repl,
        stats: stats.clone(),
        metrics,
        scrub,
        admin_hosts: fdfs_proto::server::AdminHosts::new(config.admin_hosts.clone()),
    });
    let options = ServerOptions {
        max_connections: config.max_connections,
        network_timeout: config.network_timeout,
        idle_timeout: config.idle_timeout,
        shutdown_timeout: config.shutdown_timeout,
        allow_hosts: config.allow_hosts.clone(),
        read_buffer: fdfs_proto::conn::READ_BUFFER,
    };
    if secret.is_some() {
        info!("cluster secret set: tracker links and sync connections authenticate");
    }
    info!(addr = %local, group = %config.group_name, id = config.server_id, "storage serving");
    serve(
        listener,
        options,
        Arc::new(cmd::StorageService::new(ctx)),
        shutdown.clone(),
    )
    .await;

    link_shutdown.cancel();
    scrub_stop.cancel();
    repl_stop.cancel();
    stats_stop.cancel();
    if let Some(http) = http {
        // it drains on its own within shutdown_timeout
        let _ = http.await;
    }
    background.close();
    let grace = config.network_timeout.min(Duration::from_secs(5));
    let stopped = async {
        links.wait().await;
        background.wait().await;
    };
    if tokio::time::timeout(grace, stopped).await.is_err() {
        warn!("background tasks did not stop in time");
    }
    if let Err(err) = store.save_state().await {
        warn!(error = %err, "cannot save distribution state");
    }
    store.close_journals(grace).await;
    info!("storage stopped");
    Ok(())
}
