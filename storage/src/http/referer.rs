//! `http_referer_allow`: when the list is non-empty, a request whose `Referer` names another
//! site is refused (403). Patterns: `example.com` (that host), `*.example.com` (its
//! subdomains), `.example.com` (both). Requests without a `Referer` (direct visits, privacy
//! settings, most apps) are allowed, as nginx's `valid_referers none` does.

/// Whether a request with this `Referer` (if any) may be served.
pub fn allowed(patterns: &[String], referer: Option<&str>) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let Some(referer) = referer else {
        return true;
    };
    let Some(host) = host_of(referer) else {
        return false;
    };
    patterns.iter().any(|pattern| {
        if let Some(domain) = pattern.strip_prefix("*.") {
            is_subdomain(&host, domain)
        } else if let Some(domain) = pattern.strip_prefix('.') {
            host == domain || is_subdomain(&host, domain)
        } else {
            host == *pattern
        }
    })
}

fn is_subdomain(host: &str, domain: &str) -> bool {
    host.len() > domain.len() + 1
        && host.ends_with(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

/// The lower-case host of an absolute http(s) URL.
fn host_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split_once(']')?.0
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn patterns() {
        let p = list(&["example.com", "*.cdn.net", ".img.org"]);
        assert!(allowed(&p, None));
        assert!(allowed(&p, Some("https://example.com/page")));
        assert!(allowed(&p, Some("http://EXAMPLE.com:8080/x?y")));
        assert!(!allowed(&p, Some("https://www.example.com/")));
        assert!(allowed(&p, Some("https://a.cdn.net/")));
        assert!(!allowed(&p, Some("https://cdn.net/")));
        assert!(!allowed(&p, Some("https://evilcdn.net/")));
        assert!(allowed(&p, Some("https://img.org/")));
        assert!(allowed(&p, Some("https://x.y.img.org/")));
        assert!(!allowed(&p, Some("https://example.com.evil.io/")));
        assert!(!allowed(&p, Some("https://user@evil.io/@example.com")));
        assert!(!allowed(&p, Some("not a url")));
        assert!(!allowed(&p, Some("ftp://example.com/")));
        assert!(allowed(&[], Some("https://anything/")));
    }
}
