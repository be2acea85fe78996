//! The 10-byte packet header (A.1) and the body length a server trusts from it.
#![no_main]

use fdfs_proto::header::{Header, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(raw) = data.get(..HEADER_LEN) else {
        return;
    };
    let raw: [u8; HEADER_LEN] = raw.try_into().expect("slice of HEADER_LEN bytes");
    let header = Header::decode(&raw);
    assert_eq!(
        header.encode(),
        raw,
        "encode(decode(x)) must give the same bytes"
    );
    assert_eq!(Header::decode(&header.encode()), header);
    match header.body_len() {
        Ok(len) => {
            assert!(header.pkg_len >= 0);
            assert_eq!(len, header.pkg_len as u64);
        }
        Err(_) => assert!(header.pkg_len < 0, "only negative lengths are refused"),
    }
    // The command byte must map to a command or be refused, never panic.
    let _ = fdfs_proto::cmd::Command::try_from(header.cmd);
});
