//! `fdfs-storaged -c storage.toml`: the storage server daemon.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fdfs_proto::logging::{self, AccessLog, LogControl};
use fdfs_storage::StorageConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// fdfs-rs storage server.
#[derive(Debug, Parser)]
#[command(name = "fdfs-storaged", version)]
struct Args {
    /// Config file (TOML, see conf/storage.toml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    fdfs_proto::memory::cap_malloc_arenas();
    let args = Args::parse();
    let config = StorageConfig::load(&args.config)
        .with_context(|| format!("loading config {}", args.config.display()))?;
    let log = logging::init(&config.log_level, config.access_log)
        .with_context(|| format!("invalid log_level in {}", args.config.display()))?;
    // a panicking server is in an unknown state: log and abort, supervision restarts it
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        default_hook(panic);
        tracing::error!(%panic, "panic, aborting");
        std::process::abort();
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(fdfs_proto::server::worker_threads(config.worker_threads))
        .max_blocking_threads(config.max_blocking_threads)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(config, args.config, log))
}

async fn serve(config: StorageConfig, path: PathBuf, log: LogControl) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.base_path)
        .with_context(|| format!("creating base_path {}", config.base_path.display()))?;
    // handlers go in before the address file announces us: an early SIGTERM is never fatal
    let signal = fdfs_proto::server::shutdown_signal();
    // SIGHUP re-reads log_level and access_log; connections are not touched
    let access_log = AccessLog::new(config.access_log);
    logging::reload_on_hangup(
        path,
        StorageConfig::load,
        |c| (c.log_level.clone(), c.access_log),
        log,
        access_log.clone(),
    )
    .context("installing the SIGHUP handler")?;
    let listener = TcpListener::bind((config.bind_addr.as_str(), config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.bind_addr, config.port))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // the pid and address files are written by run() once the store paths are ready (the
    // crash sweep is done), so whoever waits for them sees a clean store
    info!(%addr, "listening");
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        trigger.cancel();
    });
    fdfs_storage::run_with_access_log(config, listener, shutdown, access_log)
        .await
        .context("storage server failed")?;
    Ok(())
}
