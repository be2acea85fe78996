//! LIST_ONE_GROUP (90), LIST_ALL_GROUPS (91) and LIST_STORAGE (92): the group and storage
//! stats of D.3/D.4, filled from the registry (E.1–E.3).

use fdfs_proto::field::{fixed_bytes, FieldReader};
use fdfs_proto::stat::{GroupStat, StatBlock, StorageStat, RW_MODE_BOTH};
use fdfs_proto::status;
use fdfs_proto::tracker_msg::{decode_group, storage_status};
use fdfs_proto::units::ReservedSpace;
use fdfs_proto::{ProtoError, GROUP_NAME_LEN, STORAGE_ID_LEN};

use super::{expect_len, CmdError};
use crate::cluster::{Group, Storage};
use crate::service::Tracker;

/// 90 and 108: one group name.
pub const GROUP_BODY_LEN: usize = GROUP_NAME_LEN;
/// 92: a group name and an optional storage id of up to 15 bytes.
pub const LIST_STORAGE_MAX_BODY_LEN: usize = GROUP_NAME_LEN + STORAGE_ID_LEN - 1;

const MB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListError {
    #[error("group {0} not found")]
    UnknownGroup(String),
    #[error("storage {id} of group {group} not found")]
    UnknownStorage { group: String, id: String },
}

impl ListError {
    pub fn status(&self) -> u8 {
        status::ENOENT
    }
}

fn mb(bytes: u64) -> i64 {
    i64::try_from(bytes / MB).unwrap_or(i64::MAX)
}

/// `reserved_storage_space` in MB for a disk of `total_mb` (J.5).
fn reserved_mb(reserved: &ReservedSpace, total_mb: i64) -> i64 {
    match *reserved {
        ReservedSpace::Bytes(bytes) => mb(bytes),
        ReservedSpace::Ratio(ratio) => (total_mb as f64 * ratio) as i64,
    }
}

/// The group stat (E.1). Space follows J.5: the writable storage with the least free space;
/// while none is writable, the same rule over every storage that has reported its disks, so
/// the last known numbers stay visible.
pub fn group_stat(group: &Group, reserved: &ReservedSpace) -> GroupStat {
    let least_free = |include: &dyn Fn(&Storage) -> bool| {
        group
            .storages()
            .iter()
            .filter(|s| include(s) && !s.paths.is_empty())
            .min_by_key(|s| s.free_bytes())
    };
    let basis = least_free(&Storage::is_active)
        .or_else(|| least_free(&|s| s.status != storage_status::DELETED));
    let (total_mb, free_mb) = basis.map_or((0, 0), |s| (mb(s.total_bytes()), mb(s.free_bytes())));
    let active = group.storages().iter().filter(|s| s.is_active()).count() as i64;
    let port = group
        .storages()
        .iter()
        .find(|s| s.is_active())
        .or_else(|| group.storages().first())
        .map_or(0, |s| i64::from(s.port));
    GroupStat {
        name: group.name.clone(),
        total_mb,
        free_mb,
        reserved_mb: reserved_mb(reserved, total_mb),
        trunk_free_mb: 0,
        storage_count: group.storages().len() as i64,
        storage_port: port,
        // Every ACTIVE storage both reads and writes (rw_mode 6).
        readable_server_count: active,
        writable_server_count: active,
        current_write_server: group.write_cursor as i64,
        store_path_count: i64::from(group.store_path_count),
        subdir_count_per_path: i64::from(group.subdir_count),
        current_trunk_file_id: -1,
    }
}

/// The storage stat (E.2): the storage's reported counters, with the two fields the tracker
/// owns (last heartbeat, last synced timestamp) filled in.
pub fn storage_stat(storage: &Storage, reserved: &ReservedSpace) -> StorageStat {
    let total_mb = mb(storage.total_bytes());
    StorageStat {
        status: storage.status,
        rw_mode: RW_MODE_BOTH,
        id: storage.id.clone(),
        ip: storage.ip.clone(),
        src_id: String::new(),
        version: storage.version.clone(),
        join_time: storage.join_time,
        up_time: storage.up_time,
        total_mb,
        free_mb: mb(storage.free_bytes()),
        reserved_mb: reserved_mb(reserved, total_mb),
        upload_priority: storage.upload_priority,
        store_path_count: i64::from(storage.store_path_count),
        subdir_count_per_path: i64::from(storage.subdir_count),
        current_write_path: storage.current_write_path as i64,
        storage_port: i64::from(storage.port),
        stat: StatBlock {
            last_heart_beat_time: storage.last_beat_unix,
            last_synced_timestamp: i64::from(storage.last_synced_timestamp),
            ..storage.stat
        },
        if_trunk_server: false,
    }
}

pub fn list_one_group(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    let name = decode_group(body)?;
    let cluster = tracker.cluster();
    let group = cluster.group(&name).ok_or(ListError::UnknownGroup(name))?;
    Ok(group_stat(group, &tracker.policy().reserved).encode())
}

pub fn list_all_groups(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    expect_len(body, 0, "list all groups")?;
    let cluster = tracker.cluster();
    let mut out = Vec::with_capacity(GroupStat::LEN * cluster.groups().len());
    for group in cluster.groups() {
        group_stat(group, &tracker.policy().reserved).encode_into(&mut out);
    }
    Ok(out)
}

