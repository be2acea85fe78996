//! Stat records of the list commands (E.1–E.3): `fdfs_proto::stat`. The first byte picks
//! the decoder. Whatever decodes must survive encode → decode.
#![no_main]

use fdfs_proto::stat::{GroupStat, StatBlock, StorageStat};
use fdfs_proto::IP_WIDTH;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(x) = StatBlock::decode(body) {
                assert_eq!(StatBlock::decode(&x.encode()).unwrap(), x);
                // every field is settable by name with its own value
                let mut copy = StatBlock::default();
                for (name, value) in x.fields() {
                    copy.set(name, value).unwrap();
                }
                assert_eq!(copy, x);
            }
        }
        1 => {
            if let Ok(x) = GroupStat::decode(body) {
                assert_eq!(GroupStat::decode(&x.encode()).unwrap(), x);
            }
        }
        2 => {
            if let Ok(list) = GroupStat::decode_list(body) {
                assert_eq!(list.len() * GroupStat::LEN, body.len());
            }
        }
        3 => {
            if let Ok(x) = StorageStat::decode(body) {
                // encode uses W = 16; the W = 46 form round-trips when the address fits
                if x.ip.len() <= IP_WIDTH {
                    assert_eq!(StorageStat::decode(&x.encode()).unwrap(), x);
                }
                let mut long = Vec::new();
                x.encode_into(&mut long, fdfs_proto::IP_WIDTH_LONG);
                assert_eq!(StorageStat::decode(&long).unwrap(), x);
            }
        }
        _ => {
            if let Ok(list) = StorageStat::decode_list(body) {
                assert!(
                    list.len() * StorageStat::LEN == body.len()
                        || list.len() * StorageStat::LEN_LONG == body.len()
                );
            }
        }
    }
});
