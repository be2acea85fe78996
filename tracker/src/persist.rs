//! The tracker's durable view of the cluster: `<base_path>/data/cluster_state.toml`.
//!
//! A restarted tracker must list every group and storage it knew (and keep DELETED ones
//! deleted) instead of answering "unknown" until each storage has reported again. The file is
//! TOML followed by a `# crc32 XXXXXXXX` line over everything before it, so a truncated or
//! damaged file is detected even where it would still parse. It is replaced atomically
//! (temp file, fsync, rename, fsync of the directory). A file that fails any check is
//! reported, set aside as `cluster_state.toml.corrupt` and ignored.
//!
//! Restored storages hold no connection, so ONLINE, ACTIVE and RECOVERY come back as OFFLINE;
//! they are ONLINE again when they join and ACTIVE at their next heartbeat.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fdfs_proto::stat::StatBlock;
use fdfs_proto::tracker_msg::{storage_status, PathUsage};
use fdfs_proto::STORAGE_ID_LEN;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Group, Storage};

/// Version of the file layout.
pub const FORMAT: u32 = 1;
/// File name below `<base_path>/data/`.
pub const STATE_FILE: &str = "cluster_state.toml";
/// Larger files are refused unread: thousands of storages fit in far less.
const MAX_FILE_LEN: u64 = 64 << 20;
const CHECKSUM_PREFIX: &str = "# crc32 ";

