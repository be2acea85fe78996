//! Request paths as a web server sees them: percent-decoded, `.` segments and repeated
//! slashes removed. Traversal (`..`), encoded slashes and NUL are refused rather than
//! resolved, so no rule ever sees a path that means something else than it says.

/// Why a request path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path too long")]
    TooLong,
    #[error("path must start with /")]
    NotAbsolute,
    #[error("bad percent-encoding")]
    BadEncoding,
    #[error("encoded slash, backslash or NUL")]
    EncodedSeparator,
    #[error("path is not UTF-8")]
    NotUtf8,
    #[error("path traversal")]
    Traversal,
}

/// Decodes and normalizes the path part of a request target (no query).
pub fn normalize(raw: &str, max_len: usize) -> Result<String, PathError> {
    if raw.len() > max_len {
        return Err(PathError::TooLong);
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = percent_decode(raw)?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(PathError::Traversal),
            _ => {
                out.push('/');
                out.push_str(segment);
            }
        }
    }
    if out.is_empty() || decoded.ends_with('/') || decoded.ends_with("/.") {
        out.push('/');
    }
    Ok(out)
}

/// `%XX` → byte; `%2F`, `%5C` and `%00` are refused (they would hide a separator or end a
/// C string).
fn percent_decode(raw: &str) -> Result<Vec<u8>, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
                let high = hex_value(hex[0]).ok_or(PathError::BadEncoding)?;
                let low = hex_value(hex[1]).ok_or(PathError::BadEncoding)?;
                let byte = high << 4 | low;
                if matches!(byte, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                out.push(byte);
                i += 3;
            }
            // a raw backslash is a separator to some upstreams (IIS): refuse it like %5C
            0 | b'\\' => return Err(PathError::EncodedSeparator),
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes `text` for a URL path: everything but unreserved characters and `/`.
pub fn encode_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, PathError> {
        normalize(raw, 1024)
    }

    #[test]
    fn decodes_like_a_web_server() {
        assert_eq!(norm("/upload/qa/test.jpg").unwrap(), "/upload/qa/test.jpg");
        assert_eq!(
            norm("/upload/my%20photo%E5%9B%BE.JPG").unwrap(),
            "/upload/my photo图.JPG"
        );
        assert_eq!(norm("//upload///./a/").unwrap(), "/upload/a/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("/a+b").unwrap(), "/a+b", "+ is not a space in paths");
        assert_eq!(norm("/%41%62").unwrap(), "/Ab");
    }

    #[test]
    fn refuses_what_would_mean_something_else() {
        assert_eq!(norm("/a/../b"), Err(PathError::Traversal));
        assert_eq!(norm("/a/%2e%2e/b"), Err(PathError::Traversal));
        assert_eq!(norm("/a/%2E%2E"), Err(PathError::Traversal));
        assert_eq!(norm("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(norm("/a%4"), Err(PathError::BadEncoding));
        assert_eq!(norm("/a%ff"), Err(PathError::NotUtf8));
        assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize(&"/a".repeat(600), 1024), Err(PathError::TooLong));
    }

    #[test]
    fn encoding_round_trips() {
        let text = "/dir with space/ünï 图+%.jpg";
        let encoded = encode_path(text);
        assert_eq!(
            encoded,
            "/dir%20with%20space/%C3%BCn%C3%AF%20%E5%9B%BE%2B%25.jpg"
        );
        assert_eq!(norm(&encoded).unwrap(), text);
    }

    proptest::proptest! {
        /// Whatever the request path, normalizing never panics, and what it accepts has no
        /// `..` segment, no empty segment inside, and is stable.
        #[test]
        fn normalized_paths_are_clean(raw in "/[a-zA-Z0-9%./ _-]{0,40}") {
            if let Ok(path) = norm(&raw) {
                proptest::prop_assert!(path.starts_with('/'));
                proptest::prop_assert!(!path.split('/').any(|s| s == ".." || s == "."));
                proptest::prop_assert!(!path.contains("//"));
                proptest::prop_assert_eq!(norm(&encode_path(&path)).unwrap(), path);
            }
        }
    }

    #[test]
    fn raw_backslash_is_refused() {
        assert_eq!(
            normalize("/legacy/..\\secret", 1024),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(
            normalize("/a/./\\//c/", 1024),
            Err(PathError::EncodedSeparator)
        );
    }
}
