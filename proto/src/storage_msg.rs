//! Bodies of storage commands (F). Streamed commands (uploads, append, modify) are split into a
//! fixed-size prefix decoded here and a content part the caller streams.

use crate::error::ProtoError;
use crate::field::{put_fixed, put_i64, FieldReader};
use crate::{EXT_LEN, GROUP_NAME_LEN, IP_WIDTH, MAX_NAME_LEN, PREFIX_LEN};

fn name_str(raw: &[u8]) -> Result<&str, ProtoError> {
    if raw.is_empty() || raw.len() > MAX_NAME_LEN {
        return Err(ProtoError::invalid(
            "file name",
            format!("bad length {}", raw.len()),
        ));
    }
    std::str::from_utf8(raw).map_err(|_| ProtoError::invalid("file name", "not valid text"))
}

/// Fixed prefix of UPLOAD_FILE / UPLOAD_APPENDER_FILE (F.1): 15 bytes, then the content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadPrefix {
    /// `None` for 0xFF: let the storage choose.
    pub store_path_index: Option<u8>,
    pub file_size: u64,
    pub ext: String,
}

impl UploadPrefix {
    pub const LEN: usize = 1 + 8 + EXT_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(self.store_path_index.unwrap_or(0xFF));
        put_i64(&mut out, self.file_size as i64);
        put_fixed(&mut out, self.ext.as_bytes(), EXT_LEN);
        out
    }

    /// Decodes the prefix and checks it against the packet length.
    pub fn decode(prefix: &[u8], pkg_len: u64) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(prefix);
        let index = reader.u8()?;
        let file_size = reader.len_field("file size")?;
        let ext = reader.fixed_str(EXT_LEN, "extension")?.to_string();
        crate::name::validate_ext(&ext)?;
        if pkg_len.checked_sub(Self::LEN as u64) != Some(file_size) {
            return Err(ProtoError::BadLength {
                what: "upload",
                len: pkg_len,
            });
        }
        let store_path_index = if index == 0xFF { None } else { Some(index) };
        Ok(UploadPrefix {
            store_path_index,
            file_size,
            ext,
        })
    }
}

/// Fixed prefix of UPLOAD_SLAVE_FILE (F.2): 38 bytes, then the master name, then content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlavePrefix {
    pub master_name_len: u64,
    pub file_size: u64,
    pub prefix: String,
    pub ext: String,
}

impl SlavePrefix {
    pub const LEN: usize = 8 + 8 + PREFIX_LEN + EXT_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        put_i64(&mut out, self.master_name_len as i64);
        put_i64(&mut out, self.file_size as i64);
        put_fixed(&mut out, self.prefix.as_bytes(), PREFIX_LEN);
        put_fixed(&mut out, self.ext.as_bytes(), EXT_LEN);
        out
    }

    pub fn decode(prefix: &[u8], pkg_len: u64) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(prefix);
        let master_name_len = reader.len_field("master name length")?;
        let file_size = reader.len_field("file size")?;
        let slave_prefix = reader.fixed_str(PREFIX_LEN, "prefix")?.to_string();
        let ext = reader.fixed_str(EXT_LEN, "extension")?.to_string();
        if master_name_len <= 10 || master_name_len > MAX_NAME_LEN as u64 {
            return Err(ProtoError::invalid(
                "master name length",
                master_name_len.to_string(),
            ));
        }
        if (Self::LEN as u64)
            .checked_add(master_name_len)
            .and_then(|n| n.checked_add(file_size))
            != Some(pkg_len)
        {
            return Err(ProtoError::BadLength {
                what: "slave upload",
                len: pkg_len,
            });
        }
        Ok(SlavePrefix {
            master_name_len,
            file_size,
            prefix: slave_prefix,
            ext,
        })
    }
}

/// Reply to uploads and REGENERATE: group + logical name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadReply {
    pub group: String,
    pub name: String,
}

