//! Metadata bodies and sidecars (G): `fdfs_proto::metadata`. Decoding never fails; what it
//! yields is bounded and re-encodes to something that decodes to the same pairs.
#![no_main]

use fdfs_proto::metadata::{self, MAX_NAME_LEN, MAX_VALUE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pairs = metadata::decode(data);
    for (name, value) in &pairs {
        assert!(name.len() <= MAX_NAME_LEN && value.len() <= MAX_VALUE_LEN);
        assert!(!name.contains(&0x01) && !name.contains(&0x02));
        assert!(!value.contains(&0x01));
    }
    // values may hold 0x02 (only the first separator splits), so the round trip is checked
    // on pairs that validate, which is what a server stores
    let valid: Vec<_> = pairs
        .iter()
        .filter(|(n, v)| metadata::validate_pair(n, v).is_ok())
        .cloned()
        .collect();
    assert_eq!(metadata::decode(&metadata::encode(&valid)), valid);

    let normalized = metadata::normalize(pairs.clone());
    assert!(
        normalized.windows(2).all(|w| w[0].0 < w[1].0),
        "sorted, unique names"
    );
    let merged = metadata::merge(normalized.clone(), valid);
    assert!(merged.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(merged.len() <= normalized.len() + pairs.len());
});
