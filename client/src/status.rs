//! Cluster status for operators (`fdfs status`, `fdfs storage delete`): asks every tracker of
//! the configuration for its groups (LIST_ALL_GROUPS, 91) and their storages (LIST_STORAGE,
//! 92), decodes the E.1/E.2 records with `fdfs_proto::stat`, and derives warnings: storages
//! that are not ACTIVE, replication lag above a threshold, storages below their reserved
//! space, unreachable trackers and trackers that disagree with each other.
//!
//! Each tracker is asked on its own connection (no failover here: the point is to see every
//! tracker). Replication lag is `now - last_synced_timestamp` of the stat block: the tracker
//! sets that timestamp from the peers' reports (J.4), so it is an age, per storage, of the
//! newest change known to be on it from every source.
//!
//! An fdfs-rs tracker also answers STORAGE_HEALTH (200, `fdfs_proto::health_msg`), asked
//! after the list commands: per storage its clock offset, the IP it listens on, another
//! storage at the same address, and its replication lag behind each peer in records and
//! seconds. Those give the clock skew, address mismatch and per-peer lag warnings. A FastDFS
//! tracker answers EINVAL; the status then has what the list replies carry and no more.

use std::collections::BTreeMap;
use std::time::Duration;

use fdfs_proto::cmd::Command;
use fdfs_proto::health_msg::{HealthReport, StorageHealth};
use fdfs_proto::stat::{GroupStat, StorageStat};
use fdfs_proto::tracker_msg::{encode_group, storage_status};
use fdfs_proto::{status as code, GROUP_NAME_LEN};
use serde_json::{json, Value};

use crate::conn::Conn;
use crate::error::ClientError;
use crate::ClientConfig;

/// Groups per tracker (A.5: at most 64) and storages per group the replies may hold.
const MAX_GROUPS: u64 = 64;
const MAX_STORAGES: u64 = 256;
/// Largest STORAGE_HEALTH reply read: far above 64 groups of 256 storages with a few peers.
const MAX_HEALTH_REPLY: u64 = 16 << 20;
/// Clocks further apart than this are warned about (the tracker's `MAX_CLOCK_SKEW`: reads of
/// fresh files compare timestamps across servers, J.4).
pub const MAX_CLOCK_SKEW: i64 = 1;
/// One group as one tracker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    pub stat: GroupStat,
    pub storages: Vec<StorageStat>,
}

/// What one tracker answered.
#[derive(Clone, Debug)]
pub struct TrackerView {
    pub addr: String,
    pub groups: Result<Vec<GroupView>, String>,
    /// The STORAGE_HEALTH reply; `None` when the tracker does not answer it (FastDFS).
    pub health: Option<HealthReport>,
}

impl TrackerView {
    /// The health record of one storage, if the tracker sent one.
    pub fn storage_health(&self, group: &str, id: &str) -> Option<&StorageHealth> {
        self.health
            .as_ref()?
            .storages
            .iter()
            .find(|h| h.group == group && h.id == id)
    }
}

/// The whole cluster, as every tracker sees it, with the warnings it deserves.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// Unix time the status was taken (ages are relative to it).
    pub now: i64,
    pub trackers: Vec<TrackerView>,
    pub warnings: Vec<String>,
}

