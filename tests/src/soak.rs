//! Crash soak (issue 8, "Crashes"): a mixed client workload (uploads, appender uploads,
//! appends, modifies, truncates and regenerates, deletes, metadata) runs against a tracker and a replicated group while a random
//! process — the tracker or a storage — is killed with SIGKILL at a random moment of each
//! round and restarted; a storage joins the group halfway. Afterwards every acknowledged
//! change is checked on every ACTIVE storage, on disk:
//!
//! * every acknowledged upload exists byte-exact (with its acknowledged changes) on each
//!   storage, and every acknowledged delete (and old name of a regenerate) is gone from each;
//! * once replication has converged (bounded by a deadline) the storages hold the same files
//!   with the same bytes, and that set is exactly what the binlogs say is live (files created
//!   minus files deleted, over all storages' binlogs);
//! * nothing is left in `data/.tmp`, and after a clean restart (SIGTERM, start) every binlog
//!   file consists of whole, checksummed records with gapless sequence numbers.
//!
//! One implementation serves the CI test (`tests/integration/soak.rs`, a few seeded rounds)
//! and the long run (`scripts/soak`, via the `fdfs-soak` binary). The seed is printed; the
//! choices (operations, sizes, victims, moments) replay from it, the exact interleaving with
//! the servers does not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fdfs_client::{Client, ClientConfig, ClientError, FileId, MetadataOp, UploadOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{stored_files, Cluster, StorageSpec};

const GROUP: &str = "group1";

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub seed: u64,
    /// Stop after this many rounds...
    pub rounds: Option<u64>,
    /// ...or once this much time has passed (whichever comes first).
    pub duration: Option<Duration>,
    /// Length of the workload in one round; the kill falls somewhere inside it.
    pub round_length: Duration,
    /// Concurrent clients.
    pub workers: usize,
    /// Storages at the start (one more joins halfway through the first rounds).
    pub storages: usize,
    /// How long replication may take to converge at the end.
    pub converge_timeout: Duration,
    /// Print a line per round to stderr.
    pub verbose: bool,
    /// Which processes may be killed.
    pub victims: Victims,
    /// Keep the cluster's directories when a check fails.
    pub keep_on_failure: bool,
    /// Appends and metadata too, or only whole-file uploads and deletes.
    pub mixed: bool,
    /// Lines added to every storage's config (e.g. `fsync = false`).
    pub storage_config: String,
}

/// Which processes the soak kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Victims {
    All,
    Tracker,
    Storages,
}

impl SoakOptions {
    pub fn new(seed: u64) -> Self {
        SoakOptions {
            seed,
            rounds: None,
            duration: None,
            round_length: Duration::from_secs(2),
            workers: 4,
            storages: 2,
            converge_timeout: Duration::from_secs(60),
            verbose: false,
            victims: Victims::All,
            keep_on_failure: false,
            mixed: true,
            storage_config: String::new(),
        }
    }
}

/// What happened, and what the checks found.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub seed: u64,
    pub rounds: u64,
    /// Client operations attempted / acknowledged.
    pub operations: u64,
    pub acknowledged: u64,
    pub uploads_acked: u64,
    pub appends_acked: u64,
    pub deletes_acked: u64,
    pub metadata_acked: u64,
    /// SIGKILLs sent, by victim ("tracker", "storage").
    pub kills: BTreeMap<&'static str, u64>,
    /// Files the storages hold at the end (each checked on every storage).
    pub files_checked: usize,
    /// Acknowledged files missing or with other bytes on some storage...
    pub files_lost: usize,
    /// ...of which missing somewhere (the rest have other bytes, e.g. a lost append).
    pub files_missing: usize,
    /// Acknowledged deletes whose file is still somewhere.
    pub deletes_lost: usize,
    /// Binlog records of new files that no storage holds and no client heard of: uploads
    /// killed between their record and their link (expected, skipped by the peers).
    pub aborted_uploads: usize,
    /// Every broken guarantee, in words.
    pub problems: Vec<String>,
    /// Where the cluster's directories were kept (`keep_on_failure`).
    pub kept: Option<std::path::PathBuf>,
}