impl UploadReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GROUP_NAME_LEN + self.name.len());
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() <= GROUP_NAME_LEN || body.len() > GROUP_NAME_LEN + MAX_NAME_LEN {
            return Err(ProtoError::BadLength {
                what: "upload reply",
                len: body.len() as u64,
            });
        }
        let mut reader = FieldReader::new(body);
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        let name = name_str(reader.rest())?.to_string();
        Ok(UploadReply { group, name })
    }
}

/// Group + logical name: DELETE (12), GET_METADATA (15), QUERY_FILE_INFO (22), and the tracker
/// queries 102/103/105.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupAndName {
    pub group: String,
    pub name: String,
}

impl GroupAndName {
    pub fn encode(&self) -> Vec<u8> {
        UploadReply {
            group: self.group.clone(),
            name: self.name.clone(),
        }
        .encode()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() <= GROUP_NAME_LEN || body.len() > GROUP_NAME_LEN + MAX_NAME_LEN {
            return Err(ProtoError::BadLength {
                what: "group and file name",
                len: body.len() as u64,
            });
        }
        let mut reader = FieldReader::new(body);
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        let name = name_str(reader.rest())?.to_string();
        Ok(GroupAndName { group, name })
    }
}

/// DOWNLOAD_FILE (14) request (F.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadRequest {
    pub offset: u64,
    /// 0 = to the end of the file.
    pub length: u64,
    pub group: String,
    pub name: String,
}

impl DownloadRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.name.len());
        put_i64(&mut out, self.offset as i64);
        put_i64(&mut out, self.length as i64);
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(body);
        let offset = reader.len_field("offset")?;
        let length = reader.len_field("length")?;
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        let name = name_str(reader.rest())?.to_string();
        Ok(DownloadRequest {
            offset,
            length,
            group,
            name,
        })
    }
}

/// SET_METADATA operation flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataOp {
    Overwrite,
    Merge,
}

impl MetadataOp {
    pub fn byte(self) -> u8 {
        match self {
            MetadataOp::Overwrite => b'O',
            MetadataOp::Merge => b'M',
        }
    }
}

/// SET_METADATA (13) request (F.5); the whole body is bounded, so it is decoded in one piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetMetadataRequest {
    pub op: MetadataOp,
    pub group: String,
    pub name: String,
    pub metadata: Vec<u8>,
}

impl SetMetadataRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(33 + self.name.len() + self.metadata.len());
        put_i64(&mut out, self.name.len() as i64);
        put_i64(&mut out, self.metadata.len() as i64);
        out.push(self.op.byte());
        put_fixed(&mut out, self.group.as_bytes(), GROUP_NAME_LEN);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.metadata);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(body);
        let name_len = reader.len_field("name length")?;
        let meta_len = reader.len_field("metadata length")?;
        let op = match reader.u8()? {
            b'O' => MetadataOp::Overwrite,
            b'M' => MetadataOp::Merge,
            other => {
                return Err(ProtoError::invalid(
                    "metadata flag",
                    format!("byte {other}"),
                ))
            }
        };
        let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
        if name_len.checked_add(meta_len) != Some(reader.remaining() as u64) {
            return Err(ProtoError::BadLength {
                what: "set metadata",
                len: body.len() as u64,
            });
        }
        let name = name_str(reader.bytes(name_len as usize)?)?.to_string();
        let metadata = reader.rest().to_vec();
        Ok(SetMetadataRequest {
            op,
            group,
            name,
            metadata,
        })
    }
}

/// Request flags of QUERY_FILE_INFO carried in the header status byte (A.3).
pub const FILE_INFO_NO_CRC: u8 = 0x01;
pub const FILE_INFO_SILENT: u8 = 0x02;

/// Reply to QUERY_FILE_INFO (F.7): 40 bytes with W = 16.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfoReply {
    pub file_size: u64,
    pub create_timestamp: u64,
    pub crc32: u32,
    pub source_ip: String,
}

