//! Unit strings used by the TOML configs: sizes (`"256KB"`), durations (`"30s"`) and the
//! reserved-space setting (`"20%"` or a size), with serde helpers.

use std::time::Duration;

/// Parses a size: a number with an optional `K`/`M`/`G`/`T` suffix (powers of 1024,
/// case-insensitive, optional trailing `B`). A bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let without_b = upper.strip_suffix('B').unwrap_or(&upper);
    let (digits, shift) = match without_b.chars().last() {
        Some('K') => (&without_b[..without_b.len() - 1], 10),
        Some('M') => (&without_b[..without_b.len() - 1], 20),
        Some('G') => (&without_b[..without_b.len() - 1], 30),
        Some('T') => (&without_b[..without_b.len() - 1], 40),
        _ => (without_b, 0),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {text:?} (use e.g. 256KB, 1GB)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Parses a duration: a number with `ms`, `s`, `m` or `h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let err = || format!("invalid duration {text:?} (use e.g. 500ms, 30s, 5m)");
    let (digits, unit_ms) = if let Some(d) = trimmed.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = trimmed.strip_suffix('s') {
        (d, 1000)
    } else if let Some(d) = trimmed.strip_suffix('m') {
        (d, 60_000)
    } else if let Some(d) = trimmed.strip_suffix('h') {
        (d, 3_600_000)
    } else {
        (trimmed, 1000)
    };
    let value: u64 = digits.trim().parse().map_err(|_| err())?;
    Ok(Duration::from_millis(
        value.checked_mul(unit_ms).ok_or_else(err)?,
    ))
}

/// `reserved_storage_space`: space that uploads never use, absolute or as a share of the disk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReservedSpace {
    Bytes(u64),
    /// A fraction in 0.0..=1.0.
    Ratio(f64),
}

impl ReservedSpace {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if let Some(percent) = trimmed.strip_suffix('%') {
            let value: f64 = percent
                .trim()
                .parse()
                .map_err(|_| format!("invalid percentage {text:?}"))?;
            if !(0.0..=100.0).contains(&value) {
                return Err(format!("percentage {text:?} outside 0..100"));
            }
            return Ok(ReservedSpace::Ratio(value / 100.0));
        }
        parse_size(trimmed).map(ReservedSpace::Bytes)
    }

    /// Whether a disk with these numbers still takes new files (J.3): strictly more free
    /// than reserved; a disk of unknown size (total 0) has no room.
    pub fn has_room(&self, total_bytes: u64, free_bytes: u64) -> bool {
        match *self {
            ReservedSpace::Bytes(reserved) => free_bytes > reserved,
            ReservedSpace::Ratio(ratio) => {
                total_bytes > 0 && (free_bytes as f64 / total_bytes as f64) > ratio
            }
        }
    }

    /// What one of `paths` store paths of a storage keeps free (J.3): an absolute reserve is
    /// shared out evenly, as FastDFS does; a ratio applies to each path as it is.
    pub fn per_path(&self, paths: usize) -> ReservedSpace {
        match *self {
            ReservedSpace::Bytes(reserved) => {
                ReservedSpace::Bytes(reserved / (paths.max(1) as u64))
            }
            ratio => ratio,
        }
    }

    /// Reserved bytes for a disk of `total_bytes`.
    pub fn reserved_bytes(&self, total_bytes: u64) -> u64 {
        match *self {
            ReservedSpace::Bytes(reserved) => reserved,
            ReservedSpace::Ratio(ratio) => (total_bytes as f64 * ratio) as u64,
        }
    }

    /// The form FastDFS prints in PARAMETER_REQ replies (D.7).
    pub fn to_param_string(&self) -> String {
        match *self {
            ReservedSpace::Bytes(bytes) => format!("{}MB", bytes >> 20),
            ReservedSpace::Ratio(ratio) => format!("{:.2}%", ratio * 100.0),
        }
    }
}

/// Serde adapters: `#[serde(with = "fdfs_proto::units::serde_size")]` etc.
pub mod serde_size {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
        match Raw::deserialize(de)? {
            Raw::Number(n) => Ok(n),
            Raw::Text(text) => super::parse_size(&text).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(value: &u64, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_u64(*value)
    }
}

pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(de)? {
            Raw::Number(secs) => Ok(Duration::from_secs(secs)),
            Raw::Text(text) => super::parse_duration(&text).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(value: &Duration, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&format!("{}ms", value.as_millis()))
    }
}

pub mod serde_reserved {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ReservedSpace;

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<ReservedSpace, D::Error> {
        let text = String::deserialize(de)?;
        ReservedSpace::parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &ReservedSpace, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&value.to_param_string())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_absolute_reserve_is_shared_out_over_the_store_paths() {
        let reserve = ReservedSpace::Bytes(10 << 30);
        assert_eq!(reserve.per_path(2), ReservedSpace::Bytes(5 << 30));
        assert_eq!(reserve.per_path(1), reserve);
        assert_eq!(reserve.per_path(0), reserve);
        let ratio = ReservedSpace::Ratio(0.1);
        assert_eq!(ratio.per_path(4), ratio);
    }
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256KB").unwrap(), 256 * 1024);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("abc").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn reserved_space() {
        let ratio = ReservedSpace::parse("20%").unwrap();
        assert!(ratio.has_room(100, 21));
        assert!(!ratio.has_room(100, 20));
        assert!(!ratio.has_room(0, 0));
        assert_eq!(ratio.to_param_string(), "20.00%");
        let bytes = ReservedSpace::parse("1GB").unwrap();
        assert!(bytes.has_room(0, (1 << 30) + 1));
        assert!(!bytes.has_room(u64::MAX, 1 << 30));
        assert_eq!(bytes.to_param_string(), "1024MB");
        assert!(ReservedSpace::parse("150%").is_err());
    }
}