/// Thresholds of the warnings.
#[derive(Clone, Copy, Debug)]
pub struct StatusOptions {
    /// Replication lag (seconds) above which a storage is reported as lagging.
    pub lag_warning: Duration,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions {
            lag_warning: Duration::from_secs(300),
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn connect(config: &ClientConfig, addr: &str) -> Result<Conn, ClientError> {
    Conn::connect(addr, config.connect_timeout, config.network_timeout).await
}

/// Every group and its storages, from the tracker at `addr` (91, then 92 per group), and its
/// STORAGE_HEALTH reply when it has one.
pub async fn list_tracker(
    config: &ClientConfig,
    addr: &str,
) -> Result<(Vec<GroupView>, Option<HealthReport>), ClientError> {
    let mut conn = connect(config, addr).await?;
    let groups = list_groups(&mut conn).await?;
    // Last on the connection: a tracker that does not know the command may close it.
    let health = match conn
        .call(Command::StorageHealth.code(), &[], MAX_HEALTH_REPLY)
        .await
    {
        Ok(body) => HealthReport::decode(&body).ok(),
        Err(_) => None,
    };
    Ok((groups, health))
}

async fn list_groups(conn: &mut Conn) -> Result<Vec<GroupView>, ClientError> {
    let body = conn
        .call(
            Command::ListAllGroups.code(),
            &[],
            MAX_GROUPS * GroupStat::LEN as u64,
        )
        .await?;
    let groups = GroupStat::decode_list(&body).map_err(ClientError::Protocol)?;
    let mut out = Vec::with_capacity(groups.len());
    for stat in groups {
        let body = conn
            .call(
                Command::ListStorage.code(),
                &encode_group(&stat.name),
                MAX_STORAGES * StorageStat::LEN_LONG as u64,
            )
            .await?;
        let mut storages = StorageStat::decode_list(&body).map_err(ClientError::Protocol)?;
        storages.sort_by(|a, b| a.id.cmp(&b.id));
        out.push(GroupView { stat, storages });
    }
    out.sort_by(|a, b| a.stat.name.cmp(&b.stat.name));
    Ok(out)
}

/// Asks every tracker of `config` and derives the warnings.
pub async fn cluster_status(config: &ClientConfig, options: &StatusOptions) -> ClusterStatus {
    let mut trackers = Vec::new();
    for addr in &config.tracker_servers {
        let (groups, health) = match list_tracker(config, addr).await {
            Ok((groups, health)) => (Ok(groups), health),
            Err(err) => (Err(err.to_string()), None),
        };
        trackers.push(TrackerView {
            addr: addr.clone(),
            groups,
            health,
        });
    }
    let now = unix_now();
    let warnings = warnings(&trackers, now, options);
    ClusterStatus {
        now,
        trackers,
        warnings,
    }
}

/// Seconds since the storage's last heartbeat reached the tracker (`None` before the first).
pub fn heartbeat_age(storage: &StorageStat, now: i64) -> Option<i64> {
    (storage.stat.last_heart_beat_time > 0)
        .then(|| now.saturating_sub(storage.stat.last_heart_beat_time).max(0))
}

/// Replication lag in seconds (`None` when the tracker has no synced timestamp for it, e.g.
/// a group of one storage).
pub fn sync_lag(storage: &StorageStat, now: i64) -> Option<i64> {
    (storage.stat.last_synced_timestamp > 0).then(|| {
        now.saturating_sub(storage.stat.last_synced_timestamp)
            .max(0)
    })
}

/// (group, storage id) → status, as one tracker reports them.
type Fingerprint = BTreeMap<(String, String), u8>;

/// The storage set and states a tracker reports, to compare trackers.
fn fingerprint(groups: &[GroupView]) -> Fingerprint {
    groups
        .iter()
        .flat_map(|g| {
            g.storages
                .iter()
                .map(|s| ((g.stat.name.clone(), s.id.clone()), s.status))
        })
        .collect()
}

/// The warning lines of a status (empty when all is well).
pub fn warnings(trackers: &[TrackerView], now: i64, options: &StatusOptions) -> Vec<String> {
    let mut out = Vec::new();
    let mut reference: Option<(&str, Fingerprint)> = None;
    for tracker in trackers {
        let groups = match &tracker.groups {
            Ok(groups) => groups,
            Err(err) => {
                out.push(format!("tracker {} unreachable: {err}", tracker.addr));
                continue;
            }
        };
        let print = fingerprint(groups);
        match &reference {
            None => reference = Some((&tracker.addr, print)),
            Some((first, expected)) if *expected != print => out.push(format!(
                "trackers {first} and {} disagree: {}",
                tracker.addr,
                describe_difference(expected, &print)
            )),
            Some(_) => {}
        }
    }
    // per-storage warnings once, from the first tracker that answered
    let Some((first, groups)) = trackers
        .iter()
        .find_map(|t| t.groups.as_ref().ok().map(|g| (t, g)))
    else {
        if !trackers.is_empty() {
            out.push("no tracker answered".to_string());
        }
        return out;
    };
    let lag_limit = options.lag_warning.as_secs() as i64;
    for group in groups {
        let name = &group.stat.name;
        if group.stat.writable_server_count == 0 {
            out.push(format!("group {name}: no storage takes uploads"));
        }
        for s in &group.storages {
            let who = format!(
                "group {name} storage {} ({}:{})",
                s.id, s.ip, s.storage_port
            );
            let health = first.storage_health(name, &s.id);
            if let Some(other) = health
                .map(|h| h.same_address_as.as_str())
                .filter(|o| !o.is_empty())
            {
                out.push(format!(
                    "{who} address mismatch: storage {other} is registered at the same address; \
                     delete the stale one (fdfs storage delete) or fix the storage ids"
                ));
            }
            if s.status != storage_status::ACTIVE {
                out.push(format!("{who} is {}", storage_status::name(s.status)));
                continue;
            }
            if let Some(h) = health {
                storage_health_warnings(&who, s, h, options, &mut out);
            }
            if s.total_mb > 0 && s.free_mb <= s.reserved_mb {
                out.push(format!(
                    "{who} is full: {} MB free, {} MB reserved",
                    s.free_mb, s.reserved_mb
                ));
            }
            if let Some(lag) = sync_lag(s, now).filter(|lag| *lag > lag_limit) {
                out.push(format!(
                    "{who} lags: replicated changes are {lag} s old (threshold {lag_limit} s)"
                ));
            }
        }
    }
    out
}

/// Clock skew, address mismatch and per-peer lag of a live storage.
fn storage_health_warnings(
    who: &str,
    s: &StorageStat,
    h: &StorageHealth,
    options: &StatusOptions,
    out: &mut Vec<String>,
) {
    if let Some(skew) = h.clock_skew.filter(|skew| skew.abs() > MAX_CLOCK_SKEW) {
        out.push(format!(
            "{who} clock skew: its clock is {skew:+} s off the tracker's (more than \
             {MAX_CLOCK_SKEW} s); reads are routed correctly regardless, but the creation times in \
             its file names and its HTTP token checks follow its own clock, fix the clocks (NTP)"
        ));
    }
    if !h.listen_ip.is_empty() && !same_ip(&h.listen_ip, &s.ip) {
        out.push(format!(
            "{who} address mismatch: it listens on {} but connects to the tracker from {}, \
             where clients are sent",
            h.listen_ip, s.ip
        ));
    }
    let lag_limit = options.lag_warning.as_secs() as i64;
    for p in h.peers.iter().filter(|p| p.seconds_behind > lag_limit) {
        out.push(format!(
            "{who} lags behind storage {}: {} records, {} s (threshold {lag_limit} s)",
            p.source_id, p.records_behind, p.seconds_behind
        ));
    }
}

fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
        (Ok(a), Ok(b)) => a.to_canonical() == b.to_canonical(),
        _ => a == b,
    }
}