impl SoakReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn summary(&self) -> String {
        let kills: Vec<String> = self.kills.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "seed {}: {} rounds, {} operations ({} acknowledged: {} uploads, {} appender changes, {} deletes, {} metadata), kills: {}, {} files checked on every storage, files lost: {} ({} missing, the rest with other bytes), deletes lost: {}, aborted uploads (recorded, never linked, never acknowledged): {}, problems: {}",
            self.seed,
            self.rounds,
            self.operations,
            self.acknowledged,
            self.uploads_acked,
            self.appends_acked,
            self.deletes_acked,
            self.metadata_acked,
            if kills.is_empty() { "none".into() } else { kills.join(", ") },
            self.files_checked,
            self.files_lost,
            self.files_missing,
            self.deletes_lost,
            self.aborted_uploads,
            self.problems.len()
        )
    }
}

/// What a worker knows about one of its files. `None` = an unacknowledged change may or may
/// not have happened, so that part is not checked (the file is still compared across
/// storages and against the binlogs).
#[derive(Clone, Debug)]
struct Tracked {
    id: FileId,
    appender: bool,
    content: Option<Vec<u8>>,
    metadata: Option<Vec<(String, String)>>,
    deleted: Option<bool>,
    /// What was done to it and what the client heard, for the problem report.
    history: Vec<String>,
}

#[derive(Debug, Default)]
struct Ledger {
    files: Vec<Tracked>,
    operations: u64,
    acknowledged: u64,
    uploads: u64,
    appends: u64,
    deletes: u64,
    metadata: u64,
}

/// Whether a failed change certainly did not happen: the server refused it up front.
fn refused(err: &ClientError) -> bool {
    matches!(err.status(), Some(2 | 22 | 28))
}

fn content(rng: &mut StdRng) -> Vec<u8> {
    let len = if rng.gen_bool(0.05) {
        rng.gen_range(64 * 1024..512 * 1024)
    } else {
        rng.gen_range(0..16 * 1024)
    };
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    bytes
}

fn soak_client(cluster: &Cluster) -> Result<Client> {
    let mut config = ClientConfig::new(vec![cluster.tracker_addr()]);
    config.connect_timeout = Duration::from_secs(1);
    config.network_timeout = Duration::from_secs(3);
    // a pooled connection to a killed server only turns the next operation into an
    // uncertain one: take fresh connections
    config.pool_max_idle_per_server = 0;
    Ok(Client::new(config)?)
}