/// A group name followed by an optional storage id (not padded; read up to a NUL like
/// FastDFS does, so an all-NUL id means "every storage").
pub fn decode_group_and_id(
    body: &[u8],
    min: usize,
    what: &'static str,
) -> Result<(String, String), ProtoError> {
    if !(min..=LIST_STORAGE_MAX_BODY_LEN).contains(&body.len()) {
        return Err(ProtoError::BadLength {
            what,
            len: body.len() as u64,
        });
    }
    let mut reader = FieldReader::new(body);
    let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
    let id = std::str::from_utf8(fixed_bytes(reader.rest()))
        .map_err(|_| ProtoError::invalid("storage id", "not valid text"))?
        .to_string();
    Ok((group, id))
}

pub fn list_storage(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    let (name, id) = decode_group_and_id(body, GROUP_NAME_LEN, "list storage")?;
    let cluster = tracker.cluster();
    let group = cluster
        .group(&name)
        .ok_or_else(|| ListError::UnknownGroup(name.clone()))?;
    let reserved = &tracker.policy().reserved;
    if !id.is_empty() {
        let storage = group.storage(&id).ok_or(ListError::UnknownStorage {
            group: name,
            id: id.clone(),
        })?;
        return Ok(storage_stat(storage, reserved).encode());
    }
    let mut out = Vec::with_capacity(StorageStat::LEN * group.storages().len());
    for storage in group.storages() {
        storage_stat(storage, reserved).encode_into(&mut out, fdfs_proto::IP_WIDTH);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::cluster::tests::{join_request, peer, usage};
    use crate::cluster::Cluster;

    const GB: u64 = 1 << 30;

    #[test]
    fn group_space_follows_the_least_free_writable_storage() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        for (n, free) in [(1u16, 60 * GB), (2, 30 * GB), (3, 10 * GB)] {
            cluster
                .join(
                    peer(n),
                    &join_request("group1", u32::from(n), 23000 + n, 1),
                    now,
                )
                .unwrap();
            cluster
                .report_beat(peer(n), vec![usage(100 * GB, free)], None, now, 1_000)
                .unwrap();
        }
        // Storage 3 is the least free but not writable any more.
        cluster.disconnect(peer(3));
        let reserved = ReservedSpace::Ratio(0.01);
        let stat = group_stat(cluster.group("group1").unwrap(), &reserved);
        assert_eq!((stat.total_mb, stat.free_mb), (102_400, 30_720));
        assert_eq!(stat.reserved_mb, 1024);
        assert_eq!(stat.storage_count, 3);
        assert_eq!(stat.readable_server_count, 2);
        assert_eq!(stat.writable_server_count, 2);
        assert_eq!(stat.storage_port, 23001);
        assert_eq!(stat.current_trunk_file_id, -1);
        assert_eq!(stat.subdir_count_per_path, 256);

        // Nobody writable: the last known numbers stay.
        cluster.disconnect(peer(1));
        cluster.disconnect(peer(2));
        let stat = group_stat(cluster.group("group1").unwrap(), &reserved);
        assert_eq!(stat.free_mb, 10_240);
        assert_eq!(stat.writable_server_count, 0);
        let stat = group_stat(
            cluster.group("group1").unwrap(),
            &ReservedSpace::Bytes(10 * GB),
        );
        assert_eq!(stat.reserved_mb, 10_240);
    }

    #[test]
    fn storage_stat_carries_reported_and_tracker_values() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 7, 23000, 2), now)
            .unwrap();
        let reported = StatBlock {
            success_upload_count: 4,
            // Values a storage should not send are overwritten by the tracker's own.
            last_heart_beat_time: 99,
            last_synced_timestamp: 99,
            ..StatBlock::default()
        };
        cluster
            .report_beat(
                peer(1),
                vec![usage(10 * GB, 5 * GB), usage(10 * GB, 4 * GB)],
                Some(reported),
                now,
                1_700_000_000,
            )
            .unwrap();
        let storage = cluster.group("group1").unwrap().storage("7").unwrap();
        let stat = storage_stat(storage, &ReservedSpace::Ratio(0.1));
        assert_eq!(stat.status, storage_status::ACTIVE);
        assert_eq!(stat.rw_mode, 6);
        assert_eq!((stat.id.as_str(), stat.ip.as_str()), ("7", "127.0.0.1"));
        assert_eq!(
            (stat.total_mb, stat.free_mb, stat.reserved_mb),
            (20_480, 9_216, 2_048)
        );
        assert_eq!((stat.join_time, stat.up_time), (1, 2));
        assert_eq!(stat.store_path_count, 2);
        assert_eq!(stat.storage_port, 23000);
        assert_eq!(stat.stat.success_upload_count, 4);
        assert_eq!(stat.stat.last_heart_beat_time, 1_700_000_000);
        assert_eq!(stat.stat.last_synced_timestamp, 0);
    }

    #[test]
    fn group_and_id_bodies() {
        let mut body = fdfs_proto::tracker_msg::encode_group("group1");
        assert_eq!(
            decode_group_and_id(&body, 16, "x").unwrap(),
            ("group1".into(), String::new())
        );
        body.extend_from_slice(b"100001");
        assert_eq!(decode_group_and_id(&body, 17, "x").unwrap().1, "100001");
        body.extend_from_slice(&[0; 3]);
        assert_eq!(decode_group_and_id(&body, 17, "x").unwrap().1, "100001");
        body.resize(32, b'1');
        assert!(decode_group_and_id(&body, 16, "x").is_err());
        assert!(decode_group_and_id(&body[..15], 16, "x").is_err());
        assert!(decode_group_and_id(&body[..16], 17, "x").is_err());
    }
}
