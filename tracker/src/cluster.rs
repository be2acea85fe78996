//! The tracker's registry of groups and storages, built from what storages report (J.1, J.2).
//!
//! Sans-IO: every transition takes the current time as an argument, so the status machine is
//! tested without sleeping. A storage is identified by its group and its id string (the
//! decimal numeric id it writes into file names); it is bound to the report connection it
//! joined on, and only that connection's BEATs and disconnection affect it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fdfs_proto::stat::StatBlock;
use fdfs_proto::status;
use fdfs_proto::tracker_msg::{storage_status, JoinRequest, PathUsage, StorageAddr, StorageBrief};
use tracing::{info, warn};

/// One storage server as the tracker knows it.
#[derive(Clone, Debug)]
pub struct Storage {
    pub id: String,
    /// The peer IP of the connection it joined on; what clients are sent to.
    pub ip: String,
    /// The port it reported in its JOIN.
    pub port: u16,
    /// A J.1 status value.
    pub status: u8,
    pub upload_priority: i64,
    pub store_path_count: u32,
    pub subdir_count: u32,
    /// Disk usage of every store path from the last BEAT; empty before the first one.
    pub paths: Vec<PathUsage>,
    pub join_time: i64,
    pub up_time: i64,
    pub version: String,
    pub last_beat: Instant,
    /// Round-robin cursor over store paths (J.3).
    pub current_write_path: usize,
    /// Source timestamp up to which this storage has received replicated files (J.4); fed by
    /// replication reports, 0 until then.
    pub last_synced_timestamp: u32,
    /// Unix time of the last BEAT; 0 before the first one.
    pub last_beat_unix: i64,
    /// Counters the storage reported with its last BEAT (zero until it sends them).
    pub stat: StatBlock,
    /// The IP the storage says it listens on (fdfs-rs BEAT extension); empty when it listens
    /// on all addresses or has not said. See [`Storage::address_mismatch`].
    pub listen_ip: String,
    /// Peer address of the report connection the storage joined on, while it is open.
    pub(crate) report_conn: Option<SocketAddr>,
    /// Replication: its data generation, copy source and how far each peer's changes reached
    /// it (see [`crate::sync`]).
    pub sync: crate::sync::SyncInfo,
}

impl Storage {
    /// ACTIVE storages are the readable and writable ones.
    pub fn is_active(&self) -> bool {
        self.status == storage_status::ACTIVE
    }

    pub fn addr(&self) -> StorageAddr {
        StorageAddr {
            ip: self.ip.clone(),
            port: self.port,
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.paths.iter().map(|p| p.total_bytes).sum()
    }

    pub fn free_bytes(&self) -> u64 {
        self.paths.iter().map(|p| p.free_bytes).sum()
    }

    /// The storage listens on one IP, but its report connection comes from another: clients
    /// are sent to the connection's IP ([`Storage::ip`]), where it does not listen.
    pub fn address_mismatch(&self) -> bool {
        if self.listen_ip.is_empty() {
            return false;
        }
        match (
            self.listen_ip.parse::<std::net::IpAddr>(),
            self.ip.parse::<std::net::IpAddr>(),
        ) {
            (Ok(listen), Ok(seen)) => listen.to_canonical() != seen.to_canonical(),
            _ => self.listen_ip != self.ip,
        }
    }

    /// Still a member: deleted and superseded records do not claim their address.
    pub(crate) fn claims_address(&self) -> bool {
        !matches!(
            self.status,
            storage_status::DELETED | storage_status::IP_CHANGED
        )
    }

    pub fn brief(&self) -> StorageBrief {
        StorageBrief {
            status: self.status,
            port: self.port,
            id: self.id.clone(),
            ip: self.ip.clone(),
        }
    }
}

/// A group: storages sorted by id, the disk layout they share, and selection cursors.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    /// Fixed by the first storage that joined; later storages must agree.
    pub store_path_count: u32,
    pub subdir_count: u32,
    pub(crate) storages: Vec<Storage>,
    /// Round-robin cursor over `storages` for uploads (J.2).
    pub(crate) write_cursor: usize,
    /// Round-robin cursor over `storages` for downloads (J.4).
    pub(crate) read_cursor: usize,
}

