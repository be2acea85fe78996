//! Storage ↔ storage replication bodies (L.4) and the fdfs-rs sync messages between storages
//! and trackers (K.2 codes, fdfs-rs bodies where noted).
//!
//! Sync commands carrying content (16, 18, 25, 35) are split into a fixed prefix decoded here
//! and a name + content part the caller reads (the content is streamed). The others are small
//! and decoded whole.

use crate::error::ProtoError;
use crate::field::{put_fixed, put_i32, put_i64, FieldReader};
use crate::{GROUP_NAME_LEN, MAX_NAME_LEN, STORAGE_ID_LEN};

/// fdfs-rs's file list command, sent to a storage's port by a storage copying the group's
/// files (L.7/L.9 play this part with FETCH_ONE_PATH_BINLOG, 26): body [`FileListRequest`],
/// reply the text lines of [`FileListEntry`], streamed. It uses the code of SYNC_SRC_REQ
/// (86), a tracker command no storage serves, because the shared accept loop only passes
/// codes of [`crate::cmd::Command`] on.
pub const FETCH_FILE_LIST: u8 = crate::cmd::Command::SyncSrcReq as u8;

/// Header status byte of a SYNC_CREATE_FILE without content (L.4): "do you have this file?".
/// fdfs-rs receivers answer 17 when they hold the same size and mtime, 2 otherwise.
pub const SYNC_PROBE: u8 = 1;

/// Header status byte of a SYNC_CREATE_FILE / SYNC_UPDATE_FILE whose file the sender holds as
/// a slave shaped like a normal name (H.8; its slave mark): fdfs-rs receivers store it without
/// the check against its name, whose master may be gone, and mark it. Older receivers read the
/// request as a plain one.
pub const SYNC_SLAVE: u8 = 2;

fn name_of(raw: &[u8], what: &'static str) -> Result<String, ProtoError> {
    if raw.is_empty() || raw.len() > MAX_NAME_LEN {
        return Err(ProtoError::invalid(
            what,
            format!("bad length {}", raw.len()),
        ));
    }
    std::str::from_utf8(raw)
        .map(str::to_string)
        .map_err(|_| ProtoError::invalid(what, "not valid text"))
}

fn check_len(len: u64, what: &'static str) -> Result<usize, ProtoError> {
    if len == 0 || len > MAX_NAME_LEN as u64 {
        return Err(ProtoError::invalid(what, format!("bad length {len}")));
    }
    Ok(len as usize)
}

/// Timestamps travel as int32 (L.4); read back as unsigned so they last past 2038.
fn put_ts(out: &mut Vec<u8>, ts: u32) {
    put_i32(out, ts as i32);
}

fn read_ts(reader: &mut FieldReader<'_>) -> Result<u32, ProtoError> {
    Ok(reader.i32()? as u32)
}

/// Prefix of SYNC_CREATE_FILE (16) and SYNC_UPDATE_FILE (18): 36 bytes, then the name, then
/// `file_size` content bytes (absent in a probe, header status [`SYNC_PROBE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncFilePrefix {
    pub name_len: u64,
    pub file_size: u64,
    /// The file's mtime at the sender; the receiver gives its copy this mtime.
    pub timestamp: u32,
    pub group: String,
}

impl SyncFilePrefix {
    pub const LEN: usize = 8 + 8 + 4 + GROUP_NAME_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        put_i64(&mut out, self.name_len as i64);
        put_i64(&mut out, self.file_size as i64);
        put_ts(&mut out, self.timestamp);
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        out
    }

    /// Decodes the prefix and checks it against the packet length; `probe` = no content.
    pub fn decode(prefix: &[u8], pkg_len: u64, probe: bool) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(prefix);
        let name_len = reader.len_field("name length")?;
        let file_size = reader.len_field("file size")?;
        let timestamp = read_ts(&mut reader)?;
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        check_len(name_len, "name length")?;
        let content = if probe { 0 } else { file_size };
        if (Self::LEN as u64)
            .checked_add(name_len)
            .and_then(|n| n.checked_add(content))
            != Some(pkg_len)
        {
            return Err(ProtoError::BadLength {
                what: "sync file",
                len: pkg_len,
            });
        }
        Ok(SyncFilePrefix {
            name_len,
            file_size,
            timestamp,
            group,
        })
    }
}