/// Where the state of a tracker with this `base_path` lives.
pub fn state_path(base_path: &Path) -> PathBuf {
    base_path.join("data").join(STATE_FILE)
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot encode the state: {0}")]
    Encode(#[from] toml::ser::Error),
    #[error("not valid TOML state: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(reason: impl Into<String>) -> PersistError {
    PersistError::Invalid(reason.into())
}

/// Everything the file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    /// Storage records below, all groups together.
    pub storage_count: usize,
    /// In name order.
    pub groups: Vec<GroupState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupState {
    pub name: String,
    pub store_path_count: u32,
    pub subdir_count: u32,
    /// In id order.
    pub storages: Vec<StorageState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageState {
    pub id: String,
    pub ip: String,
    pub port: u16,
    /// The J.1 status when the state was written.
    pub status: u8,
    pub version: String,
    pub join_time: i64,
    pub up_time: i64,
    pub upload_priority: i64,
    pub store_path_count: u32,
    pub subdir_count: u32,
    pub current_write_path: u64,
    /// Unix time of the last heartbeat; 0 if none.
    pub last_beat: i64,
    pub last_synced_timestamp: u32,
    /// `[total_bytes, free_bytes]` of every store path; empty before the first heartbeat.
    pub paths: Vec<[u64; 2]>,
    /// The storage's last reported stat block (E.3), by field name.
    pub counters: BTreeMap<String, i64>,
}

impl State {
    /// The persistent part of `cluster`.
    pub fn capture(cluster: &Cluster) -> State {
        let groups: Vec<GroupState> = cluster.groups().iter().map(GroupState::capture).collect();
        State {
            format: FORMAT,
            storage_count: groups.iter().map(|g| g.storages.len()).sum(),
            groups,
        }
    }

    /// Whether the two states differ in anything but usage, counters and cursors: such
    /// changes are written at once, the others at most every few seconds.
    pub fn same_membership(&self, other: &State) -> bool {
        fn key(state: &State) -> Vec<impl PartialEq + '_> {
            state
                .groups
                .iter()
                .flat_map(|g| {
                    let group = (&g.name, g.store_path_count, g.subdir_count);
                    // An empty group still counts as a member of the cluster.
                    std::iter::once((group, None)).chain(g.storages.iter().map(move |s| {
                        let storage = (
                            &s.id,
                            &s.ip,
                            s.port,
                            s.status,
                            &s.version,
                            s.join_time,
                            s.up_time,
                            s.upload_priority,
                            (s.store_path_count, s.subdir_count),
                        );
                        (group, Some(storage))
                    }))
                })
                .collect()
        }
        key(self) == key(other)
    }

    /// Checks what serde cannot: names, order, counts, statuses and counters.
    pub fn validate(&self) -> Result<(), PersistError> {
        if self.format != FORMAT {
            return Err(invalid(format!("unsupported format {}", self.format)));
        }
        let count: usize = self.groups.iter().map(|g| g.storages.len()).sum();
        if count != self.storage_count {
            return Err(invalid(format!(
                "{count} storage records, storage_count says {}",
                self.storage_count
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for pair in self.groups.windows(2) {
            if pair[0].name >= pair[1].name {
                return Err(invalid(format!(
                    "groups {} and {} out of order",
                    pair[0].name, pair[1].name
                )));
            }
        }
        for group in &self.groups {
            group.validate()?;
            for storage in &group.storages {
                if !ids.insert(storage.id.as_str()) {
                    return Err(invalid(format!("storage id {} listed twice", storage.id)));
                }
            }
        }
        Ok(())
    }

    /// A registry holding these groups and storages, with no connection bound; storages that
    /// were connected come back OFFLINE. `now` stands for their last heartbeat instant.
    pub fn restore(&self, now: Instant) -> Result<Cluster, PersistError> {
        self.validate()?;
        let mut cluster = Cluster::new();
        for group_state in &self.groups {
            let mut group = Group::new(
                &group_state.name,
                group_state.store_path_count,
                group_state.subdir_count,
            );
            for storage in &group_state.storages {
                group.storages.push(storage.restore(now)?);
            }
            cluster.groups.push(group);
        }
        Ok(cluster)
    }
}

impl GroupState {
    fn capture(group: &Group) -> GroupState {
        GroupState {
            name: group.name.clone(),
            store_path_count: group.store_path_count,
            subdir_count: group.subdir_count,
            storages: group.storages().iter().map(StorageState::capture).collect(),
        }
    }

    fn validate(&self) -> Result<(), PersistError> {
        fdfs_proto::file_id::validate_group(&self.name)
            .map_err(|err| invalid(format!("group {:?}: {err}", self.name)))?;
        check_layout(self.store_path_count, self.subdir_count)
            .map_err(|reason| invalid(format!("group {}: {reason}", self.name)))?;
        for pair in self.storages.windows(2) {
            if pair[0].id >= pair[1].id {
                return Err(invalid(format!(
                    "group {}: storages {} and {} out of order",
                    self.name, pair[0].id, pair[1].id
                )));
            }
        }
        for storage in &self.storages {
            storage
                .validate()
                .map_err(|reason| invalid(format!("group {}: {reason}", self.name)))?;
        }
        Ok(())
    }
}

fn check_layout(paths: u32, subdirs: u32) -> Result<(), String> {
    if !(1..=256).contains(&paths) || !(1..=256).contains(&subdirs) {
        return Err(format!(
            "layout of {paths} store paths and {subdirs} subdirs is out of range"
        ));
    }
    Ok(())
}

impl StorageState {
    fn capture(storage: &Storage) -> StorageState {
        StorageState {
            id: storage.id.clone(),
            ip: storage.ip.clone(),
            port: storage.port,
            status: storage.status,
            version: storage.version.clone(),
            join_time: storage.join_time,
            up_time: storage.up_time,
            upload_priority: storage.upload_priority,
            store_path_count: storage.store_path_count,
            subdir_count: storage.subdir_count,
            current_write_path: storage.current_write_path as u64,
            last_beat: storage.last_beat_unix,
            last_synced_timestamp: storage.last_synced_timestamp,
            paths: storage
                .paths
                .iter()
                .map(|p| [p.total_bytes, p.free_bytes])
                .collect(),
            counters: storage
                .stat
                .fields()
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let id = &self.id;
        if id.is_empty() || id.len() > STORAGE_ID_LEN || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("storage id {id:?} is not a numeric id"));
        }
        if self.ip.parse::<IpAddr>().is_err() {
            return Err(format!("storage {id}: ip {:?} is not an address", self.ip));
        }
        if storage_status::name(self.status) == "UNKNOWN" {
            return Err(format!("storage {id}: unknown status {}", self.status));
        }
        check_layout(self.store_path_count, self.subdir_count)
            .map_err(|reason| format!("storage {id}: {reason}"))?;
        if !self.paths.is_empty() && self.paths.len() != self.store_path_count as usize {
            return Err(format!(
                "storage {id}: {} path usages for {} store paths",
                self.paths.len(),
                self.store_path_count
            ));
        }
        // Sizes go back on the wire as int64.
        if self.paths.iter().flatten().any(|&b| b > i64::MAX as u64) {
            return Err(format!("storage {id}: disk size out of range"));
        }
        if self.counters.len() != StatBlock::FIELD_NAMES.len() {
            return Err(format!(
                "storage {id}: {} counters, expected {}",
                self.counters.len(),
                StatBlock::FIELD_NAMES.len()
            ));
        }
        self.stat_block()
            .map(|_| ())
            .map_err(|err| format!("storage {id}: {err}"))
    }

    fn stat_block(&self) -> Result<StatBlock, fdfs_proto::ProtoError> {
        let mut stat = StatBlock::default();
        for (name, &value) in &self.counters {
            stat.set(name, value)?;
        }
        Ok(stat)
    }

    fn restore(&self, now: Instant) -> Result<Storage, PersistError> {
        let status = match self.status {
            storage_status::ONLINE | storage_status::ACTIVE | storage_status::RECOVERY => {
                storage_status::OFFLINE
            }
            other => other,
        };
        Ok(Storage {
            id: self.id.clone(),
            ip: self.ip.clone(),
            port: self.port,
            status,
            upload_priority: self.upload_priority,
            store_path_count: self.store_path_count,
            subdir_count: self.subdir_count,
            paths: self
                .paths
                .iter()
                .map(|&[total_bytes, free_bytes]| PathUsage {
                    total_bytes,
                    free_bytes,
                })
                .collect(),
            join_time: self.join_time,
            up_time: self.up_time,
            version: self.version.clone(),
            last_beat: now,
            current_write_path: usize::try_from(self.current_write_path).unwrap_or(0),
            last_synced_timestamp: self.last_synced_timestamp,
            last_beat_unix: self.last_beat,
            stat: self
                .stat_block()
                .map_err(|err| invalid(format!("storage {}: {err}", self.id)))?,
            listen_ip: String::new(),
            report_conn: None,
            sync: crate::sync::SyncInfo::default(),
        })
    }
}

/// The file's bytes: a comment, the TOML document and the checksum line.
pub fn encode(state: &State) -> Result<String, PersistError> {
    let mut text = String::from(
        "# fdfs-trackerd cluster state. Rewritten by the tracker; the last line checksums the rest.\n",
    );
    text.push_str(&toml::to_string(state)?);
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("{CHECKSUM_PREFIX}{crc:08x}\n"));
    Ok(text)
}

/// Parses and validates the file's bytes.
pub fn decode(bytes: &[u8]) -> Result<State, PersistError> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text"))?;
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| invalid("does not end with a newline (truncated?)"))?;
    let (content, last) = match body.rfind('\n') {
        Some(i) => (&text[..=i], &body[i + 1..]),
        None => ("", body),
    };
    let expected = last
        .strip_prefix(CHECKSUM_PREFIX)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| invalid("checksum line missing (truncated?)"))?;
    let actual = crc32fast::hash(content.as_bytes());
    if actual != expected {
        return Err(invalid(format!(
            "checksum {actual:08x} does not match {expected:08x} (damaged or edited)"
        )));
    }
    let state: State = toml::from_str(content)?;
    state.validate()?;
    Ok(state)
}

