//! The query parameters a file request understands (I.6): `token`, `ts`, `filename` and
//! `redirect`. Others are ignored; the first occurrence of a parameter wins.

/// Longest query string accepted.
pub const MAX_QUERY: usize = 4096;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Params {
    pub token: Option<String>,
    pub ts: Option<String>,
    pub filename: Option<String>,
    /// Set by a storage that redirected or proxied the request here (loop protection).
    pub redirect: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query longer than {MAX_QUERY} bytes")]
    TooLong,
    #[error("bad percent-encoding in parameter {0}")]
    BadEncoding(&'static str),
}

/// Parses a raw query string (without the `?`).
pub fn parse(query: Option<&str>) -> Result<Params, QueryError> {
    let mut params = Params::default();
    let Some(query) = query else {
        return Ok(params);
    };
    if query.len() > MAX_QUERY {
        return Err(QueryError::TooLong);
    }
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "token" => &mut params.token,
            "ts" => &mut params.ts,
            "filename" => &mut params.filename,
            "redirect" => {
                params.redirect = true;
                continue;
            }
            _ => continue,
        };
        if slot.is_none() {
            let name = match key {
                "token" => "token",
                "ts" => "ts",
                _ => "filename",
            };
            *slot = Some(decode(value).ok_or(QueryError::BadEncoding(name))?);
        }
    }
    Ok(params)
}

/// Appends `redirect=1` to a query (loop protection for the storage the request goes to).
pub fn with_redirect(query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{q}&redirect=1"),
        _ => "redirect=1".to_string(),
    }
}

/// Percent-decodes a value (`+` stays a plus: these are URLs, not form posts).
fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            // two ASCII hex digits: both conversions succeed
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters() {
        let params = parse(Some(
            "token=abc&ts=1795387000&filename=caf%C3%A9%20menu.jpg&x=1&token=zzz",
        ))
        .unwrap();
        assert_eq!(params.token.as_deref(), Some("abc"));
        assert_eq!(params.ts.as_deref(), Some("1795387000"));
        assert_eq!(params.filename.as_deref(), Some("café menu.jpg"));
        assert!(!params.redirect);
        assert!(parse(Some("redirect=1")).unwrap().redirect);
        assert!(parse(Some("a&redirect")).unwrap().redirect);
        assert_eq!(parse(None).unwrap(), Params::default());
        assert_eq!(parse(Some("")).unwrap(), Params::default());
        assert_eq!(
            parse(Some("filename=a%2")).unwrap_err(),
            QueryError::BadEncoding("filename")
        );
        assert_eq!(
            parse(Some("token=%+f")).unwrap_err(),
            QueryError::BadEncoding("token")
        );
        assert_eq!(
            parse(Some("ts=%ff")).unwrap_err(),
            QueryError::BadEncoding("ts")
        );
        assert_eq!(
            parse(Some(&"a".repeat(MAX_QUERY + 1))).unwrap_err(),
            QueryError::TooLong
        );
    }

    #[test]
    fn redirect_marker() {
        assert_eq!(with_redirect(None), "redirect=1");
        assert_eq!(with_redirect(Some("")), "redirect=1");
        assert_eq!(
            with_redirect(Some("token=a&ts=1")),
            "token=a&ts=1&redirect=1"
        );
    }
}
