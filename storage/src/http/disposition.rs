//! `?filename=` → `Content-Disposition: attachment` (RFC 6266): an ASCII `filename="..."`
//! fallback with quotes, backslashes, separators and control characters replaced, plus
//! `filename*=UTF-8''...` carrying the exact (percent-encoded) name for modern browsers.

/// Longest file name kept, in characters.
const MAX_CHARS: usize = 200;

/// The header value for a requested download name, or None when nothing usable is left.
pub fn attachment(requested: &str) -> Option<String> {
    let cleaned: String = requested
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if matches!(c, '/' | '\\') { '_' } else { c })
        .take(MAX_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return None;
    }
    let fallback: String = cleaned
        .chars()
        .map(|c| {
            if c.is_ascii() && !matches!(c, '"' | '%' | ';') {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        encode_ext_value(cleaned)
    ))
}

/// RFC 8187 value characters (attr-char) stay, everything else is %XX of the UTF-8 bytes.
fn encode_ext_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_and_unicode_names() {
        assert_eq!(
            attachment("photo.jpg").unwrap(),
            "attachment; filename=\"photo.jpg\"; filename*=UTF-8''photo.jpg"
        );
        assert_eq!(
            attachment("café menu.jpg").unwrap(),
            "attachment; filename=\"caf_ menu.jpg\"; filename*=UTF-8''caf%C3%A9%20menu.jpg"
        );
    }

    #[test]
    fn hostile_names_are_defused() {
        let value = attachment("a\"b\\c/d\r\nSet-Cookie: x=1;.txt").unwrap();
        assert_eq!(
            value,
            "attachment; filename=\"a_b_c_dSet-Cookie: x=1_.txt\"; \
             filename*=UTF-8''a%22b_c_dSet-Cookie%3A%20x%3D1%3B.txt"
        );
        assert_eq!(attachment(""), None);
        assert_eq!(attachment(" \r\n"), None);
        assert_eq!(attachment(".."), None);
        assert!(attachment(&"x".repeat(1000)).unwrap().len() < 500);
    }

    proptest! {
        #[test]
        fn always_a_valid_header(name in "\\PC{0,50}|[\\x00-\\x7f]{0,50}") {
            if let Some(value) = attachment(&name) {
                prop_assert!(hyper::header::HeaderValue::from_str(&value).is_ok());
                // exactly the two quotes around the fallback name
                prop_assert_eq!(value.matches('"').count(), 2);
            }
        }
    }
}
