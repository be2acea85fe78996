//! Storage ↔ storage and storage ↔ tracker sync bodies (K.2, L.4): every decoder in
//! `fdfs_proto::sync_msg`. The first byte picks the decoder; prefix decoders take the packet
//! length from the next 8 bytes. Whatever decodes must survive encode → decode.
#![no_main]

use fdfs_proto::sync_msg::{
    decode_generation, decode_server_id, decode_status, encode_generation, encode_server_id,
    FileListEntry, FileListRequest, SyncDelete, SyncFilePrefix, SyncRangePrefix, SyncReason,
    SyncReport, SyncSource, SyncTruncate, SyncTwoNames,
};
use libfuzzer_sys::fuzz_target;

fn with_pkg_len(data: &[u8]) -> Option<(u64, &[u8])> {
    let (len, rest) = data.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*len), rest))
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 13 {
        0 | 1 => {
            let probe = which % 13 == 1;
            let Some((pkg_len, prefix)) = with_pkg_len(body) else {
                return;
            };
            if let Ok(x) = SyncFilePrefix::decode(prefix, pkg_len, probe) {
                assert_eq!(
                    SyncFilePrefix::decode(&x.encode(), pkg_len, probe).unwrap(),
                    x
                );
            }
        }
        2 => {
            let Some((pkg_len, prefix)) = with_pkg_len(body) else {
                return;
            };
            if let Ok(x) = SyncRangePrefix::decode(prefix, pkg_len) {
                assert!(x.offset.checked_add(x.length).is_some());
                assert_eq!(SyncRangePrefix::decode(&x.encode(), pkg_len).unwrap(), x);
            }
        }
        3 => {
            if let Ok(x) = SyncDelete::decode(body) {
                assert_eq!(SyncDelete::decode(&x.encode()).unwrap(), x);
            }
        }
        4 => {
            if let Ok(x) = SyncTwoNames::decode(body) {
                assert_eq!(SyncTwoNames::decode(&x.encode()).unwrap(), x);
            }
        }
        5 => {
            if let Ok(x) = SyncTruncate::decode(body) {
                assert_eq!(SyncTruncate::decode(&x.encode()).unwrap(), x);
            }
        }
        6 => {
            if let Ok(id) = decode_server_id(body) {
                assert_eq!(decode_server_id(&encode_server_id(&id)).unwrap(), id);
            }
        }
        7 => {
            if let Ok(Some(generation)) = decode_generation(body) {
                assert_eq!(
                    decode_generation(&encode_generation(generation)).unwrap(),
                    Some(generation)
                );
            }
        }
        8 => {
            if let Ok(x) = FileListRequest::decode(body) {
                assert_eq!(FileListRequest::decode(&x.encode()).unwrap(), x);
            }
        }
        9 => {
            let Ok(line) = std::str::from_utf8(body) else {
                return;
            };
            if let Ok(x) = FileListEntry::parse_line(line) {
                let encoded = x.encode_line();
                let again = FileListEntry::parse_line(
                    encoded
                        .strip_suffix('\n')
                        .expect("lines end with a newline"),
                )
                .unwrap();
                // links are written with size 0 whatever the line said, and are no slaves
                let expected = FileListEntry {
                    size: if x.target.is_some() { 0 } else { x.size },
                    slave: x.slave && x.target.is_none(),
                    ..x
                };
                assert_eq!(again, expected);
            }
        }
        10 => {
            if let Ok(x) = SyncReason::decode(body) {
                assert_eq!(SyncReason::decode(&x.encode()).unwrap(), x);
            }
        }
        11 => {
            if let Ok(x) = SyncSource::decode(body) {
                assert_eq!(
                    SyncSource::decode(&SyncSource::encode(x.as_ref())).unwrap(),
                    x
                );
            }
            let _ = decode_status(body);
        }
        _ => {
            if let Ok(x) = SyncReport::decode(body) {
                assert!(x.peers.len() <= SyncReport::MAX_PEERS);
                assert_eq!(SyncReport::decode(&x.encode()).unwrap(), x);
            }
        }
    }
});
