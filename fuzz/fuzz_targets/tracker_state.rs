//! The tracker's state file (`fdfs_tracker::persist`, `data/cluster_state.toml`), as found on
//! disk after a crash, a bad disk or a hand edit. The first byte picks the mode: 0 feeds the
//! rest as the whole file; any other value treats the rest as the TOML document and appends a
//! correct checksum line, so the fuzzer gets past the CRC into parsing and validation.
#![no_main]

use std::time::Instant;

use fdfs_tracker::persist::{self, State};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode == 0 {
        rest.to_vec()
    } else {
        let mut content = rest.to_vec();
        if !content.is_empty() && !content.ends_with(b"\n") {
            content.push(b'\n');
        }
        let crc = crc32fast::hash(&content);
        content.extend_from_slice(format!("# crc32 {crc:08x}\n").as_bytes());
        content
    };
    let Ok(state) = persist::decode(&file) else {
        return;
    };
    // what was accepted is written back identically
    let text = persist::encode(&state).expect("a decoded state encodes");
    assert_eq!(persist::decode(text.as_bytes()).unwrap(), state);
    // and restores into a registry whose own snapshot is again a valid file
    let cluster = state
        .restore(Instant::now())
        .expect("a validated state restores");
    let again = State::capture(&cluster);
    again
        .validate()
        .expect("the snapshot of a restored registry validates");
    // storages may come back with another status (OFFLINE), but nobody is lost or added
    let ids = |s: &State| -> Vec<(String, Vec<String>)> {
        s.groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.storages.iter().map(|x| x.id.clone()).collect(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&again), ids(&state));
});
