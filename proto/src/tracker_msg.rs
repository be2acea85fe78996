//! Bodies of tracker commands: client queries (D.1, D.2) and the storage ↔ tracker messages
//! fdfs-rs uses for join and heartbeat (our own bodies on FastDFS framing, K).

use crate::error::ProtoError;
use crate::field::{put_fixed, put_i32, put_i64, FieldReader};
use crate::{GROUP_NAME_LEN, IP_WIDTH, IP_WIDTH_LONG, STORAGE_ID_LEN, VERSION_LEN};

/// Storage status values (J.1).
pub mod storage_status {
    pub const INIT: u8 = 0;
    pub const WAIT_SYNC: u8 = 1;
    pub const SYNCING: u8 = 2;
    pub const IP_CHANGED: u8 = 3;
    pub const DELETED: u8 = 4;
    pub const OFFLINE: u8 = 5;
    pub const ONLINE: u8 = 6;
    pub const ACTIVE: u8 = 7;
    pub const RECOVERY: u8 = 9;
    pub const NONE: u8 = 99;

    pub fn name(status: u8) -> &'static str {
        match status {
            INIT => "INIT",
            WAIT_SYNC => "WAIT_SYNC",
            SYNCING => "SYNCING",
            IP_CHANGED => "IP_CHANGED",
            DELETED => "DELETED",
            OFFLINE => "OFFLINE",
            ONLINE => "ONLINE",
            ACTIVE => "ACTIVE",
            RECOVERY => "RECOVERY",
            NONE => "NONE",
            _ => "UNKNOWN",
        }
    }
}

/// A storage server address as tracker replies carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageAddr {
    pub ip: String,
    pub port: u16,
}

impl std::fmt::Display for StorageAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

fn put_addr(out: &mut Vec<u8>, addr: &StorageAddr) {
    put_fixed(out, addr.ip.as_bytes(), IP_WIDTH - 1);
    put_i64(out, i64::from(addr.port));
}

fn read_addr(reader: &mut FieldReader<'_>, ip_width: usize) -> Result<StorageAddr, ProtoError> {
    let ip = reader.fixed_str(ip_width, "ip address")?.to_string();
    let port = reader.i64()?;
    let port = u16::try_from(port).map_err(|_| ProtoError::invalid("port", port.to_string()))?;
    Ok(StorageAddr { ip, port })
}

/// The IP field width (W - 1) used by a reply holding `count` addresses in `len` bytes
/// after `fixed` other bytes: 15 for the classic layout, 45 for IPv6 mode (B.1).
fn detect_ip_width(len: usize, fixed: usize, what: &'static str) -> Result<usize, ProtoError> {
    let rest = len.checked_sub(fixed).filter(|r| *r > 0);
    match rest {
        Some(rest) if rest.is_multiple_of(IP_WIDTH - 1 + 8) => Ok(IP_WIDTH - 1),
        Some(rest) if rest.is_multiple_of(IP_WIDTH_LONG - 1 + 8) => Ok(IP_WIDTH_LONG - 1),
        _ => Err(ProtoError::BadLength {
            what,
            len: len as u64,
        }),
    }
}

/// Reply to QUERY_STORE_*_ONE (101/104): 40 bytes with W = 16.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryStoreReply {
    pub group: String,
    pub server: StorageAddr,
    pub store_path_index: u8,
}

impl QueryStoreReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        put_addr(&mut out, &self.server);
        out.push(self.store_path_index);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let ip_width = match body.len() {
            40 => IP_WIDTH - 1,
            70 => IP_WIDTH_LONG - 1,
            len => {
                return Err(ProtoError::BadLength {
                    what: "query store reply",
                    len: len as u64,
                })
            }
        };
        let mut reader = FieldReader::new(body);
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        let server = read_addr(&mut reader, ip_width)?;
        let store_path_index = reader.u8()?;
        Ok(QueryStoreReply {
            group,
            server,
            store_path_index,
        })
    }
}

