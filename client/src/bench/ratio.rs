//! The operation mix of `fdfs bench mixed`: `U:D:X` = uploads : downloads : deletes.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

/// One kind of benchmarked operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    Upload,
    Download,
    Delete,
}

impl OpKind {
    pub const ALL: [OpKind; 3] = [OpKind::Upload, OpKind::Download, OpKind::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Upload => "upload",
            OpKind::Download => "download",
            OpKind::Delete => "delete",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            OpKind::Upload => 0,
            OpKind::Download => 1,
            OpKind::Delete => 2,
        }
    }
}

/// Relative weights of uploads, downloads and deletes.
///
/// ```
/// use fdfs_client::bench::Ratio;
///
/// let ratio: Ratio = "1:8:1".parse()?;
/// assert_eq!((ratio.upload, ratio.download, ratio.delete), (1, 8, 1));
/// assert!("0:0:0".parse::<Ratio>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio {
    pub upload: u32,
    pub download: u32,
    pub delete: u32,
}

impl Ratio {
    fn total(&self) -> u64 {
        u64::from(self.upload) + u64::from(self.download) + u64::from(self.delete)
    }

    /// The operation for a draw `roll` in `0..total`.
    fn pick_at(&self, roll: u64) -> OpKind {
        if roll < u64::from(self.upload) {
            OpKind::Upload
        } else if roll < u64::from(self.upload) + u64::from(self.download) {
            OpKind::Download
        } else {
            OpKind::Delete
        }
    }

    /// Draws the next operation with the configured weights.
    pub fn pick(&self, rng: &mut impl Rng) -> OpKind {
        self.pick_at(rng.gen_range(0..self.total()))
    }
}

impl FromStr for Ratio {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let err = || {
            format!("invalid ratio {text:?}: expected UPLOAD:DOWNLOAD:DELETE weights, e.g. 1:8:1")
        };
        let parts: Vec<&str> = text.trim().split(':').collect();
        let [upload, download, delete] = parts.as_slice() else {
            return Err(err());
        };
        let weight = |part: &str| -> Result<u32, String> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let ratio = Ratio {
            upload: weight(upload)?,
            download: weight(download)?,
            delete: weight(delete)?,
        };
        if ratio.total() == 0 {
            return Err(format!(
                "ratio {text:?} has no operation: give one weight above 0"
            ));
        }
        Ok(ratio)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.upload, self.download, self.delete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parsing() {
        let ratio: Ratio = "2:7:1".parse().unwrap();
        assert_eq!(
            ratio,
            Ratio {
                upload: 2,
                download: 7,
                delete: 1
            }
        );
        assert_eq!(ratio.to_string(), "2:7:1");
        assert_eq!(" 0:1:0 ".parse::<Ratio>().unwrap().download, 1);
        for bad in [
            "", "1:2", "1:2:3:4", "a:1:1", "-1:1:1", "1::1", "+1:1:1", "1.5:1:1",
        ] {
            let err = bad.parse::<Ratio>().unwrap_err();
            assert!(err.contains("UPLOAD:DOWNLOAD:DELETE"), "{bad}: {err}");
        }
        assert!("0:0:0"
            .parse::<Ratio>()
            .unwrap_err()
            .contains("no operation"));
        assert!("99999999999:1:1".parse::<Ratio>().is_err());
    }

    #[test]
    fn weights_split_the_draws() {
        let ratio: Ratio = "1:2:1".parse().unwrap();
        let picks: Vec<OpKind> = (0..4).map(|roll| ratio.pick_at(roll)).collect();
        assert_eq!(
            picks,
            [
                OpKind::Upload,
                OpKind::Download,
                OpKind::Download,
                OpKind::Delete
            ]
        );
        let only_downloads: Ratio = "0:3:0".parse().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| only_downloads.pick(&mut rng) == OpKind::Download));
        let mut counts = [0u32; 3];
        for _ in 0..4000 {
            counts[ratio.pick(&mut rng).index()] += 1;
        }
        // 1000/2000/1000 expected; these bounds fail only with a broken pick
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
        assert!((1750..2250).contains(&counts[1]), "{counts:?}");
        assert!((800..1200).contains(&counts[2]), "{counts:?}");
    }
}
