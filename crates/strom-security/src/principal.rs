//! `ssl.principal.mapping.rules`: how a client certificate's subject becomes a principal
//! name, with Kafka's rule language (its `SslPrincipalMapper`).
//!
//! Rules are tried in order; the first whose pattern matches the whole subject (RFC 2253,
//! `CN=alice,OU=eng,O=example`) gives the name:
//! - `DEFAULT`: the subject unchanged (the value when the key is unset);
//! - `RULE:pattern/replacement/` with an optional `L` or `U` after the last `/` (lower or
//!   upper case the result): the subject with every match of `pattern` replaced by
//!   `replacement`, where `$1`… are the pattern's groups and `\` escapes the next character
//!   (`\/` is a slash inside a pattern or replacement).
//!
//! Rules are separated by commas (a comma inside a pattern is part of it). A subject no rule
//! matches is refused: the connection fails authentication, as in Kafka.

use regex::Regex;

/// A rule list that does not parse; the message quotes the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRules(pub String);

/// No rule matched a subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no rule of ssl.principal.mapping.rules matches the certificate subject {0}")]
pub struct NoMatchingRule(pub String);

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        /// The pattern anchored at both ends (the whole subject must match).
        whole: Regex,
        /// The pattern as written (its matches are replaced).
        pattern: Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// Parsed `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for PrincipalMapper {
    fn default() -> Self {
        PrincipalMapper { rules: vec![Rule::Default] }
    }
}

impl PartialEq for PrincipalMapper {
    fn eq(&self, other: &Self) -> bool {
        self.describe() == other.describe()
    }
}
impl Eq for PrincipalMapper {}

impl PrincipalMapper {
    /// Parses a rule list (`DEFAULT`, `RULE:^CN=(.*?),OU=ops.*$/$1/L,DEFAULT`).
    pub fn parse(text: &str) -> Result<PrincipalMapper, BadRules> {
        let mut rules = Vec::new();
        let mut rest = text.trim_start();
        while !rest.is_empty() {
            let (rule, after) = if let Some(after) = rest.strip_prefix("DEFAULT") {
                (Rule::Default, after)
            } else if let Some(body) = rest.strip_prefix("RULE:") {
                let (pattern, after_pattern) = until_slash(body)
                    .ok_or_else(|| BadRules(format!("invalid rule `{rest}`: expected RULE:pattern/replacement/")))?;
                let (replacement, after_replacement) = until_slash(after_pattern)
                    .ok_or_else(|| BadRules(format!("invalid rule `{rest}`: expected RULE:pattern/replacement/")))?;
                let (case, after) = match after_replacement.as_bytes().first() {
                    Some(b'L') => (Case::Lower, &after_replacement[1..]),
                    Some(b'U') => (Case::Upper, &after_replacement[1..]),
                    _ => (Case::Keep, after_replacement),
                };
                let compile = |p: &str| {
                    Regex::new(p).map_err(|e| BadRules(format!("invalid pattern `{pattern}` in rule `{rest}`: {e}")))
                };
                let rule = Rule::Replace {
                    whole: compile(&format!("^(?:{pattern})$"))?,
                    pattern: compile(pattern)?,
                    replacement: replacement.to_string(),
                    case,
                };
                (rule, after)
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                return Err(BadRules(format!("invalid rule `{}`: expected DEFAULT or RULE:…", &rest[..end])));
            };
            let after = after.trim_start();
            rest = match after.strip_prefix(',') {
                Some(next) => next.trim_start(),
                None if after.is_empty() => after,
                None => return Err(BadRules(format!("invalid rule list: unexpected `{after}` after a rule"))),
            };
            rules.push(rule);
        }
        if rules.is_empty() {
            return Err(BadRules("no rule given (DEFAULT keeps the subject as it is)".into()));
        }
        Ok(PrincipalMapper { rules })
    }

    /// The principal name for a certificate subject.
    pub fn name(&self, subject: &str) -> Result<String, NoMatchingRule> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(subject.to_string()),
                Rule::Replace { whole, pattern, replacement, case } => {
                    if !whole.is_match(subject) {
                        continue;
                    }
                    let name = pattern.replace_all(subject, |caps: &regex::Captures<'_>| expand(replacement, caps));
                    return Ok(match case {
                        Case::Keep => name.into_owned(),
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        Err(NoMatchingRule(subject.to_string()))
    }

    fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| match r {
                Rule::Default => "DEFAULT".to_string(),
                Rule::Replace { pattern, replacement, case, .. } => format!("{pattern}/{replacement}/{case:?}"),
            })
            .collect()
    }
}

/// Splits `text` at its first unescaped `/`: the part before (escapes kept, so the regex or
/// the replacement sees them) and the part after it.
fn until_slash(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'/' => return Some((&text[..i], &text[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// Java's replacement syntax: `$n` is group n (as many digits as still name a group), `\c`
/// is the character c, anything else is itself.
fn expand(replacement: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '$' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let mut group = 0usize;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    let longer = group * 10 + d as usize;
                    if group != 0 && longer >= caps.len() {
                        break;
                    }
                    group = longer;
                    chars.next();
                }
                out.push_str(caps.get(group).map_or("", |m| m.as_str()));
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_the_subject() {
        let m = PrincipalMapper::parse("DEFAULT").unwrap();
        assert_eq!(m.name("CN=alice,OU=eng,O=example").unwrap(), "CN=alice,OU=eng,O=example");
        assert_eq!(PrincipalMapper::default().name("CN=x").unwrap(), "CN=x");
    }

    #[test]
    fn kafka_documented_rules() {
        // The examples of Kafka's documentation (security.html, "Customizing SSL User Name").
        let m = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,DEFAULT",
        )
        .unwrap();
        assert_eq!(
            m.name("CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown").unwrap(),
            "serviceuser"
        );
        assert_eq!(
            m.name("CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown").unwrap(),
            "adminuser@admin"
        );
        assert_eq!(m.name("OU=x,CN=Bob.Smith,O=y").unwrap(), "bob.smith");
        assert_eq!(m.name("O=nobody").unwrap(), "O=nobody");
    }

    #[test]
    fn upper_case_escapes_and_no_match() {
        let m = PrincipalMapper::parse("RULE:^CN=([^,]*),O=a\\/b$/team\\/$1/U").unwrap();
        assert_eq!(m.name("CN=alice,O=a/b").unwrap(), "TEAM/ALICE");
        assert_eq!(m.name("CN=alice,O=other"), Err(NoMatchingRule("CN=alice,O=other".into())));
    }

    #[test]
    fn group_numbers_take_only_digits_that_name_a_group() {
        // `$10` with one group is group 1 then a literal 0 (Java's rule).
        let m = PrincipalMapper::parse("RULE:^CN=(.*)$/$10/").unwrap();
        assert_eq!(m.name("CN=bob").unwrap(), "bob0");
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in ["", "RULE:^CN=(.*)$", "RULE:(/x/", "DEFAULTX", "FOO", "DEFAULT junk"] {
            assert!(PrincipalMapper::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
