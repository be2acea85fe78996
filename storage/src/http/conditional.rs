//! Validators and conditional requests (RFC 9110 §13): `ETag`, `Last-Modified`,
//! `If-None-Match` / `If-Modified-Since` → 304, and `If-Range`.
//!
//! ETags (identical on every replica holding the same bytes):
//! * normal files: strong `"<crc32>-<size>"` straight from the name (H.2), no disk read;
//! * slave files (whose name carries the master's CRC) up to [`SLAVE_CRC_LIMIT`]: strong, from
//!   the CRC32 of the content, computed once and cached;
//! * appender files (content changes under one name) and bigger slaves: weak
//!   `W/"<size>-<mtime>"`; good for `If-None-Match` on this storage, never for `If-Range`.
//!
//! `Last-Modified` follows M.2: the creation time in the name for normal files, the file's
//! mtime for appender and slave files.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Slaves up to this size get a strong ETag from their content's CRC32.
pub const SLAVE_CRC_LIMIT: u64 = 64 << 20;

/// An entity tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ETag {
    Strong(String),
    Weak(String),
}

impl ETag {
    pub fn from_crc(crc: u32, size: u64) -> ETag {
        ETag::Strong(format!("{crc:08x}-{size:x}"))
    }

    pub fn from_stat(size: u64, mtime: u64) -> ETag {
        ETag::Weak(format!("{size:x}-{mtime:x}"))
    }

    pub fn header(&self) -> String {
        match self {
            ETag::Strong(tag) => format!("\"{tag}\""),
            ETag::Weak(tag) => format!("W/\"{tag}\""),
        }
    }

    fn opaque(&self) -> &str {
        match self {
            ETag::Strong(tag) | ETag::Weak(tag) => tag,
        }
    }
}

/// Formats unix seconds as an HTTP date.
pub fn http_date(unix: u64) -> String {
    // HTTP dates stop at year 9999 (httpdate panics beyond): a file whose mtime was set
    // absurdly far ahead gets the last representable date
    const LAST_HTTP_DATE: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix.min(LAST_HTTP_DATE)))
}

fn parse_date(text: &str) -> Option<u64> {
    let time: SystemTime = httpdate::parse_http_date(text.trim()).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// The entity tags of an `If-None-Match` / `If-Match` list; `None` for `*`.
fn tags(list: &str) -> Option<Vec<(bool, &str)>> {
    if list.trim() == "*" {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let (weak, after) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let Some(after) = after.strip_prefix('"') else {
            break;
        };
        let Some(close) = after.find('"') else {
            break;
        };
        out.push((weak, &after[..close]));
        rest = after[close + 1..].trim_start_matches([' ', '\t', ',']);
    }
    Some(out)
}

/// Whether the representation is unchanged for the client (→ 304). `If-None-Match` (weak
/// comparison) takes precedence over `If-Modified-Since`, as RFC 9110 §13.2.2 says.
pub fn not_modified(
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    etag: &ETag,
    last_modified: u64,
) -> bool {
    if let Some(list) = if_none_match {
        return match tags(list) {
            None => true,
            Some(tags) => tags.iter().any(|(_, tag)| *tag == etag.opaque()),
        };
    }
    match if_modified_since.and_then(parse_date) {
        Some(since) => last_modified <= since,
        None => false,
    }
}

/// Whether a `Range` may be honoured under `If-Range`: a strong ETag that matches exactly,
/// or the exact `Last-Modified` date.
pub fn if_range_holds(if_range: &str, etag: &ETag, last_modified: u64) -> bool {
    let value = if_range.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return match (etag, tags(value)) {
            (ETag::Strong(ours), Some(tags)) => {
                tags.len() == 1 && !tags[0].0 && tags[0].1 == ours.as_str()
            }
            _ => false,
        };
    }
    parse_date(value) == Some(last_modified)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LM: u64 = 1_795_386_849;

    #[test]
    fn etag_forms() {
        assert_eq!(ETag::from_crc(0x363A3020, 6).header(), "\"363a3020-6\"");
        assert_eq!(ETag::from_stat(6, 0x10).header(), "W/\"6-10\"");
        assert_eq!(http_date(LM), "Sun, 22 Nov 2026 22:34:09 GMT");
    }

    #[test]
    fn if_none_match() {
        let strong = ETag::from_crc(0x363A3020, 6);
        let weak = ETag::from_stat(6, 16);
        assert!(not_modified(Some("\"363a3020-6\""), None, &strong, LM));
        assert!(not_modified(Some("W/\"363a3020-6\""), None, &strong, LM));
        assert!(not_modified(
            Some("\"x\", \"363a3020-6\""),
            None,
            &strong,
            LM
        ));
        assert!(not_modified(Some("*"), None, &strong, LM));
        assert!(not_modified(Some("W/\"6-10\""), None, &weak, LM));
        assert!(!not_modified(Some("\"363a3020-7\""), None, &strong, LM));
        assert!(!not_modified(Some("garbage"), None, &strong, LM));
        // If-None-Match wins over a matching If-Modified-Since
        let later = http_date(LM + 10);
        assert!(!not_modified(Some("\"nope\""), Some(&later), &strong, LM));
    }

    #[test]
    fn if_modified_since() {
        let tag = ETag::from_crc(1, 1);
        assert!(not_modified(None, Some(&http_date(LM)), &tag, LM));
        assert!(not_modified(None, Some(&http_date(LM + 1)), &tag, LM));
        assert!(!not_modified(None, Some(&http_date(LM - 1)), &tag, LM));
        assert!(!not_modified(None, Some("yesterday"), &tag, LM));
        assert!(!not_modified(None, None, &tag, LM));
    }

    #[test]
    fn if_range() {
        let strong = ETag::from_crc(0x363A3020, 6);
        let weak = ETag::from_stat(6, 16);
        assert!(if_range_holds("\"363a3020-6\"", &strong, LM));
        assert!(!if_range_holds("W/\"363a3020-6\"", &strong, LM));
        assert!(!if_range_holds("\"other\"", &strong, LM));
        assert!(!if_range_holds("W/\"6-10\"", &weak, LM));
        assert!(if_range_holds(&http_date(LM), &weak, LM));
        assert!(!if_range_holds(&http_date(LM + 1), &weak, LM));
        assert!(!if_range_holds("garbage", &weak, LM));
    }

    #[test]
    fn dates_beyond_year_9999_are_clamped() {
        assert_eq!(http_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
