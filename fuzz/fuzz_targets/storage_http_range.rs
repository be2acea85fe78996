//! `Range` headers of the storage's HTTP server (`fdfs_storage::http::range`). The first 8
//! bytes give the file size (the first byte's top bit chooses a small size, where most edge
//! cases live); the rest is the header value. Ranges that are honoured lie inside the file,
//! are ascending, disjoint and never add up to more than the file.
#![no_main]

use fdfs_storage::http::range::{self, Ranges, MAX_RANGES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = if size[0] & 0x80 == 0 {
        u64::from(u16::from_be_bytes([size[6], size[7]]))
    } else {
        u64::from_be_bytes(*size) & !(1 << 63)
    };
    let Ok(header) = std::str::from_utf8(rest) else {
        return;
    };
    match range::parse(header, size) {
        Ranges::Whole | Ranges::Unsatisfiable => {}
        Ranges::Partial(ranges) => {
            assert!(!ranges.is_empty() && ranges.len() <= MAX_RANGES);
            let mut total: u64 = 0;
            for r in &ranges {
                assert!(r.start <= r.end && r.end < size, "{r:?} in {size}");
                total += r.len();
                let _ = r.content_range(size);
            }
            assert!(total <= size);
            for pair in ranges.windows(2) {
                assert!(pair[0].end.saturating_add(1) < pair[1].start, "{ranges:?}");
            }
        }
    }
});
