//! Request paths of the storage's HTTP server (`fdfs_storage::http::path`). The first byte
//! picks the URL form (with or without the group); the rest is the raw path. A path that is
//! accepted names a file strictly below `<store path>/data/XX/YY/` of our group.
#![no_main]

use fdfs_proto::file_id::LogicalName;
use fdfs_storage::http::path::{self, Target};
use libfuzzer_sys::fuzz_target;

const GROUP: &str = "group1";
const MAX_PATH: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let with_group = flags & 1 == 1;
    if let Ok(decoded) = path::decode(raw) {
        assert!(!decoded.contains('\\') && !decoded.contains('\0'));
        assert!(decoded.len() <= raw.len());
    }
    match path::parse(raw, with_group, GROUP, MAX_PATH) {
        Ok(Target::Healthz) => {}
        Ok(Target::File(file)) => {
            assert!(raw.len() <= MAX_PATH);
            assert_eq!(file.group.as_deref(), with_group.then_some(GROUP));
            assert_eq!(LogicalName::parse(&file.name_text).unwrap(), file.name);
            let rel = file.name.data_relative_path();
            assert_eq!(rel.matches('/').count(), 2, "{rel:?}");
            assert!(rel
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".."));
        }
        Err(_) => {}
    }
});
