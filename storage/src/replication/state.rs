//! Whether this storage's data is complete, kept in `<base_path>/data/sync/state.toml`.
//!
//! Each store path carries a marker, `<store path>/data/.fdfs_store_id`, a random id written
//! when the path was first used. A storage without a state file is new; a store path whose
//! marker is missing or different was wiped. Either way the storage must copy the group's
//! files from a peer before it serves (phase `pending`, then `pulling`), and its data
//! **generation** changes, so every peer replays its whole binlog to it afterwards.

use std::io;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Marker file inside each store path's `data/` directory.
pub const MARKER: &str = ".fdfs_store_id";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The data is complete; peers may push changes.
    Ready,
    /// A full copy is needed; waiting for a tracker to name a source.
    Pending,
    /// Copying the files of `source`.
    Pulling,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// First start (J.1 WAIT_SYNC / SYNCING).
    New,
    /// A store path was wiped (J.1 RECOVERY).
    Recovery,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    /// Changes whenever data was lost; peers restart their cursors when it does.
    pub generation: u64,
    /// The marker id of every store path, in index order.
    pub store_ids: Vec<String>,
    pub phase: Phase,
    pub reason: Reason,
    /// The storage files are copied from (phase `pulling`).
    #[serde(default)]
    pub source: String,
    /// Store path being copied, and how far into its file list.
    #[serde(default)]
    pub pull_path: u32,
    #[serde(default)]
    pub pull_offset: u64,
    /// Whether the file list of `pull_path` was fetched completely.
    #[serde(default)]
    pub pull_listed: bool,
}

/// A fresh generation: positive and non-zero, so it fits TOML's and the wire's int64.
pub fn new_generation() -> u64 {
    rand::thread_rng().gen_range(1..=i64::MAX as u64)
}

fn new_marker() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

pub fn state_path(sync_dir: &Path) -> PathBuf {
    sync_dir.join("state.toml")
}

fn marker_path(store_path: &Path) -> PathBuf {
    store_path.join("data").join(MARKER)
}

fn read_marker(store_path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(marker_path(store_path)) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

fn write_marker(store_path: &Path, id: &str) -> io::Result<()> {
    std::fs::create_dir_all(store_path.join("data"))?;
    crate::persist::write_atomic(&marker_path(store_path), format!("{id}\n").as_bytes(), true)
}

/// Loads the state, or works out a new one when the storage is new or a store path was
/// wiped (blocking). Markers are (re)written as needed.
pub fn open(sync_dir: &Path, store_paths: &[PathBuf]) -> io::Result<LocalState> {
    std::fs::create_dir_all(sync_dir)?;
    let path = state_path(sync_dir);
    let saved: Option<LocalState> = crate::persist::read_toml(&path)?;
    let mut markers = Vec::with_capacity(store_paths.len());
    for store in store_paths {
        markers.push(read_marker(store)?);
    }
    let state = match saved {
        None => {
            let ids: Vec<String> = store_paths.iter().map(|_| new_marker()).collect();
            for (store, id) in store_paths.iter().zip(&ids) {
                write_marker(store, id)?;
            }
            tracing::info!(
                "no replication state yet: this storage copies the group's files before serving"
            );
            LocalState {
                generation: new_generation(),
                store_ids: ids,
                phase: Phase::Pending,
                reason: Reason::New,
                source: String::new(),
                pull_path: 0,
                pull_offset: 0,
                pull_listed: false,
            }
        }
        Some(mut state) => {
            let mut wiped = Vec::new();
            state.store_ids.resize(store_paths.len(), String::new());
            for (index, store) in store_paths.iter().enumerate() {
                let known = &state.store_ids[index];
                if markers[index].as_deref() != Some(known.as_str()) || known.is_empty() {
                    let id = new_marker();
                    write_marker(store, &id)?;
                    state.store_ids[index] = id;
                    wiped.push(index);
                }
            }
            if !wiped.is_empty() {
                tracing::warn!(
                    store_paths = ?wiped,
                    "store path lost its data: recovering the group's files from a peer"
                );
                state.generation = new_generation();
                if state.phase == Phase::Ready {
                    state.reason = Reason::Recovery;
                }
                state.phase = Phase::Pending;
                state.source.clear();
                state.pull_path = 0;
                state.pull_offset = 0;
                state.pull_listed = false;
            }
            state
        }
    };
    crate::persist::write_toml(&path, &state)?;
    Ok(state)
}

pub fn save(sync_dir: &Path, state: &LocalState) -> io::Result<()> {
    crate::persist::write_toml(&state_path(sync_dir), state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(root: &Path, n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| root.join(format!("store{i}"))).collect()
    }

    #[test]
    fn a_new_storage_needs_a_copy_and_keeps_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let sync = dir.path().join("sync");
        let stores = paths(dir.path(), 2);
        let first = open(&sync, &stores).unwrap();
        assert_eq!((first.phase, first.reason), (Phase::Pending, Reason::New));
        assert!(first.generation > 0 && first.generation <= i64::MAX as u64);
        assert_eq!(first.store_ids.len(), 2);
        assert!(marker_path(&stores[1]).exists());
        // finished copying, restarted: nothing changes
        let mut ready = first.clone();
        ready.phase = Phase::Ready;
        save(&sync, &ready).unwrap();
        assert_eq!(open(&sync, &stores).unwrap(), ready);
    }

    #[test]
    fn a_wiped_store_path_means_recovery_and_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let sync = dir.path().join("sync");
        let stores = paths(dir.path(), 2);
        let mut state = open(&sync, &stores).unwrap();
        state.phase = Phase::Ready;
        save(&sync, &state).unwrap();
        std::fs::remove_dir_all(&stores[1]).unwrap();
        let recovered = open(&sync, &stores).unwrap();
        assert_eq!(
            (recovered.phase, recovered.reason),
            (Phase::Pending, Reason::Recovery)
        );
        assert_ne!(recovered.generation, state.generation);
        assert_eq!(recovered.store_ids[0], state.store_ids[0]);
        assert_ne!(recovered.store_ids[1], state.store_ids[1]);
        // a half-finished recovery resumes as it was
        let mut pulling = recovered.clone();
        pulling.phase = Phase::Pulling;
        pulling.source = "100002".into();
        pulling.pull_offset = 77;
        save(&sync, &pulling).unwrap();
        assert_eq!(open(&sync, &stores).unwrap(), pulling);
    }

    #[test]
    fn a_wiped_base_path_makes_a_new_storage() {
        let dir = tempfile::tempdir().unwrap();
        let sync = dir.path().join("sync");
        let stores = paths(dir.path(), 1);
        let mut state = open(&sync, &stores).unwrap();
        state.phase = Phase::Ready;
        save(&sync, &state).unwrap();
        std::fs::remove_dir_all(&sync).unwrap();
        let again = open(&sync, &stores).unwrap();
        assert_eq!((again.phase, again.reason), (Phase::Pending, Reason::New));
        assert_ne!(again.generation, state.generation);
    }
}
