//! SASL PLAIN (RFC 4616): one message, `[authzid] NUL authcid NUL passwd`.
//!
//! As Kafka's PlainSaslServer: an authorization id, when given, must equal the user; the user
//! must be one of the listener's JAAS `user_<name>` entries with that password.

use super::{constant_time_eq, SaslError};

/// Checks one PLAIN message; returns the user. `password_of(user)` is the configured password.
pub fn authenticate(message: &[u8], password_of: impl Fn(&str) -> Option<String>) -> Result<String, SaslError> {
    let text = std::str::from_utf8(message).map_err(|_| SaslError::Malformed("PLAIN message is not UTF-8".into()))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed("PLAIN message must be [authzid] NUL user NUL password".into()));
    };
    if user.is_empty() {
        return Err(SaslError::Malformed("PLAIN message has no user name".into()));
    }
    if password.is_empty() {
        return Err(SaslError::Malformed("PLAIN message has no password".into()));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::Malformed("the authorization id must be the user (or empty)".into()));
    }
    match password_of(user) {
        Some(expected) if constant_time_eq(expected.as_bytes(), password.as_bytes()) => Ok(user.to_string()),
        _ => Err(SaslError::BadCredentials),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(msg: &[u8]) -> Result<String, SaslError> {
        authenticate(msg, |u| (u == "alice").then(|| "alice-secret".to_string()))
    }

    #[test]
    fn plain_messages() {
        assert_eq!(check(b"\0alice\0alice-secret"), Ok("alice".into()));
        assert_eq!(check(b"alice\0alice\0alice-secret"), Ok("alice".into()));
        assert_eq!(check(b"\0alice\0wrong"), Err(SaslError::BadCredentials));
        assert_eq!(check(b"\0bob\0alice-secret"), Err(SaslError::BadCredentials));
        assert!(matches!(check(b"bob\0alice\0alice-secret"), Err(SaslError::Malformed(_))));
        assert!(matches!(check(b"alice-secret"), Err(SaslError::Malformed(_))));
        assert!(matches!(check(b"\0\0x"), Err(SaslError::Malformed(_))));
        assert!(matches!(check(b"\0alice\0"), Err(SaslError::Malformed(_))));
        assert!(matches!(check(&[0, 0xff, 0, 1]), Err(SaslError::Malformed(_))));
    }
}
