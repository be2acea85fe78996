//! `fdfs-router -c router.toml`: the legacy-URL router.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fdfs_router::RouterConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Legacy-URL router for fdfs-rs (see conf/router.toml).
#[derive(Debug, Parser)]
#[command(name = "fdfs-router", version)]
struct Args {
    /// Config file (TOML, see conf/router.toml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = RouterConfig::load(&args.config)
        .with_context(|| format!("loading config {}", args.config.display()))?;
    init_logging(&config.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(config))
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => {
            EnvFilter::try_new(level).with_context(|| format!("invalid log_level {level:?}"))?
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

async fn serve(config: RouterConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.base_path)
        .with_context(|| format!("creating base_path {}", config.base_path.display()))?;
    let signal = fdfs_proto::server::shutdown_signal();
    let listener = TcpListener::bind((config.bind_addr.as_str(), config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.bind_addr, config.port))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let base_path = config.base_path.clone();
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        trigger.cancel();
    });
    // rules and the map are loaded before the address is announced: a router that is
    // listed as up answers correctly
    let run = fdfs_router::run(config, listener, shutdown, move || {
        fdfs_proto::server::write_runtime_files(&base_path, "fdfs-router", addr)
            .context("writing the pid and address files")?;
        info!(%addr, "listening");
        Ok(())
    });
    run.await.context("router failed")
}