/// One client issuing random operations on its own files until `stop`.
async fn worker(
    client: Client,
    mut rng: StdRng,
    mut ledger: Ledger,
    stop: Arc<AtomicBool>,
    mixed: bool,
) -> Ledger {
    let mut acked = ledger.acknowledged;
    while !stop.load(Ordering::Relaxed) {
        if ledger.operations > 0 && ledger.acknowledged == acked {
            // the last operation failed (a server is down): pace the retries so the count of
            // operations means something
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked = ledger.acknowledged;
        ledger.operations += 1;
        let live: Vec<usize> = (0..ledger.files.len())
            .filter(|&i| ledger.files[i].deleted == Some(false))
            .collect();
        let pick = rng.gen_range(0..100);
        if live.is_empty() || pick < 35 || (!mixed && pick < 70) {
            let data = content(&mut rng);
            let appender = mixed && rng.gen_bool(0.3);
            let upload = format!(
                "{} upload {} B",
                if appender { "appender" } else { "plain" },
                data.len()
            );
            let options = UploadOptions {
                ext: if rng.gen_bool(0.5) {
                    "bin".into()
                } else {
                    String::new()
                },
                ..UploadOptions::default()
            };
            let result = if appender {
                client.upload_appender_bytes(&data, &options).await
            } else {
                client.upload_bytes(&data, &options).await
            };
            if let Ok(id) = result {
                ledger.acknowledged += 1;
                ledger.uploads += 1;
                ledger.files.push(Tracked {
                    id,
                    appender,
                    content: Some(data),
                    metadata: Some(Vec::new()),
                    deleted: Some(false),
                    history: vec![upload],
                });
            }
            continue;
        }
        let index = live[rng.gen_range(0..live.len())];
        let file = &mut ledger.files[index];
        if pick < 60 && file.appender {
            let change = rng.gen_range(0..100);
            if change < 70 {
                let mut data = vec![0u8; rng.gen_range(1..8 * 1024)];
                rng.fill(&mut data[..]);
                let result = client.append_bytes(&file.id, &data).await;
                file.history
                    .push(format!("append {} B: {result:?}", data.len()));
                match result {
                    Ok(()) => {
                        ledger.acknowledged += 1;
                        ledger.appends += 1;
                        if let Some(content) = &mut file.content {
                            content.extend_from_slice(&data);
                        }
                    }
                    Err(err) if refused(&err) => {}
                    Err(_) => file.content = None,
                }
            } else if change < 95 {
                // in place: a modify somewhere inside, or a cut; offsets come from the
                // acknowledged content (unknown content: from a guess the server may refuse)
                let len = file
                    .content
                    .as_ref()
                    .map_or_else(|| rng.gen_range(0..1024), |c| c.len() as u64);
                let at = rng.gen_range(0..=len);
                let result = if change < 85 {
                    let mut data = vec![0u8; rng.gen_range(1..4 * 1024)];
                    rng.fill(&mut data[..]);
                    let result = client.modify_bytes(&file.id, at, &data).await;
                    file.history
                        .push(format!("modify {} B at {at}: {result:?}", data.len()));
                    if let (Ok(()), Some(content)) = (&result, &mut file.content) {
                        let at = at as usize;
                        let end = at + data.len();
                        if content.len() < end {
                            content.resize(end, 0);
                        }
                        content[at..end].copy_from_slice(&data);
                    }
                    result
                } else {
                    let result = client.truncate(&file.id, at).await;
                    file.history.push(format!("truncate to {at}: {result:?}"));
                    if let (Ok(()), Some(content)) = (&result, &mut file.content) {
                        content.truncate(at as usize);
                    }
                    result
                };
                match result {
                    Ok(()) => {
                        ledger.acknowledged += 1;
                        ledger.appends += 1;
                    }
                    Err(err) if refused(&err) => {}
                    Err(_) => file.content = None,
                }
            } else {
                let result = client.regenerate(&file.id).await;
                file.history.push(format!("regenerate: {result:?}"));
                match result {
                    Ok(new_id) => {
                        ledger.acknowledged += 1;
                        ledger.appends += 1;
                        // the old name must be gone, the new one hold the same content
                        let mut renamed = file.clone();
                        file.deleted = Some(true);
                        file.content = None;
                        renamed.id = new_id;
                        renamed.appender = false;
                        renamed.history.push(format!("(renamed from {})", file.id));
                        ledger.files.push(renamed);
                    }
                    Err(err) if refused(&err) => {}
                    // renamed or not: neither name can be checked any more (both are still
                    // compared across storages and against the binlogs)
                    Err(_) => {
                        file.content = None;
                        file.metadata = None;
                        file.deleted = None;
                    }
                }
            }
        } else if pick < 80 && mixed {
            let pairs = vec![
                ("round".to_string(), rng.gen_range(0..1000u32).to_string()),
                ("owner".to_string(), format!("w{}", rng.gen_range(0..10u8))),
            ];
            let result = client
                .set_metadata(&file.id, &pairs, MetadataOp::Overwrite)
                .await;
            file.history
                .push(format!("set metadata {pairs:?}: {result:?}"));
            match result {
                Ok(()) => {
                    ledger.acknowledged += 1;
                    ledger.metadata += 1;
                    let mut sorted = pairs;
                    sorted.sort();
                    file.metadata = Some(sorted);
                }
                Err(err) if refused(&err) => {}
                Err(_) => file.metadata = None,
            }
        } else {
            let result = client.delete(&file.id).await;
            file.history.push(format!("delete: {result:?}"));
            match result {
                Ok(()) => {
                    ledger.acknowledged += 1;
                    ledger.deletes += 1;
                    file.deleted = Some(true);
                }
                Err(err) if refused(&err) => {}
                Err(_) => file.deleted = None,
            }
        }
    }
    ledger
}

fn log(options: &SoakOptions, line: impl AsRef<str>) {
    if options.verbose {
        eprintln!("soak: {}", line.as_ref());
    }
}

/// Runs the soak and checks the result. `Err` means the harness itself failed (a server
/// would not start); broken guarantees are listed in [`SoakReport::problems`].
pub async fn run(options: &SoakOptions) -> Result<SoakReport> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut report = SoakReport {
        seed: options.seed,
        ..SoakReport::default()
    };
    let mut cluster = Cluster::builder()
        .groups(&[(GROUP, options.storages)])
        .storage_config(&format!(
            "network_timeout = \"5s\"\n{}",
            options.storage_config
        ))
        .start()
        .await?;
    let mut ledgers: Vec<Ledger> = (0..options.workers).map(|_| Ledger::default()).collect();
    let join_round = 2;
    let mut round = 0u64;
    loop {
        let done_rounds = options.rounds.is_some_and(|n| round >= n);
        let done_time = options.duration.is_some_and(|d| started.elapsed() >= d);
        if done_rounds || done_time {
            break;
        }
        round += 1;
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = tokio::task::JoinSet::new();
        for (index, ledger) in std::mem::take(&mut ledgers).into_iter().enumerate() {
            let worker_rng = StdRng::seed_from_u64(rng.gen::<u64>() ^ index as u64);
            workers.spawn(worker(
                soak_client(&cluster)?,
                worker_rng,
                ledger,
                stop.clone(),
                options.mixed,
            ));
        }
        let round_ms = options.round_length.as_millis() as u64;
        let kill_at = Duration::from_millis(rng.gen_range(round_ms / 10..round_ms * 8 / 10));
        let down_for = Duration::from_millis(rng.gen_range(0..500));
        let victim = match options.victims {
            Victims::All => rng.gen_range(0..=cluster.storages.len()),
            Victims::Tracker => cluster.storages.len(),
            Victims::Storages => rng.gen_range(0..cluster.storages.len()),
        };
        let round_start = Instant::now();
        tokio::time::sleep(kill_at).await;
        let victim_name = if victim == cluster.storages.len() {
            cluster.tracker.kill();
            tokio::time::sleep(down_for).await;
            cluster.restart_tracker().await?;
            "tracker"
        } else {
            cluster.storages[victim].kill();
            tokio::time::sleep(down_for).await;
            cluster.restart_storage(victim).await?;
            "storage"
        };
        *report.kills.entry(victim_name).or_default() += 1;
        if round == join_round {
            let server_id = 100_001 + cluster.specs.len() as u32;
            cluster
                .add_storage(StorageSpec {
                    group: GROUP.into(),
                    server_id,
                    store_path_count: 1,
                    extra: "network_timeout = \"5s\"".into(),
                })
                .await?;
            log(options, format!("round {round}: storage {server_id} joins"));
        }
        if let Some(rest) = options.round_length.checked_sub(round_start.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        stop.store(true, Ordering::Relaxed);
        while let Some(ledger) = workers.join_next().await {
            ledgers.push(ledger?);
        }
        let operations: u64 = ledgers.iter().map(|l| l.operations).sum();
        let acknowledged: u64 = ledgers.iter().map(|l| l.acknowledged).sum();
        log(
            options,
            format!(
                "round {round}: killed {victim_name}{} at {kill_at:?}, down {down_for:?}; {operations} operations so far, {acknowledged} acknowledged",
                if victim_name == "storage" { format!(" #{victim}") } else { String::new() },
            ),
        );
    }
    report.rounds = round;
    for ledger in &ledgers {
        report.operations += ledger.operations;
        report.acknowledged += ledger.acknowledged;
        report.uploads_acked += ledger.uploads;
        report.appends_acked += ledger.appends;
        report.deletes_acked += ledger.deletes;
        report.metadata_acked += ledger.metadata;
    }
    let files: Vec<Tracked> = ledgers.into_iter().flat_map(|l| l.files).collect();
    log(
        options,
        "workload done; waiting for replication to converge",
    );
    check(&mut cluster, options, &files, &mut report).await?;
    if !report.passed() && options.keep_on_failure {
        // stop the servers, keep their directories (data, binlogs, logs) for a post-mortem
        let Cluster {
            root,
            tracker,
            storages,
            ..
        } = cluster;
        drop((tracker, storages));
        let kept = root.keep();
        log(
            options,
            format!("cluster directories kept in {}", kept.display()),
        );
        report.kept = Some(kept);
    }
    Ok(report)
}

/// The files of one storage: `XX/YY/name` → bytes.
type Snapshot = BTreeMap<String, Vec<u8>>;

fn snapshot(cluster: &Cluster, index: usize) -> Snapshot {
    let data = cluster.store_path(index, 0).join("data");
    stored_files(&data)
        .into_iter()
        .filter_map(|path| {
            let relative = path
                .strip_prefix(&data)
                .ok()?
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).ok()?;
            Some((relative, bytes))
        })
        .collect()
}