/// Prefix of SYNC_APPEND_FILE (25) and SYNC_MODIFY_FILE (35): 44 bytes, then the name, then
/// `length` content bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRangePrefix {
    pub name_len: u64,
    pub offset: u64,
    pub length: u64,
    /// The file's mtime at the sender after the change.
    pub timestamp: u32,
    pub group: String,
}

impl SyncRangePrefix {
    pub const LEN: usize = 8 + 8 + 8 + 4 + GROUP_NAME_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        put_i64(&mut out, self.name_len as i64);
        put_i64(&mut out, self.offset as i64);
        put_i64(&mut out, self.length as i64);
        put_ts(&mut out, self.timestamp);
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        out
    }

    pub fn decode(prefix: &[u8], pkg_len: u64) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(prefix);
        let name_len = reader.len_field("name length")?;
        let offset = reader.len_field("offset")?;
        let length = reader.len_field("length")?;
        let timestamp = read_ts(&mut reader)?;
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        check_len(name_len, "name length")?;
        if offset.checked_add(length).is_none()
            || (Self::LEN as u64)
                .checked_add(name_len)
                .and_then(|n| n.checked_add(length))
                != Some(pkg_len)
        {
            return Err(ProtoError::BadLength {
                what: "sync range",
                len: pkg_len,
            });
        }
        Ok(SyncRangePrefix {
            name_len,
            offset,
            length,
            timestamp,
            group,
        })
    }
}

/// SYNC_DELETE_FILE (17): int32 timestamp, char[16] group, name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncDelete {
    pub timestamp: u32,
    pub group: String,
    pub name: String,
}

impl SyncDelete {
    pub const MAX_LEN: usize = 4 + GROUP_NAME_LEN + MAX_NAME_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + GROUP_NAME_LEN + self.name.len());
        put_ts(&mut out, self.timestamp);
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(body);
        let timestamp = read_ts(&mut reader)?;
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        let name = name_of(reader.rest(), "file name")?;
        Ok(SyncDelete {
            timestamp,
            group,
            name,
        })
    }
}

/// Two names after a fixed part: SYNC_CREATE_LINK (19) and SYNC_RENAME_FILE (40).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncTwoNames {
    pub timestamp: u32,
    pub group: String,
    /// The link name (19) or the new name (40).
    pub first: String,
    /// The link target (19) or the old name (40).
    pub second: String,
}

impl SyncTwoNames {
    pub const MAX_LEN: usize = 8 + 8 + 4 + GROUP_NAME_LEN + 2 * MAX_NAME_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36 + self.first.len() + self.second.len());
        put_i64(&mut out, self.first.len() as i64);
        put_i64(&mut out, self.second.len() as i64);
        put_ts(&mut out, self.timestamp);
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        out.extend_from_slice(self.first.as_bytes());
        out.extend_from_slice(self.second.as_bytes());
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(body);
        let first_len = check_len(reader.len_field("name length")?, "name length")?;
        let second_len = check_len(reader.len_field("name length")?, "name length")?;
        let timestamp = read_ts(&mut reader)?;
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        if reader.remaining() != first_len + second_len {
            return Err(ProtoError::BadLength {
                what: "sync names",
                len: body.len() as u64,
            });
        }
        let first = name_of(reader.bytes(first_len)?, "file name")?;
        let second = name_of(reader.rest(), "file name")?;
        Ok(SyncTwoNames {
            timestamp,
            group,
            first,
            second,
        })
    }
}

/// SYNC_TRUNCATE_FILE (37): name_len, old size, new size, timestamp, group, name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncTruncate {
    pub old_size: u64,
    pub new_size: u64,
    pub timestamp: u32,
    pub group: String,
    pub name: String,
}

impl SyncTruncate {
    pub const MAX_LEN: usize = 8 + 8 + 8 + 4 + GROUP_NAME_LEN + MAX_NAME_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(44 + self.name.len());
        put_i64(&mut out, self.name.len() as i64);
        put_i64(&mut out, self.old_size as i64);
        put_i64(&mut out, self.new_size as i64);
        put_ts(&mut out, self.timestamp);
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(body);
        let name_len = check_len(reader.len_field("name length")?, "name length")?;
        let old_size = reader.len_field("old size")?;
        let new_size = reader.len_field("new size")?;
        let timestamp = read_ts(&mut reader)?;
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        if reader.remaining() != name_len {
            return Err(ProtoError::BadLength {
                what: "sync truncate",
                len: body.len() as u64,
            });
        }
        let name = name_of(reader.rest(), "file name")?;
        Ok(SyncTruncate {
            old_size,
            new_size,
            timestamp,
            group,
            name,
        })
    }
}