impl Group {
    pub(crate) fn new(name: &str, store_path_count: u32, subdir_count: u32) -> Self {
        Group {
            name: name.to_string(),
            store_path_count,
            subdir_count,
            storages: Vec::new(),
            write_cursor: 0,
            read_cursor: 0,
        }
    }

    /// All storages of the group in id order (byte-wise, J.2).
    pub fn storages(&self) -> &[Storage] {
        &self.storages
    }

    pub(crate) fn storages_mut(&mut self) -> &mut [Storage] {
        &mut self.storages
    }

    pub fn storage(&self, id: &str) -> Option<&Storage> {
        self.position(id).ok().map(|i| &self.storages[i])
    }

    fn storage_mut(&mut self, id: &str) -> Option<&mut Storage> {
        self.position(id).ok().map(|i| &mut self.storages[i])
    }

    fn position(&self, id: &str) -> Result<usize, usize> {
        self.storages.binary_search_by(|s| s.id.as_str().cmp(id))
    }

    /// The member list sent in every BEAT reply (K.4 flag 0x04).
    pub fn members(&self) -> Vec<StorageBrief> {
        self.storages.iter().map(Storage::brief).collect()
    }
}

/// Which storage a report connection speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageKey {
    pub group: String,
    pub id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("storage {id} of group {group} is already connected from {current}")]
    AlreadyConnected {
        group: String,
        id: String,
        current: String,
    },
    #[error("storage id {id} already belongs to group {group}")]
    IdInOtherGroup { id: String, group: String },
    #[error(
        "group {group} uses {expected_paths} store paths and {expected_subdirs} subdirs, \
         the storage has {paths} and {subdirs}"
    )]
    LayoutMismatch {
        group: String,
        expected_paths: u32,
        expected_subdirs: u32,
        paths: u32,
        subdirs: u32,
    },
}

