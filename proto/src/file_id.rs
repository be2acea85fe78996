//! File IDs (`group/Mxx/XX/YY/name`) and logical names (`Mxx/XX/YY/name`), validated so that a
//! name can only ever denote a file inside `<store path>/data/XX/YY/` (H.1, H.11).

use std::fmt;

use crate::error::ProtoError;
use crate::name::is_name_char;

/// Checks a group name: 1..16 characters of `[A-Za-z0-9]` (A.5).
pub fn validate_group(group: &str) -> Result<(), ProtoError> {
    if group.is_empty() || group.len() > crate::GROUP_NAME_LEN {
        return Err(ProtoError::invalid(
            "group name",
            "must be 1 to 16 characters",
        ));
    }
    if !group.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ProtoError::invalid(
            "group name",
            format!("{group:?} is not [A-Za-z0-9]"),
        ));
    }
    Ok(())
}

/// A validated logical name: store path index, two directory levels and a base name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogicalName {
    store_path: u8,
    dir_high: u8,
    dir_low: u8,
    base: String,
}

impl LogicalName {
    /// Parses and validates a logical name as received by a storage (H.11).
    ///
    /// Names without the `Mxx/` prefix (FastDFS < 1.12) denote store path 0. Directory digits
    /// must be upper-case hex; the base name must be `[A-Za-z0-9_.-]`, not start with a dot, and
    /// contain no `/`, so it can never climb out of its directory.
    pub fn parse(text: &str) -> Result<Self, ProtoError> {
        if text.len() <= 10 || text.len() > crate::MAX_NAME_LEN {
            return Err(ProtoError::invalid(
                "file name",
                format!("bad length {}", text.len()),
            ));
        }
        let bytes = text.as_bytes();
        let (store_path, relative) = if bytes[0] == b'M' {
            if bytes[3] != b'/' {
                return Err(ProtoError::invalid(
                    "file name",
                    "store path part is not Mxx/",
                ));
            }
            (hex_byte(&bytes[1..3])?, &text[4..])
        } else {
            // a legacy name is written back with an `M00/` prefix; it must still fit then
            if text.len() + 4 > crate::MAX_NAME_LEN {
                return Err(ProtoError::invalid(
                    "file name",
                    format!("bad length {}", text.len()),
                ));
            }
            (0, text)
        };
        let rel = relative.as_bytes();
        if rel.len() < 7 || rel[2] != b'/' || rel[5] != b'/' {
            return Err(ProtoError::invalid(
                "file name",
                "directory part is not XX/YY/",
            ));
        }
        let dir_high = hex_byte(&rel[0..2])?;
        let dir_low = hex_byte(&rel[3..5])?;
        let base = &relative[6..];
        validate_base(base)?;
        Ok(LogicalName {
            store_path,
            dir_high,
            dir_low,
            base: base.to_string(),
        })
    }

    pub fn new(store_path: u8, dir_high: u8, dir_low: u8, base: &str) -> Result<Self, ProtoError> {
        validate_base(base)?;
        Ok(LogicalName {
            store_path,
            dir_high,
            dir_low,
            base: base.to_string(),
        })
    }

    pub fn store_path(&self) -> u8 {
        self.store_path
    }

    pub fn dir_high(&self) -> u8 {
        self.dir_high
    }

    pub fn dir_low(&self) -> u8 {
        self.dir_low
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `XX/YY/name`, the path below `<store path>/data/`.
    pub fn data_relative_path(&self) -> String {
        format!("{:02X}/{:02X}/{}", self.dir_high, self.dir_low, self.base)
    }

    /// The same directory with another base name (slaves, regenerated appenders).
    pub fn with_base(&self, base: &str) -> Result<Self, ProtoError> {
        LogicalName::new(self.store_path, self.dir_high, self.dir_low, base)
    }
}

impl fmt::Display for LogicalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "M{:02X}/{:02X}/{:02X}/{}",
            self.store_path, self.dir_high, self.dir_low, self.base
        )
    }
}

fn validate_base(base: &str) -> Result<(), ProtoError> {
    let bytes = base.as_bytes();
    if bytes.is_empty() {
        return Err(ProtoError::invalid("file name", "empty base name"));
    }
    if bytes[0] == b'.' {
        return Err(ProtoError::invalid(
            "file name",
            "base name starts with a dot",
        ));
    }
    if !bytes.iter().all(|&b| is_name_char(b)) {
        return Err(ProtoError::invalid(
            "file name",
            "base name has characters outside [A-Za-z0-9_.-]",
        ));
    }
    Ok(())
}