/// REPORT_SERVER_ID (9) request: char[16] storage id.
pub fn encode_server_id(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(STORAGE_ID_LEN);
    put_fixed(&mut out, id.as_bytes(), STORAGE_ID_LEN);
    out
}

pub fn decode_server_id(body: &[u8]) -> Result<String, ProtoError> {
    if body.len() != STORAGE_ID_LEN {
        return Err(ProtoError::BadLength {
            what: "server id",
            len: body.len() as u64,
        });
    }
    Ok(FieldReader::new(body)
        .fixed_str(STORAGE_ID_LEN, "storage id")?
        .to_string())
}

/// fdfs-rs reply to REPORT_SERVER_ID: the receiver's data generation, an int64 that changes
/// whenever its data was lost (new storage, wiped store path). A sender whose cursor was
/// kept for another generation starts over. FastDFS answers an empty body (`None`).
pub fn encode_generation(generation: u64) -> Vec<u8> {
    generation.to_be_bytes().to_vec()
}

pub fn decode_generation(body: &[u8]) -> Result<Option<u64>, ProtoError> {
    match body.len() {
        0 => Ok(None),
        8 => Ok(Some(FieldReader::new(body).i64()? as u64)),
        len => Err(ProtoError::BadLength {
            what: "server id reply",
            len: len as u64,
        }),
    }
}

/// Header status byte of a [`FETCH_FILE_LIST`] request from a storage that reads `S` lines
/// (see [`FileListEntry`]); without it the list has `F` lines only, which is all an older
/// storage can read.
pub const FILE_LIST_WITH_SLAVES: u8 = 1;

/// [`FETCH_FILE_LIST`] request: char[16] group, u8 store path index (17 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileListRequest {
    pub group: String,
    pub store_path: u8,
}

impl FileListRequest {
    pub const LEN: usize = GROUP_NAME_LEN + 1;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        out.push(self.store_path);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::BadLength {
                what: "file list request",
                len: body.len() as u64,
            });
        }
        let mut reader = FieldReader::new(body);
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        let store_path = reader.u8()?;
        Ok(FileListRequest { group, store_path })
    }
}

/// One line of a [`FETCH_FILE_LIST`] reply:
///
/// ```text
/// F <size> <mtime> <logical name>\n            a regular file (data file or metadata sidecar)
/// S <size> <mtime> <logical name>\n            a slave shaped like a normal name (H.8): its
///                                              content is not what its name records
/// L 0 <mtime> <logical name> <target name>\n   a symbolic link to another file of the store
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileListEntry {
    pub size: u64,
    pub mtime: u32,
    pub name: String,
    /// Set for links: the logical name the link points at.
    pub target: Option<String>,
    /// A regular file the source holds as a slave shaped like a normal name (its slave
    /// mark): the copy is not checked against its name, whose master may be gone.
    pub slave: bool,
}

/// Longest line of a file list (two names plus numbers).
pub const FILE_LIST_MAX_LINE: usize = 2 * MAX_NAME_LEN + 64;

impl FileListEntry {
    pub fn encode_line(&self) -> String {
        match (&self.target, self.slave) {
            (None, false) => format!("F {} {} {}\n", self.size, self.mtime, self.name),
            (None, true) => format!("S {} {} {}\n", self.size, self.mtime, self.name),
            (Some(target), _) => format!("L 0 {} {} {}\n", self.mtime, self.name, target),
        }
    }

