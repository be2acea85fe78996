//! Where uploads go and who serves reads and updates (J.2 – J.5).
//!
//! Plain functions over the [`Cluster`]; the only state they touch is the round-robin cursors.
//! Writable and readable both mean ACTIVE (fdfs-rs has no per-storage read/write mode).

use fdfs_proto::file_id::LogicalName;
use fdfs_proto::name::{classify, FileKind, NameFields, Source};
use fdfs_proto::status;

use fdfs_proto::tracker_msg::{storage_status, StorageAddr};
use fdfs_proto::units::ReservedSpace;

use crate::cluster::{Cluster, Group, Storage};
use crate::config::{DownloadServer, StoreLookup, StorePath, StoreServer, TrackerConfig};

/// The configuration the selection rules depend on.
#[derive(Clone, Debug)]
pub struct Policy {
    pub store_lookup: StoreLookup,
    pub store_group: String,
    pub store_server: StoreServer,
    pub store_path: StorePath,
    pub download_server: DownloadServer,
    pub reserved: ReservedSpace,
    /// Files older than this many seconds are assumed to be everywhere (J.4 rule 2).
    pub sync_max_delay: i64,
    /// Replicating one file takes at most this many seconds (J.4 rule 4).
    pub sync_max_time: i64,
}

impl From<&TrackerConfig> for Policy {
    fn from(config: &TrackerConfig) -> Self {
        Policy {
            store_lookup: config.store_lookup,
            store_group: config.store_group.clone(),
            store_server: config.store_server,
            store_path: config.store_path,
            download_server: config.download_server,
            reserved: config.reserved_storage_space,
            sync_max_delay: secs(config.storage_sync_file_max_delay),
            sync_max_time: secs(config.storage_sync_file_max_time),
        }
    }
}

fn secs(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("group {0} not found")]
    UnknownGroup(String),
    #[error("no group has a writable storage")]
    NoWritableGroup,
    #[error("group {0} has no writable storage")]
    NoWritableStorage(String),
    #[error("no space above the reserved space")]
    NoSpace,
    #[error("no storage of group {0} can serve the file")]
    NoServer(String),
    #[error("invalid file name: {0}")]
    BadName(String),
    #[error("the source storage of the file in group {0} is not active; try again")]
    SourceAway(String),
}

impl SelectError {
    pub fn status(&self) -> u8 {
        match self {
            SelectError::UnknownGroup(_)
            | SelectError::NoWritableGroup
            | SelectError::NoWritableStorage(_)
            | SelectError::NoServer(_) => status::ENOENT,
            SelectError::NoSpace => status::ENOSPC,
            SelectError::BadName(_) => status::EINVAL,
            SelectError::SourceAway(_) => status::EAGAIN,
        }
    }
}

/// Where an upload goes: one server (ONE variants) or every writable one (ALL variants), and
/// the store path for the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub group: String,
    pub servers: Vec<StorageAddr>,
    pub store_path_index: u8,
}

/// Servers for a read or update of an existing file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Servers {
    pub group: String,
    pub servers: Vec<StorageAddr>,
}

/// A store path has room above its share of the reserve (J.3 step 3).
fn path_has_room(reserved: &ReservedSpace, storage: &Storage, index: usize) -> bool {
    let path = &storage.paths[index];
    reserved
        .per_path(storage.paths.len())
        .has_room(path.total_bytes, path.free_bytes)
}

/// A storage takes uploads when one of its store paths has room.
fn server_has_room(reserved: &ReservedSpace, storage: &Storage) -> bool {
    (0..storage.paths.len()).any(|i| path_has_room(reserved, storage, i))
}

fn takes_uploads(reserved: &ReservedSpace, storage: &Storage) -> bool {
    storage.is_active() && server_has_room(reserved, storage)
}

/// Upload capacity of a group (J.3, J.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capacity {
    NoWritable,
    Full,
    /// Free bytes of the writable storage with the least free space.
    Room(u64),
}

fn capacity(reserved: &ReservedSpace, group: &Group) -> Capacity {
    let writable = group.storages().iter().filter(|s| s.is_active());
    // The first of equally empty storages, in id order.
    let Some(least) = writable.min_by_key(|s| s.free_bytes()) else {
        return Capacity::NoWritable;
    };
    let room = reserved.has_room(least.total_bytes(), least.free_bytes())
        && group.storages().iter().any(|s| takes_uploads(reserved, s));
    if room {
        Capacity::Room(least.free_bytes())
    } else {
        Capacity::Full
    }
}

/// Picks the group of an upload (J.3 step 1); returns its index.
fn choose_group(
    cluster: &mut Cluster,
    policy: &Policy,
    requested: Option<&str>,
) -> Result<usize, SelectError> {
    let named = match (requested, policy.store_lookup) {
        (Some(name), _) => Some(name),
        (None, StoreLookup::Specified) => Some(policy.store_group.as_str()),
        (None, _) => None,
    };
    if let Some(name) = named {
        let index = cluster
            .group_position(name)
            .map_err(|_| SelectError::UnknownGroup(name.to_string()))?;
        return match capacity(&policy.reserved, &cluster.groups()[index]) {
            Capacity::NoWritable => Err(SelectError::NoWritableStorage(name.to_string())),
            Capacity::Full => Err(SelectError::NoSpace),
            Capacity::Room(_) => Ok(index),
        };
    }
    let capacities: Vec<Capacity> = cluster
        .groups()
        .iter()
        .map(|g| capacity(&policy.reserved, g))
        .collect();
    let chosen = if policy.store_lookup == StoreLookup::LoadBalance {
        // Most free space; the first by name on ties.
        let mut best: Option<(usize, u64)> = None;
        for (index, cap) in capacities.iter().enumerate() {
            if let Capacity::Room(free) = *cap {
                if best.is_none_or(|(_, best_free)| free > best_free) {
                    best = Some((index, free));
                }
            }
        }
        best.map(|(index, _)| index)
    } else {
        let found = round_robin(capacities.len(), cluster.write_group_cursor, |i| {
            matches!(capacities[i], Capacity::Room(_))
        });
        if let Some(index) = found {
            cluster.write_group_cursor = (index + 1) % capacities.len();
        }
        found
    };
    chosen.ok_or_else(|| {
        if capacities.iter().all(|c| *c == Capacity::NoWritable) {
            SelectError::NoWritableGroup
        } else {
            SelectError::NoSpace
        }
    })
}

