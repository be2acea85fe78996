//! `fdfs-trackerd -c tracker.toml`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fdfs_proto::logging::{self, AccessLog, LogControl};
use fdfs_proto::server::{shutdown_signal, write_runtime_files};
use fdfs_tracker::{run_with_access_log, TrackerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The fdfs-rs tracker: keeps track of storage servers and tells clients where to go.
#[derive(Debug, Parser)]
#[command(name = "fdfs-trackerd", version)]
struct Args {
    /// Configuration file (TOML, see conf/tracker.toml).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

fn main() -> ExitCode {
    fdfs_proto::memory::cap_malloc_arenas();
    let args = Args::parse();
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fdfs-trackerd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    let config = TrackerConfig::load(&args.config)
        .with_context(|| format!("cannot read config {}", args.config.display()))?;
    let log = logging::init(&config.log_level, config.access_log)
        .with_context(|| format!("invalid log_level in {}", args.config.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(fdfs_proto::server::worker_threads(config.worker_threads))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve(config, args.config, log))
}

async fn serve(config: TrackerConfig, path: PathBuf, log: LogControl) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.base_path)
        .with_context(|| format!("cannot create base_path {}", config.base_path.display()))?;
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone()).await;
    // SIGHUP re-reads log_level and access_log; connections are not touched
    let access_log = AccessLog::new(config.access_log);
    logging::reload_on_hangup(
        path,
        TrackerConfig::load,
        |c| (c.log_level.clone(), c.access_log),
        log,
        access_log.clone(),
    )
    .context("cannot install the SIGHUP handler")?;
    let wanted = SocketAddr::new(config.bind_addr, config.port);
    let listener = TcpListener::bind(wanted)
        .await
        .with_context(|| format!("cannot listen on {wanted}"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    write_runtime_files(&config.base_path, "fdfs-trackerd", addr).with_context(|| {
        format!(
            "cannot write runtime files in {}",
            config.base_path.display()
        )
    })?;
    info!(%addr, base_path = %config.base_path.display(), "fdfs-trackerd listening");
    run_with_access_log(config, listener, shutdown, access_log).await?;
    info!("fdfs-trackerd stopped");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM/SIGINT. The handlers are installed before this returns, so a
/// signal sent as soon as the address file exists is never fatal.
async fn watch_signals(shutdown: CancellationToken) {
    let mut signal = Box::pin(shutdown_signal());
    // The first poll of shutdown_signal registers both handlers.
    tokio::select! {
        biased;
        () = &mut signal => {
            shutdown.cancel();
            return;
        }
        () = std::future::ready(()) => {}
    }
    tokio::spawn(async move {
        signal.await;
        shutdown.cancel();
    });
}
