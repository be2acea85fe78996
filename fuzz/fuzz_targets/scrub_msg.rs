//! SCRUB (fdfs-rs command 220) bodies: `fdfs_proto::scrub_msg`. The first byte picks the
//! decoder (request action or reply report); whatever decodes must survive encode → decode.
#![no_main]

use fdfs_proto::scrub_msg::{ScrubAction, ScrubReport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(x) = ScrubAction::decode(body) {
            assert_eq!(ScrubAction::decode(&x.encode()).unwrap(), x);
        }
    } else if let Ok(x) = ScrubReport::decode(body) {
        let bytes = x.encode();
        assert_eq!(bytes.len(), ScrubReport::LEN);
        assert_eq!(ScrubReport::decode(&bytes).unwrap(), x);
    }
});
