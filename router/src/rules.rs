//! The compiled rules and matching: the first rule whose prefix or regex matches the
//! normalized path decides.

use regex::{Regex, RegexBuilder};

use crate::config::{Action, MapMode, RouterConfig, RuleConfig};
use crate::template::{Template, Values};

/// How a rule matches.
#[derive(Debug)]
pub enum Matcher {
    /// Decoded path prefix (lower-cased when case-insensitive).
    Prefix(String),
    Regex(Regex),
}

/// What a matched rule does, with its templates parsed.
#[derive(Debug)]
pub enum RuleAction {
    Redirect {
        to: Template,
        status: u16,
    },
    Proxy {
        to: Template,
    },
    Map {
        mode: MapMode,
        key: Template,
        /// redirect target; `None` = `{storage_url}/{file_id}`
        to: Option<Template>,
        status: u16,
        sign: bool,
    },
    Deny,
}

/// One rule, ready to match.
#[derive(Debug)]
pub struct Rule {
    pub index: usize,
    pub matcher: Matcher,
    pub case_insensitive: bool,
    pub action: RuleAction,
}

/// A successful match: the rule and the values its templates can use.
#[derive(Debug)]
pub struct Match<'r, 'p> {
    pub rule: &'r Rule,
    pub path: &'p str,
    pub rest: &'p str,
    pub captures: Vec<Option<&'p str>>,
}

impl Match<'_, '_> {
    /// Template values for this match.
    pub fn values<'a>(&'a self, query: Option<&'a str>, file_id: Option<&'a str>) -> Values<'a> {
        Values {
            path: self.path,
            rest: self.rest,
            captures: self.captures.clone(),
            query,
            file_id,
        }
    }
}

/// The ordered rules.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Checks and compiles the rules of `config`.
    pub fn compile(config: &RouterConfig) -> anyhow::Result<Self> {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                compile_rule(index, rule, config).map_err(|err| {
                    anyhow::anyhow!("rule {} ({}): {err}", index + 1, describe(rule))
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Rules { rules })
    }

    /// Whether some rule serves files from the cluster (and so needs a client).
    pub fn needs_client(&self) -> bool {
        self.rules.iter().any(|rule| {
            matches!(
                rule.action,
                RuleAction::Map {
                    mode: MapMode::Serve,
                    ..
                }
            )
        })
    }

    /// Whether some rule looks paths up in the map.
    pub fn uses_map(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| matches!(rule.action, RuleAction::Map { .. }))
    }

    /// The first rule matching the normalized `path`.
    pub fn find<'r, 'p>(&'r self, path: &'p str) -> Option<Match<'r, 'p>> {
        self.rules.iter().find_map(|rule| rule.matches(path))
    }
}

impl Rule {
    fn matches<'r, 'p>(&'r self, path: &'p str) -> Option<Match<'r, 'p>> {
        match &self.matcher {
            Matcher::Prefix(prefix) => {
                let rest = if self.case_insensitive {
                    strip_prefix_ignore_case(path, prefix)?
                } else {
                    path.strip_prefix(prefix.as_str())?
                };
                Some(Match {
                    rule: self,
                    path,
                    rest,
                    captures: vec![Some(path)],
                })
            }
            Matcher::Regex(regex) => {
                let caps = regex.captures(path)?;
                let captures = (0..caps.len())
                    .map(|i| caps.get(i).map(|m| m.as_str()))
                    .collect();
                Some(Match {
                    rule: self,
                    path,
                    rest: "",
                    captures,
                })
            }
        }
    }
}

/// `path` without `prefix` (given lower-cased), comparing case-insensitively char by char.
fn strip_prefix_ignore_case<'p>(path: &'p str, prefix_lower: &str) -> Option<&'p str> {
    let mut wanted = prefix_lower.chars().peekable();
    let mut end = 0;
    for (at, c) in path.char_indices() {
        if wanted.peek().is_none() {
            break;
        }
        for lower in c.to_lowercase() {
            if wanted.next() != Some(lower) {
                return None;
            }
        }
        end = at + c.len_utf8();
    }
    if wanted.peek().is_some() {
        return None;
    }
    Some(&path[end..])
}