fn temp_files(cluster: &Cluster, index: usize) -> usize {
    crate::files_under(&cluster.store_path(index, 0).join("data/.tmp")).len()
}

/// `M00/XX/YY/name` → `XX/YY/name` (the path below `data/`; one store path here).
fn relative(logical: &str) -> String {
    logical
        .split_once('/')
        .map_or(logical, |(_, rest)| rest)
        .to_string()
}

/// One parsed binlog line: the op letter and its names.
struct BinlogLine {
    seq: u64,
    op: char,
    name: String,
    extra: Vec<String>,
}

/// Parses every binlog file of a storage; a line that is not a whole, checksummed record is
/// an error naming the file and line.
fn read_binlogs(sync_dir: &Path) -> Result<Vec<BinlogLine>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(sync_dir)
        .map_err(|err| format!("{}: {err}", sync_dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("binlog."))
                .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    paths.sort();
    let mut lines = Vec::new();
    for path in paths {
        let text = std::fs::read(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        if !text.is_empty() && !text.ends_with(b"\n") {
            return Err(format!("{}: torn last record", path.display()));
        }
        for (number, raw) in text.split(|&b| b == b'\n').enumerate() {
            if raw.is_empty() {
                continue;
            }
            let bad = |why: &str| format!("{} line {}: {why}", path.display(), number + 1);
            let line = std::str::from_utf8(raw).map_err(|_| bad("not text"))?;
            let (crc, payload) = line.split_once(' ').ok_or_else(|| bad("no checksum"))?;
            let crc = u32::from_str_radix(crc, 16).map_err(|_| bad("bad checksum field"))?;
            if crc32fast::hash(payload.as_bytes()) != crc {
                return Err(bad("checksum mismatch"));
            }
            let fields: Vec<&str> = payload.split(' ').collect();
            if fields.len() < 5 {
                return Err(bad("too few fields"));
            }
            let seq = fields[0].parse().map_err(|_| bad("bad seq"))?;
            let op = fields[3].chars().next().ok_or_else(|| bad("no op"))?;
            lines.push(BinlogLine {
                seq,
                op,
                name: fields[4].to_string(),
                extra: fields[5..].iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    for (i, pair) in lines.windows(2).enumerate() {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(format!(
                "{}: seq {} follows {} (record {})",
                sync_dir.display(),
                pair[1].seq,
                pair[0].seq,
                i + 2
            ));
        }
    }
    Ok(lines)
}

/// What the binlogs of all storages say exists.
struct BinlogLive {
    /// Created (C, U, L, the new name of R) and not deleted since (D takes a data file's `-m`
    /// sidecar along; R removes the old name). Names are never reused, so the order across
    /// storages does not matter.
    live: BTreeSet<String>,
    /// Old name → new name of renames (R) whose old name no delete removed.
    renamed: BTreeMap<String, String>,
}

fn live_from_binlogs(all: &[Vec<BinlogLine>]) -> BinlogLive {
    let mut created = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut renamed = BTreeMap::new();
    let mut removed = BTreeSet::new();
    for lines in all {
        for line in lines {
            let name = relative(&line.name);
            match line.op {
                'C' | 'U' | 'L' => {
                    created.insert(name);
                }
                'R' => {
                    if let Some(old) = line.extra.first() {
                        deleted.insert(relative(old));
                        renamed.insert(relative(old), name.clone());
                    }
                    created.insert(name);
                }
                'D' => {
                    deleted.insert(format!("{name}-m"));
                    removed.insert(name.clone());
                    deleted.insert(name);
                }
                _ => {}
            }
        }
    }
    renamed.retain(|old, _| !removed.contains(old));
    // a rename takes the sidecar along
    for (old, new) in &renamed {
        let sidecar = format!("{old}-m");
        if created.contains(&sidecar) && !removed.contains(&sidecar) {
            deleted.insert(sidecar);
            created.insert(format!("{new}-m"));
        }
    }
    BinlogLive {
        live: created.difference(&deleted).cloned().collect(),
        renamed,
    }
}

/// Compares the storages with each other, with the binlogs and with the ledger.
fn compare(
    cluster: &Cluster,
    files: &[Tracked],
    binlogs: Option<&BinlogLive>,
    report: &mut SoakReport,
) -> Vec<String> {
    let mut problems = Vec::new();
    let snapshots: Vec<Snapshot> = (0..cluster.storages.len())
        .map(|i| snapshot(cluster, i))
        .collect();
    for (i, snap) in snapshots.iter().enumerate().skip(1) {
        let first = &snapshots[0];
        let differ: Vec<&String> = first
            .keys()
            .chain(snap.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|name| first.get(*name) != snap.get(*name))
            .collect();
        if !differ.is_empty() {
            problems.push(format!(
                "storage #0 and #{i} differ on {} files, e.g. {:?}",
                differ.len(),
                &differ[..differ.len().min(5)]
            ));
        }
    }
    if let Some(BinlogLive { live, renamed }) = binlogs {
        // A new file (or new name) is recorded in the binlog just before it is linked under
        // its name, so a kill in between leaves a record of a file that never appeared
        // anywhere; its upload (or rename) was never acknowledged. Such records are expected
        // (the peers skip them); anything else that disagrees is a problem.
        let acknowledged: BTreeSet<String> = files
            .iter()
            .map(|f| relative(&f.id.name.to_string()))
            .collect();
        let aborted: BTreeSet<&String> = live
            .iter()
            .filter(|name| {
                !acknowledged.contains(*name) && snapshots.iter().all(|s| !s.contains_key(*name))
            })
            .collect();
        report.aborted_uploads = aborted.len();
        let mut live: BTreeSet<String> = live
            .iter()
            .filter(|name| !aborted.contains(name))
            .cloned()
            .collect();
        // the old name of a rename that never happened is still there, with its sidecar
        for (old, new) in renamed {
            if aborted.contains(new) {
                live.insert(old.clone());
                if aborted.contains(&format!("{new}-m")) {
                    live.insert(format!("{old}-m"));
                }
            }
        }
        for (i, snap) in snapshots.iter().enumerate() {
            let on_disk: BTreeSet<String> = snap.keys().cloned().collect();
            if on_disk != live {
                let extra: Vec<_> = on_disk.difference(&live).take(5).collect();
                let missing: Vec<_> = live.difference(&on_disk).take(5).collect();
                problems.push(format!(
                    "storage #{i} disagrees with the binlogs: {} files not in them (e.g. {extra:?}), {} missing (e.g. {missing:?})",
                    on_disk.difference(&live).count(),
                    live.difference(&on_disk).count()
                ));
            }
        }
    }
    let mut lost = 0;
    let mut missing = 0;
    let mut deletes_lost = 0;
    let mut seen = BTreeSet::new();
    for file in files {
        if !seen.insert(file.id.to_string()) {
            problems.push(format!("{}: two acknowledged uploads got this id", file.id));
        }
        let name = relative(&file.id.name.to_string());
        let mut issues = Vec::new();
        for (i, snap) in snapshots.iter().enumerate() {
            match (file.deleted, snap.get(&name)) {
                (Some(true), Some(_)) => issues.push(format!("deleted, still on storage #{i}")),
                (Some(false), None) => issues.push(format!("missing on storage #{i}")),
                (Some(false), Some(bytes)) if file.content.as_ref().is_some_and(|w| w != bytes) => {
                    issues.push(format!(
                        "{} bytes on storage #{i} instead of the {} acknowledged",
                        bytes.len(),
                        file.content.as_ref().map_or(0, Vec::len)
                    ))
                }
                _ => {}
            }
        }
        if !issues.is_empty() {
            if file.deleted == Some(true) {
                deletes_lost += 1;
            } else {
                lost += 1;
                missing += usize::from(issues.iter().any(|i| i.starts_with("missing")));
            }
            problems.push(format!(
                "{}: {}; history: {}",
                file.id,
                issues.join(", "),
                file.history.join(" | ")
            ));
        }
    }
    report.files_lost = lost;
    report.files_missing = missing;
    report.deletes_lost = deletes_lost;
    report.files_checked = snapshots.first().map_or(0, BTreeMap::len);
    problems
}

fn binlogs(cluster: &Cluster) -> Result<Vec<Vec<BinlogLine>>, String> {
    (0..cluster.storages.len())
        .map(|i| read_binlogs(&cluster.storage_base(i).join("data/sync")))
        .collect()
}

async fn check(
    cluster: &mut Cluster,
    options: &SoakOptions,
    files: &[Tracked],
    report: &mut SoakReport,
) -> Result<()> {
    let storages = cluster.storages.len();
    let deadline = Instant::now() + options.converge_timeout;
    if let Err(err) = cluster.wait_active(GROUP, storages).await {
        report
            .problems
            .push(format!("not every storage is ACTIVE again: {err:#}"));
    }
    // replication converges: poll until storages, binlogs and ledger agree, or the deadline
    let mut problems = loop {
        let live = binlogs(cluster).ok().map(|all| live_from_binlogs(&all));
        let mut problems = compare(cluster, files, live.as_ref(), report);
        for i in 0..storages {
            let temps = temp_files(cluster, i);
            if temps > 0 {
                problems.push(format!("storage #{i}: {temps} files left in data/.tmp"));
            }
        }
        if problems.is_empty() || Instant::now() >= deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    log(
        options,
        format!(
            "converged check: {} problems after {:?}",
            problems.len(),
            options
                .converge_timeout
                .saturating_sub(deadline.saturating_duration_since(Instant::now()))
        ),
    );
    // metadata as the clients see it
    let client = soak_client(cluster)?;
    for file in files {
        // a file whose metadata was never set has no sidecar: nothing to read back
        let want = file.metadata.as_ref().filter(|pairs| !pairs.is_empty());
        if let (Some(false), Some(want)) = (file.deleted, want) {
            match client.get_metadata(&file.id).await {
                Ok(mut got) => {
                    got.sort();
                    if &got != want {
                        problems.push(format!(
                            "{}: metadata {got:?}, acknowledged {want:?}",
                            file.id
                        ));
                    }
                }
                Err(err) => problems.push(format!("{}: metadata unreadable: {err}", file.id)),
            }
        }
    }
    // a clean restart cuts torn tails; after it every record must be whole and in sequence
    for i in 0..storages {
        cluster.storages[i]
            .terminate(Duration::from_secs(20))
            .with_context(|| format!("stopping storage #{i}"))?;
        cluster.restart_storage(i).await?;
    }
    if let Err(err) = cluster.wait_active(GROUP, storages).await {
        problems.push(format!(
            "not every storage is ACTIVE after the clean restart: {err:#}"
        ));
    }
    match binlogs(cluster) {
        Ok(all) => {
            let live = live_from_binlogs(&all);
            problems.extend(compare(cluster, files, Some(&live), report));
        }
        Err(err) => problems.push(format!("binlog after a clean restart: {err}")),
    }
    for i in 0..storages {
        let temps = temp_files(cluster, i);
        if temps > 0 {
            problems.push(format!(
                "storage #{i}: {temps} files in data/.tmp after restart"
            ));
        }
        let log = cluster.storages[i].log();
        if log.contains("panicked") {
            problems.push(format!("storage #{i} panicked"));
        }
    }
    if cluster.tracker.log().contains("panicked") {
        problems.push("the tracker panicked".into());
    }
    report.problems.append(&mut problems);
    Ok(())
}

/// A seed from the clock, for runs that were not given one (it is printed, so it replays).
pub fn random_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() ^ u64::from(now.subsec_nanos()) << 20 ^ u64::from(std::process::id())
}