/// Reply to QUERY_STORE_*_ALL (106/107): every writable server of the chosen group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryStoreAllReply {
    pub group: String,
    pub servers: Vec<StorageAddr>,
    pub store_path_index: u8,
}

impl QueryStoreAllReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + 23 * self.servers.len());
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        for server in &self.servers {
            put_addr(&mut out, server);
        }
        out.push(self.store_path_index);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let ip_width = detect_ip_width(body.len(), GROUP_NAME_LEN + 1, "query store all reply")?;
        let count = (body.len() - GROUP_NAME_LEN - 1) / (ip_width + 8);
        let mut reader = FieldReader::new(body);
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        let servers = (0..count)
            .map(|_| read_addr(&mut reader, ip_width))
            .collect::<Result<_, _>>()?;
        let store_path_index = reader.u8()?;
        Ok(QueryStoreAllReply {
            group,
            servers,
            store_path_index,
        })
    }
}

/// Reply to QUERY_FETCH_ONE/ALL and QUERY_UPDATE (102/105/103): group + servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReply {
    pub group: String,
    pub servers: Vec<StorageAddr>,
}

impl FetchReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 23 * self.servers.len());
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        for server in &self.servers {
            put_addr(&mut out, server);
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let ip_width = detect_ip_width(body.len(), GROUP_NAME_LEN, "fetch reply")?;
        let count = (body.len() - GROUP_NAME_LEN) / (ip_width + 8);
        let mut reader = FieldReader::new(body);
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        let servers = (0..count)
            .map(|_| read_addr(&mut reader, ip_width))
            .collect::<Result<_, _>>()?;
        Ok(FetchReply { group, servers })
    }
}

/// Body of a group-only request (104, 107, 90): exactly 16 bytes.
pub fn decode_group(body: &[u8]) -> Result<String, ProtoError> {
    if body.len() != GROUP_NAME_LEN {
        return Err(ProtoError::BadLength {
            what: "group name",
            len: body.len() as u64,
        });
    }
    Ok(FieldReader::new(body)
        .fixed_str(GROUP_NAME_LEN, "group name")?
        .to_string())
}

pub fn encode_group(group: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(GROUP_NAME_LEN);
    put_fixed(&mut out, group.as_bytes(), GROUP_NAME_LEN);
    out
}

/// STORAGE_JOIN (81), fdfs-rs body: who the storage is and how its disks are laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    pub group: String,
    /// Numeric storage id written into file names (1..=0xFFFFFF).
    pub storage_id: u32,
    pub port: u16,
    pub store_path_count: u32,
    pub subdir_count_per_path: u32,
    pub upload_priority: i64,
    pub join_time: i64,
    pub up_time: i64,
    pub version: String,
}

impl JoinRequest {
    pub const LEN: usize = GROUP_NAME_LEN + STORAGE_ID_LEN + 6 * 8 + VERSION_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        put_fixed(
            &mut out,
            self.storage_id.to_string().as_bytes(),
            STORAGE_ID_LEN,
        );
        put_i64(&mut out, i64::from(self.port));
        put_i64(&mut out, i64::from(self.store_path_count));
        put_i64(&mut out, i64::from(self.subdir_count_per_path));
        put_i64(&mut out, self.upload_priority);
        put_i64(&mut out, self.join_time);
        put_i64(&mut out, self.up_time);
        put_fixed(&mut out, self.version.as_bytes(), VERSION_LEN);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::BadLength {
                what: "join request",
                len: body.len() as u64,
            });
        }
        let mut reader = FieldReader::new(body);
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        crate::file_id::validate_group(&group)?;
        let id_text = reader.fixed_str(STORAGE_ID_LEN, "storage id")?;
        let storage_id = id_text
            .parse::<u32>()
            .ok()
            .filter(|id| (1..=crate::name::MAX_STORAGE_ID).contains(id))
            .ok_or_else(|| ProtoError::invalid("storage id", id_text.to_string()))?;
        let port = reader.i64()?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ProtoError::invalid("port", port.to_string()))?;
        let store_path_count = bounded(reader.i64()?, 1, 256, "store path count")?;
        let subdir_count_per_path = bounded(reader.i64()?, 1, 256, "subdir count")?;
        let upload_priority = reader.i64()?;
        let join_time = reader.i64()?;
        let up_time = reader.i64()?;
        let version = reader.fixed_str(VERSION_LEN, "version")?.to_string();
        Ok(JoinRequest {
            group,
            storage_id,
            port,
            store_path_count,
            subdir_count_per_path,
            upload_priority,
            join_time,
            up_time,
            version,
        })
    }
}