fn hex_byte(pair: &[u8]) -> Result<u8, ProtoError> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ProtoError::invalid(
            "file name",
            "directory digits must be upper-case hex",
        )),
    };
    Ok(digit(pair[0])? << 4 | digit(pair[1])?)
}

/// A full file ID: `group/Mxx/XX/YY/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub group: String,
    pub name: LogicalName,
}

impl FileId {
    pub fn new(group: &str, name: LogicalName) -> Result<Self, ProtoError> {
        validate_group(group)?;
        Ok(FileId {
            group: group.to_string(),
            name,
        })
    }

    /// Splits at the first `/` (H.1) and validates both halves.
    pub fn parse(text: &str) -> Result<Self, ProtoError> {
        let (group, name) = text
            .split_once('/')
            .ok_or_else(|| ProtoError::invalid("file id", "expected GROUP/Mxx/XX/YY/NAME"))?;
        validate_group(group)?;
        Ok(FileId {
            group: group.to_string(),
            name: LogicalName::parse(name)?,
        })
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.name)
    }
}

impl std::str::FromStr for FileId {
    type Err = ProtoError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FileId::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAME: &str = "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt";

    #[test]
    fn parses_and_formats() {
        let id = FileId::parse(&format!("group1/{NAME}")).unwrap();
        assert_eq!(id.group, "group1");
        assert_eq!(id.name.store_path(), 0);
        assert_eq!(
            id.name.data_relative_path(),
            "00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt"
        );
        assert_eq!(id.to_string(), format!("group1/{NAME}"));
        let other = LogicalName::parse("M0A/1F/FE/abc-def_1.2").unwrap();
        assert_eq!(
            (other.store_path(), other.dir_high(), other.dir_low()),
            (10, 0x1F, 0xFE)
        );
        assert_eq!(other.to_string(), "M0A/1F/FE/abc-def_1.2");
    }

    #[test]
    fn parsed_names_reparse_from_display() {
        let legacy = format!("00/A5/{}", "A".repeat(117));
        let name = LogicalName::parse(&legacy).unwrap();
        assert_eq!(LogicalName::parse(&name.to_string()).unwrap(), name);
        assert!(LogicalName::parse(&format!("00/A5/{}", "A".repeat(121))).is_err());
    }

    #[test]
    fn legacy_names_use_store_path_zero() {
        let name = LogicalName::parse("00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt").unwrap();
        assert_eq!(name.store_path(), 0);
    }

    #[test]
    fn refuses_traversal_and_bad_shapes() {
        let bad = [
            "M00/00/00/../../etc/passwd",
            "M00/00/00/..",
            "M00/00/00/.hidden",
            "M00/../00/abcdefgh",
            "/etc/passwd/xxxxxxx",
            "M00/0a/00/abcdefgh",
            "M00/00/00/abc/def",
            "M00/00/00/abc\0def",
            "M00/00/00/abc def",
            "M0/00/00/abcdefgh",
            "Mzz/00/00/abcdefgh",
            "M00/00/00/",
            "M00/000/0/abcdefgh",
            "short",
        ];
        for name in bad {
            assert!(
                LogicalName::parse(name).is_err(),
                "{name:?} should be refused"
            );
        }
        let long = format!("M00/00/00/{}", "a".repeat(118));
        assert!(LogicalName::parse(&long).is_err());
        assert!(FileId::parse("group1").is_err());
        assert!(FileId::parse("gr/oup/M00/00/00/abcdefg").is_err());
        assert!(FileId::parse(&format!("group_1/{NAME}")).is_err());
        assert!(FileId::parse(&format!("{}/{NAME}", "g".repeat(17))).is_err());
        assert!(FileId::parse(&format!("/{NAME}")).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(path in 0u8..=255, high in 0u8..=255, low in 0u8..=255, base in "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,60}") {
            let name = LogicalName::new(path, high, low, &base).unwrap();
            let parsed = LogicalName::parse(&name.to_string()).unwrap();
            prop_assert_eq!(parsed, name);
        }

        #[test]
        fn parse_never_panics_and_never_escapes(text in "\\PC{0,140}") {
            if let Ok(name) = LogicalName::parse(&text) {
                let rel = name.data_relative_path();
                prop_assert!(!rel.contains(".."));
                prop_assert_eq!(rel.matches('/').count(), 2);
            }
        }
    }
}