/// The first index from `cursor` on (wrapping) that satisfies `accept`.
fn round_robin(len: usize, cursor: usize, accept: impl Fn(usize) -> bool) -> Option<usize> {
    (0..len)
        .map(|step| (cursor + step) % len)
        .find(|&i| accept(i))
}

/// Picks a server of the group among those `eligible` by the `store_server` rule (J.2);
/// returns its index.
fn choose_server(
    group: &mut Group,
    rule: StoreServer,
    eligible: impl Fn(&Storage) -> bool,
) -> Option<usize> {
    let storages = group.storages();
    let len = storages.len();
    match rule {
        StoreServer::RoundRobin => {
            let found = round_robin(len, group.write_cursor, |i| eligible(&storages[i]))?;
            group.write_cursor = (found + 1) % len;
            Some(found)
        }
        StoreServer::FirstById => storages.iter().position(eligible),
        StoreServer::Priority => storages
            .iter()
            .enumerate()
            .filter(|(_, s)| eligible(s))
            // min_by_key keeps the first of equal priorities, i.e. the first by id.
            .min_by_key(|(_, s)| s.upload_priority)
            .map(|(i, _)| i),
    }
}

/// Picks the store path of an upload on `storage` (J.3 step 3).
fn choose_path(policy: &Policy, storage: &mut Storage) -> Option<usize> {
    let count = storage.paths.len();
    match policy.store_path {
        StorePath::RoundRobin => {
            let start = if storage.current_write_path < count {
                storage.current_write_path
            } else {
                0
            };
            let found = round_robin(count, start, |i| {
                path_has_room(&policy.reserved, storage, i)
            })?;
            storage.current_write_path = (found + 1) % count;
            Some(found)
        }
        StorePath::LoadBalance => {
            let mut best: Option<usize> = None;
            for index in 0..count {
                if !path_has_room(&policy.reserved, storage, index) {
                    continue;
                }
                let free = storage.paths[index].free_bytes;
                if best.is_none_or(|b| free > storage.paths[b].free_bytes) {
                    best = Some(index);
                }
            }
            best
        }
    }
}

/// QUERY_STORE (101/104 with `all = false`, 106/107 with `all = true`).
pub fn choose_upload(
    cluster: &mut Cluster,
    policy: &Policy,
    group: Option<&str>,
    all: bool,
) -> Result<Upload, SelectError> {
    let group_index = choose_group(cluster, policy, group)?;
    let group = &mut cluster.groups_mut()[group_index];
    let eligible = |s: &Storage| takes_uploads(&policy.reserved, s);
    let indexes: Vec<usize> = if all {
        (0..group.storages().len())
            .filter(|&i| eligible(&group.storages()[i]))
            .collect()
    } else {
        choose_server(group, policy.store_server, eligible)
            .into_iter()
            .collect()
    };
    let first = *indexes.first().ok_or(SelectError::NoSpace)?;
    let path = choose_path(policy, &mut group.storages_mut()[first]).ok_or(SelectError::NoSpace)?;
    let store_path_index = u8::try_from(path).map_err(|_| SelectError::NoSpace)?;
    Ok(Upload {
        group: group.name.clone(),
        servers: indexes
            .iter()
            .map(|&i| group.storages()[i].addr())
            .collect(),
        store_path_index,
    })
}

/// What the tracker reads from a file name for routing (J.4).
struct FileFacts {
    source: Source,
    /// The source's storage id, when the group knows it.
    source_id: Option<String>,
    /// Creation time on the source's clock (the name's timestamp).
    timestamp: i64,
    /// The source's clock minus ours at its last SYNC_REPORT (0 when not known): turns our
    /// `now` into the source's, so the age of a file is measured on one clock.
    source_clock_skew: i64,
    /// Neither slave nor appender.
    normal: bool,
}

fn file_facts(group: &Group, name: &str) -> Result<FileFacts, SelectError> {
    LogicalName::parse(name).map_err(|err| SelectError::BadName(err.to_string()))?;
    let fields =
        NameFields::from_logical_name(name).map_err(|err| SelectError::BadName(err.to_string()))?;
    let kind = classify(name, &fields);
    let source_id = source_id(group, fields.source);
    let source_clock_skew = source_id
        .as_deref()
        .and_then(|id| group.storages().iter().find(|s| s.id == id))
        .and_then(|s| s.sync.clock_skew)
        .unwrap_or(0);
    Ok(FileFacts {
        source: fields.source,
        source_id,
        timestamp: i64::from(fields.timestamp),
        source_clock_skew,
        normal: !matches!(kind, FileKind::Slave | FileKind::Appender),
    })
}

fn is_source(storage: &Storage, source: Source) -> bool {
    match source {
        Source::Id(id) => storage.id == id.to_string(),
        Source::Ip(ip) => storage.ip == ip.to_string(),
    }
}

/// The id of the file's source storage in the group (by id, or the first by id with its IP).
fn source_id(group: &Group, source: Source) -> Option<String> {
    match source {
        Source::Id(id) => Some(id.to_string()),
        Source::Ip(_) => group
            .storages()
            .iter()
            .find(|s| is_source(s, source))
            .map(|s| s.id.clone()),
    }
}

/// How sure the tracker is that a storage holds a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holds {
    /// J.4 rules 1–3: the source, an old file, or replication has reached past it.
    Surely,
    /// J.4 rule 4 only (about one second behind, but the file is older than the max sync
    /// time): worth asking first.
    Probably,
    Unknown,
}

