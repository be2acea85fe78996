//! Metadata encoding (G): `name 0x02 value` records separated by `0x01`, stored sorted.

/// Longest metadata name kept by the server.
pub const MAX_NAME_LEN: usize = 64;
/// Longest metadata value kept by the server.
pub const MAX_VALUE_LEN: usize = 256;

const FIELD_SEP: u8 = 0x02;
const RECORD_SEP: u8 = 0x01;

/// One metadata pair as raw bytes.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Parses metadata as the server does: records without a field separator are dropped, long
/// names and values are cut to their limits.
pub fn decode(bytes: &[u8]) -> Vec<Pair> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == RECORD_SEP)
        .filter_map(|record| {
            let sep = record.iter().position(|&b| b == FIELD_SEP)?;
            let name = &record[..sep.min(MAX_NAME_LEN)];
            let value = &record[sep + 1..];
            let value = &value[..value.len().min(MAX_VALUE_LEN)];
            Some((name.to_vec(), value.to_vec()))
        })
        .collect()
}

/// Encodes pairs in the order given (no trailing separator).
pub fn encode(pairs: &[Pair]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push(RECORD_SEP);
        }
        out.extend_from_slice(name);
        out.push(FIELD_SEP);
        out.extend_from_slice(value);
    }
    out
}

/// Sorts by name (bytewise); on equal names the later pair wins.
pub fn normalize(pairs: Vec<Pair>) -> Vec<Pair> {
    let mut map = std::collections::BTreeMap::new();
    for (name, value) in pairs {
        map.insert(name, value);
    }
    map.into_iter().collect()
}

/// Merges `new` into `stored` (new values win), sorted.
pub fn merge(stored: Vec<Pair>, new: Vec<Pair>) -> Vec<Pair> {
    let mut all = stored;
    all.extend(new);
    normalize(all)
}

/// Checks a pair a client wants to send: names and values must not contain separators.
pub fn validate_pair(name: &[u8], value: &[u8]) -> Result<(), crate::ProtoError> {
    let bad = |b: &u8| *b == FIELD_SEP || *b == RECORD_SEP;
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.iter().any(bad) {
        return Err(crate::ProtoError::invalid(
            "metadata name",
            "must be 1 to 64 bytes without 0x01/0x02",
        ));
    }
    if value.len() > MAX_VALUE_LEN || value.iter().any(bad) {
        return Err(crate::ProtoError::invalid(
            "metadata value",
            "must be at most 256 bytes without 0x01/0x02",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<Pair> {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn spec_examples() {
        let raw = b"ext_name\x02jpg\x01width\x02160\x01height\x0280\x01file_size\x02115120";
        let decoded = decode(raw);
        assert_eq!(decoded.len(), 4);
        assert_eq!(encode(&decoded), raw.to_vec());
        let stored = normalize(pairs(&[
            ("width", "160"),
            ("height", "80"),
            ("author", "me"),
        ]));
        assert_eq!(
            encode(&stored),
            b"author\x02me\x01height\x0280\x01width\x02160".to_vec()
        );
        let merged = merge(stored, normalize(pairs(&[("width", "999"), ("zeta", "z")])));
        assert_eq!(
            encode(&merged),
            b"author\x02me\x01height\x0280\x01width\x02999\x01zeta\x02z".to_vec()
        );
    }

    #[test]
    fn drops_and_truncates() {
        let long_name = "n".repeat(70);
        let long_value = "v".repeat(300);
        let raw = format!("novalue\x01{long_name}\x02{long_value}\x01e\x02");
        let decoded = decode(raw.as_bytes());
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].0.len(), 64);
        assert_eq!(decoded[0].1.len(), 256);
        assert_eq!(decoded[1], (b"e".to_vec(), Vec::new()));
        assert!(decode(b"").is_empty());
    }

    proptest! {
        #[test]
        fn round_trip(list in proptest::collection::vec(("[a-z0-9_]{1,64}", "[ -~]{0,256}"), 0..8)) {
            let pairs: Vec<Pair> = list.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
            prop_assert_eq!(decode(&encode(&pairs)), pairs);
        }

        #[test]
        fn decode_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&raw);
        }
    }
}
