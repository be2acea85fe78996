//! Content types by file extension: a built-in table for the usual web content, extended or
//! overridden by `http_mime_types`. `scripts/nginx-conf` renders the same table into nginx's
//! `types {}` block (a test below keeps the two in step).

use std::collections::{BTreeMap, HashMap};

use hyper::header::HeaderValue;

/// Type of files whose extension is not in the table.
pub const DEFAULT_TYPE: &str = "application/octet-stream";

/// Built-in extension → type pairs (extensions lower-case).
pub const BUILTIN: &[(&str, &str)] = &[
    // images
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("bmp", "image/bmp"),
    ("ico", "image/x-icon"),
    ("svg", "image/svg+xml"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("heic", "image/heic"),
    // text and documents
    ("txt", "text/plain; charset=utf-8"),
    ("log", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("xml", "application/xml"),
    ("pdf", "application/pdf"),
    ("wasm", "application/wasm"),
    // archives
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tgz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("7z", "application/x-7z-compressed"),
    // audio and video
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("wav", "audio/wav"),
    ("flac", "audio/flac"),
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("webm", "video/webm"),
    ("ogv", "video/ogg"),
    ("mov", "video/quicktime"),
    ("avi", "video/x-msvideo"),
    ("mkv", "video/x-matroska"),
    ("flv", "video/x-flv"),
    ("ts", "video/mp2t"),
    ("m3u8", "application/vnd.apple.mpegurl"),
    // fonts
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
];

/// Extension → `Content-Type` header value.
#[derive(Clone, Debug)]
pub struct MimeTable {
    by_ext: HashMap<String, HeaderValue>,
    default: HeaderValue,
}

impl MimeTable {
    /// The built-in table with `overrides` applied (extensions are case-insensitive).
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<MimeTable, String> {
        let mut by_ext: HashMap<String, HeaderValue> = BUILTIN
            .iter()
            .map(|(ext, ty)| (ext.to_string(), HeaderValue::from_static(ty)))
            .collect();
        for (ext, ty) in overrides {
            if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("extension {ext:?} is not [A-Za-z0-9]+"));
            }
            if !ty.contains('/') {
                return Err(format!("{ty:?} for {ext} is not type/subtype"));
            }
            let value = HeaderValue::from_str(ty)
                .map_err(|_| format!("{ty:?} for {ext} is not a valid header value"))?;
            by_ext.insert(ext.to_ascii_lowercase(), value);
        }
        Ok(MimeTable {
            by_ext,
            default: HeaderValue::from_static(DEFAULT_TYPE),
        })
    }

    /// The type of a file by the extension of its (base) name.
    pub fn lookup(&self, name: &str) -> &HeaderValue {
        let Some((_, ext)) = name.rsplit_once('.') else {
            return &self.default;
        };
        if ext.is_empty() || ext.len() > 16 || ext.contains('/') {
            return &self.default;
        }
        self.by_ext
            .get(&ext.to_ascii_lowercase())
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_extension() {
        let mut overrides = BTreeMap::new();
        overrides.insert("HEIF".to_string(), "image/heif".to_string());
        overrides.insert("txt".to_string(), "text/plain".to_string());
        let table = MimeTable::new(&overrides).unwrap();
        assert_eq!(
            table.lookup("fwAAH2sDbeGAVWzkAAAABjY6MCA275.JPG"),
            "image/jpeg"
        );
        assert_eq!(table.lookup("x.heif"), "image/heif");
        assert_eq!(table.lookup("x.txt"), "text/plain");
        assert_eq!(
            table.lookup("fwAAH2sDbiiAR31UAAAAAAAAAAA1921179"),
            DEFAULT_TYPE
        );
        assert_eq!(table.lookup("x."), DEFAULT_TYPE);
        assert_eq!(table.lookup("x.unknown"), DEFAULT_TYPE);
        // slaves: the extension after the prefix
        assert_eq!(
            table.lookup("fwAAH2sDbfeAf-LuAAAABjY6MCA7161024x1024.png"),
            "image/png"
        );
    }

    #[test]
    fn bad_overrides_are_refused() {
        for (ext, ty) in [
            ("", "a/b"),
            ("j.pg", "a/b"),
            ("jpg", "jpeg"),
            ("jpg", "a/b\n"),
        ] {
            let mut overrides = BTreeMap::new();
            overrides.insert(ext.to_string(), ty.to_string());
            assert!(MimeTable::new(&overrides).is_err(), "{ext:?} {ty:?}");
        }
    }

    /// `scripts/nginx-conf` carries a copy of the table: every built-in pair must be in it.
    #[test]
    fn nginx_conf_script_has_the_same_table() {
        let script = include_str!("../../../scripts/nginx-conf");
        for (ext, ty) in BUILTIN {
            let line = format!("\"{ext}\": \"{ty}\",");
            assert!(script.contains(&line), "scripts/nginx-conf lacks {line}");
        }
        let count = script.matches("\": \"").count();
        assert_eq!(count, BUILTIN.len(), "scripts/nginx-conf has extra types");
    }
}
