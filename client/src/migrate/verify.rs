//! `fdfs import --verify`: downloads every mapped file under a prefix and compares it (size and
//! CRC32) with the local file it was imported from, or with the map's record when the local
//! file is gone.

use std::path::{Path, PathBuf};

use tokio::task::JoinSet;

use super::crc::{file_crc, CrcSink};
use super::key::normalize_prefix;
use super::map::{Entry, MigrationMap, Snapshot};
use super::MigrateError;
use crate::Client;

/// A mapped path whose stored file does not match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The old URL path.
    pub path: String,
    /// The file ID it maps to.
    pub file_id: String,
    /// What differs.
    pub reason: String,
}

/// What a verification found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Mapped paths checked.
    pub checked: u64,
    /// Mapped paths whose local file no longer exists (compared with the map's record).
    pub local_missing: u64,
    /// Differences, sorted by path.
    pub mismatches: Vec<Mismatch>,
}

/// Checks every entry of `map` below `prefix`; `dir` is the imported directory (its files are
/// re-read and compared with what the cluster returns).
pub async fn verify(
    client: &Client,
    map: &MigrationMap,
    dir: &Path,
    prefix: &str,
    concurrency: usize,
) -> Result<VerifyReport, MigrateError> {
    let prefix = normalize_prefix(prefix)?;
    let snapshot = tokio::task::spawn_blocking({
        let map = map.clone();
        move || {
            let mut snapshot = Snapshot::new();
            snapshot.refresh(&map).map(|_| snapshot)
        }
    })
    .await
    .map_err(|err| MigrateError::Task(err.to_string()))??;
    let mut work: Vec<(String, Entry, PathBuf)> = snapshot
        .iter()
        .filter_map(|(key, entry)| {
            let relative = key.strip_prefix(&prefix)?;
            let local = relative
                .split('/')
                .fold(dir.to_path_buf(), |path, part| path.join(part));
            Some((key.to_string(), entry.clone(), local))
        })
        .collect();
    drop(snapshot);
    work.sort_by(|a, b| a.0.cmp(&b.0));

    let mut report = VerifyReport::default();
    let mut tasks = JoinSet::new();
    let mut pending = work.into_iter();
    loop {
        while tasks.len() < concurrency.max(1) {
            let Some((key, entry, local)) = pending.next() else {
                break;
            };
            let client = client.clone();
            tasks.spawn(async move {
                let outcome = check_one(&client, &entry, &local).await;
                (key, entry.file_id, outcome)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (path, file_id, outcome) = joined.map_err(|err| MigrateError::Task(err.to_string()))?;
        report.checked += 1;
        match outcome {
            Ok(local_missing) => report.local_missing += u64::from(local_missing),
            Err(reason) => report.mismatches.push(Mismatch {
                path,
                file_id,
                reason,
            }),
        }
    }
    report.mismatches.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

/// `Ok(true)` when the stored file matches the map's record because the local file is gone,
/// `Ok(false)` when it matches the local file; `Err(reason)` otherwise.
async fn check_one(client: &Client, entry: &Entry, local: &Path) -> Result<bool, String> {
    let id = crate::parse_file_id(&entry.file_id).map_err(|err| err.to_string())?;
    let mut sink = CrcSink::default();
    client
        .download_to_writer(&id, 0, 0, &mut sink)
        .await
        .map_err(|err| format!("cannot download: {err}"))?;
    let (size, crc) = sink.finish();
    let (expected, local_missing) = match file_crc(local).await {
        Ok(found) => (found, false),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => ((entry.size, entry.crc32), true),
        Err(err) => return Err(format!("cannot read {}: {err}", local.display())),
    };
    if (size, crc) != expected {
        let whose = if local_missing {
            "the map's record"
        } else {
            "the local file"
        };
        return Err(format!(
            "stored {size} bytes with CRC32 {crc:08x}, {whose} has {} bytes with CRC32 {:08x}",
            expected.0, expected.1
        ));
    }
    Ok(local_missing)
}