fn bounded(value: i64, min: i64, max: i64, what: &'static str) -> Result<u32, ProtoError> {
    if value < min || value > max {
        return Err(ProtoError::invalid(
            what,
            format!("{value} outside {min}..={max}"),
        ));
    }
    Ok(value as u32)
}

/// Reply to JOIN (K.3): the status the tracker holds for the storage and its sync source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinReply {
    pub status: u8,
    pub sync_source_id: String,
}

impl JoinReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(self.status);
        put_fixed(&mut out, self.sync_source_id.as_bytes(), STORAGE_ID_LEN);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != 1 + STORAGE_ID_LEN {
            return Err(ProtoError::BadLength {
                what: "join reply",
                len: body.len() as u64,
            });
        }
        let mut reader = FieldReader::new(body);
        let status = reader.u8()?;
        let sync_source_id = reader.fixed_str(STORAGE_ID_LEN, "storage id")?.to_string();
        Ok(JoinReply {
            status,
            sync_source_id,
        })
    }
}

/// Space of one store path in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PathUsage {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// STORAGE_BEAT (83), fdfs-rs body: disk usage of every store path, reported on every beat so
/// the tracker's placement always works from fresh numbers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BeatRequest {
    pub paths: Vec<PathUsage>,
}

impl BeatRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 16 * self.paths.len());
        put_i64(&mut out, self.paths.len() as i64);
        for path in &self.paths {
            put_i64(&mut out, path.total_bytes as i64);
            put_i64(&mut out, path.free_bytes as i64);
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(body);
        let count = bounded(reader.i64()?, 0, 256, "store path count")? as usize;
        if reader.remaining() != count * 16 {
            return Err(ProtoError::BadLength {
                what: "beat",
                len: body.len() as u64,
            });
        }
        let mut paths = Vec::with_capacity(count);
        for _ in 0..count {
            let total_bytes = reader.len_field("total bytes")?;
            let free_bytes = reader.len_field("free bytes")?;
            paths.push(PathUsage {
                total_bytes,
                free_bytes,
            });
        }
        Ok(BeatRequest { paths })
    }
}

/// A 67-byte storage brief (K.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageBrief {
    pub status: u8,
    pub port: u16,
    pub id: String,
    pub ip: String,
}

impl StorageBrief {
    pub const LEN: usize = 1 + 4 + STORAGE_ID_LEN + IP_WIDTH_LONG;

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.status);
        put_i32(out, i32::from(self.port));
        put_fixed(out, self.id.as_bytes(), STORAGE_ID_LEN);
        put_fixed(out, self.ip.as_bytes(), IP_WIDTH_LONG);
    }

    pub fn decode(reader: &mut FieldReader<'_>) -> Result<Self, ProtoError> {
        let status = reader.u8()?;
        let port = reader.i32()?;
        let port =
            u16::try_from(port).map_err(|_| ProtoError::invalid("port", port.to_string()))?;
        let id = reader.fixed_str(STORAGE_ID_LEN, "storage id")?.to_string();
        let ip = reader.fixed_str(IP_WIDTH_LONG, "ip address")?.to_string();
        Ok(StorageBrief {
            status,
            port,
            id,
            ip,
        })
    }
}

/// Flag of a beat reply carrying the group's member list (K.4).
pub const BEAT_FLAG_MEMBERS: u8 = 0x04;