fn describe(rule: &RuleConfig) -> String {
    match (&rule.prefix, &rule.regex) {
        (Some(prefix), _) => format!("prefix {prefix:?}"),
        (_, Some(regex)) => format!("regex {regex:?}"),
        _ => "no matcher".into(),
    }
}

fn compile_rule(index: usize, rule: &RuleConfig, config: &RouterConfig) -> anyhow::Result<Rule> {
    let (matcher, groups) = match (&rule.prefix, &rule.regex) {
        (Some(prefix), None) => {
            if !prefix.starts_with('/') {
                anyhow::bail!("prefix must start with /");
            }
            let prefix = if rule.case_insensitive {
                prefix.to_lowercase()
            } else {
                prefix.clone()
            };
            (Matcher::Prefix(prefix), 0)
        }
        (None, Some(regex)) => {
            let regex = RegexBuilder::new(regex)
                .case_insensitive(rule.case_insensitive)
                .size_limit(1 << 20)
                .build()?;
            let groups = regex.captures_len() - 1;
            (Matcher::Regex(regex), groups)
        }
        _ => anyhow::bail!("give exactly one of prefix and regex"),
    };
    let is_prefix = matches!(matcher, Matcher::Prefix(_));
    let check = |template: &Template| -> anyhow::Result<()> {
        if template.max_capture() > groups {
            anyhow::bail!(
                "{template} uses capture {{{}}} but the rule has {groups} groups",
                template.max_capture()
            );
        }
        if template.uses_rest() && !is_prefix {
            anyhow::bail!("{template}: {{rest}} needs a prefix rule");
        }
        Ok(())
    };
    let to = rule.to.as_deref().map(Template::parse).transpose()?;
    if let Some(to) = &to {
        check(to)?;
    }
    let status = rule.status.unwrap_or(302);
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        anyhow::bail!("status {status}: use 301, 302, 303, 307 or 308");
    }
    let no_file_id = |to: &Option<Template>| -> anyhow::Result<()> {
        if to.as_ref().is_some_and(Template::uses_file_id) {
            anyhow::bail!("{{file_id}} is only known to map rules");
        }
        Ok(())
    };
    let action = match rule.action {
        Action::Redirect => {
            no_file_id(&to)?;
            RuleAction::Redirect {
                to: to.ok_or_else(|| anyhow::anyhow!("redirect needs `to`"))?,
                status,
            }
        }
        Action::Proxy => {
            no_file_id(&to)?;
            let to = to.ok_or_else(|| anyhow::anyhow!("proxy needs `to`"))?;
            if !to.to_string().starts_with("http://") {
                anyhow::bail!("proxy `to` must be an http:// URL template");
            }
            RuleAction::Proxy { to }
        }
        Action::Map => {
            let key = Template::parse(rule.key.as_deref().unwrap_or("{path}"))?;
            check(&key)?;
            if key.uses_file_id() {
                anyhow::bail!("the key cannot use {{file_id}}");
            }
            if rule.mode == MapMode::Redirect && to.is_none() && config.storage_url.is_empty() {
                anyhow::bail!("map redirects need `to` or a top-level storage_url");
            }
            if rule.sign && config.secret_key.is_empty() {
                anyhow::bail!("sign = true needs a top-level secret_key");
            }
            RuleAction::Map {
                mode: rule.mode,
                key,
                to,
                status,
                sign: rule.sign,
            }
        }
        Action::Deny => RuleAction::Deny,
    };
    Ok(Rule {
        index,
        matcher,
        case_insensitive: rule.case_insensitive,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml: &str) -> Rules {
        Rules::compile(&RouterConfig::from_toml(toml).unwrap()).unwrap()
    }

    const RULES: &str = r#"
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
to = "https://cdn.example.com/{1}/{2}"
status = 301
[[rules]]
prefix = "/legacy/"
action = "proxy"
to = "http://old:8080/{rest}?{query}"
"#;

    #[test]
    fn first_match_wins() {
        let rules = rules(RULES);
        let m = rules.find("/upload/private/x.jpg").unwrap();
        assert!(matches!(m.rule.action, RuleAction::Deny));
        let m = rules.find("/UPLOAD/a/b.jpg").unwrap();
        assert_eq!(m.rule.index, 1);
        assert_eq!(m.rest, "a/b.jpg");
        let m = rules.find("/old/12/a b.png").unwrap();
        let RuleAction::Redirect { to, status } = &m.rule.action else {
            panic!("redirect expected")
        };
        assert_eq!(*status, 301);
        assert_eq!(
            to.render(&m.values(None, None), true),
            "https://cdn.example.com/12/a%20b.png"
        );
        let m = rules.find("/legacy/x/y.gif").unwrap();
        let RuleAction::Proxy { to } = &m.rule.action else {
            panic!("proxy expected")
        };
        assert_eq!(
            to.render(&m.values(Some("a=1"), None), true),
            "http://old:8080/x/y.gif?a=1"
        );
        assert!(rules.find("/old/x/a.png").is_none());
        assert!(rules.find("/elsewhere").is_none());
        assert!(rules.needs_client());
        assert!(rules.uses_map());
    }

    #[test]
    fn case_insensitive_prefixes() {
        assert_eq!(strip_prefix_ignore_case("/UpLoad/x", "/upload/"), Some("x"));
        assert_eq!(strip_prefix_ignore_case("/ÜBER/x", "/über/"), Some("x"));
        assert_eq!(strip_prefix_ignore_case("/up", "/upload/"), None);
        assert_eq!(strip_prefix_ignore_case("/download/", "/upload/"), None);
        assert_eq!(strip_prefix_ignore_case("/upload/", "/upload/"), Some(""));
    }

    #[test]
    fn bad_rules_are_refused() {
        for (bad, why) in [
            ("[[rules]]\naction = \"deny\"", "exactly one"),
            (
                "[[rules]]\nprefix = \"/\"\nregex = \".\"\naction = \"deny\"",
                "exactly one",
            ),
            (
                "[[rules]]\nprefix = \"x\"\naction = \"deny\"",
                "start with /",
            ),
            ("[[rules]]\nregex = \"(\"\naction = \"deny\"", "regex"),
            (
                "[[rules]]\nprefix = \"/\"\naction = \"redirect\"",
                "needs `to`",
            ),
            (
                "[[rules]]\nregex = \"^/(a)\"\naction = \"redirect\"\nto = \"/{2}\"",
                "capture",
            ),
            (
                "[[rules]]\nregex = \"^/a\"\naction = \"redirect\"\nto = \"/{rest}\"",
                "prefix rule",
            ),
            (
                "[[rules]]\nprefix = \"/\"\naction = \"redirect\"\nto = \"/\"\nstatus = 200",
                "status",
            ),
            (
                "[[rules]]\nprefix = \"/\"\naction = \"proxy\"\nto = \"ftp://x\"",
                "http://",
            ),
            (
                "[[rules]]\nprefix = \"/\"\naction = \"redirect\"\nto = \"/{file_id}\"",
                "map rules",
            ),
            (
                "[[rules]]\nprefix = \"/\"\naction = \"map\"\nmode = \"redirect\"",
                "storage_url",
            ),
            (
                "[[rules]]\nprefix = \"/\"\naction = \"map\"\nsign = true",
                "secret_key",
            ),
            (
                "[[rules]]\nprefix = \"/\"\naction = \"redirect\"\nto = \"/{bogus}\"",
                "placeholder",
            ),
        ] {
            let config = RouterConfig::from_toml(bad).unwrap();
            let err = Rules::compile(&config).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
