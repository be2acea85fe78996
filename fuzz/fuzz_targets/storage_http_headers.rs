//! The other request inputs of the storage's HTTP server: the query string
//! (`http::query`), `?filename=` → `Content-Disposition` (`http::disposition`),
//! `If-None-Match` / `If-Modified-Since` / `If-Range` (`http::conditional`), `Referer`
//! (`http::referer`) and the anti-steal token (`http::token`). The input is split at `\n`
//! into those fields. Nothing may panic, and what goes back into a response header must not
//! carry CR, LF or NUL (header injection).
#![no_main]

use std::time::Duration;

use fdfs_storage::http::conditional::{self, ETag};
use fdfs_storage::http::settings::AntiStealConfig;
use fdfs_storage::http::{disposition, query, referer, token};
use libfuzzer_sys::fuzz_target;

/// Latest time `http_date` is asked to format: 9999-12-31T23:59:59Z.
const MAX_HTTP_DATE: u64 = 253_402_300_799;

fn header_safe(value: &str) -> bool {
    !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = text.split('\n');
    let mut next = || fields.next().unwrap_or("");
    let (raw_query, inm, ims, if_range, referer_value, number) =
        (next(), next(), next(), next(), next(), next());

    if let Ok(params) = query::parse(Some(raw_query)) {
        if let Some(name) = params.filename.as_deref() {
            if let Some(value) = disposition::attachment(name) {
                assert!(header_safe(&value), "{value:?}");
                assert!(value.is_ascii(), "{value:?}");
            }
        }
        let policy = AntiStealConfig {
            check_token: true,
            token_ttl: Duration::from_secs(900),
            secret_key: "FastDFS1234567890".into(),
            ..AntiStealConfig::default()
        };
        let _ = token::check(
            &policy,
            1_700_000_000,
            "group1/M00/00/00/wKgBAGZ1aBaAAAAAAAAAAAAAAAA123.txt",
            "M00/00/00/wKgBAGZ1aBaAAAAAAAAAAAAAAAA123.txt",
            params.token.as_deref(),
            params.ts.as_deref(),
        );
    }
    if raw_query.len() <= query::MAX_QUERY {
        let _ = query::with_redirect(Some(raw_query));
    }
    if let Some(value) = disposition::attachment(raw_query) {
        assert!(header_safe(&value), "{value:?}");
    }

    let mtime = number.bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    }) % (MAX_HTTP_DATE + 1);
    let date = conditional::http_date(mtime);
    for etag in [ETag::from_crc(0x1234_abcd, 6), ETag::from_stat(6, mtime)] {
        assert!(header_safe(&etag.header()));
        let _ = conditional::not_modified(Some(inm), Some(ims), &etag, mtime);
        let _ = conditional::not_modified(None, Some(ims), &etag, mtime);
        let _ = conditional::if_range_holds(if_range, &etag, mtime);
        // our own validators always hold
        assert!(conditional::if_range_holds(&date, &etag, mtime));
        assert!(conditional::not_modified(
            Some(&etag.header()),
            None,
            &etag,
            mtime
        ));
    }

    let patterns: Vec<String> = ["example.com", "*.cdn.net", ".img.org"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let _ = referer::allowed(&patterns, Some(referer_value));
});