/// Reply to BEAT (K.4): change flags, then (flag 0x04) every storage of the group.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BeatReply {
    pub members: Option<Vec<StorageBrief>>,
}

impl BeatReply {
    pub fn encode(&self) -> Vec<u8> {
        match &self.members {
            None => vec![0],
            Some(members) => {
                let mut out = Vec::with_capacity(1 + StorageBrief::LEN * members.len());
                out.push(BEAT_FLAG_MEMBERS);
                for member in members {
                    member.encode_into(&mut out);
                }
                out
            }
        }
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(body);
        let flags = reader.u8()?;
        if flags & !BEAT_FLAG_MEMBERS != 0 || !reader.remaining().is_multiple_of(StorageBrief::LEN)
        {
            return Err(ProtoError::BadLength {
                what: "beat reply",
                len: body.len() as u64,
            });
        }
        if flags & BEAT_FLAG_MEMBERS == 0 {
            return Ok(BeatReply { members: None });
        }
        let count = reader.remaining() / StorageBrief::LEN;
        let members = (0..count)
            .map(|_| StorageBrief::decode(&mut reader))
            .collect::<Result<_, _>>()?;
        Ok(BeatReply {
            members: Some(members),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn query_store_reply_matches_capture() {
        // P.1
        let body = unhex(
            "67726f75703100000000000000000000 3132372e302e302e33310000000000 0000000000005726 00",
        );
        let reply = QueryStoreReply::decode(&body).unwrap();
        assert_eq!(reply.group, "group1");
        assert_eq!(
            reply.server,
            StorageAddr {
                ip: "127.0.0.31".into(),
                port: 22310
            }
        );
        assert_eq!(reply.encode(), body);
    }

    #[test]
    fn fetch_reply_matches_capture() {
        // P.3
        let body = unhex(
            "67726f75703100000000000000000000 3132372e302e302e33310000000000 0000000000005726",
        );
        let reply = FetchReply::decode(&body).unwrap();
        assert_eq!(reply.servers.len(), 1);
        assert_eq!(reply.encode(), body);
        assert!(FetchReply::decode(&body[..20]).is_err());
    }

    #[test]
    fn store_all_reply_two_servers_is_63_bytes() {
        let reply = QueryStoreAllReply {
            group: "group1".into(),
            servers: vec![
                StorageAddr {
                    ip: "127.0.0.1".into(),
                    port: 23000,
                },
                StorageAddr {
                    ip: "127.0.0.1".into(),
                    port: 23001,
                },
            ],
            store_path_index: 1,
        };
        let body = reply.encode();
        assert_eq!(body.len(), 63);
        assert_eq!(QueryStoreAllReply::decode(&body).unwrap(), reply);
    }

    #[test]
    fn join_and_beat_round_trip() {
        let join = JoinRequest {
            group: "group1".into(),
            storage_id: 100_001,
            port: 23000,
            store_path_count: 2,
            subdir_count_per_path: 256,
            upload_priority: 10,
            join_time: 1,
            up_time: 2,
            version: crate::VERSION.into(),
        };
        assert_eq!(JoinRequest::decode(&join.encode()).unwrap(), join);
        let mut bad = join.encode();
        bad[16] = b'x';
        assert!(JoinRequest::decode(&bad).is_err());
        let beat = BeatRequest {
            paths: vec![PathUsage {
                total_bytes: 10,
                free_bytes: 5,
            }],
        };
        assert_eq!(BeatRequest::decode(&beat.encode()).unwrap(), beat);
        let reply = BeatReply {
            members: Some(vec![StorageBrief {
                status: 7,
                port: 23000,
                id: "100001".into(),
                ip: "127.0.0.1".into(),
            }]),
        };
        let body = reply.encode();
        assert_eq!(body.len(), 1 + 67);
        assert_eq!(BeatReply::decode(&body).unwrap(), reply);
        assert_eq!(
            BeatReply::decode(&[0]).unwrap(),
            BeatReply { members: None }
        );
    }
}
