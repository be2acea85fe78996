//! The long crash soak (`scripts/soak` builds and runs it): kills a random server at a random
//! moment of every round of a mixed workload, then checks that nothing acknowledged was lost.
//! See `fdfs_tests::soak`.
//!
//!   fdfs-soak [--minutes N] [--rounds N] [--seed S] [--round-secs N] [--workers N]
//!             [--kill all|tracker|storages] [--uploads-deletes] [--storage-config LINE]...
//!
//! Needs the server binaries in FDFS_BIN_DIR. FDFS_SOAK_KEEP=1 keeps the cluster's
//! directories when a check fails. Exit status 1 when a guarantee was broken.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use fdfs_tests::soak::{run, SoakOptions, Victims};

fn value<T: std::str::FromStr>(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<T> {
    let text = args
        .next()
        .with_context(|| format!("{flag} needs a value"))?;
    text.parse()
        .map_err(|_| anyhow::anyhow!("{flag}: cannot use {text:?}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut options = SoakOptions::new(fdfs_tests::soak::random_seed());
    options.verbose = true;
    options.keep_on_failure = std::env::var_os("FDFS_SOAK_KEEP").is_some();
    options.converge_timeout = Duration::from_secs(120);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--minutes" => {
                options.duration = Some(Duration::from_secs(value::<u64>(&mut args, &arg)? * 60))
            }
            "--rounds" => options.rounds = Some(value(&mut args, &arg)?),
            "--seed" => options.seed = value(&mut args, &arg)?,
            "--round-secs" => options.round_length = Duration::from_secs(value(&mut args, &arg)?),
            "--kill" => {
                options.victims = match value::<String>(&mut args, &arg)?.as_str() {
                    "all" => Victims::All,
                    "tracker" => Victims::Tracker,
                    "storages" => Victims::Storages,
                    other => bail!("--kill all|tracker|storages, not {other:?}"),
                }
            }
            "--uploads-deletes" => options.mixed = false,
            "--workers" => options.workers = value(&mut args, &arg)?,
            "--storage-config" => {
                options.storage_config += &value::<String>(&mut args, &arg)?;
                options.storage_config.push('\n');
            }
            other => bail!("unknown argument {other:?} (see scripts/soak --help)"),
        }
    }
    if options.rounds.is_none() && options.duration.is_none() {
        options.duration = Some(Duration::from_secs(60));
    }
    println!(
        "soak: seed {} (replay with --seed {}), {}",
        options.seed,
        options.seed,
        match (options.rounds, options.duration) {
            (Some(r), _) => format!("{r} rounds"),
            (None, Some(d)) => format!("{} minutes", d.as_secs() / 60),
            _ => unreachable!(),
        }
    );
    let report = run(&options).await?;
    println!("soak: {}", report.summary());
    println!(
        "soak: rounds {}, operations {}, files lost {}",
        report.rounds, report.operations, report.files_lost
    );
    if !report.passed() {
        // every problem about the cluster as a whole, then the first few about single files
        let (files, cluster): (Vec<&String>, Vec<&String>) =
            report.problems.iter().partition(|p| p.starts_with("group"));
        for problem in cluster.iter().chain(files.iter().take(30)) {
            println!("soak: PROBLEM {problem}");
        }
        if files.len() > 30 {
            println!(
                "soak: ... and {} more problems with single files",
                files.len() - 30
            );
        }
        println!("soak: FAILED (replay with --seed {})", report.seed);
        std::process::exit(1);
    }
    println!("soak: passed");
    Ok(())
}
