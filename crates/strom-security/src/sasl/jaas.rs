//! Kafka's `sasl.jaas.config` value: one JAAS login module entry,
//! `<class> <required|requisite|sufficient|optional> [key="value" ...];`.
//!
//! Brokers read PLAIN's users from it: `user_<name>="<password>"` options of
//! `org.apache.kafka.common.security.plain.PlainLoginModule`.

use std::collections::BTreeMap;

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasEntry {
    pub login_module: String,
    pub flag: String,
    pub options: BTreeMap<String, String>,
}

/// The login module of PLAIN.
pub const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";

/// Parses one entry; the error says what is wrong (never echoing a value: they hold passwords).
pub fn parse(text: &str) -> Result<JaasEntry, String> {
    let mut chars = text.trim().chars().peekable();
    let word = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut w = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '=' || c == ';' {
                break;
            }
            w.push(c);
            chars.next();
        }
        w
    };
    let login_module = word(&mut chars);
    let flag = word(&mut chars);
    if login_module.is_empty() || !["required", "requisite", "sufficient", "optional"].contains(&flag.as_str()) {
        return Err("expected `<login module class> required ...;`".into());
    }
    let mut options = BTreeMap::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            Some(';') => {
                chars.next();
                break;
            }
            None => return Err("the entry must end with `;`".into()),
            _ => {}
        }
        let key = word(&mut chars);
        if key.is_empty() || chars.next() != Some('=') {
            return Err("expected key=value options".into());
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('\\') => v.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => v.push(c),
                    None => return Err(format!("the value of option {key} is not closed by a quote")),
                }
            }
            v
        } else {
            word(&mut chars)
        };
        options.insert(key, value);
    }
    if chars.any(|c| !c.is_whitespace()) {
        return Err("only one login module entry is allowed".into());
    }
    Ok(JaasEntry { login_module, flag, options })
}

/// The users of a PLAIN entry: `user_<name>="<password>"`.
pub fn plain_users(entry: &JaasEntry) -> Result<BTreeMap<String, String>, String> {
    if entry.login_module != PLAIN_LOGIN_MODULE {
        return Err(format!("PLAIN needs {PLAIN_LOGIN_MODULE}, not {}", entry.login_module));
    }
    let users: BTreeMap<String, String> =
        entry.options.iter().filter_map(|(k, v)| k.strip_prefix("user_").map(|u| (u.to_string(), v.clone()))).collect();
    if users.is_empty() {
        return Err("no user_<name>=\"<password>\" option: no one could log in".into());
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_documented_plain_entry() {
        let e = parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required
               username="admin" password="admin-secret"
               user_admin="admin-secret" user_alice="al\"ice";"#,
        )
        .unwrap();
        assert_eq!(e.flag, "required");
        let users = plain_users(&e).unwrap();
        assert_eq!(users.get("admin").map(String::as_str), Some("admin-secret"));
        assert_eq!(users.get("alice").map(String::as_str), Some("al\"ice"));
        assert!(!users.contains_key("admin-secret"));
    }

    #[test]
    fn malformed_entries() {
        for bad in [
            "",
            "x.Module",
            "x.Module always;",
            "x.Module required a=\"b\"",
            "x.Module required a=\"b;",
            "x.Module required a;",
            "x.Module required; y.Module required;",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = parse("x.Module required user_a=b;").unwrap();
        assert!(plain_users(&e).is_err(), "not PLAIN's module");
    }
}
