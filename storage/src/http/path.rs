//! Request paths: `/{group}/M{nn}/XX/YY/{name}` (or `/M{nn}/XX/YY/{name}` when the group is
//! not in URLs, I.6), `/healthz`, and nothing else.
//!
//! The path is percent-decoded once; an encoded `/`, `\` or NUL, an empty, `.` or `..` segment,
//! or a bad escape is refused before anything touches the disk, and the name itself goes
//! through [`LogicalName::parse`] (H.11), which only admits `[A-Za-z0-9_.-]` base names below
//! `data/XX/YY/`.

use fdfs_proto::file_id::{validate_group, LogicalName};

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Healthz,
    File(FileTarget),
}

/// A file request.
#[derive(Debug, PartialEq, Eq)]
pub struct FileTarget {
    /// The group in the URL (None in the group-less form).
    pub group: Option<String>,
    /// The logical name as written in the URL (decoded), what tokens are computed over.
    pub name_text: String,
    pub name: LogicalName,
}

/// Why a path is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path longer than {0} bytes")]
    TooLong(usize),
    #[error("bad percent-encoding")]
    BadEncoding,
    #[error("encoded slash, backslash or NUL")]
    EncodedSeparator,
    #[error("empty, '.' or '..' path segment")]
    Traversal,
    #[error("no such resource")]
    NotFound,
    #[error("group {0:?} is not served here")]
    OtherGroup(String),
    #[error("bad file name: {0}")]
    BadName(String),
}

/// Parses the path part of a request target.
pub fn parse(
    raw: &str,
    url_have_group_name: bool,
    our_group: &str,
    max_path: usize,
) -> Result<Target, PathError> {
    if raw.len() > max_path {
        return Err(PathError::TooLong(max_path));
    }
    let decoded = decode(raw)?;
    let Some(rest) = decoded.strip_prefix('/') else {
        return Err(PathError::NotFound);
    };
    if rest == "healthz" {
        return Ok(Target::Healthz);
    }
    if rest.is_empty() {
        return Err(PathError::NotFound);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(PathError::Traversal);
    }
    // Mxx/XX/YY/name (or XX/YY/name for names from FastDFS < 1.12)
    let (group, name_segments) = if url_have_group_name {
        match segments.split_first() {
            Some((group, name)) if name.len() == 3 || name.len() == 4 => (Some(*group), name),
            _ => return Err(PathError::NotFound),
        }
    } else {
        if !(segments.len() == 3 || segments.len() == 4) {
            return Err(PathError::NotFound);
        }
        (None, segments.as_slice())
    };
    if let Some(group) = group {
        if validate_group(group).is_err() || group != our_group {
            return Err(PathError::OtherGroup(group.to_string()));
        }
    }
    let name_text = name_segments.join("/");
    let name = LogicalName::parse(&name_text).map_err(|err| PathError::BadName(err.to_string()))?;
    Ok(Target::File(FileTarget {
        group: group.map(str::to_string),
        name_text,
        name,
    }))
}

