//! Request and reply bodies of the storage commands (F): every decoder in
//! `fdfs_proto::storage_msg`. The first byte picks the decoder; prefix decoders take the
//! packet length from the next 8 bytes. Whatever decodes must survive encode → decode.
#![no_main]

use fdfs_proto::storage_msg::{
    decode_bare_name, AppendPrefix, DownloadRequest, FileInfoReply, GroupAndName, ModifyPrefix,
    SetMetadataRequest, SlavePrefix, TruncateRequest, UploadPrefix, UploadReply,
};
use fdfs_proto::IP_WIDTH;
use libfuzzer_sys::fuzz_target;

/// Packet length (8 bytes BE) and the rest.
fn with_pkg_len(data: &[u8]) -> Option<(u64, &[u8])> {
    let (len, rest) = data.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*len), rest))
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 11 {
        0 => {
            let Some((pkg_len, prefix)) = with_pkg_len(body) else {
                return;
            };
            if let Ok(x) = UploadPrefix::decode(prefix, pkg_len) {
                assert_eq!(UploadPrefix::decode(&x.encode(), pkg_len).unwrap(), x);
            }
        }
        1 => {
            let Some((pkg_len, prefix)) = with_pkg_len(body) else {
                return;
            };
            if let Ok(x) = SlavePrefix::decode(prefix, pkg_len) {
                assert_eq!(SlavePrefix::decode(&x.encode(), pkg_len).unwrap(), x);
            }
        }
        2 => {
            if let Ok(x) = DownloadRequest::decode(body) {
                assert_eq!(DownloadRequest::decode(&x.encode()).unwrap(), x);
            }
        }
        3 => {
            if let Ok(x) = GroupAndName::decode(body) {
                assert_eq!(GroupAndName::decode(&x.encode()).unwrap(), x);
            }
        }
        4 => {
            if let Ok(x) = SetMetadataRequest::decode(body) {
                assert_eq!(SetMetadataRequest::decode(&x.encode()).unwrap(), x);
            }
        }
        5 => {
            let Some((pkg_len, prefix)) = with_pkg_len(body) else {
                return;
            };
            if let Ok(x) = AppendPrefix::decode(prefix, pkg_len) {
                assert_eq!(AppendPrefix::decode(&x.encode(), pkg_len).unwrap(), x);
            }
        }
        6 => {
            let Some((pkg_len, prefix)) = with_pkg_len(body) else {
                return;
            };
            if let Ok(x) = ModifyPrefix::decode(prefix, pkg_len) {
                assert_eq!(ModifyPrefix::decode(&x.encode(), pkg_len).unwrap(), x);
            }
        }
        7 => {
            if let Ok(x) = TruncateRequest::decode(body) {
                assert_eq!(TruncateRequest::decode(&x.encode()).unwrap(), x);
            }
        }
        8 => {
            if let Ok(name) = decode_bare_name(body) {
                assert_eq!(name.as_bytes(), body);
            }
        }
        9 => {
            // encode always writes the classic 16-byte IP field: the 70-byte (IPv6) form
            // only round-trips when the address fits it
            if let Ok(x) = FileInfoReply::decode(body) {
                if x.source_ip.len() <= IP_WIDTH {
                    assert_eq!(FileInfoReply::decode(&x.encode()).unwrap(), x);
                }
            }
        }
        _ => {
            if let Ok(x) = UploadReply::decode(body) {
                assert_eq!(UploadReply::decode(&x.encode()).unwrap(), x);
            }
        }
    }
});