fn describe_difference(a: &Fingerprint, b: &Fingerprint) -> String {
    let mut parts = Vec::new();
    for (key, status) in a {
        match b.get(key) {
            None => parts.push(format!("{}/{} only on the first", key.0, key.1)),
            Some(other) if other != status => parts.push(format!(
                "{}/{} is {} vs {}",
                key.0,
                key.1,
                storage_status::name(*status),
                storage_status::name(*other)
            )),
            Some(_) => {}
        }
    }
    for key in b.keys().filter(|key| !a.contains_key(*key)) {
        parts.push(format!("{}/{} only on the second", key.0, key.1));
    }
    parts.join(", ")
}

fn format_age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn health_json(h: Option<&StorageHealth>, now: i64) -> Value {
    let Some(h) = h else {
        return Value::Null;
    };
    json!({
        "clock_skew_seconds": h.clock_skew,
        "listen_ip": h.listen_ip,
        "same_address_as": h.same_address_as,
        "replication": h.peers.iter().map(|p| json!({
            "source": p.source_id,
            "records_behind": p.records_behind,
            "seconds_behind": p.seconds_behind,
            "report_age_seconds": (p.reported > 0).then(|| now.saturating_sub(p.reported).max(0)),
        })).collect::<Vec<_>>(),
    })
}

