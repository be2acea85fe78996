//! The storage's clock: Unix seconds for everything that stamps time into names, binlog
//! records and reports, read here so that a test can shift it.
//!
//! **Test / fault-injection hook, not a setting:** `FDFS_TEST_CLOCK_OFFSET_SECS` (a signed
//! number of seconds, read once, when the clock is first used at start-up) moves this storage's
//! idea of "now", as a host whose clock is wrong would see it. The integration tests use it to
//! run storages with skewed clocks on a machine that has one clock. With it set, new files are
//! given that shifted time as their mtime (a skewed host's kernel would do the same), so file
//! names, binlog watermarks and the SYNC_REPORT clock agree with each other. The storage logs a
//! warning at start when it is set; never set it in production.

use std::sync::OnceLock;

/// Name of the environment variable of the hook.
pub const OFFSET_ENV: &str = "FDFS_TEST_CLOCK_OFFSET_SECS";

static OFFSET: OnceLock<i64> = OnceLock::new();

/// The shift from the hook, 0 without it (an unparsable value is ignored, with a warning
/// from [`init`]).
pub fn offset() -> i64 {
    *OFFSET.get_or_init(|| {
        std::env::var(OFFSET_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// Reads the hook now and warns when it is set (or set to nonsense).
pub fn init() {
    let offset = offset();
    if offset != 0 {
        tracing::warn!(
            offset_seconds = offset,
            "{OFFSET_ENV} is set: this storage's clock is shifted (a test hook)"
        );
    } else if std::env::var_os(OFFSET_ENV).is_some() {
        tracing::warn!("{OFFSET_ENV} is not a whole number of seconds: ignored");
    }
}

/// Unix time in seconds (0 if the system clock is before the epoch).
pub fn unix_now() -> i64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    real.saturating_add(offset()).max(0)
}

/// [`unix_now`] in the 32-bit width of file names and binlog records.
pub fn unix_now_u32() -> u32 {
    u32::try_from(unix_now()).unwrap_or(u32::MAX)
}

/// The mtime a new file must be given instead of the kernel's: `Some` only while the clock is
/// shifted.
pub fn shifted_mtime() -> Option<u32> {
    (offset() != 0).then(unix_now_u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshifted_by_default() {
        // the unit tests never set the hook
        assert_eq!(offset(), 0);
        assert_eq!(shifted_mtime(), None);
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((unix_now() - real).abs() <= 1);
    }
}