/// Percent-decodes a path; separators and NUL may not be encoded, the result must be UTF-8.
pub fn decode(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
                let value = hex_value(hex[0])
                    .zip(hex_value(hex[1]))
                    .map(|(h, l)| h << 4 | l)
                    .ok_or(PathError::BadEncoding)?;
                if matches!(value, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                out.push(value);
                i += 3;
            }
            b'\\' | 0 => return Err(PathError::EncodedSeparator),
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| PathError::BadEncoding)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAME: &str = "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt";

    fn file(raw: &str) -> Result<FileTarget, PathError> {
        match parse(raw, true, "group1", 512)? {
            Target::File(file) => Ok(file),
            Target::Healthz => panic!("healthz"),
        }
    }

    #[test]
    fn file_paths() {
        let target = file(&format!("/group1/{NAME}")).unwrap();
        assert_eq!(target.group.as_deref(), Some("group1"));
        assert_eq!(target.name_text, NAME);
        assert_eq!(target.name.to_string(), NAME);
        // escapes of ordinary characters are decoded like any web server does
        let target = file("/group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275%2Etxt").unwrap();
        assert_eq!(target.name_text, NAME);
        // pre-1.12 names without Mxx
        let target = file("/group1/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt").unwrap();
        assert_eq!(target.name.store_path(), 0);
        assert_eq!(
            parse("/healthz", true, "group1", 512).unwrap(),
            Target::Healthz
        );
    }

    #[test]
    fn group_less_paths() {
        match parse(&format!("/{NAME}"), false, "group1", 512).unwrap() {
            Target::File(target) => {
                assert_eq!(target.group, None);
                assert_eq!(target.name_text, NAME);
            }
            Target::Healthz => panic!(),
        }
        assert_eq!(
            parse(&format!("/group1/{NAME}"), false, "group1", 512).unwrap_err(),
            PathError::NotFound
        );
        // read as group "M00" with a pre-1.12 name: not ours either way
        assert_eq!(
            parse(&format!("/{NAME}"), true, "group1", 512).unwrap_err(),
            PathError::OtherGroup("M00".into())
        );
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, PathError)] = &[
            (
                "/group1/M00/00/00/../../../etc/passwd",
                PathError::Traversal,
            ),
            ("/group1/M00/00/%2E%2E/x/passwd", PathError::Traversal),
            ("/group1/M00/00/00/..%2Fpasswd", PathError::EncodedSeparator),
            ("/group1/M00/00/00/a%2fb", PathError::EncodedSeparator),
            ("/group1/M00/00/00/a%5Cb", PathError::EncodedSeparator),
            ("/group1/M00/00/00/a%00b", PathError::EncodedSeparator),
            ("/group1/M00/00/00/a\\b", PathError::EncodedSeparator),
            ("/group1/M00/00/00/a%zzb", PathError::BadEncoding),
            ("/group1/M00/00/00/a%2", PathError::BadEncoding),
            ("/group1/M00/00/00/%ff%fe", PathError::BadEncoding),
            ("/group1//M00/00/00/abcdefgh", PathError::Traversal),
            ("/group1/M00/00/00/abcdefgh/", PathError::Traversal),
            ("/group1/./00/00/abcdefgh", PathError::Traversal),
            ("/", PathError::NotFound),
            ("/favicon.ico", PathError::NotFound),
            ("/group1/M00/00", PathError::NotFound),
            ("/group1/M00/00/00/a/b/c", PathError::NotFound),
            ("relative/path", PathError::NotFound),
            (
                "/group2/M00/00/00/abcdefgh",
                PathError::OtherGroup("group2".into()),
            ),
            (
                "/gr_p/M00/00/00/abcdefgh",
                PathError::OtherGroup("gr_p".into()),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(&file(raw).unwrap_err(), want, "{raw}");
        }
        for bad in [
            "/group1/M00/0a/00/abcdefgh",
            "/group1/M00/00/00/.hidden",
            "/group1/M00/00/00/a b",
            "/group1/M00/00/00/a%20b",
            "/group1/Mzz/00/00/abcdefgh",
            "/group1/M00/00/00/caf%C3%A9",
        ] {
            assert!(matches!(file(bad), Err(PathError::BadName(_))), "{bad}");
        }
        let long = format!("/group1/M00/00/00/{}", "a".repeat(600));
        assert_eq!(file(&long).unwrap_err(), PathError::TooLong(512));
    }

    proptest! {
        /// Whatever the bytes, an accepted path names a file directly below data/XX/YY/.
        #[test]
        fn never_escapes(raw in "/[A-Za-z0-9%./\\\\_-]{0,80}") {
            if let Ok(Target::File(target)) = parse(&raw, true, "group1", 512) {
                let rel = target.name.data_relative_path();
                prop_assert_eq!(rel.matches('/').count(), 2);
                prop_assert!(!rel.contains(".."));
                prop_assert!(!target.name.base().starts_with('.'));
            }
        }
    }
}
