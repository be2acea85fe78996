//! Rule matching of the router (`fdfs_router::rules`, `template`). The rules of a
//! representative `router.toml` are compiled once; the input is a request path (before
//! normalisation) and a query, split at the first `?`. The first matching rule's templates
//! are rendered; nothing may panic, and a URL rendered with encoding carries no raw CR, LF,
//! space or NUL from the path. A second mode parses the input as a template.
#![no_main]

use std::sync::OnceLock;

use fdfs_router::config::RouterConfig;
use fdfs_router::path::normalize;
use fdfs_router::rules::{RuleAction, Rules};
use fdfs_router::template::Template;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
storage_url = "http://s:8888"
secret_key = "k"
[[rules]]
prefix = "/upload/private/"
action = "deny"
[[rules]]
prefix = "/Upload/"
case_insensitive = true
action = "map"
[[rules]]
regex = "^/old/(\\d+)/(.*)$"
action = "redirect"
to = "https://cdn.example.com/{1}/{2}?{query}"
status = 301
[[rules]]
regex = "(?i)^/(img|pic)s?/([a-z0-9_]+)\\.(jpe?g|png)$"
action = "map"
mode = "redirect"
key = "/images/{2}.{3}"
sign = true
[[rules]]
prefix = "/legacy/"
action = "proxy"
to = "http://old:8080/{rest}?{query}"
[[rules]]
prefix = "/ß/"
case_insensitive = true
action = "redirect"
to = "/sharp/{rest}"
"#;

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        Rules::compile(&RouterConfig::from_toml(CONFIG).expect("config parses"))
            .expect("rules compile")
    })
}

fn url_safe(url: &str, query: Option<&str>) -> bool {
    // the query is passed on as received; only what came from the path is checked
    let url = query.map_or(url.to_string(), |q| url.replace(q, ""));
    !url.bytes().any(|b| matches!(b, b'\r' | b'\n' | b' ' | 0))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode & 1 == 1 {
        if let Ok(template) = Template::parse(text) {
            assert_eq!(template.to_string(), text);
            let _ = template.max_capture();
        }
        return;
    }
    let (raw_path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let Ok(path) = normalize(raw_path, 1024) else {
        return;
    };
    let Some(found) = rules().find(&path) else {
        return;
    };
    assert!(path.ends_with(found.rest));
    let values = found.values(query, Some("group1/M00/00/00/abc.jpg"));
    match &found.rule.action {
        RuleAction::Redirect { to, .. } | RuleAction::Proxy { to } => {
            let url = to.render(&values, true);
            assert!(url_safe(&url, query), "{url:?}");
        }
        RuleAction::Map { key, to, .. } => {
            let _ = key.render(&values, false);
            if let Some(to) = to {
                let url = to.render(&values, true);
                assert!(url_safe(&url, query), "{url:?}");
            }
        }
        RuleAction::Deny => {}
    }
});