    /// Parses one line without its newline.
    pub fn parse_line(line: &str) -> Result<Self, ProtoError> {
        let bad =
            || ProtoError::invalid("file list line", line.chars().take(80).collect::<String>());
        let mut parts = line.split(' ');
        let kind = parts.next().ok_or_else(bad)?;
        let size = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let mtime = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let name = name_of(parts.next().ok_or_else(bad)?.as_bytes(), "file name")?;
        let target = match kind {
            "F" | "S" => None,
            "L" => Some(name_of(
                parts.next().ok_or_else(bad)?.as_bytes(),
                "link target",
            )?),
            _ => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(FileListEntry {
            size,
            mtime,
            name,
            target,
            slave: kind == "S",
        })
    }
}

/// Why a storage asks a tracker for a full-sync source (SYNC_DEST_REQ 87, fdfs-rs body of one
/// byte; FastDFS's empty body means [`SyncReason::New`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncReason {
    /// A storage without data joining its group (J.1 WAIT_SYNC).
    New,
    /// A storage whose store path was wiped (J.1 RECOVERY).
    Recovery,
}

impl SyncReason {
    pub fn encode(self) -> Vec<u8> {
        vec![match self {
            SyncReason::New => 0,
            SyncReason::Recovery => 1,
        }]
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        match body {
            [] | [0] => Ok(SyncReason::New),
            [1] => Ok(SyncReason::Recovery),
            _ => Err(ProtoError::invalid("sync reason", format!("{body:?}"))),
        }
    }
}

/// Reply to SYNC_DEST_REQ (87) and body of SYNC_NOTIFY (88): the storage to copy existing
/// files from and the time the copy was ordered (K.2). An empty reply (`None`) means there is
/// nothing to copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSource {
    pub source_id: String,
    pub until: i64,
}

impl SyncSource {
    pub const LEN: usize = STORAGE_ID_LEN + 8;

    pub fn encode(source: Option<&SyncSource>) -> Vec<u8> {
        match source {
            None => Vec::new(),
            Some(source) => {
                let mut out = Vec::with_capacity(Self::LEN);
                put_fixed(&mut out, source.source_id.as_bytes(), STORAGE_ID_LEN);
                put_i64(&mut out, source.until);
                out
            }
        }
    }

    pub fn decode(body: &[u8]) -> Result<Option<Self>, ProtoError> {
        match body.len() {
            0 => Ok(None),
            Self::LEN => {
                let mut reader = FieldReader::new(body);
                let source_id = reader.fixed_str(STORAGE_ID_LEN, "storage id")?.to_string();
                let until = reader.i64()?;
                Ok((!source_id.is_empty()).then_some(SyncSource { source_id, until }))
            }
            len => Err(ProtoError::BadLength {
                what: "sync source",
                len: len as u64,
            }),
        }
    }
}

/// CHANGE_STATUS (59): one status byte (J.1).
pub fn decode_status(body: &[u8]) -> Result<u8, ProtoError> {
    match body {
        [status] => Ok(*status),
        _ => Err(ProtoError::BadLength {
            what: "change status",
            len: body.len() as u64,
        }),
    }
}

/// How far one peer has caught up with the reporting storage's changes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerProgress {
    pub peer_id: String,
    /// The peer's data generation the figures refer to (0 = not known yet). Figures about an
    /// older generation (the peer lost its data since) are ignored by the tracker.
    pub peer_generation: u64,
    /// Every change the reporter accepted from clients with a timestamp below this is on the
    /// peer (0 = unknown). The tracker routes reads of the reporter's files with it (J.4).
    pub synced_timestamp: i64,
    /// Sequence number of the last binlog record the peer confirmed.
    pub acked_seq: i64,
    /// Records of the reporter's binlog the peer has not confirmed yet.
    pub records_behind: i64,
    /// Age in seconds of the oldest record the peer has not confirmed (0 when caught up).
    pub seconds_behind: i64,
}

/// SYNC_REPORT (89), fdfs-rs body: the reporter's clock and data generation, then one entry
/// per peer:
///
/// ```text
/// offset  size  field
/// 0       8     int64 the reporter's unix time (the tracker warns about clock skew)
/// 8       8     int64 the reporter's data generation (see `encode_generation`)
/// 16      56×N  char[16] peer id, int64 peer generation, int64 synced_timestamp,
///               int64 acked_seq, int64 records_behind, int64 seconds_behind
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SyncReport {
    pub unix_time: i64,
    pub generation: u64,
    pub peers: Vec<PeerProgress>,
}

