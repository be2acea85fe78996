//! `Range: bytes=...` (RFC 9110 §14): single and multiple ranges, suffix ranges, 416 when
//! nothing is satisfiable. Overlapping or adjacent ranges are merged (in ascending order), so
//! a request can never make us send more bytes than the file has; a header with more than
//! [`MAX_RANGES`] ranges is ignored (the whole file is sent).

/// Most ranges honoured in one request.
pub const MAX_RANGES: usize = 32;

/// An inclusive byte range inside a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Never zero: a range holds at least one byte.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.end)
    }
}

/// What a `Range` header asks for, given the file size.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Not a byte range request we honour: send the whole file.
    Whole,
    /// Send these ranges (ascending, disjoint, non-adjacent, at least one).
    Partial(Vec<ByteRange>),
    /// Malformed or nothing satisfiable: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value for a file of `size` bytes.
pub fn parse(header: &str, size: u64) -> Ranges {
    let header = header.trim();
    let Some((unit, set)) = header.split_once('=') else {
        return Ranges::Unsatisfiable;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        // RFC 9110: a range unit we do not understand is ignored
        return Ranges::Whole;
    }
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if specs.is_empty() {
        return Ranges::Unsatisfiable;
    }
    if specs.len() > MAX_RANGES {
        return Ranges::Whole;
    }
    let mut ranges = Vec::with_capacity(specs.len());
    for spec in specs {
        match parse_spec(spec, size) {
            Spec::Invalid => return Ranges::Unsatisfiable,
            Spec::Outside => {}
            Spec::Range(range) => ranges.push(range),
        }
    }
    if ranges.is_empty() {
        return Ranges::Unsatisfiable;
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end.saturating_add(1) => {
                last.end = last.end.max(range.end);
            }
            _ => merged.push(range),
        }
    }
    Ranges::Partial(merged)
}

enum Spec {
    Invalid,
    /// Well-formed but not inside the file.
    Outside,
    Range(ByteRange),
}

fn parse_spec(spec: &str, size: u64) -> Spec {
    let Some((first, last)) = spec.split_once('-') else {
        return Spec::Invalid;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // suffix: the last n bytes
        let Some(n) = number(last) else {
            return Spec::Invalid;
        };
        if n == 0 || size == 0 {
            return Spec::Outside;
        }
        return Spec::Range(ByteRange {
            start: size.saturating_sub(n),
            end: size - 1,
        });
    }
    let Some(start) = number(first) else {
        return Spec::Invalid;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return Spec::Invalid,
        }
    };
    if start >= size {
        return Spec::Outside;
    }
    Spec::Range(ByteRange {
        start,
        end: end.min(size - 1),
    })
}

/// Decimal digits only; values past u64 saturate (they are beyond any file anyway).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-0", 10), Ranges::Partial(vec![r(0, 0)]));
        assert_eq!(parse("bytes=2-5", 10), Ranges::Partial(vec![r(2, 5)]));
        assert_eq!(parse("bytes=2-", 10), Ranges::Partial(vec![r(2, 9)]));
        assert_eq!(parse("bytes=2-100", 10), Ranges::Partial(vec![r(2, 9)]));
        assert_eq!(parse("bytes=-3", 10), Ranges::Partial(vec![r(7, 9)]));
        assert_eq!(parse("bytes=-30", 10), Ranges::Partial(vec![r(0, 9)]));
        assert_eq!(parse("BYTES = 1-1", 10), Ranges::Partial(vec![r(1, 1)]));
        assert_eq!(
            parse("bytes=0-99999999999999999999999", 10),
            Ranges::Partial(vec![r(0, 9)])
        );
        assert_eq!(r(2, 5).len(), 4);
        assert_eq!(r(2, 5).content_range(10), "bytes 2-5/10");
    }

    #[test]
    fn multiple_ranges_are_sorted_and_merged() {
        assert_eq!(
            parse("bytes=0-1, 5-6", 10),
            Ranges::Partial(vec![r(0, 1), r(5, 6)])
        );
        assert_eq!(
            parse("bytes=5-6,0-1", 10),
            Ranges::Partial(vec![r(0, 1), r(5, 6)])
        );
        assert_eq!(parse("bytes=0-4,2-6", 10), Ranges::Partial(vec![r(0, 6)]));
        assert_eq!(parse("bytes=0-4,5-6", 10), Ranges::Partial(vec![r(0, 6)]));
        assert_eq!(
            parse("bytes=0-0,-1", 10),
            Ranges::Partial(vec![r(0, 0), r(9, 9)])
        );
        // unsatisfiable members are dropped when another one fits
        assert_eq!(parse("bytes=50-60,1-2", 10), Ranges::Partial(vec![r(1, 2)]));
    }

    #[test]
    fn unsatisfiable_and_malformed() {
        for header in [
            "bytes=10-",
            "bytes=10-20",
            "bytes=-0",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=",
            "bytes=,",
            "bytes=--1",
            "bytes=+1-2",
            "bytes 1-2",
            "bytes=1",
        ] {
            assert_eq!(parse(header, 10), Ranges::Unsatisfiable, "{header}");
        }
        assert_eq!(parse("bytes=0-", 0), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-5", 0), Ranges::Unsatisfiable);
    }

    #[test]
    fn ignored() {
        assert_eq!(parse("items=0-5", 10), Ranges::Whole);
        let many: Vec<String> = (0..=MAX_RANGES).map(|i| format!("{i}-{i}")).collect();
        assert_eq!(
            parse(&format!("bytes={}", many.join(",")), 100),
            Ranges::Whole
        );
    }

    proptest! {
        #[test]
        fn ranges_stay_inside_and_never_overlap(
            size in 0u64..10_000,
            specs in proptest::collection::vec((0u64..12_000, 0u64..12_000, 0u8..3), 1..8),
        ) {
            let text: Vec<String> = specs.iter().map(|(a, b, kind)| match kind {
                0 => format!("{a}-{b}"),
                1 => format!("{a}-"),
                _ => format!("-{b}"),
            }).collect();
            if let Ranges::Partial(ranges) = parse(&format!("bytes={}", text.join(",")), size) {
                prop_assert!(!ranges.is_empty());
                let mut total = 0;
                for (i, range) in ranges.iter().enumerate() {
                    prop_assert!(range.start <= range.end);
                    prop_assert!(range.end < size);
                    if i > 0 {
                        prop_assert!(ranges[i - 1].end + 1 < range.start);
                    }
                    total += range.len();
                }
                prop_assert!(total <= size);
            }
        }
    }
}