impl FileInfoReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + IP_WIDTH);
        put_i64(&mut out, self.file_size as i64);
        put_i64(&mut out, self.create_timestamp as i64);
        // sign-extended from 32 bits (O.7)
        put_i64(&mut out, i64::from(self.crc32 as i32));
        put_fixed(&mut out, self.source_ip.as_bytes(), IP_WIDTH);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let ip_width = match body.len() {
            40 => IP_WIDTH,
            70 => crate::IP_WIDTH_LONG,
            len => {
                return Err(ProtoError::BadLength {
                    what: "file info reply",
                    len: len as u64,
                })
            }
        };
        let mut reader = FieldReader::new(body);
        let file_size = reader.len_field("file size")?;
        let create_timestamp = reader.len_field("timestamp")?;
        let crc32 = reader.i64()? as u32;
        let source_ip = reader.fixed_str(ip_width, "ip address")?.to_string();
        Ok(FileInfoReply {
            file_size,
            create_timestamp,
            crc32,
            source_ip,
        })
    }
}

/// Fixed prefix of APPEND_FILE (F.8): name_len, append_size; then name and content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendPrefix {
    pub name_len: u64,
    pub size: u64,
}

impl AppendPrefix {
    pub const LEN: usize = 16;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        put_i64(&mut out, self.name_len as i64);
        put_i64(&mut out, self.size as i64);
        out
    }

    pub fn decode(prefix: &[u8], pkg_len: u64) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(prefix);
        let name_len = reader.len_field("name length")?;
        let size = reader.len_field("append size")?;
        check_streamed(Self::LEN, name_len, size, pkg_len, "append")?;
        Ok(AppendPrefix { name_len, size })
    }
}

/// Fixed prefix of MODIFY_FILE (F.9): name_len, offset, size; then name and content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModifyPrefix {
    pub name_len: u64,
    pub offset: u64,
    pub size: u64,
}

impl ModifyPrefix {
    pub const LEN: usize = 24;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        put_i64(&mut out, self.name_len as i64);
        put_i64(&mut out, self.offset as i64);
        put_i64(&mut out, self.size as i64);
        out
    }

    pub fn decode(prefix: &[u8], pkg_len: u64) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(prefix);
        let name_len = reader.len_field("name length")?;
        let offset = reader.len_field("offset")?;
        let size = reader.len_field("modify size")?;
        check_streamed(Self::LEN, name_len, size, pkg_len, "modify")?;
        Ok(ModifyPrefix {
            name_len,
            offset,
            size,
        })
    }
}

/// TRUNCATE_FILE (36) request (F.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncateRequest {
    pub new_size: u64,
    pub name: String,
}

impl TruncateRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.name.len());
        put_i64(&mut out, self.name.len() as i64);
        put_i64(&mut out, self.new_size as i64);
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(body);
        let name_len = reader.len_field("name length")?;
        let new_size = reader.len_field("new size")?;
        check_name_len(name_len)?;
        if reader.remaining() as u64 != name_len {
            return Err(ProtoError::BadLength {
                what: "truncate",
                len: body.len() as u64,
            });
        }
        let name = name_str(reader.rest())?.to_string();
        Ok(TruncateRequest { new_size, name })
    }
}

/// Checks an appender request whose packet is prefix + name + content.
fn check_streamed(
    prefix_len: usize,
    name_len: u64,
    size: u64,
    pkg_len: u64,
    what: &'static str,
) -> Result<(), ProtoError> {
    check_name_len(name_len)?;
    let expected = (prefix_len as u64)
        .checked_add(name_len)
        .and_then(|n| n.checked_add(size));
    if expected != Some(pkg_len) {
        return Err(ProtoError::BadLength { what, len: pkg_len });
    }
    Ok(())
}

/// Appender operations need at least a full normal-length name (F.8).
fn check_name_len(name_len: u64) -> Result<(), ProtoError> {
    if !(crate::name::NORMAL_NAME_LEN as u64..=MAX_NAME_LEN as u64).contains(&name_len) {
        return Err(ProtoError::invalid("name length", name_len.to_string()));
    }
    Ok(())
}