impl SyncReport {
    pub const HEAD_LEN: usize = 16;
    pub const ENTRY_LEN: usize = STORAGE_ID_LEN + 5 * 8;
    /// Most peers one report may carry.
    pub const MAX_PEERS: usize = 1024;
    pub const MAX_LEN: usize = Self::HEAD_LEN + Self::ENTRY_LEN * Self::MAX_PEERS;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEAD_LEN + Self::ENTRY_LEN * self.peers.len());
        put_i64(&mut out, self.unix_time);
        put_i64(&mut out, self.generation as i64);
        for peer in &self.peers {
            put_fixed(&mut out, peer.peer_id.as_bytes(), STORAGE_ID_LEN);
            put_i64(&mut out, peer.peer_generation as i64);
            put_i64(&mut out, peer.synced_timestamp);
            put_i64(&mut out, peer.acked_seq);
            put_i64(&mut out, peer.records_behind);
            put_i64(&mut out, peer.seconds_behind);
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() < Self::HEAD_LEN
            || !(body.len() - Self::HEAD_LEN).is_multiple_of(Self::ENTRY_LEN)
            || body.len() > Self::MAX_LEN
        {
            return Err(ProtoError::BadLength {
                what: "sync report",
                len: body.len() as u64,
            });
        }
        let mut reader = FieldReader::new(body);
        let unix_time = reader.i64()?;
        let generation = reader.i64()? as u64;
        let count = reader.remaining() / Self::ENTRY_LEN;
        let mut peers = Vec::with_capacity(count);
        for _ in 0..count {
            peers.push(PeerProgress {
                peer_id: reader.fixed_str(STORAGE_ID_LEN, "storage id")?.to_string(),
                peer_generation: reader.i64()? as u64,
                synced_timestamp: reader.i64()?,
                acked_seq: reader.i64()?,
                records_behind: reader.i64()?,
                seconds_behind: reader.i64()?,
            });
        }
        Ok(SyncReport {
            unix_time,
            generation,
            peers,
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
    fn create_prefix_matches_capture() {
        // P.10: name length 44, size 6, timestamp 0x6b036de1, group with garbage after the NUL
        let prefix =
            unhex("000000000000002c 0000000000000006 6b036de1 67726f75703100bfbfbfbfbfbfbfbfbf");
        let decoded = SyncFilePrefix::decode(&prefix, 86, false).unwrap();
        assert_eq!(
            decoded,
            SyncFilePrefix {
                name_len: 44,
                file_size: 6,
                timestamp: 0x6b03_6de1,
                group: "group1".into(),
            }
        );
        let mut encoded = decoded.encode();
        assert_eq!(encoded.len(), SyncFilePrefix::LEN);
        assert_eq!(&encoded[..20], &prefix[..20]);
        // a probe carries no content
        assert!(SyncFilePrefix::decode(&prefix, 80, true).is_ok());
        assert!(SyncFilePrefix::decode(&prefix, 86, true).is_err());
        assert!(SyncFilePrefix::decode(&prefix, 85, false).is_err());
        encoded[7] = 0;
        assert!(SyncFilePrefix::decode(&encoded, 42, false).is_err());
    }

    #[test]
    fn small_bodies_round_trip() {
        let delete = SyncDelete {
            timestamp: 0x6b03_6e2e,
            group: "group1".into(),
            name: "M00/00/00/fwAAH2sDbi-AJI3gAAAAFoA2zqM343.txt-m".into(),
        };
        let body = delete.encode();
        assert_eq!(&body[..4], &unhex("6b036e2e")[..]);
        assert_eq!(SyncDelete::decode(&body).unwrap(), delete);
        assert!(SyncDelete::decode(&body[..20]).is_err());

        let rename = SyncTwoNames {
            timestamp: 7,
            group: "g".into(),
            first: "M00/00/00/new".into(),
            second: "M00/00/00/old1".into(),
        };
        let body = rename.encode();
        assert_eq!(SyncTwoNames::decode(&body).unwrap(), rename);
        assert!(SyncTwoNames::decode(&body[..body.len() - 1]).is_err());

        let truncate = SyncTruncate {
            old_size: 12,
            new_size: 9,
            timestamp: 0x6b03_6f7d,
            group: "group1".into(),
            name: "M00/00/00/abc".into(),
        };
        let body = truncate.encode();
        assert_eq!(SyncTruncate::decode(&body).unwrap(), truncate);
        let mut long = body.clone();
        long.push(b'x');
        assert!(SyncTruncate::decode(&long).is_err());

        let range = SyncRangePrefix {
            name_len: 44,
            offset: 6,
            length: 6,
            timestamp: 3,
            group: "group1".into(),
        };
        let prefix = range.encode();
        assert_eq!(prefix.len(), SyncRangePrefix::LEN);
        assert_eq!(
            SyncRangePrefix::decode(&prefix, 44 + 44 + 6).unwrap(),
            range
        );
        assert!(SyncRangePrefix::decode(&prefix, 44 + 44 + 5).is_err());
    }

    #[test]
    fn server_id_and_generation() {
        let body = encode_server_id("100001");
        assert_eq!(body.len(), 16);
        assert_eq!(decode_server_id(&body).unwrap(), "100001");
        assert!(decode_server_id(&body[..15]).is_err());
        assert_eq!(decode_generation(&[]).unwrap(), None);
        assert_eq!(
            decode_generation(&encode_generation(u64::MAX - 3)).unwrap(),
            Some(u64::MAX - 3)
        );
        assert!(decode_generation(&[1, 2]).is_err());
    }

    #[test]
    fn file_list_lines() {
        let file = FileListEntry {
            size: 6,
            mtime: 1_795_386_849,
            name: "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt".into(),
            target: None,
            slave: false,
        };
        let line = file.encode_line();
        assert!(line.ends_with('\n'));
        assert_eq!(FileListEntry::parse_line(line.trim_end()).unwrap(), file);
        let slave = FileListEntry {
            name: "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA2751234".into(),
            slave: true,
            ..file.clone()
        };
        let line = slave.encode_line();
        assert!(line.starts_with("S 6 "), "{line}");
        assert_eq!(FileListEntry::parse_line(line.trim_end()).unwrap(), slave);
        let link = FileListEntry {
            size: 0,
            mtime: 5,
            name: "M00/00/00/slave_s.jpg".into(),
            target: Some("M00/00/01/target.jpg".into()),
            slave: false,
        };
        assert_eq!(
            FileListEntry::parse_line(link.encode_line().trim_end()).unwrap(),
            link
        );
        for bad in [
            "",
            "F 1 2",
            "X 1 2 M00/00/00/a",
            "F x 2 M00/00/00/a",
            "F 1 2 a b",
            "L 0 1 M00/00/00/a",
            "S 1 2 M00/00/00/a b",
        ] {
            assert!(FileListEntry::parse_line(bad).is_err(), "{bad:?}");
        }
        let request = FileListRequest {
            group: "group1".into(),
            store_path: 3,
        };
        assert_eq!(FileListRequest::decode(&request.encode()).unwrap(), request);
    }

    #[test]
    fn tracker_sync_messages() {
        assert_eq!(SyncReason::decode(&[]).unwrap(), SyncReason::New);
        assert_eq!(
            SyncReason::decode(&SyncReason::Recovery.encode()).unwrap(),
            SyncReason::Recovery
        );
        assert!(SyncReason::decode(&[7]).is_err());
        let source = SyncSource {
            source_id: "100002".into(),
            until: 1_795_386_966,
        };
        let body = SyncSource::encode(Some(&source));
        assert_eq!(body.len(), 24);
        assert_eq!(SyncSource::decode(&body).unwrap(), Some(source));
        assert_eq!(SyncSource::decode(&[]).unwrap(), None);
        assert_eq!(SyncSource::decode(&[0; 24]).unwrap(), None);
        assert!(SyncSource::decode(&[0; 5]).is_err());
        assert_eq!(decode_status(&[7]).unwrap(), 7);
        assert!(decode_status(&[]).is_err());

        let report = SyncReport {
            unix_time: 1_700_000_000,
            generation: 77,
            peers: vec![PeerProgress {
                peer_id: "100002".into(),
                peer_generation: 5,
                synced_timestamp: 1_699_999_999,
                acked_seq: 42,
                records_behind: 3,
                seconds_behind: 2,
            }],
        };
        let body = report.encode();
        assert_eq!(body.len(), 16 + 56);
        assert_eq!(SyncReport::decode(&body).unwrap(), report);
        assert!(SyncReport::decode(&body[..50]).is_err());
        assert!(SyncReport::decode(&[]).is_err());
    }
}
