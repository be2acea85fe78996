//! Signed HTTP URLs of stored files, as the storages' built-in HTTP server checks them
//! (FastDFS anti-steal tokens, spec M.1).
//!
//! `token = md5_hex(<logical name without the group> + secret + ts)`; the server refuses a
//! token when `now - ts > token_ttl`, so `ts` is the signing time. To make a URL that stays
//! valid for a lifetime other than the server's `token_ttl`, sign with a `ts` that far in the
//! future (or past): [`token_ts`].

use md5::{Digest, Md5};

use crate::FileId;

/// The token of `path` (the file ID without its group, `M00/...`, as the FastDFS nginx module
/// signs it) at unix time `ts`: 32 lower-case hex digits.
///
/// ```
/// // spec M.1 vector
/// let token = fdfs_client::sign_token(
///     "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt",
///     "FastDFS1234567890",
///     1_795_387_000,
/// );
/// assert_eq!(token, "d30a1fe335f6c51b7f863df3a21946e8");
/// ```
pub fn sign_token(path: &str, secret: &str, ts: u64) -> String {
    let mut md5 = Md5::new();
    md5.update(path.as_bytes());
    md5.update(secret.as_bytes());
    md5.update(ts.to_string().as_bytes());
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `ts` to sign with so that a storage whose `token_ttl` is `server_ttl` accepts the URL
/// for `lifetime` seconds from `now` (storages accept timestamps in the future).
///
/// ```
/// assert_eq!(fdfs_client::token_ts(1000, 900, 900), 1000);
/// assert_eq!(fdfs_client::token_ts(1000, 60, 900), 160);
/// assert_eq!(fdfs_client::token_ts(1000, 3600, 900), 3700);
/// ```
pub fn token_ts(now: u64, lifetime: u64, server_ttl: u64) -> u64 {
    (now + lifetime).saturating_sub(server_ttl).max(1)
}

/// The URL of `id` below `base` (`http://host:port`, a trailing `/` is fine), signed with
/// `secret` at `ts` when a secret is given.
///
/// ```
/// let id = fdfs_client::parse_file_id("group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt")?;
/// assert_eq!(
///     fdfs_client::http_url("http://127.0.0.1:8888/", &id, None, 0),
///     "http://127.0.0.1:8888/group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt"
/// );
/// let signed = fdfs_client::http_url("http://h:1", &id, Some("FastDFS1234567890"), 1_795_387_000);
/// assert!(signed.ends_with("?token=d30a1fe335f6c51b7f863df3a21946e8&ts=1795387000"));
/// # Ok::<(), fdfs_client::ClientError>(())
/// ```
pub fn http_url(base: &str, id: &FileId, secret: Option<&str>, ts: u64) -> String {
    let mut url = format!("{}/{id}", base.trim_end_matches('/'));
    if let Some(secret) = secret {
        let token = sign_token(&id.name.to_string(), secret, ts);
        url.push_str(&format!("?token={token}&ts={ts}"));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors() {
        let path = "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt";
        let key = "FastDFS1234567890";
        assert_eq!(
            sign_token(path, key, 1_795_387_000),
            "d30a1fe335f6c51b7f863df3a21946e8"
        );
        assert_eq!(
            sign_token(&format!("group1/{path}"), key, 1_795_387_000),
            "aa4c35dfb3c299e5ef18c60546b5236e"
        );
    }

    #[test]
    fn lifetimes_never_reach_zero() {
        // ts = 0 means "never expires" to FastDFS: never produce it by accident
        assert_eq!(token_ts(10, 5, 900), 1);
    }
}