fn storage_json(s: &StorageStat, health: Option<&StorageHealth>, now: i64) -> Value {
    let counters: serde_json::Map<String, Value> = s
        .stat
        .fields()
        .into_iter()
        .map(|(name, value)| (name.to_string(), json!(value)))
        .collect();
    json!({
        "id": s.id,
        "ip": s.ip,
        "port": s.storage_port,
        "status": s.status,
        "state": storage_status::name(s.status),
        "version": s.version,
        "join_time": s.join_time,
        "up_time": s.up_time,
        "uptime_seconds": if s.up_time > 0 { now - s.up_time } else { 0 },
        "total_mb": s.total_mb,
        "free_mb": s.free_mb,
        "reserved_mb": s.reserved_mb,
        "store_path_count": s.store_path_count,
        "src_id": s.src_id,
        "heartbeat_age_seconds": heartbeat_age(s, now),
        "sync_lag_seconds": sync_lag(s, now),
        "health": health_json(health, now),
        "stat": counters,
    })
}

impl ClusterStatus {
    /// The machine-readable form of `fdfs status --json`.
    pub fn to_json(&self) -> Value {
        let trackers: Vec<Value> = self
            .trackers
            .iter()
            .map(|t| match &t.groups {
                Ok(groups) => json!({
                    "addr": t.addr,
                    "ok": true,
                    "health_supported": t.health.is_some(),
                    "groups": groups.iter().map(|g| json!({
                        "name": g.stat.name,
                        "total_mb": g.stat.total_mb,
                        "free_mb": g.stat.free_mb,
                        "reserved_mb": g.stat.reserved_mb,
                        "storage_count": g.stat.storage_count,
                        "active_count": g.storages.iter().filter(|s| s.status == storage_status::ACTIVE).count(),
                        "readable_server_count": g.stat.readable_server_count,
                        "writable_server_count": g.stat.writable_server_count,
                        "current_write_server": g.stat.current_write_server,
                        "storages": g.storages.iter().map(|s| storage_json(s, t.storage_health(&g.stat.name, &s.id), self.now)).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                }),
                Err(err) => json!({ "addr": t.addr, "ok": false, "error": err }),
            })
            .collect();
        json!({
            "time": self.now,
            "trackers": trackers,
            "agree": !self.warnings.iter().any(|w| w.contains("disagree")),
            "warnings": self.warnings,
        })
    }

    /// The readable form of `fdfs status`: the first tracker that answered in full, one line
    /// per other tracker, then the warnings.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for t in &self.trackers {
            let state = match &t.groups {
                Ok(groups) => format!("ok, {} group(s)", groups.len()),
                Err(err) => format!("UNREACHABLE: {err}"),
            };
            let _ = writeln!(out, "tracker {}: {state}", t.addr);
        }
        if let Some((tracker, groups)) = self
            .trackers
            .iter()
            .find_map(|t| t.groups.as_ref().ok().map(|g| (t, g)))
        {
            let _ = writeln!(out, "\n(as seen by {})", tracker.addr);
            for g in groups {
                let active = g
                    .storages
                    .iter()
                    .filter(|s| s.status == storage_status::ACTIVE)
                    .count();
                let _ = writeln!(
                    out,
                    "group {}: {} MB total, {} MB free ({} MB reserved), {} storage(s), {} active, writable {}, current write server {}",
                    g.stat.name,
                    g.stat.total_mb,
                    g.stat.free_mb,
                    g.stat.reserved_mb,
                    g.stat.storage_count,
                    active,
                    g.stat.writable_server_count,
                    g.stat.current_write_server
                );
                for s in &g.storages {
                    let st = &s.stat;
                    let uptime = if s.up_time > 0 {
                        format_age(self.now - s.up_time)
                    } else {
                        "-".into()
                    };
                    let beat = heartbeat_age(s, self.now).map_or("never".into(), format_age);
                    let lag = sync_lag(s, self.now).map_or("-".into(), format_age);
                    let _ = writeln!(
                        out,
                        "  storage {} {}:{} {} v{} up {} | {} MB free of {} | upload {}/{} download {}/{} delete {}/{} | heartbeat {} ago | sync lag {}",
                        s.id,
                        s.ip,
                        s.storage_port,
                        storage_status::name(s.status),
                        s.version,
                        uptime,
                        s.free_mb,
                        s.total_mb,
                        st.success_upload_count,
                        st.total_upload_count,
                        st.success_download_count,
                        st.total_download_count,
                        st.success_delete_count,
                        st.total_delete_count,
                        beat,
                        lag
                    );
                    if let Some(h) = tracker.storage_health(&g.stat.name, &s.id) {
                        render_health(&mut out, h);
                    }
                }
            }
        }
        if self.warnings.is_empty() {
            out.push_str("\nno warnings\n");
        } else {
            out.push('\n');
            for w in &self.warnings {
                let _ = writeln!(out, "WARNING: {w}");
            }
        }
        out
    }
}

/// The clock offset and one line per peer under a storage's line.
fn render_health(out: &mut String, h: &StorageHealth) {
    use std::fmt::Write;
    if let Some(skew) = h.clock_skew {
        let _ = writeln!(out, "    clock {skew:+}s vs tracker");
    }
    for p in &h.peers {
        let _ = writeln!(
            out,
            "    replication from {}: {} records, {}s behind",
            p.source_id, p.records_behind, p.seconds_behind
        );
    }
}

/// What one tracker said to DELETE_STORAGE.
#[derive(Debug)]
pub struct DeleteOutcome {
    pub tracker: String,
    pub result: Result<(), ClientError>,
}

/// Sends DELETE_STORAGE (93) for `id` of `group` to every tracker of `config`.
pub async fn delete_storage(config: &ClientConfig, group: &str, id: &str) -> Vec<DeleteOutcome> {
    let mut body = encode_group(group);
    debug_assert_eq!(body.len(), GROUP_NAME_LEN);
    body.extend_from_slice(id.as_bytes());
    let mut out = Vec::new();
    for addr in &config.tracker_servers {
        let result = async {
            let mut conn = connect(config, addr).await?;
            conn.call_empty(Command::DeleteStorage.code(), &body).await
        }
        .await;
        out.push(DeleteOutcome {
            tracker: addr.clone(),
            result,
        });
    }
    out
}

/// Sums up the answers of [`delete_storage`] (D.5): accepted when at least one tracker
/// deleted it and the others did not know it (2) or had it deleted already (114); EBUSY from
/// any tracker means the storage is still running.
pub fn judge_delete(outcomes: &[DeleteOutcome]) -> Result<usize, String> {
    let mut deleted = 0;
    let mut problems = Vec::new();
    for o in outcomes {
        match &o.result {
            Ok(()) => deleted += 1,
            Err(err) => match err.status() {
                Some(code::ENOENT) | Some(114) => {}
                Some(code::EPERM) => problems.push(format!(
                    "{}: refused (status 1, EPERM): this host is not in the tracker's admin_hosts — run the command from a host listed there",
                    o.tracker
                )),
                Some(code::EBUSY) => problems.push(format!(
                    "{}: the storage is still online (status 16, EBUSY) — stop the storage first, wait until the tracker shows it OFFLINE, then retry",
                    o.tracker
                )),
                _ => problems.push(format!("{}: {err}", o.tracker)),
            },
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    if deleted == 0 {
        return Err("no tracker knows this storage (status 2 from every tracker)".into());
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdfs_proto::stat::StatBlock;

    fn storage(id: &str, status: u8) -> StorageStat {
        StorageStat {
            status,
            id: id.into(),
            ip: "127.0.0.1".into(),
            total_mb: 1000,
            free_mb: 500,
            reserved_mb: 10,
            storage_port: 23000,
            stat: StatBlock {
                last_heart_beat_time: 95,
                ..StatBlock::default()
            },
            ..StorageStat::default()
        }
    }

    fn view(addr: &str, storages: Vec<StorageStat>) -> TrackerView {
        TrackerView {
            addr: addr.into(),
            groups: Ok(vec![GroupView {
                stat: GroupStat {
                    name: "group1".into(),
                    writable_server_count: 1,
                    ..GroupStat::default()
                },
                storages,
            }]),
            health: None,
        }
    }

    #[test]
    fn healthy_cluster_has_no_warnings() {
        let a = view("t1", vec![storage("1", storage_status::ACTIVE)]);
        let b = view("t2", vec![storage("1", storage_status::ACTIVE)]);
        assert!(warnings(&[a, b], 100, &StatusOptions::default()).is_empty());
    }

    #[test]
    fn offline_full_lagging_and_disagreeing() {
        let mut full = storage("2", storage_status::ACTIVE);
        full.free_mb = 5;
        let mut lagging = storage("3", storage_status::ACTIVE);
        lagging.stat.last_synced_timestamp = 1;
        let a = view(
            "t1",
            vec![storage("1", storage_status::OFFLINE), full, lagging],
        );
        let b = view("t2", vec![storage("1", storage_status::ACTIVE)]);
        let c = TrackerView {
            addr: "t3".into(),
            groups: Err("refused".into()),
            health: None,
        };
        let options = StatusOptions {
            lag_warning: Duration::from_secs(60),
        };
        let w = warnings(&[a, b, c], 1000, &options);
        let text = w.join("\n");
        assert!(
            text.contains("storage 1 (127.0.0.1:23000) is OFFLINE"),
            "{text}"
        );
        assert!(
            text.contains("storage 2 (127.0.0.1:23000) is full"),
            "{text}"
        );
        assert!(text.contains("storage 3 (127.0.0.1:23000) lags"), "{text}");
        assert!(text.contains("trackers t1 and t2 disagree"), "{text}");
        assert!(text.contains("group1/1 is OFFLINE vs ACTIVE"), "{text}");
        assert!(text.contains("tracker t3 unreachable"), "{text}");
    }

    #[test]
    fn json_carries_counters() {
        let mut s = storage("1", storage_status::ACTIVE);
        s.stat.success_upload_count = 10;
        let status = ClusterStatus {
            now: 100,
            trackers: vec![view("t1", vec![s])],
            warnings: vec![],
        };
        let v = status.to_json();
        let st = &v["trackers"][0]["groups"][0]["storages"][0];
        assert_eq!(st["stat"]["success_upload_count"], 10);
        assert_eq!(st["state"], "ACTIVE");
        assert_eq!(st["heartbeat_age_seconds"], 5);
        assert_eq!(v["agree"], true);
        assert!(status.render().contains("upload 10/0"));
    }

    fn health(id: &str) -> StorageHealth {
        StorageHealth {
            group: "group1".into(),
            id: id.into(),
            clock_skew: Some(0),
            ..StorageHealth::default()
        }
    }

    #[test]
    fn clock_skew_address_mismatch_and_lag_per_peer() {
        use fdfs_proto::health_msg::PeerLag;
        let mut t = view(
            "t1",
            vec![
                storage("1", storage_status::ACTIVE),
                storage("2", storage_status::ACTIVE),
                storage("3", storage_status::ACTIVE),
                storage("4", storage_status::OFFLINE),
            ],
        );
        let mut skewed = health("1");
        skewed.clock_skew = Some(-7);
        let mut moved = health("2");
        moved.listen_ip = "127.0.0.2".into();
        moved.peers = vec![
            PeerLag {
                source_id: "1".into(),
                records_behind: 40,
                seconds_behind: 90,
                reported: 95,
            },
            PeerLag {
                source_id: "3".into(),
                records_behind: 0,
                seconds_behind: 0,
                reported: 95,
            },
        ];
        // a one-second difference is rounding, not skew; the same IP written as IPv6-mapped
        // is no mismatch
        let mut fine = health("3");
        fine.clock_skew = Some(1);
        fine.listen_ip = "::ffff:127.0.0.1".into();
        fine.same_address_as = "4".into();
        let mut stale = health("4");
        stale.same_address_as = "3".into();
        t.health = Some(HealthReport {
            tracker_time: 100,
            storages: vec![skewed, moved, fine, stale],
        });
        let options = StatusOptions {
            lag_warning: Duration::from_secs(60),
        };
        let w = warnings(std::slice::from_ref(&t), 100, &options);
        let text = w.join("\n");
        assert!(
            text.contains("storage 1 (127.0.0.1:23000) clock skew: its clock is -7 s off"),
            "{text}"
        );
        assert!(
            text.contains(
                "storage 2 (127.0.0.1:23000) address mismatch: it listens on 127.0.0.2 but connects to the tracker from 127.0.0.1"
            ),
            "{text}"
        );
        assert!(
            text.contains("storage 2 (127.0.0.1:23000) lags behind storage 1: 40 records, 90 s"),
            "{text}"
        );
        assert!(!text.contains("behind storage 3"), "{text}");
        assert!(
            text.contains("storage 3 (127.0.0.1:23000) address mismatch: storage 4 is registered at the same address"),
            "{text}"
        );
        assert!(
            text.contains("storage 4 (127.0.0.1:23000) address mismatch: storage 3"),
            "{text}"
        );
        assert!(
            !text.contains("storage 3 (127.0.0.1:23000) clock"),
            "{text}"
        );
        assert_eq!(w.len(), 6, "{text}");

        let status = ClusterStatus {
            now: 100,
            trackers: vec![t],
            warnings: w,
        };
        let rendered = status.render();
        assert!(rendered.contains("    clock -7s vs tracker"), "{rendered}");
        assert!(
            rendered.contains("    replication from 1: 40 records, 90s behind"),
            "{rendered}"
        );
        assert!(
            rendered.contains("WARNING: group group1 storage 1 (127.0.0.1:23000) clock skew"),
            "{rendered}"
        );
        let json = status.to_json();
        let tracker = &json["trackers"][0];
        assert_eq!(tracker["health_supported"], true);
        let two = &tracker["groups"][0]["storages"][1]["health"];
        assert_eq!(two["listen_ip"], "127.0.0.2");
        assert_eq!(two["replication"][0]["source"], "1");
        assert_eq!(two["replication"][0]["records_behind"], 40);
        assert_eq!(two["replication"][0]["seconds_behind"], 90);
        assert_eq!(two["replication"][0]["report_age_seconds"], 5);
        assert_eq!(
            tracker["groups"][0]["storages"][0]["health"]["clock_skew_seconds"],
            -7
        );
    }

    #[test]
    fn without_health_the_list_replies_suffice() {
        let status = ClusterStatus {
            now: 100,
            trackers: vec![view("t1", vec![storage("1", storage_status::ACTIVE)])],
            warnings: vec![],
        };
        let json = status.to_json();
        assert_eq!(json["trackers"][0]["health_supported"], false);
        assert!(json["trackers"][0]["groups"][0]["storages"][0]["health"].is_null());
        assert!(!status.render().contains("replication from"));
    }

    #[test]
    fn delete_judgement() {
        let ok = |t: &str| DeleteOutcome {
            tracker: t.into(),
            result: Ok(()),
        };
        let status = |t: &str, c: u8| DeleteOutcome {
            tracker: t.into(),
            result: Err(ClientError::from_status(c)),
        };
        assert_eq!(judge_delete(&[ok("a"), status("b", 2)]), Ok(1));
        assert_eq!(judge_delete(&[ok("a"), status("b", 114)]), Ok(1));
        let busy = judge_delete(&[status("a", 16)]).unwrap_err();
        assert!(busy.contains("stop the storage first"), "{busy}");
        let refused = judge_delete(&[status("a", 1)]).unwrap_err();
        assert!(refused.contains("admin_hosts"), "{refused}");
        assert!(judge_delete(&[status("a", 2)]).is_err());
    }
}
