//! FETCH_STORAGE_IDS (69) and GET_SERVER_ID (70) (D.7). PARAMETER_REQ tells clients that
//! this tracker uses storage ids, and FastDFS's client library (and the nginx module built
//! on it) then loads the id table with 69 before it does anything else. FastDFS reads that
//! table from `storage_ids.conf`; here it is every storage that joined (each brings its id),
//! so it needs no file to keep in step with the storages' configs.

use fdfs_proto::field::FieldReader;
use fdfs_proto::status;
use fdfs_proto::tracker_msg::storage_status;
use fdfs_proto::{ProtoError, GROUP_NAME_LEN};

use super::{expect_len, CmdError};
use crate::service::Tracker;

/// 69: int32 start_index, u8 allow_empty.
pub const FETCH_BODY_LEN: usize = 5;
/// 70: a group name, then `ip:port` (an IPv6 address in brackets: at most 47 + 6 bytes).
pub const SERVER_ID_MAX_BODY_LEN: usize = GROUP_NAME_LEN + 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("no storage has joined yet, so there are no storage ids")]
    NoIds,
    #[error("start index {start} is outside the {total} storage ids")]
    StartOutOfRange { start: i32, total: usize },
    #[error("no storage of group {group} at {addr}")]
    UnknownServer { group: String, addr: String },
}

impl IdError {
    pub fn status(&self) -> u8 {
        match self {
            IdError::StartOutOfRange { .. } => status::EINVAL,
            IdError::NoIds | IdError::UnknownServer { .. } => status::ENOENT,
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

/// Every storage the tracker knows but the deleted ones, by id (FastDFS keeps its table
/// sorted by id too).
fn id_table(tracker: &Tracker) -> Vec<IdEntry> {
    let cluster = tracker.cluster();
    let mut table: Vec<IdEntry> = cluster
        .groups()
        .iter()
        .flat_map(|group| {
            group
                .storages()
                .iter()
                .filter(|s| s.status != storage_status::DELETED)
                .filter_map(move |s| {
                    Some(IdEntry {
                        id: s.id.parse().ok()?,
                        group: group.name.clone(),
                        ip: s.ip.clone(),
                        port: s.port,
                    })
                })
        })
        .collect();
    table.sort_by(|a, b| (a.id, &a.group).cmp(&(b.id, &b.group)));
    table
}

/// 69: the id table from `start_index` on, after the total and the count of lines sent.
pub fn fetch_storage_ids(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    expect_len(body, FETCH_BODY_LEN, "fetch storage ids")?;
    let start = i32::from_be_bytes(body[..4].try_into().expect("length checked"));
    let allow_empty = body[4] != 0;
    let table = id_table(tracker);
    if table.is_empty() {
        if allow_empty {
            return Ok(vec![0; 8]);
        }
        return Err(IdError::NoIds.into());
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

/// 70: the id of the storage of a group at `ip:port` (or at `ip` alone).
pub fn get_server_id(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    if body.len() <= GROUP_NAME_LEN || body.len() > SERVER_ID_MAX_BODY_LEN {
        return Err(ProtoError::BadLength {
            what: "get server id",
            len: body.len() as u64,
        }
        .into());
    }
    let group = FieldReader::new(&body[..GROUP_NAME_LEN])
        .fixed_str(GROUP_NAME_LEN, "group name")?
        .to_string();
    let addr = std::str::from_utf8(&body[GROUP_NAME_LEN..])
        .map_err(|_| ProtoError::invalid("address", "not UTF-8"))?
        .trim_end_matches('\0');
    let (ip, port) = split_addr(addr)?;
    tracker
        .cluster()
        .group(&group)
        .and_then(|g| {
            g.storages().iter().find(|s| {
                s.status != storage_status::DELETED
                    && s.ip == ip
                    && port.is_none_or(|port| port == s.port)
            })
        })
        .map(|s| s.id.clone().into_bytes())
        .ok_or_else(|| {
            IdError::UnknownServer {
                group,
                addr: addr.to_string(),
            }
            .into()
        })
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
