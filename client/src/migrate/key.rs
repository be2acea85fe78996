//! Old URL paths of imported files: the prefix, then the file's path below the imported
//! directory with `/` separators, decoded (the form a web server matches after
//! percent-decoding a request path).

use std::path::{Component, Path};

use super::MigrateError;

/// `/upload/`, `upload`, `/upload//` → `/upload/`; `/` stays `/`. Refuses `.` and `..`.
pub fn normalize_prefix(prefix: &str) -> Result<String, MigrateError> {
    if !prefix.starts_with('/') {
        return Err(MigrateError::Prefix(prefix.to_string()));
    }
    let mut out = String::from("/");
    for segment in prefix.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." || segment.contains('\0') {
            return Err(MigrateError::Prefix(prefix.to_string()));
        }
        out.push_str(segment);
        out.push('/');
    }
    Ok(out)
}

/// The old URL path of `relative` (a path below the imported directory) under `prefix`
/// (already normalized); `None` for names that are not UTF-8 or contain nothing a URL can
/// name (`..`, NUL).
pub fn key_for(prefix: &str, relative: &Path) -> Option<String> {
    let mut key = prefix.to_string();
    let mut first = true;
    for component in relative.components() {
        let Component::Normal(part) = component else {
            return None;
        };
        let part = part.to_str()?;
        if part.contains('\0') || part.contains('/') {
            return None;
        }
        if !first {
            key.push('/');
        }
        key.push_str(part);
        first = false;
    }
    (!first).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("/upload/").unwrap(), "/upload/");
        assert_eq!(normalize_prefix("/upload").unwrap(), "/upload/");
        assert_eq!(normalize_prefix("//a//b/").unwrap(), "/a/b/");
        assert_eq!(normalize_prefix("/").unwrap(), "/");
        for bad in ["upload/", "", "/a/../b", "/./x"] {
            assert!(normalize_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(
            key_for("/upload/", Path::new("qa/test.jpg")).unwrap(),
            "/upload/qa/test.jpg"
        );
        assert_eq!(
            key_for("/", Path::new("dir with space/ünïcødé 图.png")).unwrap(),
            "/dir with space/ünïcødé 图.png"
        );
        assert_eq!(key_for("/u/", Path::new("")), None);
        assert_eq!(key_for("/u/", Path::new("../x")), None);
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let bad = std::ffi::OsStr::from_bytes(b"latin1-\xe9.jpg");
            assert_eq!(key_for("/u/", Path::new(bad)), None);
        }
    }
}
