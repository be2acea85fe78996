//! FETCH_STORAGE_IDS (69), GET_SERVER_ID (70) and GET_STORAGE_STATUS (71) (D.7).
//! PARAMETER_REQ tells clients that this tracker uses storage ids, and FastDFS's client
//! library (and the nginx module built on it) then loads the id table with 69 before it does
//! anything else. FastDFS reads that
//! table from `storage_ids.conf`; here it is every storage that joined (each brings its id),
//! so it needs no file to keep in step with the storages' configs.

use std::collections::hash_map::{Entry, HashMap};
use std::net::SocketAddr;

use fdfs_proto::field::FieldReader;
use fdfs_proto::status;
use fdfs_proto::tracker_msg::StorageBrief;
use fdfs_proto::{ProtoError, GROUP_NAME_LEN};

use super::{expect_len, CmdError};
use crate::cluster::Cluster;
use crate::service::Tracker;

/// 69: int32 start_index, u8 allow_empty.
pub const FETCH_BODY_LEN: usize = 5;
/// 70 and 71: a group name, then `ip:port` (an IPv6 address in brackets: at most 47 + 6
/// bytes) or nothing.
pub const SERVER_ID_MAX_BODY_LEN: usize = GROUP_NAME_LEN + 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("start index {start} is outside the {total} storage ids")]
    StartOutOfRange { start: i32, total: usize },
    #[error("no storage of group {group} at {addr}")]
    UnknownServer { group: String, addr: String },
}

impl IdError {
    pub fn status(&self) -> u8 {
        match self {
            IdError::StartOutOfRange { .. } => status::EINVAL,
            IdError::UnknownServer { .. } => status::ENOENT,
        }
    }
}

/// One line of the id table: `<id> <group> <ip>:<port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IdEntry {
    id: u32,
    group: String,
    ip: String,
    port: u16,
}

impl IdEntry {
    fn line(&self) -> String {
        format!(
            "{} {} {}:{}\n",
            self.id,
            self.group,
            bracketed(&self.ip),
            self.port
        )
    }
}

/// An IPv6 address goes in brackets, as in FastDFS's `storage_ids.conf`.
fn bracketed(ip: &str) -> std::borrow::Cow<'_, str> {
    match ip.contains(':') {
        true => format!("[{ip}]").into(),
        false => ip.into(),
    }
}

/// Every storage that still claims its address (not deleted, not superseded after an IP
/// change), by id as FastDFS keeps its table. One entry per address: FastDFS's client
/// refuses a table that lists an `ip:port` twice, so a stale record (a storage that came
/// back under another id) gives way to the live one.
fn id_table(cluster: &Cluster) -> Vec<IdEntry> {
    let mut by_addr: HashMap<(String, u16), (IdEntry, (bool, i64))> = HashMap::new();
    for group in cluster.groups() {
        for storage in group.storages().iter().filter(|s| s.claims_address()) {
            let Ok(id) = storage.id.parse() else {
                continue;
            };
            let entry = IdEntry {
                id,
                group: group.name.clone(),
                ip: storage.ip.clone(),
                port: storage.port,
            };
            let liveness = (storage.is_active(), storage.last_beat_unix);
            match by_addr.entry((storage.ip.clone(), storage.port)) {
                Entry::Vacant(slot) => {
                    slot.insert((entry, liveness));
                }
                Entry::Occupied(mut slot) if slot.get().1 < liveness => {
                    slot.insert((entry, liveness));
                }
                Entry::Occupied(_) => {}
            }
        }
    }
    let mut table: Vec<IdEntry> = by_addr.into_values().map(|(entry, _)| entry).collect();
    table.sort_by(|a, b| (a.id, &a.group).cmp(&(b.id, &b.group)));
    table
}

/// 69: the id table from `start_index` on, after the total and the count of lines sent.
pub fn fetch_storage_ids(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    expect_len(body, FETCH_BODY_LEN, "fetch storage ids")?;
    let start = i32::from_be_bytes(body[..4].try_into().expect("length checked"));
    let allow_empty = body[4] != 0;
    let table = id_table(&tracker.cluster());
    if table.is_empty() && allow_empty {
        return Ok(vec![0; 8]);
    }
    let first = usize::try_from(start)
        .ok()
        .filter(|&first| first < table.len())
        .ok_or(IdError::StartOutOfRange {
            start,
            total: table.len(),
        })?;
    let lines: String = table[first..].iter().map(IdEntry::line).collect();
    let mut reply = Vec::with_capacity(8 + lines.len());
    reply.extend_from_slice(&(table.len() as i32).to_be_bytes());
    reply.extend_from_slice(&((table.len() - first) as i32).to_be_bytes());
    reply.extend_from_slice(lines.as_bytes());
    Ok(reply)
}