impl JoinError {
    pub fn status(&self) -> u8 {
        match self {
            JoinError::AlreadyConnected { .. } | JoinError::IdInOtherGroup { .. } => status::EEXIST,
            JoinError::LayoutMismatch { .. } => status::EINVAL,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BeatError {
    #[error("connection has not joined")]
    NotJoined,
    #[error("beat reports {reported} store paths, the storage joined with {expected}")]
    PathCount { reported: usize, expected: u32 },
}

impl BeatError {
    pub fn status(&self) -> u8 {
        match self {
            BeatError::NotJoined => status::EACCES,
            BeatError::PathCount { .. } => status::EINVAL,
        }
    }
}

/// Why DELETE_STORAGE (93) or DELETE_GROUP (108) was refused (D.5).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeleteError {
    #[error("group {0} not found")]
    UnknownGroup(String),
    #[error("storage {id} of group {group} not found")]
    UnknownStorage { group: String, id: String },
    #[error("storage {id} of group {group} is {}, stop it first", storage_status::name(*.status))]
    Busy {
        group: String,
        id: String,
        status: u8,
    },
    #[error("storage {id} of group {group} is already deleted")]
    AlreadyDeleted { group: String, id: String },
    #[error("group {group} still has {count} storages")]
    GroupNotEmpty { group: String, count: usize },
}

impl DeleteError {
    pub fn status(&self) -> u8 {
        match self {
            DeleteError::UnknownGroup(_) | DeleteError::UnknownStorage { .. } => status::ENOENT,
            DeleteError::Busy { .. } | DeleteError::GroupNotEmpty { .. } => status::EBUSY,
            DeleteError::AlreadyDeleted { .. } => status::EALREADY,
        }
    }
}

/// All groups, sorted by name, and the report connections bound to storages.
#[derive(Debug, Default)]
pub struct Cluster {
    pub(crate) groups: Vec<Group>,
    /// Round-robin cursor over `groups` for uploads without a group (J.3).
    pub(crate) write_group_cursor: usize,
    sessions: HashMap<SocketAddr, StorageKey>,
}

impl Cluster {
    pub fn new() -> Self {
        Self::default()
    }

    /// Groups in name order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    pub(crate) fn groups_mut(&mut self) -> &mut [Group] {
        &mut self.groups
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.group_position(name).ok().map(|i| &self.groups[i])
    }

    pub(crate) fn group_position(&self, name: &str) -> Result<usize, usize> {
        self.groups.binary_search_by(|g| g.name.as_str().cmp(name))
    }

    fn storage_mut(&mut self, key: &StorageKey) -> Option<&mut Storage> {
        let index = self.group_position(&key.group).ok()?;
        self.groups[index].storage_mut(&key.id)
    }

    /// The storage a report connection joined as, if it still speaks for it.
    pub fn session(&self, peer: SocketAddr) -> Option<&StorageKey> {
        self.sessions.get(&peer)
    }

    /// JOIN (81) on the connection from `peer`: registers or updates the storage and makes
    /// it ONLINE. Returns the status the tracker now holds for it.
    pub fn join(
        &mut self,
        peer: SocketAddr,
        request: &JoinRequest,
        now: Instant,
    ) -> Result<u8, JoinError> {
        let id = request.storage_id.to_string();
        let ip = peer.ip().to_canonical().to_string();
        if let Some(other) = self
            .groups
            .iter()
            .find(|g| g.name != request.group && g.storage(&id).is_some())
        {
            return Err(JoinError::IdInOtherGroup {
                id,
                group: other.name.clone(),
            });
        }
        let index = match self.group_position(&request.group) {
            Ok(index) => index,
            Err(index) => {
                let group = Group::new(
                    &request.group,
                    request.store_path_count,
                    request.subdir_count_per_path,
                );
                self.groups.insert(index, group);
                index
            }
        };
        let group = &mut self.groups[index];
        if let Some(existing) = group.storage(&id) {
            let live = matches!(
                existing.status,
                storage_status::ONLINE | storage_status::ACTIVE
            );
            let same_addr = existing.ip == ip && existing.port == request.port;
            if live && !same_addr && existing.report_conn.is_some_and(|c| c != peer) {
                return Err(JoinError::AlreadyConnected {
                    group: group.name.clone(),
                    id,
                    current: format!("{}:{}", existing.ip, existing.port),
                });
            }
        }
        // The layout is the group's unless this storage is its only member, in which case the
        // storage may change it (K.3: "unless all other storages agree").
        let has_others = group.storages.iter().any(|s| s.id != id);
        let layout = (request.store_path_count, request.subdir_count_per_path);
        if has_others && layout != (group.store_path_count, group.subdir_count) {
            return Err(JoinError::LayoutMismatch {
                group: group.name.clone(),
                expected_paths: group.store_path_count,
                expected_subdirs: group.subdir_count,
                paths: layout.0,
                subdirs: layout.1,
            });
        }
        group.store_path_count = layout.0;
        group.subdir_count = layout.1;

        let fresh = Storage {
            id: id.clone(),
            ip,
            port: request.port,
            status: storage_status::ONLINE,
            upload_priority: request.upload_priority,
            store_path_count: request.store_path_count,
            subdir_count: request.subdir_count_per_path,
            paths: Vec::new(),
            join_time: request.join_time,
            up_time: request.up_time,
            version: request.version.clone(),
            last_beat: now,
            current_write_path: 0,
            last_synced_timestamp: 0,
            last_beat_unix: 0,
            stat: StatBlock::default(),
            listen_ip: String::new(),
            report_conn: Some(peer),
            sync: crate::sync::SyncInfo::default(),
        };
        match group.position(&id) {
            Ok(i) => {
                let storage = &mut group.storages[i];
                // Counters and replication progress survive a rejoin (a DELETED storage that
                // joins again is a member again); disk usage and the path cursor only stay
                // meaningful with the same layout.
                let kept = Storage {
                    last_synced_timestamp: storage.last_synced_timestamp,
                    last_beat_unix: storage.last_beat_unix,
                    stat: storage.stat,
                    sync: std::mem::take(&mut storage.sync),
                    ..fresh
                };
                if storage.store_path_count == kept.store_path_count {
                    let paths = std::mem::take(&mut storage.paths);
                    let cursor = storage.current_write_path;
                    *storage = Storage {
                        paths,
                        current_write_path: cursor,
                        ..kept
                    };
                } else {
                    *storage = kept;
                }
            }
            Err(i) => group.storages.insert(i, fresh),
        }
        info!(group = %request.group, id = %id, %peer, port = request.port, "storage joined, now ONLINE");
        if let Some(other) = self.same_address(&request.group, &id) {
            warn!(
                group = %request.group,
                id = %id,
                other_group = %other.0,
                other_id = %other.1,
                address = %format!("{}:{}", peer.ip().to_canonical(), request.port),
                "two storages are registered at the same address: delete the stale one (fdfs storage delete) or fix the storage ids"
            );
        }

        let key = StorageKey {
            group: request.group.clone(),
            id,
        };
        if let Some(previous) = self.sessions.insert(peer, key.clone()) {
            if previous != key {
                // The connection now speaks for another storage: the old one lost its link.
                self.release(&previous, peer);
            }
        }
        Ok(storage_status::ONLINE)
    }

    /// BEAT (83) without counters, at unix time 0; for tests of the status machine.
    #[cfg(test)]
    pub fn beat(
        &mut self,
        peer: SocketAddr,
        paths: Vec<PathUsage>,
        now: Instant,
    ) -> Result<Vec<StorageBrief>, BeatError> {
        self.report_beat(peer, paths, None, now, 0)
    }

    /// BEAT (83) on the connection from `peer` at `now` (unix time `unix_now`): stores disk
    /// usage and the storage's counters when it sent them, makes the storage ACTIVE and
    /// returns the group's member list.
    pub fn report_beat(
        &mut self,
        peer: SocketAddr,
        paths: Vec<PathUsage>,
        stat: Option<StatBlock>,
        now: Instant,
        unix_now: i64,
    ) -> Result<Vec<StorageBrief>, BeatError> {
        let key = self
            .sessions
            .get(&peer)
            .cloned()
            .ok_or(BeatError::NotJoined)?;
        let Some(storage) = self
            .storage_mut(&key)
            .filter(|s| s.report_conn == Some(peer))
        else {
            // Another connection joined as this storage since; this one is stale.
            self.sessions.remove(&peer);
            return Err(BeatError::NotJoined);
        };
        if paths.len() != storage.store_path_count as usize {
            return Err(BeatError::PathCount {
                reported: paths.len(),
                expected: storage.store_path_count,
            });
        }
        storage.paths = paths;
        storage.last_beat = now;
        storage.last_beat_unix = unix_now;
        if let Some(stat) = stat {
            storage.stat = stat;
        }
        if matches!(
            storage.status,
            storage_status::ONLINE | storage_status::OFFLINE
        ) {
            storage.status = storage_status::ACTIVE;
            info!(group = %key.group, id = %key.id, "storage ACTIVE");
        }
        let group = self
            .group(&key.group)
            .expect("a storage's group exists while the storage does");
        Ok(group.members())
    }

    /// Another member storage (group, id) registered at the same ip:port as storage `id` of
    /// `group`. Storage ids are unique across groups, so a match anywhere is a second server
    /// record for one address: a stale record after the id changed, or two hosts behind one
    /// NAT address; either way clients may be sent to the wrong server.
    pub fn same_address(&self, group: &str, id: &str) -> Option<(String, String)> {
        let me = self.group(group)?.storage(id)?;
        if !me.claims_address() {
            return None;
        }
        self.groups.iter().find_map(|g| {
            g.storages
                .iter()
                .find(|s| s.id != me.id && s.claims_address() && s.ip == me.ip && s.port == me.port)
                .map(|s| (g.name.clone(), s.id.clone()))
        })
    }

    /// The IP the storage on the report connection from `peer` says it listens on (fdfs-rs
    /// BEAT extension). A mismatch with the connection's IP is logged when it appears.
    pub fn note_listen_ip(&mut self, peer: SocketAddr, listen_ip: &str) {
        let Some(key) = self.sessions.get(&peer).cloned() else {
            return;
        };
        let Some(storage) = self
            .storage_mut(&key)
            .filter(|s| s.report_conn == Some(peer))
        else {
            return;
        };
        if storage.listen_ip == listen_ip {
            return;
        }
        storage.listen_ip = listen_ip.to_string();
        if storage.address_mismatch() {
            warn!(
                group = %key.group,
                id = %key.id,
                listens_on = %storage.listen_ip,
                connects_from = %storage.ip,
                "storage listens on another IP than it connects from: clients are sent to the connection's IP; set bind_addr to the address clients should use or route the tracker connection from it"
            );
        }
    }

    /// DELETE_STORAGE (93): marks a stopped storage DELETED. It stays listed (status 4) and
    /// becomes a member again if it ever joins again.
    pub fn delete_storage(&mut self, group: &str, id: &str) -> Result<(), DeleteError> {
        let index = self
            .group_position(group)
            .map_err(|_| DeleteError::UnknownGroup(group.to_string()))?;
        let unknown = || DeleteError::UnknownStorage {
            group: group.to_string(),
            id: id.to_string(),
        };
        let storage = self.groups[index].storage_mut(id).ok_or_else(unknown)?;
        match storage.status {
            // Superseded by the same storage under a new address: not this record's to delete.
            storage_status::IP_CHANGED => Err(unknown()),
            storage_status::DELETED => Err(DeleteError::AlreadyDeleted {
                group: group.to_string(),
                id: id.to_string(),
            }),
            status @ (storage_status::ONLINE
            | storage_status::ACTIVE
            | storage_status::RECOVERY) => Err(DeleteError::Busy {
                group: group.to_string(),
                id: id.to_string(),
                status,
            }),
            _ => {
                storage.status = storage_status::DELETED;
                info!(group, id, "storage deleted");
                Ok(())
            }
        }
    }

    /// DELETE_GROUP (108): removes a group that has no storages left (deleted ones count).
    pub fn delete_group(&mut self, group: &str) -> Result<(), DeleteError> {
        let index = self
            .group_position(group)
            .map_err(|_| DeleteError::UnknownGroup(group.to_string()))?;
        let count = self.groups[index].storages.len();
        if count > 0 {
            return Err(DeleteError::GroupNotEmpty {
                group: group.to_string(),
                count,
            });
        }
        self.groups.remove(index);
        // Keep the upload cursor inside the shorter list.
        if self.write_group_cursor >= self.groups.len() {
            self.write_group_cursor = 0;
        }
        info!(group, "group deleted");
        Ok(())
    }

    /// The connection from `peer` closed: the storage it joined as becomes OFFLINE at once.
    /// Returns the storage that went OFFLINE, if any.
    pub fn disconnect(&mut self, peer: SocketAddr) -> Option<StorageKey> {
        let key = self.sessions.remove(&peer)?;
        self.release(&key, peer).then_some(key)
    }

    /// Unbinds `peer` from the storage; OFFLINE unless another connection has taken over.
    fn release(&mut self, key: &StorageKey, peer: SocketAddr) -> bool {
        let Some(storage) = self.storage_mut(key) else {
            return false;
        };
        if storage.report_conn != Some(peer) {
            return false;
        }
        storage.report_conn = None;
        if matches!(
            storage.status,
            storage_status::ONLINE | storage_status::ACTIVE
        ) {
            storage.status = storage_status::OFFLINE;
            info!(group = %key.group, id = %key.id, "report connection closed, storage OFFLINE");
        }
        true
    }

    /// Marks OFFLINE every ONLINE/ACTIVE storage whose last BEAT (or JOIN) is older than
    /// `interval`. Returns the storages that changed.
    pub fn expire(&mut self, now: Instant, interval: Duration) -> Vec<StorageKey> {
        let mut expired = Vec::new();
        for group in &mut self.groups {
            for storage in &mut group.storages {
                let live = matches!(
                    storage.status,
                    storage_status::ONLINE | storage_status::ACTIVE
                );
                if live && now.saturating_duration_since(storage.last_beat) > interval {
                    storage.status = storage_status::OFFLINE;
                    warn!(group = %group.name, id = %storage.id, silent_for = ?now.saturating_duration_since(storage.last_beat), "no heartbeat, storage OFFLINE");
                    expired.push(StorageKey {
                        group: group.name.clone(),
                        id: storage.id.clone(),
                    });
                }
            }
        }
        expired
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use storage_status::{ACTIVE, OFFLINE, ONLINE};

    pub(crate) fn peer(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000 + n))
    }