/// Body of REGENERATE_APPENDER_FILENAME (38): the bare name (F.11).
pub fn decode_bare_name(body: &[u8]) -> Result<String, ProtoError> {
    check_name_len(body.len() as u64)?;
    Ok(name_str(body)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_prefix_matches_capture() {
        // P.2: index 0, size 6, ext "txt"
        let prefix = UploadPrefix {
            store_path_index: Some(0),
            file_size: 6,
            ext: "txt".into(),
        };
        assert_eq!(
            prefix.encode(),
            [0, 0, 0, 0, 0, 0, 0, 0, 6, b't', b'x', b't', 0, 0, 0]
        );
        assert_eq!(UploadPrefix::decode(&prefix.encode(), 21).unwrap(), prefix);
        assert!(UploadPrefix::decode(&prefix.encode(), 22).is_err());
        let mut bad_ext = prefix.encode();
        bad_ext[10] = b'/';
        assert!(UploadPrefix::decode(&bad_ext, 21).is_err());
        let mut any_path = prefix.encode();
        any_path[0] = 0xFF;
        assert_eq!(
            UploadPrefix::decode(&any_path, 21)
                .unwrap()
                .store_path_index,
            None
        );
    }

    #[test]
    fn file_info_reply_matches_capture() {
        // F.7 example
        let reply = FileInfoReply {
            file_size: 22,
            create_timestamp: 0x6b036e28,
            crc32: 0x8036CEA3,
            source_ip: "127.0.0.31".into(),
        };
        let hex: String = reply.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "0000000000000016000000006b036e28ffffffff8036cea33132372e302e302e3331000000000000"
        );
        assert_eq!(FileInfoReply::decode(&reply.encode()).unwrap(), reply);
    }

    #[test]
    fn metadata_request_round_trip_and_bad_flag() {
        let req = SetMetadataRequest {
            op: MetadataOp::Merge,
            group: "group1".into(),
            name: "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt".into(),
            metadata: b"a\x02b".to_vec(),
        };
        let body = req.encode();
        assert_eq!(SetMetadataRequest::decode(&body).unwrap(), req);
        let mut bad = body.clone();
        bad[16] = b'X';
        assert!(SetMetadataRequest::decode(&bad).is_err());
        assert!(SetMetadataRequest::decode(&body[..body.len() - 1]).is_err());
    }

    #[test]
    fn download_refuses_negative_offsets() {
        let req = DownloadRequest {
            offset: 6,
            length: 5,
            group: "group1".into(),
            name: "M00/00/00/abcdefghijk".into(),
        };
        assert_eq!(DownloadRequest::decode(&req.encode()).unwrap(), req);
        let mut bad = req.encode();
        bad[0] = 0xFF;
        assert!(DownloadRequest::decode(&bad).is_err());
    }

    #[test]
    fn slave_and_appender_prefixes() {
        let slave = SlavePrefix {
            master_name_len: 44,
            file_size: 6,
            prefix: "_s".into(),
            ext: "jpg".into(),
        };
        assert_eq!(
            SlavePrefix::decode(&slave.encode(), 38 + 44 + 6).unwrap(),
            slave
        );
        assert!(SlavePrefix::decode(&slave.encode(), 38 + 44 + 7).is_err());
        let append = AppendPrefix {
            name_len: 44,
            size: 10,
        };
        assert_eq!(AppendPrefix::decode(&append.encode(), 70).unwrap(), append);
        assert!(AppendPrefix::decode(
            &AppendPrefix {
                name_len: 5,
                size: 0
            }
            .encode(),
            21
        )
        .is_err());
        let modify = ModifyPrefix {
            name_len: 44,
            offset: 3,
            size: 2,
        };
        assert_eq!(ModifyPrefix::decode(&modify.encode(), 70).unwrap(), modify);
        let trunc = TruncateRequest {
            new_size: 3,
            name: "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt".into(),
        };
        assert_eq!(TruncateRequest::decode(&trunc.encode()).unwrap(), trunc);
    }
}