/// 70: the id of the storage of a group at `ip:port`, at `ip`, or (a group name alone) at
/// the caller's own IP, as FastDFS answers a storage asking for its own id.
pub fn get_server_id(
    tracker: &Tracker,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Vec<u8>, CmdError> {
    let brief = find_storage(tracker, body, peer, "get server id")?;
    Ok(brief.id.into_bytes())
}

/// 71: the 67-byte brief (status, port, id, IP; K.5) of the storage that 70 would name.
pub fn get_storage_status(
    tracker: &Tracker,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Vec<u8>, CmdError> {
    let brief = find_storage(tracker, body, peer, "get storage status")?;
    let mut reply = Vec::with_capacity(StorageBrief::LEN);
    brief.encode_into(&mut reply);
    Ok(reply)
}

/// The storage a 70 or 71 request names: a group name, then `ip:port`, `ip`, or nothing (the
/// caller's own IP). The live record first when an address has several.
fn find_storage(
    tracker: &Tracker,
    body: &[u8],
    peer: SocketAddr,
    what: &'static str,
) -> Result<StorageBrief, CmdError> {
    if body.len() < GROUP_NAME_LEN || body.len() > SERVER_ID_MAX_BODY_LEN {
        return Err(ProtoError::BadLength {
            what,
            len: body.len() as u64,
        }
        .into());
    }
    let group = FieldReader::new(&body[..GROUP_NAME_LEN])
        .fixed_str(GROUP_NAME_LEN, "group name")?
        .to_string();
    let given = std::str::from_utf8(&body[GROUP_NAME_LEN..])
        .map_err(|_| ProtoError::invalid("address", "not UTF-8"))?
        .trim_end_matches('\0');
    let own_ip = peer.ip().to_canonical().to_string();
    let (ip, port) = match given {
        "" => (own_ip.as_str(), None),
        given => split_addr(given)?,
    };
    let cluster = tracker.cluster();
    let mut matching: Vec<_> = cluster
        .group(&group)
        .map(|g| {
            g.storages()
                .iter()
                .filter(|s| {
                    s.claims_address() && s.ip == ip && port.is_none_or(|port| port == s.port)
                })
                .collect()
        })
        .unwrap_or_default();
    // the live one first, as in the id table
    matching.sort_by_key(|s| std::cmp::Reverse((s.is_active(), s.last_beat_unix)));
    match matching.first() {
        Some(storage) => Ok(storage.brief()),
        None => Err(IdError::UnknownServer {
            group,
            addr: format!("{ip}{}", port.map(|p| format!(":{p}")).unwrap_or_default()),
        }
        .into()),
    }
}

/// `ip:port`, `[ipv6]:port`, or an address without a port.
fn split_addr(addr: &str) -> Result<(&str, Option<u16>), ProtoError> {
    let bad = || ProtoError::invalid("address", format!("{addr:?} is not ip:port"));
    let (ip, port) = match addr.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (ip, None),
                _ => (ip, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        }
        // a bare IPv6 address has several colons and no port
        None => match addr.matches(':').count() {
            1 => addr
                .split_once(':')
                .map(|(ip, port)| (ip, Some(port)))
                .ok_or_else(bad)?,
            _ => (addr, None),
        },
    };
    if ip.is_empty() {
        return Err(bad());
    }
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| bad()))
        .transpose()?;
    Ok((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_with_and_without_ports() {
        assert_eq!(
            split_addr("10.0.0.1:23000").unwrap(),
            ("10.0.0.1", Some(23000))
        );
        assert_eq!(split_addr("10.0.0.1").unwrap(), ("10.0.0.1", None));
        assert_eq!(split_addr("[::1]:23000").unwrap(), ("::1", Some(23000)));
        assert_eq!(split_addr("[::1]").unwrap(), ("::1", None));
        assert_eq!(split_addr("fe80::1").unwrap(), ("fe80::1", None));
        for bad in [
            "",
            ":1",
            "10.0.0.1:port",
            "10.0.0.1:70000",
            "[::1",
            "[::1]x",
        ] {
            assert!(split_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_line_per_address_the_live_record_first() {
        use crate::cluster::tests::{join_request, peer, usage};
        use std::time::Instant;
        let mut cluster = Cluster::new();
        let now = Instant::now();
        // storage 5 goes away; its address comes back as storage 3 (a new id)
        cluster
            .join(peer(1), &join_request("group1", 5, 23000, 1), now)
            .unwrap();
        cluster.disconnect(peer(1));
        cluster
            .join(peer(2), &join_request("group1", 3, 23000, 1), now)
            .unwrap();
        cluster.beat(peer(2), vec![usage(100, 50)], now).unwrap();
        cluster
            .join(peer(3), &join_request("group2", 9, 23001, 1), now)
            .unwrap();
        let lines: String = id_table(&cluster).iter().map(IdEntry::line).collect();
        assert_eq!(
            lines,
            "3 group1 127.0.0.1:23000\n9 group2 127.0.0.1:23001\n"
        );
    }

    #[test]
    fn lines_bracket_ipv6() {
        let entry = |ip: &str| IdEntry {
            id: 100001,
            group: "group1".into(),
            ip: ip.into(),
            port: 23000,
        };
        assert_eq!(entry("10.0.0.1").line(), "100001 group1 10.0.0.1:23000\n");
        assert_eq!(entry("::1").line(), "100001 group1 [::1]:23000\n");
    }
}
