//! `fdfs import` and `fdfs url`: moving an old image tree in, and HTTP URLs of stored files.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fdfs_client::migrate::{self, ImportOptions, MigrationMap};
use fdfs_client::{http_url, parse_file_id, token_ts, Client, ClientConfig};

/// Default map file, in the current directory.
pub const DEFAULT_MAP: &str = "fdfs-migration.redb";

/// How long to wait for a router that is reading the map.
const MAP_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The old document root (or part of it) to import.
    pub dir: PathBuf,
    /// URL path under which the old server published DIR, e.g. /upload/.
    #[arg(long, default_value = "/")]
    pub prefix: String,
    /// The migration map (created if missing; fdfs-router reads it).
    #[arg(long, default_value = DEFAULT_MAP)]
    pub map: PathBuf,
    /// Uploads (or verifications) at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Upload into this group instead of letting the tracker choose.
    #[arg(long)]
    pub group: Option<String>,
    /// Instead of importing: download every mapped file under --prefix and compare it with
    /// the local file; exits 1 on any mismatch.
    #[arg(long)]
    pub verify: bool,
    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn import(client: &Client, args: &ImportArgs) -> anyhow::Result<()> {
    let map = MigrationMap::new(&args.map, MAP_WAIT);
    if args.verify {
        let report = migrate::verify(client, &map, &args.dir, &args.prefix, args.concurrency)
            .await
            .context("verify")?;
        for mismatch in &report.mismatches {
            println!(
                "MISMATCH {} -> {}: {}",
                mismatch.path, mismatch.file_id, mismatch.reason
            );
        }
        println!(
            "verified {} mapped files: {} mismatches, {} without a local file (checked against the map)",
            report.checked,
            report.mismatches.len(),
            report.local_missing
        );
        if !report.mismatches.is_empty() {
            bail!("{} mapped files do not match", report.mismatches.len());
        }
        return Ok(());
    }
    let options = ImportOptions {
        dir: args.dir.clone(),
        prefix: args.prefix.clone(),
        concurrency: args.concurrency,
        group: args.group.clone(),
        progress: !args.quiet,
    };
    let report = migrate::import(client, &map, &options)
        .await
        .with_context(|| format!("import {}", args.dir.display()))?;
    for (path, reason) in &report.failed {
        eprintln!("fdfs: import {}: {reason}", path.display());
    }
    for path in &report.unnamed {
        eprintln!(
            "fdfs: import {}: skipped, the name is not UTF-8 (no URL can name it)",
            path.display()
        );
    }
    println!(
        "{} files: {} uploaded, {} re-uploaded (changed), {} unchanged, {} failed, {} skipped (names), {} superseded deleted, {} bytes",
        report.found,
        report.uploaded,
        report.reuploaded,
        report.skipped,
        report.failed.len(),
        report.unnamed.len(),
        report.deleted,
        report.bytes
    );
    if !report.failed.is_empty() {
        bail!(
            "{} files failed to import (re-run to retry them)",
            report.failed.len()
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct UrlArgs {
    /// File ID, GROUP/Mxx/XX/YY/NAME.
    pub id: String,
    /// Seconds the URL stays valid (default: the storages' token TTL, http_token_ttl).
    #[arg(long)]
    pub ttl: Option<u64>,
    /// Anti-steal secret (default: http_secret_key of the config); none = unsigned URL.
    #[arg(long)]
    pub secret: Option<String>,
    /// Base URL, e.g. http://127.0.0.1:8888 (default: http_base_url of the config; none =
    /// a path only).
    #[arg(long)]
    pub base: Option<String>,
}

/// Prints the URL; the config is optional here (no tracker is asked).
pub fn url(config: Option<&ClientConfig>, args: &UrlArgs) -> anyhow::Result<()> {
    let id = parse_file_id(&args.id).with_context(|| format!("url {}", args.id))?;
    let secret = args
        .secret
        .clone()
        .or_else(|| config.map(|c| c.http_secret_key.clone()))
        .filter(|secret| !secret.is_empty());
    let base = args
        .base
        .clone()
        .or_else(|| config.map(|c| c.http_base_url.clone()))
        .unwrap_or_default();
    let server_ttl = config.map(|c| c.http_token_ttl.as_secs()).unwrap_or(900);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let ts = token_ts(now, args.ttl.unwrap_or(server_ttl), server_ttl);
    println!("{}", http_url(&base, &id, secret.as_deref(), ts));
    Ok(())
}
