//! Bodies of the tracker commands (D, K): every decoder in `fdfs_proto::tracker_msg`. The
//! first byte picks the decoder. Whatever decodes must survive encode → decode.
#![no_main]

use fdfs_proto::tracker_msg::{
    decode_group, encode_group, BeatReply, BeatRequest, FetchReply, JoinReply, JoinRequest,
    QueryStoreAllReply, QueryStoreReply, StorageAddr,
};
use fdfs_proto::IP_WIDTH;
use libfuzzer_sys::fuzz_target;

/// Encoders write the classic 15-byte IP field; IPv6-mode replies (45 bytes) only round-trip
/// when every address fits it.
fn classic(servers: &[StorageAddr]) -> bool {
    servers.iter().all(|s| s.ip.len() < IP_WIDTH)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(x) = QueryStoreReply::decode(body) {
                if classic(std::slice::from_ref(&x.server)) {
                    assert_eq!(QueryStoreReply::decode(&x.encode()).unwrap(), x);
                }
            }
        }
        1 => {
            if let Ok(x) = QueryStoreAllReply::decode(body) {
                assert!(!x.servers.is_empty());
                if classic(&x.servers) {
                    assert_eq!(QueryStoreAllReply::decode(&x.encode()).unwrap(), x);
                }
            }
        }
        2 => {
            if let Ok(x) = FetchReply::decode(body) {
                assert!(!x.servers.is_empty());
                if classic(&x.servers) {
                    assert_eq!(FetchReply::decode(&x.encode()).unwrap(), x);
                }
            }
        }
        3 => {
            if let Ok(group) = decode_group(body) {
                assert_eq!(decode_group(&encode_group(&group)).unwrap(), group);
            }
        }
        4 => {
            if let Ok(x) = JoinRequest::decode(body) {
                assert!(x.port > 0 && x.storage_id > 0);
                assert_eq!(JoinRequest::decode(&x.encode()).unwrap(), x);
            }
        }
        5 => {
            if let Ok(x) = JoinReply::decode(body) {
                assert_eq!(JoinReply::decode(&x.encode()).unwrap(), x);
            }
        }
        6 => {
            if let Ok(x) = BeatRequest::decode(body) {
                assert!(x.paths.len() <= 256);
                assert_eq!(BeatRequest::decode(&x.encode()).unwrap(), x);
            }
        }
        _ => {
            if let Ok(x) = BeatReply::decode(body) {
                assert_eq!(BeatReply::decode(&x.encode()).unwrap(), x);
            }
        }
    }
});