    pub(crate) fn join_request(group: &str, id: u32, port: u16, paths: u32) -> JoinRequest {
        JoinRequest {
            group: group.to_string(),
            storage_id: id,
            port,
            store_path_count: paths,
            subdir_count_per_path: 256,
            upload_priority: 10,
            join_time: 1,
            up_time: 2,
            version: fdfs_proto::VERSION.to_string(),
        }
    }

    pub(crate) fn usage(total: u64, free: u64) -> PathUsage {
        PathUsage {
            total_bytes: total,
            free_bytes: free,
        }
    }

    fn status_of(cluster: &Cluster, group: &str, id: &str) -> u8 {
        cluster.group(group).unwrap().storage(id).unwrap().status
    }

    #[test]
    fn join_then_beat_then_disconnect() {
        let mut cluster = Cluster::new();
        let t0 = Instant::now();
        let status = cluster
            .join(peer(1), &join_request("group1", 7, 23000, 1), t0)
            .unwrap();
        assert_eq!(status, ONLINE);
        let storage = cluster.group("group1").unwrap().storage("7").unwrap();
        assert_eq!((storage.ip.as_str(), storage.port), ("127.0.0.1", 23000));
        assert!(storage.paths.is_empty());

        let members = cluster.beat(peer(1), vec![usage(100, 50)], t0).unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].status, ACTIVE);
        assert_eq!(members[0].id, "7");
        assert_eq!(status_of(&cluster, "group1", "7"), ACTIVE);
        assert_eq!(
            cluster
                .group("group1")
                .unwrap()
                .storage("7")
                .unwrap()
                .free_bytes(),
            50
        );

        let gone = cluster.disconnect(peer(1)).unwrap();
        assert_eq!(gone.id, "7");
        assert_eq!(status_of(&cluster, "group1", "7"), OFFLINE);
        assert_eq!(
            cluster.beat(peer(1), vec![usage(1, 1)], t0),
            Err(BeatError::NotJoined)
        );
        assert!(cluster.disconnect(peer(1)).is_none());
    }

    #[test]
    fn beat_before_join_and_bad_path_count() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        assert_eq!(
            cluster.beat(peer(1), vec![], now),
            Err(BeatError::NotJoined)
        );
        assert_eq!(BeatError::NotJoined.status(), status::EACCES);
        cluster
            .join(peer(1), &join_request("group1", 7, 23000, 2), now)
            .unwrap();
        let err = cluster.beat(peer(1), vec![usage(1, 1)], now).unwrap_err();
        assert_eq!(err.status(), status::EINVAL);
        assert_eq!(status_of(&cluster, "group1", "7"), ONLINE);
    }

    #[test]
    fn groups_and_servers_are_sorted() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("groupb", 9, 1, 1), now)
            .unwrap();
        cluster
            .join(peer(2), &join_request("groupa", 100001, 2, 1), now)
            .unwrap();
        cluster
            .join(peer(3), &join_request("groupa", 99, 3, 1), now)
            .unwrap();
        cluster
            .join(peer(4), &join_request("groupa", 123, 4, 1), now)
            .unwrap();
        let names: Vec<_> = cluster.groups().iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["groupa", "groupb"]);
        // Byte-wise order of the id strings, as FastDFS sorts them.
        let ids: Vec<_> = cluster
            .group("groupa")
            .unwrap()
            .storages()
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(ids, ["100001", "123", "99"]);
    }

    #[test]
    fn live_id_from_another_address_is_refused() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 7, 23000, 1), now)
            .unwrap();
        let err = cluster
            .join(peer(2), &join_request("group1", 7, 23001, 1), now)
            .unwrap_err();
        assert!(matches!(err, JoinError::AlreadyConnected { .. }));
        assert_eq!(err.status(), status::EEXIST);
        // The same address reconnecting takes over; the old connection no longer counts.
        cluster
            .join(peer(3), &join_request("group1", 7, 23000, 1), now)
            .unwrap();
        assert!(cluster.disconnect(peer(1)).is_none());
        assert_eq!(status_of(&cluster, "group1", "7"), ONLINE);
        assert_eq!(
            cluster.beat(peer(1), vec![usage(1, 1)], now),
            Err(BeatError::NotJoined)
        );
        cluster.beat(peer(3), vec![usage(10, 5)], now).unwrap();
        // Once OFFLINE, another address may take the id over.
        cluster.disconnect(peer(3)).unwrap();
        cluster
            .join(peer(4), &join_request("group1", 7, 23009, 1), now)
            .unwrap();
        assert_eq!(
            cluster.group("group1").unwrap().storage("7").unwrap().port,
            23009
        );
    }

    #[test]
    fn ids_are_unique_across_groups() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 7, 23000, 1), now)
            .unwrap();
        cluster.disconnect(peer(1));
        let err = cluster
            .join(peer(2), &join_request("group2", 7, 23000, 1), now)
            .unwrap_err();
        assert_eq!(err.status(), status::EEXIST);
        assert!(cluster.group("group2").is_none());
    }

    #[test]
    fn layout_is_fixed_by_the_first_storage() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 1, 23000, 2), now)
            .unwrap();
        let err = cluster
            .join(peer(2), &join_request("group1", 2, 23001, 1), now)
            .unwrap_err();
        assert!(matches!(err, JoinError::LayoutMismatch { .. }));
        assert_eq!(err.status(), status::EINVAL);
        assert!(cluster.group("group1").unwrap().storage("2").is_none());
        // The only member may change the layout.
        cluster
            .join(peer(1), &join_request("group1", 1, 23000, 3), now)
            .unwrap();
        assert_eq!(cluster.group("group1").unwrap().store_path_count, 3);
        cluster
            .join(peer(2), &join_request("group1", 2, 23001, 3), now)
            .unwrap();
    }

    #[test]
    fn rejoin_keeps_usage_and_returns_to_online() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 1, 23000, 1), now)
            .unwrap();
        cluster.beat(peer(1), vec![usage(10, 5)], now).unwrap();
        cluster.disconnect(peer(1));
        cluster
            .join(peer(2), &join_request("group1", 1, 23000, 1), now)
            .unwrap();
        let storage = cluster.group("group1").unwrap().storage("1").unwrap();
        assert_eq!(storage.status, ONLINE);
        assert_eq!(storage.free_bytes(), 5);
    }

    #[test]
    fn silent_storages_expire_and_come_back() {
        let mut cluster = Cluster::new();
        let t0 = Instant::now();
        let interval = Duration::from_secs(100);
        cluster
            .join(peer(1), &join_request("group1", 1, 23000, 1), t0)
            .unwrap();
        cluster
            .join(peer(2), &join_request("group1", 2, 23001, 1), t0)
            .unwrap();
        cluster.beat(peer(1), vec![usage(10, 5)], t0).unwrap();
        cluster
            .beat(peer(2), vec![usage(10, 5)], t0 + Duration::from_secs(50))
            .unwrap();

        assert!(cluster.expire(t0 + interval, interval).is_empty());
        let expired = cluster.expire(t0 + Duration::from_secs(101), interval);
        assert_eq!(
            expired,
            [StorageKey {
                group: "group1".into(),
                id: "1".into()
            }]
        );
        assert_eq!(status_of(&cluster, "group1", "1"), OFFLINE);
        assert_eq!(status_of(&cluster, "group1", "2"), ACTIVE);
        // Expired storages are not expired again.
        assert_eq!(
            cluster
                .expire(t0 + Duration::from_secs(151), interval)
                .len(),
            1
        );

        let members = cluster
            .beat(peer(1), vec![usage(10, 5)], t0 + Duration::from_secs(200))
            .unwrap();
        assert_eq!(
            members.iter().map(|m| m.status).collect::<Vec<_>>(),
            [ACTIVE, OFFLINE]
        );
    }

    #[test]
    fn delete_storage_codes_follow_the_status() {
        use storage_status::{DELETED, IP_CHANGED, RECOVERY};
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 1, 23000, 1), now)
            .unwrap();
        let code = |cluster: &mut Cluster, group: &str, id: &str| {
            cluster
                .delete_storage(group, id)
                .map_err(|err| err.status())
        };
        assert_eq!(code(&mut cluster, "group1", "1"), Err(status::EBUSY)); // ONLINE
        cluster.beat(peer(1), vec![usage(10, 5)], now).unwrap();
        assert_eq!(code(&mut cluster, "group1", "1"), Err(status::EBUSY)); // ACTIVE
        assert_eq!(code(&mut cluster, "group1", "2"), Err(status::ENOENT));
        assert_eq!(code(&mut cluster, "group2", "1"), Err(status::ENOENT));
        cluster.groups[0].storages[0].status = RECOVERY;
        assert_eq!(code(&mut cluster, "group1", "1"), Err(status::EBUSY));
        cluster.groups[0].storages[0].status = IP_CHANGED;
        assert_eq!(code(&mut cluster, "group1", "1"), Err(status::ENOENT));
        cluster.groups[0].storages[0].status = OFFLINE;
        assert_eq!(code(&mut cluster, "group1", "1"), Ok(()));
        assert_eq!(status_of(&cluster, "group1", "1"), DELETED);
        assert_eq!(code(&mut cluster, "group1", "1"), Err(status::EALREADY));
        // A beat on a connection still bound to it does not revive it; a new join does.
        cluster.beat(peer(1), vec![usage(10, 5)], now).unwrap();
        assert_eq!(status_of(&cluster, "group1", "1"), DELETED);
        cluster
            .join(peer(2), &join_request("group1", 1, 23000, 1), now)
            .unwrap();
        assert_eq!(status_of(&cluster, "group1", "1"), ONLINE);
    }

    #[test]
    fn only_empty_groups_can_be_deleted() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 1, 23000, 1), now)
            .unwrap();
        cluster.disconnect(peer(1));
        cluster.delete_storage("group1", "1").unwrap();
        let err = cluster.delete_group("group1").unwrap_err();
        assert_eq!(err.status(), status::EBUSY);
        assert_eq!(
            cluster.delete_group("nope").unwrap_err().status(),
            status::ENOENT
        );
        cluster.groups.push(Group::new("group2", 1, 256));
        cluster.write_group_cursor = 1;
        cluster.delete_group("group2").unwrap();
        assert!(cluster.group("group2").is_none());
        assert_eq!(cluster.write_group_cursor, 0);
    }

    #[test]
    fn beats_carry_counters_and_time_which_survive_a_rejoin() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 1, 23000, 1), now)
            .unwrap();
        let stat = StatBlock {
            success_upload_count: 3,
            ..StatBlock::default()
        };
        cluster
            .report_beat(peer(1), vec![usage(10, 5)], Some(stat), now, 1_234)
            .unwrap();
        // A beat without counters keeps the previous ones.
        cluster
            .report_beat(peer(1), vec![usage(10, 4)], None, now, 1_240)
            .unwrap();
        let storage = cluster.group("group1").unwrap().storage("1").unwrap();
        assert_eq!(storage.stat.success_upload_count, 3);
        assert_eq!(storage.last_beat_unix, 1_240);
        cluster.disconnect(peer(1));
        cluster
            .join(peer(2), &join_request("group1", 1, 23000, 1), now)
            .unwrap();
        let storage = cluster.group("group1").unwrap().storage("1").unwrap();
        assert_eq!(storage.stat.success_upload_count, 3);
        assert_eq!(storage.last_beat_unix, 1_240);
    }

    #[test]
    fn connection_rejoining_as_another_storage_releases_the_first() {
        let mut cluster = Cluster::new();
        let now = Instant::now();
        cluster
            .join(peer(1), &join_request("group1", 1, 23000, 1), now)
            .unwrap();
        cluster
            .join(peer(1), &join_request("group1", 2, 23001, 1), now)
            .unwrap();
        assert_eq!(status_of(&cluster, "group1", "1"), OFFLINE);
        assert_eq!(cluster.session(peer(1)).unwrap().id, "2");
    }
}