/// J.4 rules 1–4, made robust to clock skew between servers. Rule 3 uses the synced
/// timestamp the file's source reported for this storage: `W` means every change with a
/// timestamp below `W` arrived, so `last_synced_timestamp = W - 1`. `W` and the file's
/// timestamp both come from the source's clock, so skew between the servers cannot make a
/// storage look further along than it is.
///
/// Where FastDFS differs: rule 2 ("older than `storage_sync_file_max_delay`: everywhere")
/// compares the tracker's clock with the source's, so a source whose clock is behind makes
/// its files look old early; and it overrides what the storages reported, so a peer that
/// stopped receiving (full, or replication stuck) is named for files it lacks. Here rule 2
/// only stands in when the source has reported nothing for this storage's current data
/// (e.g. just after a tracker restart), and ages are measured on the source's clock (our
/// `now` plus the skew it showed at its last report); rule 4, which only orders the storages
/// asked, uses that clock as well.
fn holds(policy: &Policy, storage: &Storage, file: &FileFacts, now: i64) -> Holds {
    let ts = file.timestamp;
    if is_source(storage, file.source) {
        return Holds::Surely;
    }
    let source_now = now.saturating_add(file.source_clock_skew);
    let Some(synced) = file
        .source_id
        .as_deref()
        .and_then(|id| storage.sync.synced_from(id))
        .map(|w| w - 1)
    else {
        return if ts < source_now.saturating_sub(policy.sync_max_delay) {
            Holds::Surely
        } else {
            Holds::Unknown
        };
    };
    if synced > ts {
        Holds::Surely
    } else if synced + 1 >= ts && source_now - ts > policy.sync_max_time {
        Holds::Probably
    } else {
        Holds::Unknown
    }
}

/// The readable source of the file, first by id when several storages share its IP.
fn readable_source(group: &Group, file: &FileFacts) -> Option<usize> {
    group
        .storages()
        .iter()
        .position(|s| s.is_active() && is_source(s, file.source))
}

fn find_group<'a>(cluster: &'a mut Cluster, name: &str) -> Result<&'a mut Group, SelectError> {
    let index = cluster
        .group_position(name)
        .map_err(|_| SelectError::UnknownGroup(name.to_string()))?;
    Ok(&mut cluster.groups_mut()[index])
}

fn servers(group: &Group, indexes: &[usize]) -> Result<Servers, SelectError> {
    if indexes.is_empty() {
        return Err(SelectError::NoServer(group.name.clone()));
    }
    Ok(Servers {
        group: group.name.clone(),
        servers: indexes
            .iter()
            .map(|&i| group.storages()[i].addr())
            .collect(),
    })
}

/// The answer to a read or update query, or the storages to ask first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    Servers(Servers),
    /// No readable storage is known to hold the file (its source is down and replication
    /// has not been confirmed past it): ask these, in order, with QUERY_FILE_INFO whether
    /// they hold it, and answer the first that does (or, `all`, every one that does). When
    /// none does, answer `otherwise`, or "not found" without it.
    Ask {
        group: String,
        candidates: Vec<StorageAddr>,
        all: bool,
        otherwise: Option<Servers>,
    },
}

/// Every ACTIVE storage, starting at `cursor` (wrapping), those that probably hold the file
/// first.
fn ask_order(
    policy: &Policy,
    group: &Group,
    file: &FileFacts,
    now: i64,
    cursor: usize,
) -> Vec<StorageAddr> {
    let storages = group.storages();
    let len = storages.len();
    let in_order: Vec<&Storage> = (0..len)
        .map(|step| &storages[(cursor + step) % len.max(1)])
        .filter(|s| s.is_active())
        .collect();
    let (probable, rest): (Vec<&Storage>, Vec<&Storage>) = in_order
        .into_iter()
        .partition(|s| holds(policy, s, file, now) == Holds::Probably);
    probable
        .into_iter()
        .chain(rest)
        .map(Storage::addr)
        .collect()
}

/// QUERY_FETCH_ONE (102, `all = false`) and QUERY_FETCH_ALL (105, `all = true`); `now` is
/// unix time in seconds.
///
/// J.4, except that a client is never sent to a storage that may lack the file: where
/// FastDFS falls back to the designated store server, the candidates are asked instead.
pub fn choose_fetch(
    cluster: &mut Cluster,
    policy: &Policy,
    group: &str,
    name: &str,
    now: i64,
    all: bool,
) -> Result<Fetch, SelectError> {
    let group = find_group(cluster, group)?;
    let file = file_facts(group, name)?;
    let sure = |s: &Storage| s.is_active() && holds(policy, s, &file, now) == Holds::Surely;
    let chosen: Vec<usize> = if all {
        if file.normal {
            (0..group.storages().len())
                .filter(|&i| sure(&group.storages()[i]))
                .collect()
        } else {
            readable_source(group, &file).into_iter().collect()
        }
    } else {
        let source_first = !file.normal || policy.download_server == DownloadServer::SourceFirst;
        let mut one = source_first
            .then(|| readable_source(group, &file))
            .flatten();
        if one.is_none() && file.normal {
            let storages = group.storages();
            let len = storages.len();
            one = round_robin(len, group.read_cursor, |i| sure(&storages[i]));
            if let Some(index) = one {
                group.read_cursor = (index + 1) % len;
            }
        }
        one.into_iter().collect()
    };
    if !chosen.is_empty() {
        return servers(group, &chosen).map(Fetch::Servers);
    }
    let candidates = ask_order(policy, group, &file, now, group.read_cursor);
    if candidates.is_empty() {
        return Err(SelectError::NoServer(group.name.clone()));
    }
    if !group.storages().is_empty() {
        group.read_cursor = (group.read_cursor + 1) % group.storages().len();
    }
    Ok(Fetch::Ask {
        group: group.name.clone(),
        candidates,
        all,
        otherwise: None,
    })
}

