//! `fdfs`: the command-line FastDFS client.
//!
//! Output is meant for scripts: `upload` prints the file ID alone, `storages` one `ip:port`
//! per line, `bench --json` one JSON object. Errors are one line on stderr, `fdfs: <what failed>: <why> — <what to do>`, with
//! exit code 1 (2 for usage errors, from clap).

use std::io::{IsTerminal, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use fdfs_client::bench::{self, BenchConfig, Mode, Ratio, SizeSpec};
use fdfs_client::status;
use fdfs_client::{
    parse_file_id, Client, ClientConfig, ClientError, FileId, FileKind, MetadataOp, Source,
    UploadOptions,
};
use fdfs_proto::name::{classify, NameFields};
use fdfs_proto::scrub_msg::{ScrubAction, ScrubReport};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

#[path = "fdfs/migrate.rs"]
mod migrate;

/// Command-line client for FastDFS-compatible clusters (fdfs-rs or FastDFS 6.x).
#[derive(Debug, Parser)]
#[command(name = "fdfs", version)]
struct Cli {
    /// Client configuration file (TOML, like conf/client.toml). Default: ./client.toml if it
    /// exists (not read when --tracker is given without -c).
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Tracker address; repeat for several trackers. Replaces tracker_servers of the config.
    #[arg(long = "tracker", value_name = "HOST:PORT", global = true)]
    trackers: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload a file and print its file ID.
    Upload {
        /// The file to upload; "-" reads standard input.
        file: PathBuf,
        /// Store in this group instead of letting the tracker choose.
        #[arg(long)]
        group: Option<String>,
        /// Extension of the stored name (default: the file's own, if valid).
        #[arg(long)]
        ext: Option<String>,
        /// Metadata to set with the file; repeatable.
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        /// Upload as an appender file (can be appended to, modified and truncated).
        #[arg(long)]
        appender: bool,
    },
    /// Download a file (to OUT, default the file's base name here; "-" = standard output).
    Download {
        /// File ID, GROUP/Mxx/XX/YY/NAME.
        id: String,
        /// Where to write it; "-" for standard output.
        out: Option<PathBuf>,
        /// First byte to download.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Number of bytes to download (0 = to the end).
        #[arg(long, default_value_t = 0)]
        length: u64,
    },
    /// Delete a file and its metadata.
    Delete {
        /// File ID, GROUP/Mxx/XX/YY/NAME.
        id: String,
    },
    /// Show what a file ID encodes and what the storage says about the file.
    Info {
        /// File ID, GROUP/Mxx/XX/YY/NAME.
        id: String,
    },
    /// Read or change a file's metadata.
    Meta {
        #[command(subcommand)]
        command: MetaCommand,
    },
    /// List the active storages that take uploads (one ip:port per line).
    Storages {
        /// Only this group (default: the group the tracker would choose).
        group: Option<String>,
    },
    /// Cluster status from every tracker: groups, storages, counters, warnings.
    #[command(alias = "monitor")]
    Status {
        /// Print one JSON object instead of the readable view.
        #[arg(long)]
        json: bool,
        /// Refresh every SECS seconds (default 5) until interrupted.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "5")]
        watch: Option<u64>,
        /// Warn about storages whose replicated changes are older than this.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        lag_warning: Duration,
    },
    /// Storage administration on every tracker.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Check every file of the storages against the size and CRC32 recorded in its name and
    /// repair damaged copies from a peer (fdfs-rs storages only).
    ///
    /// Scrubs every storage of GROUP (default: of every group) the tracker lists, or each
    /// --storage, all at once, and waits until they finish, printing each storage's counts.
    /// Exit code 1 when a damaged file could not be repaired or a storage did not answer.
    Scrub {
        /// Only the storages of this group.
        group: Option<String>,
        /// Scrub this storage (HOST:PORT) instead of asking a tracker; repeatable.
        #[arg(long = "storage", value_name = "HOST:PORT")]
        storages: Vec<String>,
        /// Start the scrubs and return at once.
        #[arg(long, conflicts_with = "status")]
        no_wait: bool,
        /// Only print the counts of the current or last scrub.
        #[arg(long)]
        status: bool,
    },
    /// Append a file's content to an appender file.
    Append {
        /// Appender file ID.
        id: String,
        /// The data to append; "-" reads standard input.
        file: PathBuf,
    },
    /// Overwrite part of an appender file with a file's content.
    Modify {
        /// Appender file ID.
        id: String,
        /// Where to write (at most the current size).
        offset: u64,
        /// The new data; "-" reads standard input.
        file: PathBuf,
    },
    /// Shorten an appender file to SIZE bytes (default 0); a size above the current one is refused.
    Truncate {
        /// Appender file ID.
        id: String,
        /// The new length.
        #[arg(default_value_t = 0)]
        size: u64,
    },
    /// Turn an appender file into a normal file and print its new file ID.
    Regenerate {
        /// Appender file ID.
        id: String,
    },
    /// Upload a slave file of MASTER_ID (named after the master plus PREFIX) and print its ID.
    UploadSlave {
        /// The master's file ID.
        master_id: String,
        /// Added to the master's name: 1 to 16 characters of [A-Za-z0-9_.-].
        prefix: String,
        /// The file to upload; "-" reads standard input.
        file: PathBuf,
        /// Extension of the slave's name (default: the file's own, if valid).
        #[arg(long)]
        ext: Option<String>,
    },
    /// Load test: throughput and latency of uploads/downloads, or replication lag.
    ///
    /// Each operation asks a tracker, then the storage, as FastDFS clients do (unless
    /// --storage pins one). Prints ops/s, MB/s, latency percentiles and errors by status; a
    /// progress line goes to stderr once a second. Deletes what it uploaded unless --keep.
    Bench(BenchArgs),
    /// Import a directory tree (an old image server's files), mapping old URL paths to file
    /// IDs for fdfs-router; resumable: unchanged files are skipped, changed ones re-uploaded.
    Import(migrate::ImportArgs),
    /// Print the HTTP URL of a file, signed with the anti-steal secret if one is given.
    Url(migrate::UrlArgs),
}

/// What `fdfs bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchMode {
    /// Upload new files.
    Upload,
    /// Upload --files files first, then download them at random.
    Download,
    /// Uploads, downloads and deletes in the proportions of --ratio.
    Mixed,
    /// Upload, then poll every other storage of the group until it serves the file.
    Lag,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    mode: BenchMode,
    /// File size, fixed (4KiB) or a range drawn uniformly (4KiB..100KiB); K/M/G are powers
    /// of 1024.
    #[arg(long, default_value = "4KiB", value_parser = parse_size_spec)]
    size: SizeSpec,
    /// Tasks running operations at once, each with its own connections.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured operations in all (lag: samples). With --duration, whichever ends first.
    #[arg(long)]
    count: Option<u64>,
    /// Measured time (default 10s when --count is not given), e.g. 30s, 2m.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Run the same load this long before measuring (not for lag).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Upload:download:delete weights for `mixed`.
    #[arg(long, default_value = "1:8:1", value_parser = parse_ratio)]
    ratio: Ratio,
    /// Send every operation to this storage instead of asking a tracker (needs --group;
    /// lag mode still asks the tracker for the group's storages).
    #[arg(long, value_name = "HOST:PORT", requires = "group")]
    storage: Option<String>,
    /// Upload to this group.
    #[arg(long)]
    group: Option<String>,
    /// Leave the uploaded files in place.
    #[arg(long)]
    keep: bool,
    /// Files to prepare for download/mixed (default 100, fewer for large sizes: at most
    /// 256 MiB in all, at least 4 files).
    #[arg(long)]
    files: Option<u64>,
    /// Lag mode: how long to poll a peer before reporting "not replicated".
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    lag_timeout: Duration,
    /// Lag mode: pause between two polls of a peer (the resolution of the lags measured).
    #[arg(long, default_value = "2ms", value_parser = parse_duration)]
    lag_poll: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Worker threads of the client (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

impl BenchArgs {
    fn config(&self) -> BenchConfig {
        let mode = match self.mode {
            BenchMode::Upload => Mode::Upload,
            BenchMode::Download => Mode::Download,
            BenchMode::Mixed => Mode::Mixed(self.ratio),
            BenchMode::Lag => Mode::Lag,
        };
        BenchConfig {
            mode,
            size: self.size,
            concurrency: self.concurrency,
            count: self.count,
            duration: match (self.count, self.duration) {
                (None, None) => Some(Duration::from_secs(10)),
                (_, duration) => duration,
            },
            warmup: self.warmup,
            storage: self.storage.clone(),
            group: self.group.clone(),
            keep: self.keep,
            files: self.files,
            lag_timeout: self.lag_timeout,
            lag_poll: self.lag_poll,
            progress: !self.quiet,
        }
    }
}

fn parse_size_spec(text: &str) -> Result<SizeSpec, String> {
    text.parse()
}

fn parse_ratio(text: &str) -> Result<Ratio, String> {
    text.parse()
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    fdfs_proto::units::parse_duration(text)
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Remove a stopped (OFFLINE) storage from a group on every tracker (command 93).
    Delete {
        /// The storage's group.
        group: String,
        /// The storage's id (server_id).
        storage_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum MetaCommand {
    /// Print the metadata as KEY=VALUE lines.
    Get {
        /// File ID, GROUP/Mxx/XX/YY/NAME.
        id: String,
    },
    /// Replace the metadata (or merge into it with --merge).
    Set {
        /// File ID, GROUP/Mxx/XX/YY/NAME.
        id: String,
        /// KEY=VALUE pairs; none with overwrite removes all metadata.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_meta)]
        pairs: Vec<(String, String)>,
        /// Merge into the existing metadata instead of replacing it.
        #[arg(long)]
        merge: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match &cli.command {
        // the load generator wants every core; the other commands one thread
        Command::Bench(args) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = args.threads.filter(|threads| *threads > 0) {
                builder.worker_threads(threads);
            }
            builder.enable_all().build()
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("fdfs: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fdfs: {}", render_error(&err));
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// One line: the contexts, then the client error's own message (which already names its
/// cause and what to do, so its sources are not repeated).
fn render_error(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        parts.push(cause.to_string());
        let client_error = cause.downcast_ref::<ClientError>().is_some()
            || matches!(
                cause.downcast_ref::<bench::BenchError>(),
                Some(bench::BenchError::Client(_))
            );
        if client_error {
            break;
        }
    }
    parts.join(": ")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Url(args) = &cli.command {
        // no tracker is asked: the config only supplies the HTTP keys, if there is one
        let config = match (&cli.config, Path::new("client.toml")) {
            (Some(path), _) => Some(ClientConfig::from_file(path).context("configuration")?),
            (None, default) if default.is_file() => {
                Some(ClientConfig::from_file(default).context("configuration")?)
            }
            _ => None,
        };
        return migrate::url(config.as_ref(), args);
    }
    let config = load_config(
        cli.config.as_deref(),
        &cli.trackers,
        Path::new("client.toml"),
    )
    .context("configuration")?;
    let client = Client::new(config).context("configuration")?;
    match cli.command {
        Command::Upload {
            file,
            group,
            ext,
            meta,
            appender,
        } => {
            let options = UploadOptions {
                ext: ext.unwrap_or_default(),
                group,
                metadata: meta,
            };
            let id = upload(&client, &file, &options, appender)
                .await
                .with_context(|| format!("upload {}", file.display()))?;
            println!("{id}");
        }
        Command::Download {
            id,
            out,
            offset,
            length,
        } => {
            let context = || format!("download {id}");
            let file_id = parse_file_id(&id).with_context(context)?;
            download(&client, &file_id, out, offset, length)
                .await
                .with_context(context)?;
        }
        Command::Delete { id } => {
            let context = || format!("delete {id}");
            let file_id = parse_file_id(&id).with_context(context)?;
            client.delete(&file_id).await.with_context(context)?;
        }
        Command::Info { id } => {
            let context = || format!("info {id}");
            let file_id = parse_file_id(&id).with_context(context)?;
            let mut lines = name_report(&file_id).with_context(context)?;
            let info = client.file_info(&file_id).await.with_context(context)?;
            lines.extend(server_report(&info));
            print_report(&lines);
        }
        Command::Meta {
            command: MetaCommand::Get { id },
        } => {
            let context = || format!("meta get {id}");
            let file_id = parse_file_id(&id).with_context(context)?;
            for (name, value) in client.get_metadata(&file_id).await.with_context(context)? {
                println!("{name}={value}");
            }
        }
        Command::Meta {
            command: MetaCommand::Set { id, pairs, merge },
        } => {
            let context = || format!("meta set {id}");
            let file_id = parse_file_id(&id).with_context(context)?;
            let op = if merge {
                MetadataOp::Merge
            } else {
                MetadataOp::Overwrite
            };
            client
                .set_metadata(&file_id, &pairs, op)
                .await
                .with_context(context)?;
        }
        Command::Storages { group } => {
            let reply = client
                .query_store_all(group.as_deref())
                .await
                .context("storages")?;
            for server in reply.servers {
                println!("{server}");
            }
        }
        Command::Status {
            json,
            watch,
            lag_warning,
        } => {
            let options = status::StatusOptions { lag_warning };
            loop {
                let report = status::cluster_status(client.config(), &options).await;
                if json {
                    println!("{}", report.to_json());
                } else {
                    if watch.is_some() && std::io::stdout().is_terminal() {
                        // clear the screen between refreshes
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", report.render());
                }
                match watch {
                    Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
                    None => break,
                }
            }
        }
        Command::Storage {
            command: StorageCommand::Delete { group, storage_id },
        } => {
            let outcomes = status::delete_storage(client.config(), &group, &storage_id).await;
            for outcome in &outcomes {
                match &outcome.result {
                    Ok(()) => println!("{}: deleted", outcome.tracker),
                    Err(err) => println!("{}: {err}", outcome.tracker),
                }
            }
            status::judge_delete(&outcomes)
                .map_err(|reason| anyhow::anyhow!(reason))
                .with_context(|| format!("storage delete {group} {storage_id}"))?;
        }
        Command::Scrub {
            group,
            storages,
            no_wait,
            status,
        } => {
            let targets = if storages.is_empty() {
                scrub_targets(&client, group.as_deref())
                    .await
                    .context("scrub: listing storages")?
            } else {
                storages
            };
            scrub(&client, &targets, status, no_wait).await?;
        }
        Command::Append { id, file } => {
            let context = || format!("append {id}");
            let file_id = parse_file_id(&id).with_context(context)?;
            let (reader, size) = open_input(&file).await.with_context(context)?;
            client
                .append_reader(&file_id, reader, size)
                .await
                .with_context(context)?;
        }
        Command::Modify { id, offset, file } => {
            let context = || format!("modify {id}");
            let file_id = parse_file_id(&id).with_context(context)?;
            let (reader, size) = open_input(&file).await.with_context(context)?;
            client
                .modify_reader(&file_id, offset, reader, size)
                .await
                .with_context(context)?;
        }
        Command::Truncate { id, size } => {
            let context = || format!("truncate {id}");
            let file_id = parse_file_id(&id).with_context(context)?;
            client
                .truncate(&file_id, size)
                .await
                .with_context(context)?;
        }
        Command::Regenerate { id } => {
            let context = || format!("regenerate {id}");
            let file_id = parse_file_id(&id).with_context(context)?;
            let new_id = client.regenerate(&file_id).await.with_context(context)?;
            println!("{new_id}");
        }
        Command::UploadSlave {
            master_id,
            prefix,
            file,
            ext,
        } => {
            let context = || format!("upload-slave {master_id} {}", file.display());
            let master = parse_file_id(&master_id).with_context(context)?;
            let ext = ext.unwrap_or_default();
            let id = if file == Path::new("-") {
                let (reader, size) = open_input(&file).await.with_context(context)?;
                client
                    .upload_slave_reader(&master, &prefix, &ext, reader, size)
                    .await
            } else {
                client
                    .upload_slave_file(&master, &prefix, &ext, &file)
                    .await
            }
            .with_context(context)?;
            println!("{id}");
        }
        Command::Import(args) => migrate::import(&client, &args).await?,
        Command::Url(args) => migrate::url(Some(client.config()), &args)?,
        Command::Bench(args) => {
            let config = args.config();
            let report = bench::run(client.config().clone(), &config)
                .await
                .with_context(|| format!("bench {}", config.mode.name()))?;
            if args.json {
                println!("{}", report.to_json());
            } else {
                println!("{report}");
            }
        }
    }
    Ok(())
}

/// The configuration: `--tracker` if given (over the `-c` file's settings, or the defaults),
/// else the `-c` file, else `default_file` if it exists.
/// `ip:port` of every storage of `group` (or of every group) the first answering tracker
/// lists.
async fn scrub_targets(client: &Client, group: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut last_error = None;
    for tracker in &client.config().tracker_servers {
        match status::list_tracker(client.config(), tracker).await {
            Ok((groups, _)) => {
                let targets: Vec<String> = groups
                    .iter()
                    .filter(|g| group.is_none_or(|wanted| g.stat.name == wanted))
                    .flat_map(|g| &g.storages)
                    .map(|s| format!("{}:{}", s.ip, s.storage_port))
                    .collect();
                if targets.is_empty() {
                    bail!(
                        "the tracker at {tracker} lists no storage{}",
                        group.map(|g| format!(" in group {g}")).unwrap_or_default()
                    );
                }
                return Ok(targets);
            }
            Err(err) => {
                last_error = Some(anyhow::Error::new(err).context(format!("tracker {tracker}")))
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no tracker configured")))
}

fn scrub_line(addr: &str, report: &ScrubReport) -> String {
    let state = if report.running {
        "running"
    } else if report.started_at == 0 {
        "never scrubbed"
    } else {
        "finished"
    };
    format!(
        "{addr}: {state}: checked {} corrupt {} repaired {} unrepairable {} skipped {} read {} bytes",
        report.checked, report.corrupt, report.repaired, report.unrepairable, report.skipped, report.bytes
    )
}

/// Starts (unless `status_only`) a scrub on every target, then (unless `no_wait`) polls
/// them until none runs; prints one line per storage.
async fn scrub(
    client: &Client,
    targets: &[String],
    status_only: bool,
    no_wait: bool,
) -> anyhow::Result<()> {
    let action = if status_only {
        ScrubAction::Status
    } else {
        ScrubAction::Start
    };
    let mut failed = Vec::new();
    let mut refused = Vec::new();
    let mut pending = Vec::new();
    for addr in targets {
        match client.scrub(addr, action).await {
            Ok(report) if report.running && !status_only && !no_wait => pending.push(addr.clone()),
            Ok(report) => println!("{}", scrub_line(addr, &report)),
            Err(err) if err.status() == Some(fdfs_proto::status::EPERM) => {
                eprintln!("fdfs: scrub {addr}: refused (status 1, EPERM): this host is not in the storage's admin_hosts");
                refused.push(addr.clone());
            }
            Err(err) => {
                eprintln!("fdfs: scrub {addr}: {err}");
                failed.push(addr.clone());
            }
        }
    }
    let mut finished = Vec::new();
    while !pending.is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut still = Vec::new();
        for addr in pending {
            match client.scrub(&addr, ScrubAction::Status).await {
                Ok(report) if report.running => still.push(addr),
                Ok(report) => {
                    println!("{}", scrub_line(&addr, &report));
                    finished.push(report);
                }
                Err(err) => {
                    eprintln!("fdfs: scrub {addr}: {err}");
                    failed.push(addr);
                }
            }
        }
        pending = still;
    }
    let unrepairable: i64 = finished.iter().map(|r| r.unrepairable).sum();
    if !refused.is_empty() {
        bail!(
            "scrub: {} storage(s) refused: {} — run fdfs scrub from a host listed in their admin_hosts (storage.toml), or add this host there and restart them",
            refused.len(),
            refused.join(", ")
        );
    }
    if !failed.is_empty() {
        bail!(
            "scrub: {} storage(s) did not answer: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    if unrepairable > 0 {
        bail!("scrub: {unrepairable} damaged file(s) had no good copy on any peer — see the storage logs for their names");
    }
    Ok(())
}

fn load_config(
    file: Option<&Path>,
    trackers: &[String],
    default_file: &Path,
) -> anyhow::Result<ClientConfig> {
    let mut config = match file {
        Some(path) => ClientConfig::from_file(path)?,
        None if !trackers.is_empty() => ClientConfig::new(Vec::new()),
        None if default_file.is_file() => ClientConfig::from_file(default_file)?,
        None => bail!(
            "no tracker given and no {} here — pass --tracker HOST:PORT or -c client.toml",
            default_file.display()
        ),
    };
    if !trackers.is_empty() {
        config.tracker_servers = trackers.to_vec();
    }
    config.validate()?;
    Ok(config)
}

/// `--meta` and `meta set` arguments: `KEY=VALUE` (the value may contain `=` or be empty).
fn parse_meta(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

async fn upload(
    client: &Client,
    file: &Path,
    options: &UploadOptions,
    appender: bool,
) -> Result<FileId, ClientError> {
    match (file == Path::new("-"), appender) {
        (false, false) => client.upload_file(file, options).await,
        (false, true) => client.upload_appender_file(file, options).await,
        (true, appender) => {
            let (reader, size) = open_input(file).await?;
            if appender {
                client.upload_appender_reader(reader, size, options).await
            } else {
                client.upload_reader(reader, size, options).await
            }
        }
    }
}

/// A command's input data and its size: the file, or for "-" standard input spooled to an
/// anonymous temporary file (requests carry the size before the data).
async fn open_input(file: &Path) -> Result<(tokio::fs::File, u64), ClientError> {
    if file != Path::new("-") {
        let file_err = |source| ClientError::File {
            action: "open",
            path: file.to_path_buf(),
            source,
        };
        let opened = tokio::fs::File::open(file).await.map_err(file_err)?;
        let meta = opened.metadata().await.map_err(file_err)?;
        if !meta.is_file() {
            return Err(file_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        return Ok((opened, meta.len()));
    }
    let spool = tempfile::tempfile().map_err(|source| ClientError::File {
        action: "create a temporary file in",
        path: std::env::temp_dir(),
        source,
    })?;
    let mut spool = tokio::fs::File::from_std(spool);
    let size = tokio::io::copy(&mut tokio::io::stdin(), &mut spool).await?;
    spool.flush().await?;
    spool.seek(SeekFrom::Start(0)).await?;
    Ok((spool, size))
}

async fn download(
    client: &Client,
    id: &FileId,
    out: Option<PathBuf>,
    offset: u64,
    length: u64,
) -> Result<(), ClientError> {
    match out {
        Some(path) if path == Path::new("-") => {
            let mut stdout = tokio::io::stdout();
            client
                .download_to_writer(id, offset, length, &mut stdout)
                .await?;
            stdout.flush().await?;
        }
        other => {
            let path = other.unwrap_or_else(|| PathBuf::from(id.name.base()));
            client
                .download_file_range(id, offset, length, &path)
                .await?;
        }
    }
    Ok(())
}

/// What the file ID itself encodes (H.2, H.8), decoded locally.
fn name_report(id: &FileId) -> Result<Vec<(&'static str, String)>, ClientError> {
    let logical = id.name.to_string();
    let fields = NameFields::from_logical_name(&logical)
        .map_err(|err| ClientError::invalid_file_id(&id.to_string(), &err))?;
    let kind = classify(&logical, &fields);
    let mut lines = vec![
        ("file id", id.to_string()),
        ("group", id.group.clone()),
        ("kind", kind.as_str().to_string()),
    ];
    match fields.source {
        Source::Id(storage_id) => lines.push(("source storage id", storage_id.to_string())),
        Source::Ip(ip) => lines.push(("source ip", ip.to_string())),
    }
    // a slave's name carries its master's record (H.9); an appender's its creation state
    let note = match kind {
        FileKind::Slave => " (of the master file)",
        FileKind::Appender => " (at creation)",
        FileKind::Normal | FileKind::Trunk => "",
    };
    lines.push((
        "create timestamp",
        format!("{}{note}", format_time(u64::from(fields.timestamp))),
    ));
    let size = match kind {
        FileKind::Normal | FileKind::Trunk => fields.file_size().to_string(),
        FileKind::Slave => format!("{}{note}", fields.file_size()),
        FileKind::Appender => "not in the name (appender file)".to_string(),
    };
    lines.push(("size", size));
    lines.push(("crc32", format!("{:#010x}{note}", fields.crc32)));
    Ok(lines)
}

/// What the storage answered to QUERY_FILE_INFO.
fn server_report(info: &fdfs_client::FileInfo) -> Vec<(&'static str, String)> {
    vec![
        ("server size", info.size.to_string()),
        ("server mtime", format_time(info.create_timestamp)),
        ("server crc32", format!("{:#010x}", info.crc32)),
        ("server source ip", info.source_ip.clone()),
    ]
}

fn print_report(lines: &[(&'static str, String)]) {
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 1;
    for (label, value) in lines {
        println!("{:<width$} {value}", format!("{label}:"), width = width);
    }
}

/// `2026-11-22 22:34:09 UTC (1795386849)`.
fn format_time(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC ({unix})",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fdfs").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn meta_arguments() {
        assert_eq!(parse_meta("a=b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(parse_meta("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(
            parse_meta("empty=").unwrap(),
            ("empty".into(), String::new())
        );
        assert!(parse_meta("novalue").is_err());
        assert!(parse_meta("=v").is_err());

        let cli = parse(&[
            "--tracker",
            "127.0.0.1:22122",
            "upload",
            "a.txt",
            "--meta",
            "w=160",
            "--meta",
            "h=80",
            "--group",
            "group1",
        ])
        .unwrap();
        match cli.command {
            Command::Upload {
                file,
                group,
                meta,
                ext,
                appender,
            } => {
                assert!(!appender);
                assert_eq!(file, PathBuf::from("a.txt"));
                assert_eq!(group.as_deref(), Some("group1"));
                assert_eq!(ext, None);
                assert_eq!(
                    meta,
                    [("w".into(), "160".into()), ("h".into(), "80".into())]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = parse(&["upload", "a.txt", "--meta", "oops"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    proptest::proptest! {
        #[test]
        fn meta_arguments_split_at_the_first_equals(key in "[^=]{1,20}", value in "\\PC{0,40}") {
            let parsed = parse_meta(&format!("{key}={value}")).unwrap();
            proptest::prop_assert_eq!(parsed, (key, value));
        }
    }

    #[test]
    fn commands_and_options() {
        let cli = parse(&[
            "-c", "c.toml", "download", "g/x", "-", "--offset", "5", "--length", "7",
        ])
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("c.toml")));
        assert!(matches!(
            cli.command,
            Command::Download { ref out, offset: 5, length: 7, .. } if out.as_deref() == Some(Path::new("-"))
        ));
        let cli = parse(&[
            "meta",
            "set",
            "g/x",
            "a=1",
            "b=2",
            "--merge",
            "--tracker",
            "h:1",
            "--tracker",
            "h:2",
        ])
        .unwrap();
        assert_eq!(cli.trackers, ["h:1", "h:2"]);
        assert!(matches!(
            cli.command,
            Command::Meta { command: MetaCommand::Set { merge: true, ref pairs, .. } } if pairs.len() == 2
        ));
        let cli = parse(&["upload", "-", "--appender", "--ext", "log"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Upload { appender: true, .. }
        ));
        let cli = parse(&["truncate", "g/x"]).unwrap();
        assert!(matches!(cli.command, Command::Truncate { size: 0, .. }));
        let cli = parse(&["truncate", "g/x", "42"]).unwrap();
        assert!(matches!(cli.command, Command::Truncate { size: 42, .. }));
        let cli = parse(&["modify", "g/x", "7", "patch.bin"]).unwrap();
        assert!(matches!(cli.command, Command::Modify { offset: 7, .. }));
        assert!(parse(&["modify", "g/x", "patch.bin"]).is_err());
        let cli = parse(&["upload-slave", "g/m", "_s", "thumb.jpg", "--ext", "png"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::UploadSlave { ref prefix, ext: Some(ref ext), .. } if prefix == "_s" && ext == "png"
        ));
        let cli = parse(&["append", "g/x", "-"]).unwrap();
        assert!(matches!(cli.command, Command::Append { .. }));
        let cli = parse(&["regenerate", "g/x"]).unwrap();
        assert!(matches!(cli.command, Command::Regenerate { .. }));
        let cli = parse(&["storages"]).unwrap();
        assert!(matches!(cli.command, Command::Storages { group: None }));
        assert!(parse(&["frobnicate"]).is_err());
        assert!(parse(&["download"]).is_err());
        assert!(parse(&["download", "id", "--offset", "-1"]).is_err());
    }

    #[test]
    fn config_sources() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("client.toml");
        let err = load_config(None, &[], &missing).unwrap_err();
        assert!(err.to_string().contains("--tracker"), "{err}");

        let config = load_config(None, &["h:1".into()], &missing).unwrap();
        assert_eq!(config.tracker_servers, ["h:1"]);

        std::fs::write(
            &missing,
            "tracker_servers = [\"f:1\"]\nnetwork_timeout = \"3s\"\n",
        )
        .unwrap();
        let config = load_config(None, &[], &missing).unwrap();
        assert_eq!(config.tracker_servers, ["f:1"]);
        let explicit = dir.path().join("other.toml");
        std::fs::write(
            &explicit,
            "tracker_servers = [\"o:1\"]\nnetwork_timeout = \"4s\"\n",
        )
        .unwrap();
        let config = load_config(Some(&explicit), &["t:1".into()], &missing).unwrap();
        assert_eq!(config.tracker_servers, ["t:1"]);
        assert_eq!(config.network_timeout, std::time::Duration::from_secs(4));
        assert!(load_config(None, &["bad".into()], &missing).is_err());
    }

    fn report(id: &str) -> Vec<(&'static str, String)> {
        name_report(&FileId::parse(id).unwrap()).unwrap()
    }

    fn value<'a>(lines: &'a [(&'static str, String)], label: &str) -> &'a str {
        &lines.iter().find(|(l, _)| *l == label).unwrap().1
    }

    /// H.12 vectors, as `fdfs_file_info` prints them.
    #[test]
    fn local_name_decoding() {
        let lines = report("group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt");
        assert_eq!(value(&lines, "group"), "group1");
        assert_eq!(value(&lines, "kind"), "normal");
        assert_eq!(value(&lines, "source ip"), "127.0.0.31");
        assert_eq!(
            value(&lines, "create timestamp"),
            "2026-11-22 22:34:09 UTC (1795386849)"
        );
        assert_eq!(value(&lines, "size"), "6");
        assert_eq!(value(&lines, "crc32"), "0x363a3020");

        let lines = report("group1/M00/00/00/fwAAH2sDbeuEAzFAAAAAADY6MCA790.txt");
        assert_eq!(value(&lines, "kind"), "appender");
        assert!(value(&lines, "size").contains("appender"));

        let lines = report("group1/M00/00/00/fwAAH2sDbfeAf-LuAAAABjY6MCA7161024x1024.txt");
        assert_eq!(value(&lines, "kind"), "slave");
        assert!(value(&lines, "size").starts_with("6 "));

        let lines = report("group2/M00/1F/98/oYYBAGsDbvqAM2mPAAAABjY6MCA581.txt");
        assert_eq!(value(&lines, "source storage id"), "100001");

        let lines = report("group1/M00/00/00/fwAAH2sDbiiAPSwfAAAAFoA2zqM266.txt");
        assert_eq!(value(&lines, "crc32"), "0x8036cea3");
        assert_eq!(value(&lines, "size"), "22");

        let short = FileId::parse("group1/M00/00/00/abcdefgh").unwrap();
        let err = name_report(&short).unwrap_err();
        assert!(err.to_string().contains("GROUP/Mxx/XX/YY/NAME"), "{err}");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC (0)");
        assert_eq!(
            format_time(951_782_400),
            "2000-02-29 00:00:00 UTC (951782400)"
        );
        assert_eq!(
            format_time(1_795_387_130),
            "2026-11-22 22:38:50 UTC (1795387130)"
        );
        assert_eq!(
            format_time(4_102_444_799),
            "2099-12-31 23:59:59 UTC (4102444799)"
        );
    }

    #[test]
    fn errors_render_on_one_line_without_repeating_causes() {
        let err = anyhow::Error::new(ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from_raw_os_error(111),
        })
        .context("delete g/x");
        let line = render_error(&err);
        assert!(
            line.starts_with("delete g/x: cannot connect to 127.0.0.1:1: "),
            "{line}"
        );
        assert_eq!(line.matches("os error 111").count(), 1, "{line}");
        assert!(!line.contains('\n'));
        let bad = parse_file_id("nonsense").map_err(anyhow::Error::new);
        let line = render_error(&bad.unwrap_err().context("download nonsense"));
        assert!(line.contains("GROUP/Mxx/XX/YY/NAME"), "{line}");
    }
}
