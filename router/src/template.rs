//! URL templates of the rules: literal text with `{placeholder}`s, parsed once at startup.
//!
//! Placeholders: `{path}` (the decoded request path), `{rest}` (what follows a `prefix`
//! rule's prefix), `{1}`..`{99}` (regex captures; `{0}` is the whole match), `{query}` (the
//! query string as received, without `?`), `{file_id}` (map rules). `{{` and `}}` are literal
//! braces. In URLs the values are percent-encoded (`/` kept; `{query}` is inserted as
//! received); in map keys they are inserted decoded.

use std::fmt;

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Path,
    Rest,
    Capture(usize),
    Query,
    FileId,
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

/// A template that does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("template {template:?}: {reason}")]
pub struct TemplateError {
    pub template: String,
    pub reason: String,
}

/// The values a template is rendered with.
#[derive(Debug, Default)]
pub struct Values<'a> {
    pub path: &'a str,
    pub rest: &'a str,
    pub captures: Vec<Option<&'a str>>,
    pub query: Option<&'a str>,
    pub file_id: Option<&'a str>,
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let fail = |reason: String| TemplateError {
            template: source.to_string(),
            reason,
        };
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err(fail("unmatched } (write }} for a literal brace)".into())),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(fail("unclosed {".into())),
                        }
                    }
                    let part = match name.as_str() {
                        "path" => Part::Path,
                        "rest" => Part::Rest,
                        "query" => Part::Query,
                        "file_id" => Part::FileId,
                        digits if !digits.is_empty() && digits.len() <= 2 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                            Part::Capture(digits.parse().map_err(|_| fail("bad capture".into()))?)
                        }
                        other => {
                            return Err(fail(format!(
                                "unknown placeholder {{{other}}} (known: path, rest, query, file_id, 0..99)"
                            )))
                        }
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(part);
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            parts,
            source: source.to_string(),
        })
    }

    /// The highest capture group used (0 if none).
    pub fn max_capture(&self) -> usize {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::Capture(n) => Some(*n),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether the template uses `{file_id}`.
    pub fn uses_file_id(&self) -> bool {
        self.parts.contains(&Part::FileId)
    }

    /// Whether the template uses `{rest}`.
    pub fn uses_rest(&self) -> bool {
        self.parts.contains(&Part::Rest)
    }

    /// Renders with the values percent-encoded for a URL (`encode`) or as they are (map keys).
    pub fn render(&self, values: &Values<'_>, encode: bool) -> String {
        let mut out = String::new();
        let put = |out: &mut String, value: &str| {
            if encode {
                out.push_str(&crate::path::encode_path(value));
            } else {
                out.push_str(value);
            }
        };
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Path => put(&mut out, values.path),
                Part::Rest => put(&mut out, values.rest),
                Part::Capture(n) => put(
                    &mut out,
                    values.captures.get(*n).copied().flatten().unwrap_or(""),
                ),
                // the query is passed on as received: it is already encoded
                Part::Query => out.push_str(values.query.unwrap_or("")),
                Part::FileId => out.push_str(values.file_id.unwrap_or("")),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders() {
        let t = Template::parse("https://cdn.example.com/img/{1}?{query}&x={{y}}").unwrap();
        assert_eq!(t.max_capture(), 1);
        let values = Values {
            path: "/old/a b.jpg",
            captures: vec![Some("/old/a b.jpg"), Some("a b.jpg")],
            query: Some("v=2"),
            ..Values::default()
        };
        assert_eq!(
            t.render(&values, true),
            "https://cdn.example.com/img/a%20b.jpg?v=2&x={y}"
        );
        let key = Template::parse("/upload/{rest}").unwrap();
        assert!(key.uses_rest());
        let values = Values {
            rest: "qa/图 1.jpg",
            ..Values::default()
        };
        assert_eq!(key.render(&values, false), "/upload/qa/图 1.jpg");
        let t = Template::parse("http://s:8888/{file_id}").unwrap();
        assert!(t.uses_file_id());
        let values = Values {
            file_id: Some("group1/M00/00/00/x.jpg"),
            ..Values::default()
        };
        assert_eq!(
            t.render(&values, true),
            "http://s:8888/group1/M00/00/00/x.jpg"
        );
        // a capture that did not participate renders empty
        let t = Template::parse("/{2}/{path}").unwrap();
        let values = Values {
            path: "/p",
            captures: vec![Some("/p"), Some("x"), None],
            ..Values::default()
        };
        assert_eq!(t.render(&values, true), "///p");
    }

    #[test]
    fn refuses_bad_templates() {
        for bad in ["{nope}", "{", "x}", "{path", "{123}", "{}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Template::parse("plain")
                .unwrap()
                .render(&Values::default(), true),
            "plain"
        );
    }
}