/// QUERY_UPDATE (103): the source if writable; else a storage that holds the file (asked),
/// else the group's upload server.
pub fn choose_update(
    cluster: &mut Cluster,
    policy: &Policy,
    group: &str,
    name: &str,
    now: i64,
) -> Result<Fetch, SelectError> {
    let group = find_group(cluster, group)?;
    let file = file_facts(group, name)?;
    if let Some(index) = readable_source(group, &file) {
        return servers(group, &[index]).map(Fetch::Servers);
    }
    // The source is the one writer of its files (behaviour beyond J.4, which names another
    // server): an append, modify, metadata change or delete applied elsewhere while the
    // source is away races with the source's own changes, and one side is lost on every
    // storage (found by the crash soak). While the source is a member of the group the client
    // is asked to try again; only a deleted (or unknown) source hands its files on.
    let source_member = group.storages().iter().any(|s| {
        is_source(s, file.source)
            && !matches!(
                s.status,
                storage_status::DELETED | storage_status::IP_CHANGED
            )
    });
    if source_member {
        return Err(SelectError::SourceAway(group.name.clone()));
    }
    // Updates (deletes included) must reach a server even when disks are full.
    let fallback = choose_server(group, policy.store_server, Storage::is_active);
    let otherwise = servers(group, &fallback.into_iter().collect::<Vec<_>>())?;
    let candidates = ask_order(policy, group, &file, now, 0);
    Ok(Fetch::Ask {
        group: group.name.clone(),
        candidates,
        all: false,
        otherwise: Some(otherwise),
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Instant;

    use fdfs_proto::name::{size_field, APPENDER_FLAG};
    use fdfs_proto::tracker_msg::PathUsage;

    use super::*;
    use crate::cluster::tests::{join_request, peer, usage};

    const GB: u64 = 1 << 30;

    fn policy() -> Policy {
        Policy::from(&TrackerConfig::default())
    }

    /// Joins storage `id` of `group` (port = 23000 + id) and beats with `paths`.
    fn add(cluster: &mut Cluster, group: &str, id: u32, paths: Vec<PathUsage>) {
        let request = join_request(group, id, 23000 + id as u16, paths.len() as u32);
        cluster
            .join(peer(id as u16), &request, Instant::now())
            .unwrap();
        cluster
            .beat(peer(id as u16), paths, Instant::now())
            .unwrap();
    }

    fn ports(servers: &[StorageAddr]) -> Vec<u16> {
        servers.iter().map(|s| s.port).collect()
    }

    /// The servers of a direct answer (fails on an answer that needs asking).
    fn direct(fetch: Fetch) -> Servers {
        match fetch {
            Fetch::Servers(servers) => servers,
            other => panic!("expected servers, got {other:?}"),
        }
    }

    /// The candidates of an answer that needs asking.
    fn asked(fetch: Fetch) -> (Vec<u16>, bool, Option<Vec<u16>>) {
        match fetch {
            Fetch::Ask {
                candidates,
                all,
                otherwise,
                ..
            } => (
                ports(&candidates),
                all,
                otherwise.map(|o| ports(&o.servers)),
            ),
            other => panic!("expected asking, got {other:?}"),
        }
    }

    /// Records that storage `to` has received every change of `from` below `synced`.
    fn set_synced(cluster: &mut Cluster, to: usize, from: &str, synced: i64) {
        let index = cluster.group_position("g").unwrap();
        let storage = &mut cluster.groups_mut()[index].storages_mut()[to];
        storage.sync.generation = 7;
        storage.sync.from.insert(
            from.to_string(),
            crate::sync::PeerSync {
                generation: 7,
                synced_timestamp: synced,
                ..Default::default()
            },
        );
    }

    fn upload_port(
        cluster: &mut Cluster,
        policy: &Policy,
        group: Option<&str>,
    ) -> (String, u16, u8) {
        let upload = choose_upload(cluster, policy, group, false).unwrap();
        assert_eq!(upload.servers.len(), 1);
        (
            upload.group,
            upload.servers[0].port,
            upload.store_path_index,
        )
    }

    /// A normal 44-character logical name from `source` created at `ts`.
    fn normal_name(source: Source, ts: u32) -> String {
        let fields = NameFields {
            source,
            timestamp: ts,
            size_field: size_field(6, false, 5),
            crc32: 1,
        };
        format!("M00/00/00/{}123.txt", fields.encode())
    }

    #[test]
    fn empty_cluster_has_nothing_to_offer() {
        let mut cluster = Cluster::new();
        let err = choose_upload(&mut cluster, &policy(), None, false).unwrap_err();
        assert_eq!(err.status(), status::ENOENT);
        let err = choose_upload(&mut cluster, &policy(), Some("group1"), false).unwrap_err();
        assert_eq!(err, SelectError::UnknownGroup("group1".into()));
    }

    #[test]
    fn online_storages_are_not_writable() {
        let mut cluster = Cluster::new();
        cluster
            .join(
                peer(1),
                &join_request("group1", 1, 23001, 1),
                Instant::now(),
            )
            .unwrap();
        let err = choose_upload(&mut cluster, &policy(), None, false).unwrap_err();
        assert_eq!(err, SelectError::NoWritableGroup);
        let err = choose_upload(&mut cluster, &policy(), Some("group1"), false).unwrap_err();
        assert_eq!(err, SelectError::NoWritableStorage("group1".into()));
        assert_eq!(err.status(), status::ENOENT);
    }

    #[test]
    fn full_groups_answer_enospc() {
        let mut cluster = Cluster::new();
        // 1% reserved: 1 free out of 100 is not above it.
        add(&mut cluster, "group1", 1, vec![usage(100, 1)]);
        let err = choose_upload(&mut cluster, &policy(), None, false).unwrap_err();
        assert_eq!(err, SelectError::NoSpace);
        assert_eq!(err.status(), status::ENOSPC);
        let err = choose_upload(&mut cluster, &policy(), Some("group1"), true).unwrap_err();
        assert_eq!(err.status(), status::ENOSPC);
        add(&mut cluster, "group2", 2, vec![usage(100, 2)]);
        assert_eq!(upload_port(&mut cluster, &policy(), None).0, "group2");
    }

    #[test]
    fn group_room_follows_the_least_free_storage() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "group1", 1, vec![usage(100, 90)]);
        add(&mut cluster, "group1", 2, vec![usage(100, 1)]);
        // Storage 2 is full, so the group is (J.5) even though storage 1 has room.
        let err = choose_upload(&mut cluster, &policy(), Some("group1"), false).unwrap_err();
        assert_eq!(err, SelectError::NoSpace);
        // Once storage 2 is OFFLINE it no longer counts.
        cluster.disconnect(peer(2));
        assert_eq!(
            upload_port(&mut cluster, &policy(), Some("group1")).1,
            23001
        );
    }

    #[test]
    fn round_robin_over_groups_skips_unusable_ones() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "a", 1, vec![usage(100, 50)]);
        add(&mut cluster, "b", 2, vec![usage(100, 1)]);
        add(&mut cluster, "c", 3, vec![usage(100, 50)]);
        cluster
            .join(peer(4), &join_request("d", 4, 23004, 1), Instant::now())
            .unwrap();
        let groups: Vec<String> = (0..4)
            .map(|_| upload_port(&mut cluster, &policy(), None).0)
            .collect();
        assert_eq!(groups, ["a", "c", "a", "c"]);
    }

    #[test]
    fn specified_and_load_balanced_groups() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "a", 1, vec![usage(100, 30)]);
        add(&mut cluster, "b", 2, vec![usage(100, 60)]);
        add(&mut cluster, "c", 3, vec![usage(100, 60)]);
        let mut specified = policy();
        specified.store_lookup = StoreLookup::Specified;
        specified.store_group = "a".into();
        for _ in 0..3 {
            assert_eq!(upload_port(&mut cluster, &specified, None).0, "a");
        }
        // An explicit group wins over the configured one.
        assert_eq!(upload_port(&mut cluster, &specified, Some("c")).0, "c");
        specified.store_group = "zz".into();
        assert_eq!(
            choose_upload(&mut cluster, &specified, None, false).unwrap_err(),
            SelectError::UnknownGroup("zz".into())
        );

        let mut balanced = policy();
        balanced.store_lookup = StoreLookup::LoadBalance;
        for _ in 0..3 {
            assert_eq!(upload_port(&mut cluster, &balanced, None).0, "b");
        }
    }

    #[test]
    fn server_rules() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        add(&mut cluster, "g", 2, vec![usage(100, 50)]);
        add(&mut cluster, "g", 3, vec![usage(100, 50)]);
        add(&mut cluster, "g", 4, vec![usage(100, 50)]);
        // Not writable: skipped by every rule.
        cluster.disconnect(peer(2));
        let mut rr = policy();
        rr.store_server = StoreServer::RoundRobin;
        let picks: Vec<u16> = (0..4)
            .map(|_| upload_port(&mut cluster, &rr, Some("g")).1)
            .collect();
        assert_eq!(picks, [23001, 23003, 23004, 23001]);

        let mut first = policy();
        first.store_server = StoreServer::FirstById;
        assert_eq!(upload_port(&mut cluster, &first, Some("g")).1, 23001);

        let mut priority = policy();
        priority.store_server = StoreServer::Priority;
        let mut request = join_request("g", 4, 23004, 1);
        request.upload_priority = 1;
        cluster.join(peer(4), &request, Instant::now()).unwrap();
        cluster
            .beat(peer(4), vec![usage(100, 50)], Instant::now())
            .unwrap();
        assert_eq!(upload_port(&mut cluster, &priority, Some("g")).1, 23004);
    }

    #[test]
    fn servers_without_room_are_never_chosen() {
        let mut cluster = Cluster::new();
        let mut bytes = policy();
        bytes.reserved = ReservedSpace::Bytes(10 * GB);
        // Two groups: g1's storage has 12 GB free on its one path; g2's has 8 GB.
        add(&mut cluster, "g1", 1, vec![usage(100 * GB, 12 * GB)]);
        add(&mut cluster, "g2", 2, vec![usage(100 * GB, 8 * GB)]);
        for _ in 0..3 {
            assert_eq!(upload_port(&mut cluster, &bytes, None).1, 23001);
        }
        assert_eq!(
            choose_upload(&mut cluster, &bytes, Some("g2"), false).unwrap_err(),
            SelectError::NoSpace
        );
        // No storage with room: every group is full.
        cluster.disconnect(peer(1));
        assert_eq!(
            choose_upload(&mut cluster, &bytes, None, false).unwrap_err(),
            SelectError::NoSpace
        );
    }

    #[test]
    fn store_paths_keep_their_share_of_an_absolute_reserve() {
        let mut bytes = policy();
        bytes.reserved = ReservedSpace::Bytes(10 * GB);
        // J.3: each of two paths keeps 5 GB; 6 GB free on each is room on each
        let mut cluster = Cluster::new();
        add(
            &mut cluster,
            "g",
            1,
            vec![usage(100 * GB, 6 * GB), usage(100 * GB, 6 * GB)],
        );
        let paths: Vec<u8> = (0..4)
            .map(|_| upload_port(&mut cluster, &bytes, Some("g")).2)
            .collect();
        assert_eq!(paths, [0, 1, 0, 1]);
        // a path under its 5 GB share is skipped while another has room
        let mut cluster = Cluster::new();
        add(
            &mut cluster,
            "g",
            1,
            vec![usage(100 * GB, 8 * GB), usage(100 * GB, 4 * GB)],
        );
        let paths: Vec<u8> = (0..3)
            .map(|_| upload_port(&mut cluster, &bytes, Some("g")).2)
            .collect();
        assert_eq!(paths, [0, 0, 0]);
        // a ratio applies to every path as it is
        let mut ratio = policy();
        ratio.reserved = ReservedSpace::Ratio(0.05);
        let paths: Vec<u8> = (0..2)
            .map(|_| upload_port(&mut cluster, &ratio, Some("g")).2)
            .collect();
        assert_eq!(paths, [0, 0]);
    }

    #[test]
    fn path_rules() {
        let mut cluster = Cluster::new();
        add(
            &mut cluster,
            "g",
            1,
            vec![usage(100, 50), usage(100, 1), usage(100, 80)],
        );
        let rr = policy();
        let paths: Vec<u8> = (0..4)
            .map(|_| upload_port(&mut cluster, &rr, None).2)
            .collect();
        assert_eq!(paths, [0, 2, 0, 2]);
        let mut balanced = policy();
        balanced.store_path = StorePath::LoadBalance;
        for _ in 0..2 {
            assert_eq!(upload_port(&mut cluster, &balanced, None).2, 2);
        }
    }

    #[test]
    fn all_variant_lists_writable_servers_in_id_order() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 12, vec![usage(100, 50), usage(100, 50)]);
        add(&mut cluster, "g", 11, vec![usage(100, 50), usage(100, 50)]);
        add(&mut cluster, "g", 13, vec![usage(100, 50), usage(100, 50)]);
        cluster.disconnect(peer(13));
        let first = choose_upload(&mut cluster, &policy(), None, true).unwrap();
        assert_eq!(ports(&first.servers), [23011, 23012]);
        assert_eq!(first.store_path_index, 0);
        // The path cursor of the first server advanced.
        let second = choose_upload(&mut cluster, &policy(), None, true).unwrap();
        assert_eq!(second.store_path_index, 1);
    }

    #[test]
    fn bad_names_and_unknown_groups() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        let name = normal_name(Source::Id(1), 1000);
        let err = choose_fetch(&mut cluster, &policy(), "nope", &name, 2000, false).unwrap_err();
        assert_eq!(err.status(), status::ENOENT);
        for bad in ["M00/00/00/../../etc/passwd", "M00/0a/00/abc", "short"] {
            let err = choose_fetch(&mut cluster, &policy(), "g", bad, 2000, false).unwrap_err();
            assert_eq!(err.status(), status::EINVAL, "{bad}");
            let err = choose_update(&mut cluster, &policy(), "g", bad, 2000).unwrap_err();
            assert_eq!(err.status(), status::EINVAL, "{bad}");
        }
    }

    #[test]
    fn fresh_files_are_read_from_their_source() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        add(&mut cluster, "g", 2, vec![usage(100, 50)]);
        let now = 1_000_000;
        let name = normal_name(Source::Id(2), now as u32 - 10);
        for _ in 0..3 {
            let one =
                direct(choose_fetch(&mut cluster, &policy(), "g", &name, now, false).unwrap());
            assert_eq!(ports(&one.servers), [23002]);
        }
        let all = direct(choose_fetch(&mut cluster, &policy(), "g", &name, now, true).unwrap());
        assert_eq!(ports(&all.servers), [23002]);
    }

    #[test]
    fn old_files_are_read_round_robin() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        add(&mut cluster, "g", 2, vec![usage(100, 50)]);
        add(&mut cluster, "g", 3, vec![usage(100, 50)]);
        cluster.disconnect(peer(3));
        let now = 1_000_000;
        let name = normal_name(Source::Id(2), (now - 86_401) as u32);
        let picks: Vec<u16> = (0..4)
            .map(|_| {
                direct(choose_fetch(&mut cluster, &policy(), "g", &name, now, false).unwrap())
                    .servers[0]
                    .port
            })
            .collect();
        assert_eq!(picks, [23001, 23002, 23001, 23002]);
        let all = direct(choose_fetch(&mut cluster, &policy(), "g", &name, now, true).unwrap());
        assert_eq!(ports(&all.servers), [23001, 23002]);

        // download_server = 1 prefers the source even for old files.
        let mut source_first = policy();
        source_first.download_server = DownloadServer::SourceFirst;
        for _ in 0..2 {
            let one =
                direct(choose_fetch(&mut cluster, &source_first, "g", &name, now, false).unwrap());
            assert_eq!(ports(&one.servers), [23002]);
        }
    }

    #[test]
    fn synced_timestamps_widen_the_readers() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        add(&mut cluster, "g", 2, vec![usage(100, 50)]);
        let now = 1_000_000i64;
        let ts = (now - 10) as u32;
        let name = normal_name(Source::Id(2), ts);
        let readers = |cluster: &mut Cluster, now: i64| {
            ports(&direct(choose_fetch(cluster, &policy(), "g", &name, now, true).unwrap()).servers)
        };
        // Rule 3 with last_synced_timestamp = W - 1 > ts.
        set_synced(&mut cluster, 0, "2", i64::from(ts) + 1);
        assert_eq!(readers(&mut cluster, now), [23002]);
        set_synced(&mut cluster, 0, "2", i64::from(ts) + 2);
        assert_eq!(readers(&mut cluster, now), [23001, 23002]);
        // Figures from another source do not count for this file.
        set_synced(&mut cluster, 0, "2", 0);
        set_synced(&mut cluster, 0, "3", i64::from(ts) + 100);
        assert_eq!(readers(&mut cluster, now), [23002]);
        // Nor figures for older data of the storage.
        set_synced(&mut cluster, 0, "2", i64::from(ts) + 100);
        let index = cluster.group_position("g").unwrap();
        cluster.groups_mut()[index].storages_mut()[0]
            .sync
            .generation = 8;
        assert_eq!(readers(&mut cluster, now), [23002]);
    }

    #[test]
    fn a_reported_figure_beats_the_max_delay_guess() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        add(&mut cluster, "g", 2, vec![usage(100, 50)]);
        let now = 1_000_000i64;
        // far older than storage_sync_file_max_delay (one day)
        let ts = (now - 90_000) as u32;
        let name = normal_name(Source::Id(2), ts);
        let readers = |cluster: &mut Cluster| {
            ports(&direct(choose_fetch(cluster, &policy(), "g", &name, now, true).unwrap()).servers)
        };
        // nothing reported for storage 1: the old file is assumed everywhere (J.4 rule 2)
        assert_eq!(readers(&mut cluster), [23001, 23002]);
        // its source says it has not reached storage 1 (a full or stuck peer): not named
        set_synced(&mut cluster, 0, "2", i64::from(ts) - 5);
        assert_eq!(readers(&mut cluster), [23002]);
        // and the source away: storage 1 is asked, not named
        cluster.disconnect(peer(2));
        let (candidates, _, _) =
            asked(choose_fetch(&mut cluster, &policy(), "g", &name, now, false).unwrap());
        assert_eq!(candidates, [23001]);
    }

    #[test]
    fn file_ages_are_measured_on_the_sources_clock() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        add(&mut cluster, "g", 2, vec![usage(100, 50)]);
        let mut short = policy();
        short.sync_max_delay = 10;
        let now = 1_000_000i64;
        // storage 2's clock is 30 s behind ours
        let index = cluster.group_position("g").unwrap();
        cluster.groups_mut()[index].storages_mut()[1]
            .sync
            .clock_skew = Some(-30);
        let readers = |cluster: &mut Cluster, ts: i64| {
            let name = normal_name(Source::Id(2), ts as u32);
            ports(&direct(choose_fetch(cluster, &short, "g", &name, now, true).unwrap()).servers)
        };
        // created 5 s ago on its clock (35 s ago on ours): young, only at its source
        assert_eq!(readers(&mut cluster, now - 35), [23002]);
        // 15 s ago on its clock: past the max delay
        assert_eq!(readers(&mut cluster, now - 45), [23001, 23002]);
        // a clock ahead of ours does not make files look older either
        cluster.groups_mut()[index].storages_mut()[1]
            .sync
            .clock_skew = Some(30);
        assert_eq!(readers(&mut cluster, now + 25), [23002]);
        assert_eq!(readers(&mut cluster, now + 15), [23001, 23002]);
    }

    #[test]
    fn source_down_means_asking_who_holds_the_file() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        add(&mut cluster, "g", 2, vec![usage(100, 50)]);
        add(&mut cluster, "g", 3, vec![usage(100, 50)]);
        cluster.disconnect(peer(1));
        let now = 1_000_000;
        let name = normal_name(Source::Id(1), now as u32 - 400);
        let (candidates, all, otherwise) =
            asked(choose_fetch(&mut cluster, &policy(), "g", &name, now, false).unwrap());
        assert_eq!(candidates.len(), 2);
        assert!(candidates.iter().all(|p| [23002, 23003].contains(p)));
        assert!(!all);
        assert_eq!(otherwise, None);
        // Rule 4 (about a second behind, file older than the max sync time): asked first.
        set_synced(&mut cluster, 2, "1", now - 400);
        let (candidates, all, _) =
            asked(choose_fetch(&mut cluster, &policy(), "g", &name, now, true).unwrap());
        assert_eq!(candidates[0], 23003);
        assert!(all);
        // A replica known to be past the file is answered directly.
        set_synced(&mut cluster, 1, "1", now);
        let one = direct(choose_fetch(&mut cluster, &policy(), "g", &name, now, false).unwrap());
        assert_eq!(ports(&one.servers), [23002]);
        // Nobody readable at all.
        cluster.disconnect(peer(2));
        cluster.disconnect(peer(3));
        let err = choose_fetch(&mut cluster, &policy(), "g", &name, now, false).unwrap_err();
        assert_eq!(err, SelectError::NoServer("g".into()));
        assert_eq!(err.status(), status::ENOENT);
    }

    #[test]
    fn appenders_and_slaves_go_to_the_source() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        add(&mut cluster, "g", 2, vec![usage(100, 50)]);
        let now = 1_000_000;
        let old = (now - 100_000) as u32;
        let appender = NameFields {
            source: Source::Id(2),
            timestamp: old,
            size_field: size_field(0, true, 9),
            crc32: 0,
        };
        assert!(appender.size_field & APPENDER_FLAG != 0);
        let appender = format!("M00/00/00/{}123.txt", appender.encode());
        let slave = normal_name(Source::Id(2), old).replace(".txt", "_big.txt");
        for name in [&appender, &slave] {
            for _ in 0..2 {
                let one =
                    direct(choose_fetch(&mut cluster, &policy(), "g", name, now, false).unwrap());
                assert_eq!(ports(&one.servers), [23002], "{name}");
            }
            let all = direct(choose_fetch(&mut cluster, &policy(), "g", name, now, true).unwrap());
            assert_eq!(ports(&all.servers), [23002], "{name}");
        }
    }

    #[test]
    fn ip_sources_match_by_address() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        let now = 1_000_000;
        let name = normal_name(Source::Ip(Ipv4Addr::new(127, 0, 0, 1)), now as u32);
        let one = direct(choose_fetch(&mut cluster, &policy(), "g", &name, now, false).unwrap());
        assert_eq!(ports(&one.servers), [23001]);
    }

    #[test]
    fn updates_go_to_the_source_or_a_holder_or_the_upload_server() {
        let mut cluster = Cluster::new();
        add(&mut cluster, "g", 1, vec![usage(100, 50)]);
        add(&mut cluster, "g", 2, vec![usage(100, 1)]);
        let name = normal_name(Source::Id(2), 1000);
        let update = direct(choose_update(&mut cluster, &policy(), "g", &name, 2000).unwrap());
        assert_eq!(ports(&update.servers), [23002]);
        // the source away: try again, never another writer of its files
        cluster.disconnect(peer(2));
        let err = choose_update(&mut cluster, &policy(), "g", &name, 2000).unwrap_err();
        assert_eq!(err, SelectError::SourceAway("g".into()));
        assert_eq!(err.status(), status::EAGAIN);
        // a source that is not a member (never joined here, or deleted): a holder, else the
        // upload server
        let stranger = normal_name(Source::Id(9), 1000);
        let (candidates, all, otherwise) =
            asked(choose_update(&mut cluster, &policy(), "g", &stranger, 2000).unwrap());
        assert_eq!(
            (candidates, all, otherwise),
            (vec![23001], false, Some(vec![23001]))
        );
        cluster.delete_storage("g", "2").unwrap();
        let (candidates, _, _) =
            asked(choose_update(&mut cluster, &policy(), "g", &name, 2000).unwrap());
        assert_eq!(candidates, vec![23001]);
        cluster.disconnect(peer(1));
        let err = choose_update(&mut cluster, &policy(), "g", &stranger, 2000).unwrap_err();
        assert_eq!(err.status(), status::ENOENT);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Per group: storages with their state (0 ONLINE, 1 ACTIVE, 2 OFFLINE) and
        /// (total, free) of every store path; all storages of a group share the path count.
        type Layout = Vec<Vec<(u8, Vec<(u64, u64)>)>>;

        fn layout() -> impl Strategy<Value = Layout> {
            let group = (1..4usize).prop_flat_map(|paths| {
                let path = (0..1000u64, 0..1000u64).prop_map(|(a, b)| (a.max(b), a.min(b)));
                prop::collection::vec((0..3u8, prop::collection::vec(path, paths)), 1..4)
            });
            prop::collection::vec(group, 1..4)
        }

        fn build(layout: &Layout) -> Cluster {
            let mut cluster = Cluster::new();
            let mut id = 0u16;
            for (g, storages) in layout.iter().enumerate() {
                for (state, paths) in storages {
                    id += 1;
                    let group = format!("g{g}");
                    let request =
                        join_request(&group, u32::from(id), 23000 + id, paths.len() as u32);
                    cluster.join(peer(id), &request, Instant::now()).unwrap();
                    if *state == 0 {
                        continue;
                    }
                    let usage = paths.iter().map(|&(t, f)| usage(t, f)).collect();
                    cluster.beat(peer(id), usage, Instant::now()).unwrap();
                    if *state == 2 {
                        cluster.disconnect(peer(id));
                    }
                }
            }
            cluster
        }

        fn policy_strategy() -> impl Strategy<Value = Policy> {
            (
                prop_oneof![
                    Just(StoreLookup::RoundRobin),
                    Just(StoreLookup::LoadBalance)
                ],
                prop_oneof![
                    Just(StoreServer::RoundRobin),
                    Just(StoreServer::FirstById),
                    Just(StoreServer::Priority)
                ],
                prop_oneof![Just(StorePath::RoundRobin), Just(StorePath::LoadBalance)],
                prop_oneof![
                    (0.0..0.6f64).prop_map(ReservedSpace::Ratio),
                    (0..600u64).prop_map(ReservedSpace::Bytes)
                ],
            )
                .prop_map(|(lookup, server, path, reserved)| Policy {
                    store_lookup: lookup,
                    store_server: server,
                    store_path: path,
                    reserved,
                    ..policy()
                })
        }

        proptest! {
            #[test]
            fn uploads_only_go_where_there_is_room(
                layout in layout(),
                policy in policy_strategy(),
                all in any::<bool>(),
            ) {
                let mut cluster = build(&layout);
                let snapshot = cluster.groups().to_vec();
                let any_active = snapshot.iter().flat_map(|g| g.storages()).any(|s| s.is_active());
                for _ in 0..4 {
                    match choose_upload(&mut cluster, &policy, None, all) {
                        Ok(upload) => {
                            prop_assert!(!upload.servers.is_empty());
                            prop_assert!(all || upload.servers.len() == 1);
                            let group = snapshot.iter().find(|g| g.name == upload.group).unwrap();
                            prop_assert!(matches!(capacity(&policy.reserved, group), Capacity::Room(_)));
                            for (i, addr) in upload.servers.iter().enumerate() {
                                let storage = group.storages().iter().find(|s| s.port == addr.port).unwrap();
                                prop_assert!(takes_uploads(&policy.reserved, storage));
                                if i == 0 {
                                    let path = usize::from(upload.store_path_index);
                                    prop_assert!(path_has_room(&policy.reserved, storage, path));
                                }
                            }
                        }
                        Err(SelectError::NoWritableGroup) => prop_assert!(!any_active),
                        Err(SelectError::NoSpace) => {
                            prop_assert!(any_active);
                            prop_assert!(snapshot.iter().all(|g| !matches!(capacity(&policy.reserved, g), Capacity::Room(_))));
                        }
                        Err(other) => prop_assert!(false, "unexpected {other}"),
                    }
                }
            }

            #[test]
            fn reads_only_go_to_active_storages(
                layout in layout(),
                policy in policy_strategy(),
                source in 1..12u32,
                age in 0..200_000i64,
                all in any::<bool>(),
            ) {
                let mut cluster = build(&layout);
                let now = 1_000_000_000i64;
                let name = normal_name(Source::Id(source), (now - age) as u32);
                for g in 0..layout.len() {
                    let group = format!("g{g}");
                    let reply = choose_fetch(&mut cluster, &policy, &group, &name, now, all);
                    let update = choose_update(&mut cluster, &policy, &group, &name, now);
                    let snapshot = cluster.group(&group).unwrap();
                    let any_active = snapshot.storages().iter().any(|s| s.is_active());
                    for result in [reply, update] {
                        let named = match result {
                                Ok(Fetch::Servers(servers)) => Ok(servers.servers),
                                Ok(Fetch::Ask { candidates, otherwise, .. }) => {
                                    if let Some(otherwise) = otherwise {
                                        prop_assert!(!otherwise.servers.is_empty());
                                    }
                                    Ok(candidates)
                                }
                                Err(err) => Err(err),
                        };
                        match named {
                            Ok(servers) => {
                                prop_assert!(!servers.is_empty());
                                for addr in &servers {
                                    let storage = snapshot.storages().iter().find(|s| s.port == addr.port).unwrap();
                                    prop_assert!(storage.is_active());
                                }
                            }
                            Err(SelectError::SourceAway(g)) => {
                                // updates only: the source is a member that is not active
                                prop_assert_eq!(&g, &group);
                                prop_assert!(snapshot.storages().iter().any(|s| s.id == source.to_string() && !s.is_active()));
                            }
                            Err(err) => {
                                prop_assert_eq!(err, SelectError::NoServer(group.clone()));
                                prop_assert!(!any_active);
                            }
                        }
                    }
                }
            }
        }
    }
}
