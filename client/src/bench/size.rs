//! File sizes of a run: one size (`4KiB`) or a uniform range (`4KiB..100KiB`).

use std::fmt;
use std::str::FromStr;

use rand::Rng;

/// The size of each uploaded file: fixed, or drawn uniformly from `min..=max`.
///
/// ```
/// use fdfs_client::bench::SizeSpec;
///
/// let fixed: SizeSpec = "4KiB".parse()?;
/// assert_eq!((fixed.min, fixed.max), (4096, 4096));
/// let range: SizeSpec = "4KiB..100KiB".parse()?;
/// assert_eq!((range.min, range.max), (4096, 102_400));
/// assert_eq!(range.to_string(), "4KiB..100KiB");
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeSpec {
    pub min: u64,
    pub max: u64,
}

/// Largest file size a request can carry (the packet length is a signed 64-bit field, and
/// the upload prefix is part of it).
const MAX_SIZE: u64 = (i64::MAX as u64) / 2;

impl SizeSpec {
    /// One fixed size.
    pub fn fixed(size: u64) -> Self {
        SizeSpec {
            min: size,
            max: size,
        }
    }

    /// The size of the next file.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        if self.min == self.max {
            self.min
        } else {
            rng.gen_range(self.min..=self.max)
        }
    }
}

impl FromStr for SizeSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let spec = match text.split_once("..") {
            Some((low, high)) => SizeSpec {
                min: parse_size(low)?,
                max: parse_size(high)?,
            },
            None => SizeSpec::fixed(parse_size(text)?),
        };
        if spec.min > spec.max {
            return Err(format!(
                "size range {text:?} is empty: the lower bound is above the upper one"
            ));
        }
        Ok(spec)
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", format_size(self.min))
        } else {
            write!(f, "{}..{}", format_size(self.min), format_size(self.max))
        }
    }
}

/// A byte count: digits with an optional unit `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
/// `G`/`GB`/`GiB` (case-insensitive; every unit is a power of 1024, as in the configs).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let err = || format!("invalid size {text:?} (use e.g. 512, 4KiB, 100KB, 64MiB)");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(err());
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(err()),
    };
    let value: u64 = digits.parse().map_err(|_| err())?;
    let size = value
        .checked_mul(1u64 << shift)
        .filter(|size| *size <= MAX_SIZE)
        .ok_or_else(|| format!("size {text:?} is too large"))?;
    Ok(size)
}

/// The shortest exact rendering: `4KiB`, `64MiB`, `1500`.
pub fn format_size(size: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if size >= 1 << shift && size.is_multiple_of(1 << shift) {
            return format!("{}{unit}", size >> shift);
        }
    }
    size.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sizes_and_units() {
        for (text, size) in [
            ("0", 0),
            ("512", 512),
            ("512B", 512),
            ("4K", 4096),
            ("4kb", 4096),
            ("4KiB", 4096),
            ("100KiB", 102_400),
            (" 1MiB ", 1 << 20),
            ("64MB", 64 << 20),
            ("2GiB", 2 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(size), "{text}");
        }
        for bad in [
            "",
            "KiB",
            "4TiB",
            "4 KiB x",
            "-1",
            "1.5MiB",
            "4XB",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("9999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn ranges() {
        let spec: SizeSpec = "4KiB..100KiB".parse().unwrap();
        assert_eq!(
            spec,
            SizeSpec {
                min: 4096,
                max: 102_400
            }
        );
        assert_eq!(
            "1MiB".parse::<SizeSpec>().unwrap(),
            SizeSpec::fixed(1 << 20)
        );
        assert_eq!(
            "1KiB..1KiB".parse::<SizeSpec>().unwrap(),
            SizeSpec::fixed(1024)
        );
        let err = "100KiB..4KiB".parse::<SizeSpec>().unwrap_err();
        assert!(err.contains("empty"), "{err}");
        for bad in ["..4KiB", "4KiB..", "4KiB...8KiB", "a..b"] {
            assert!(bad.parse::<SizeSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rendering_round_trips() {
        for text in [
            "4KiB",
            "100KiB",
            "64MiB",
            "1GiB",
            "1500",
            "0",
            "4KiB..100KiB",
        ] {
            let spec: SizeSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(format_size(1536), "1536");
    }

    #[test]
    fn samples_stay_in_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let spec = SizeSpec { min: 10, max: 20 };
        let samples: Vec<u64> = (0..1000).map(|_| spec.sample(&mut rng)).collect();
        assert!(samples.iter().all(|s| (10..=20).contains(s)));
        assert!(samples.contains(&10) && samples.contains(&20));
        assert_eq!(SizeSpec::fixed(5).sample(&mut rng), 5);
    }
}