/// Writes `state` to `path` atomically and durably.
pub fn save(path: &Path, state: &State) -> Result<(), PersistError> {
    let text = encode(state)?;
    let dir = path
        .parent()
        .ok_or_else(|| invalid("state path has no directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("toml.tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename is only durable once the directory entry is.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads the state at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<State>, PersistError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(invalid(format!("larger than {MAX_FILE_LEN} bytes")));
    }
    decode(&bytes).map(Some)
}

/// Moves a rejected state file out of the way so the next save does not destroy the evidence.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let aside = path.with_extension("toml.corrupt");
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::{join_request, peer, usage};

    /// Two groups, three storages: one ACTIVE with counters, one OFFLINE, one DELETED.
    fn sample_cluster() -> Cluster {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 100001, 23000, 2), now)
            .unwrap();
        let stat = StatBlock {
            connection_current_count: 3,
            total_upload_count: 12,
            success_upload_count: 10,
            success_upload_bytes: 1 << 40,
            last_source_update: 1_700_000_000,
            ..StatBlock::default()
        };
        cluster
            .report_beat(
                peer(1),
                vec![usage(100 << 30, 40 << 30), usage(200 << 30, 150 << 30)],
                Some(stat),
                now,
                1_700_000_123,
            )
            .unwrap();
        cluster
            .join(peer(2), &join_request("group1", 100002, 23001, 2), now)
            .unwrap();
        cluster.disconnect(peer(2));
        cluster
            .join(peer(3), &join_request("group2", 7, 23002, 1), now)
            .unwrap();
        cluster.disconnect(peer(3));
        cluster.delete_storage("group2", "7").unwrap();
        cluster
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        assert!(load(&path).unwrap().is_none());
        let state = State::capture(&sample_cluster());
        assert_eq!(state.storage_count, 3);
        save(&path, &state).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded, state);
        // Saving again replaces the file and leaves no temp file behind.
        save(&path, &loaded).unwrap();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STATE_FILE]);
    }

    #[test]
    fn restore_brings_storages_back_offline() {
        let state = State::capture(&sample_cluster());
        let cluster = state.restore(Instant::now()).unwrap();
        let group1 = cluster.group("group1").unwrap();
        assert_eq!(group1.store_path_count, 2);
        let first = group1.storage("100001").unwrap();
        assert_eq!(first.status, storage_status::OFFLINE);
        assert_eq!(first.port, 23000);
        assert_eq!(first.free_bytes(), 190 << 30);
        assert_eq!(first.stat.success_upload_count, 10);
        assert_eq!(first.stat.connection_current_count, 3);
        assert_eq!(first.last_beat_unix, 1_700_000_123);
        assert_eq!(
            group1.storage("100002").unwrap().status,
            storage_status::OFFLINE
        );
        let deleted = cluster.group("group2").unwrap().storage("7").unwrap();
        assert_eq!(deleted.status, storage_status::DELETED);
        // Nothing is bound to a connection: captured again it is the same, statuses aside.
        let again = State::capture(&cluster);
        assert_eq!(
            again.groups[0].storages[0].counters,
            state.groups[0].storages[0].counters
        );
        assert!(!again.same_membership(&state));
    }

    #[test]
    fn membership_ignores_usage_and_counters() {
        let mut cluster = sample_cluster();
        let before = State::capture(&cluster);
        cluster
            .report_beat(
                peer(1),
                vec![usage(1, 1), usage(2, 2)],
                Some(StatBlock::default()),
                Instant::now(),
                5,
            )
            .unwrap();
        let after = State::capture(&cluster);
        assert_ne!(before, after);
        assert!(before.same_membership(&after));
        cluster.disconnect(peer(1));
        assert!(!before.same_membership(&State::capture(&cluster)));
        cluster.delete_storage("group1", "100001").unwrap();
        let deleted = State::capture(&cluster);
        assert!(!after.same_membership(&deleted));
        assert!(deleted.same_membership(&deleted.clone()));
    }

    #[test]
    fn every_truncation_is_detected() {
        let text = encode(&State::capture(&sample_cluster())).unwrap();
        let bytes = text.as_bytes();
        assert!(decode(bytes).is_ok());
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "a file cut at {len} of {} bytes was accepted",
                bytes.len()
            );
        }
    }

    #[test]
    fn damage_and_bad_values_are_detected() {
        let text = encode(&State::capture(&sample_cluster())).unwrap();
        // One changed digit.
        let damaged = text.replacen("23001", "23002", 1);
        let err = decode(damaged.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        assert!(decode(b"\xff\xfe garbage\n").is_err());
        assert!(decode(b"").is_err());

        // Well-formed files with values that must not be trusted.
        let reencode = |edit: &dyn Fn(&mut State)| {
            let mut state = State::capture(&sample_cluster());
            edit(&mut state);
            // Encode without validation, as a damaged writer could have.
            decode(encode(&state).unwrap().as_bytes())
        };
        assert!(reencode(&|s| s.format = 2).is_err());
        assert!(reencode(&|s| s.storage_count = 2).is_err());
        assert!(reencode(&|s| s.groups.swap(0, 1)).is_err());
        assert!(reencode(&|s| s.groups[0].storages.swap(0, 1)).is_err());
        assert!(reencode(&|s| s.groups[0].name = "bad/name".into()).is_err());
        assert!(reencode(&|s| s.groups[0].storages[0].status = 42).is_err());
        assert!(reencode(&|s| s.groups[0].storages[0].ip = "nowhere".into()).is_err());
        assert!(reencode(&|s| s.groups[0].storages[0].id = "../x".into()).is_err());
        assert!(reencode(&|s| {
            s.groups[0].storages[0].paths.pop();
        })
        .is_err());
        assert!(reencode(&|s| s.groups[0].storages[0].store_path_count = 0).is_err());
        assert!(reencode(&|s| {
            s.groups[0].storages[0]
                .counters
                .remove("total_upload_count");
        })
        .is_err());
        assert!(reencode(&|s| {
            s.groups[0].storages[0]
                .counters
                .insert("connection_max_count".into(), i64::MAX);
        })
        .is_err());
        assert!(reencode(&|s| {
            let copy = s.groups[0].storages[0].clone();
            s.groups[1].storages.insert(0, copy);
            s.storage_count += 1;
        })
        .is_err());
        assert!(reencode(&|_| {}).is_ok());
    }

    #[test]
    fn unreadable_files_are_errors_and_can_be_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "format = 1\n").unwrap();
        assert!(load(&path).is_err());
        let aside = set_aside(&path).unwrap();
        assert!(aside.exists());
        assert!(load(&path).unwrap().is_none());
    }

    #[test]
    fn empty_groups_survive() {
        let state = State {
            format: FORMAT,
            storage_count: 0,
            groups: vec![GroupState {
                name: "group9".into(),
                store_path_count: 1,
                subdir_count: 256,
                storages: vec![],
            }],
        };
        let decoded = decode(encode(&state).unwrap().as_bytes()).unwrap();
        assert_eq!(decoded, state);
        let cluster = decoded.restore(Instant::now()).unwrap();
        assert!(cluster.group("group9").unwrap().storages().is_empty());
    }
}
