//! FastDFS anti-steal tokens (M.1): `token = hex(md5(path || secret || ts))`.
//!
//! The nginx module signs the file ID without the group (`M00/00/00/...`) while FastDFS's
//! example programs and SDKs sign it with the group (`group1/M00/...`); both are accepted.
//! Policy: `ts` in the future is accepted (as FastDFS does: the signer holds the secret anyway);
//! `ts = 0`, which FastDFS treats as "never expires", is refused unless
//! `http_anti_steal.allow_ts_zero` is set.

use md5::{Digest, Md5};

use super::settings::AntiStealConfig;

/// Length of a token: 32 lower-case hex digits.
pub const TOKEN_LEN: usize = 32;

/// The token of `path` (the file ID with or without its group) at unix time `ts`.
pub fn compute(path: &str, secret: &str, ts: u64) -> String {
    let mut md5 = Md5::new();
    md5.update(path.as_bytes());
    md5.update(secret.as_bytes());
    md5.update(ts.to_string().as_bytes());
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a token is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token or ts missing")]
    Missing,
    #[error("ts is not a unix time")]
    BadTimestamp,
    #[error("ts = 0 is not accepted")]
    ZeroTimestamp,
    #[error("token expired")]
    Expired,
    #[error("token does not match")]
    Mismatch,
}

/// Checks `token`/`ts` for a file: `with_group` is `group/Mxx/...`, `without_group` `Mxx/...`.
pub fn check(
    policy: &AntiStealConfig,
    now: u64,
    with_group: &str,
    without_group: &str,
    token: Option<&str>,
    ts: Option<&str>,
) -> Result<(), TokenError> {
    let (Some(token), Some(ts)) = (token, ts) else {
        return Err(TokenError::Missing);
    };
    if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::BadTimestamp);
    }
    let ts: u64 = ts.parse().map_err(|_| TokenError::BadTimestamp)?;
    if ts == 0 && !policy.allow_ts_zero {
        return Err(TokenError::ZeroTimestamp);
    }
    if token.len() != TOKEN_LEN {
        return Err(TokenError::Mismatch);
    }
    if ts != 0 && now.saturating_sub(ts) > policy.token_ttl.as_secs() {
        return Err(TokenError::Expired);
    }
    let token = token.to_ascii_lowercase();
    let matches = [without_group, with_group]
        .iter()
        .any(|path| constant_time_eq(&compute(path, &policy.secret_key, ts), &token));
    if matches {
        Ok(())
    } else {
        Err(TokenError::Mismatch)
    }
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PATH: &str = "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt";
    const KEY: &str = "FastDFS1234567890";

    fn policy() -> AntiStealConfig {
        AntiStealConfig {
            check_token: true,
            token_ttl: Duration::from_secs(900),
            secret_key: KEY.into(),
            ..AntiStealConfig::default()
        }
    }

    /// M.1 vector, both path variants.
    #[test]
    fn spec_vector() {
        assert_eq!(
            compute(PATH, KEY, 1_795_387_000),
            "d30a1fe335f6c51b7f863df3a21946e8"
        );
        assert_eq!(
            compute(&format!("group1/{PATH}"), KEY, 1_795_387_000),
            "aa4c35dfb3c299e5ef18c60546b5236e"
        );
    }

    #[test]
    fn checks() {
        let p = policy();
        let with = format!("group1/{PATH}");
        let ts = 1_795_387_000u64;
        let now = ts + 100;
        let ok =
            |token: &str, ts: &str, now: u64| check(&p, now, &with, PATH, Some(token), Some(ts));
        assert_eq!(
            ok("d30a1fe335f6c51b7f863df3a21946e8", "1795387000", now),
            Ok(())
        );
        assert_eq!(
            ok("aa4c35dfb3c299e5ef18c60546b5236e", "1795387000", now),
            Ok(())
        );
        assert_eq!(
            ok("D30A1FE335F6C51B7F863DF3A21946E8", "1795387000", now),
            Ok(())
        );
        // future timestamps are fine, expiry is strictly after ttl
        assert_eq!(
            ok("d30a1fe335f6c51b7f863df3a21946e8", "1795387000", ts - 50),
            Ok(())
        );
        assert_eq!(
            ok("d30a1fe335f6c51b7f863df3a21946e8", "1795387000", ts + 900),
            Ok(())
        );
        assert_eq!(
            ok("d30a1fe335f6c51b7f863df3a21946e8", "1795387000", ts + 901),
            Err(TokenError::Expired)
        );
        assert_eq!(
            ok("d30a1fe335f6c51b7f863df3a21946e9", "1795387000", now),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            ok("d30a1fe335f6c51b7f863df3a21946e8", "1795387001", now),
            Err(TokenError::Mismatch)
        );
        assert_eq!(ok("d30a", "1795387000", now), Err(TokenError::Mismatch));
        assert_eq!(
            ok("d30a1fe335f6c51b7f863df3a21946e8", "-1", now),
            Err(TokenError::BadTimestamp)
        );
        assert_eq!(
            ok("d30a1fe335f6c51b7f863df3a21946e8", "", now),
            Err(TokenError::BadTimestamp)
        );
        assert_eq!(
            check(&p, now, &with, PATH, None, Some("1")),
            Err(TokenError::Missing)
        );
        assert_eq!(
            check(&p, now, &with, PATH, Some("x"), None),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn ts_zero_policy() {
        let zero = compute(PATH, KEY, 0);
        let with = format!("group1/{PATH}");
        let strict = policy();
        assert_eq!(
            check(&strict, 1 << 40, &with, PATH, Some(&zero), Some("0")),
            Err(TokenError::ZeroTimestamp)
        );
        let lenient = AntiStealConfig {
            allow_ts_zero: true,
            ..policy()
        };
        assert_eq!(
            check(&lenient, 1 << 40, &with, PATH, Some(&zero), Some("0")),
            Ok(())
        );
    }
}
