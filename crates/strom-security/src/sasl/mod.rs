//! SASL on the server side: the mechanisms Strom serves and the exchange of one
//! authentication.
//!
//! A [`SaslServer`] is made per authentication for the mechanism the client chose in
//! SaslHandshake; each token the client sends goes to [`SaslServer::step`], which answers with
//! the next challenge or, at the end, the authenticated user. Any failure is one
//! [`SaslError`]: the broker answers SASL_AUTHENTICATION_FAILED with its message (which never
//! carries a password) and closes the connection.

pub mod jaas;
pub mod plain;
pub mod scram;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use scram::{ScramCredential, ScramMechanism};

/// A SASL mechanism Strom can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    /// Kafka's name (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            other => ScramMechanism::from_name(other).map(Mechanism::Scram),
        }
    }
}

/// Why an authentication failed. The message goes to the client: it names no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("Authentication failed: Invalid username or password")]
    BadCredentials,
    #[error("Authentication failed during authentication due to invalid credentials with SASL mechanism {0}")]
    ScramBadProof(&'static str),
    #[error("malformed SASL message: {0}")]
    Malformed(String),
    #[error("the SASL exchange is already finished")]
    Finished,
}

/// How the broker checks a user: PLAIN passwords from the listener's JAAS config, SCRAM
/// credentials from the metadata log (looked up when a client authenticates, so a credential
/// altered a moment ago counts).
pub trait CredentialStore: Send + Sync {
    /// The SCRAM credential of `user` for `mechanism`, if it has one.
    fn scram(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
}

/// One listener's SASL: the mechanisms it enables (`sasl.enabled.mechanisms`) and PLAIN's users.
#[derive(Clone)]
pub struct SaslConfig {
    pub mechanisms: Vec<Mechanism>,
    /// `user_<name>="<password>"` of `listener.name.<l>.plain.sasl.jaas.config`.
    pub plain_users: BTreeMap<String, String>,
    /// `connections.max.reauth.ms` (KIP-368); `None`: sessions do not expire.
    pub max_reauth_ms: Option<u64>,
}

impl std::fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Passwords never reach a log line.
        f.debug_struct("SaslConfig")
            .field("mechanisms", &self.mechanisms)
            .field("plain_users", &self.plain_users.keys().collect::<Vec<_>>())
            .field("max_reauth_ms", &self.max_reauth_ms)
            .finish()
    }
}

/// The server side of one authentication.
pub enum SaslServer {
    Plain { users: BTreeMap<String, String>, done: bool },
    Scram(Box<scram::ScramServer>),
}

/// What a step of the exchange gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge; the client answers with another token.
    Challenge(Vec<u8>),
    /// Authenticated as this user; send the final bytes (possibly empty).
    Done { user: String, response: Vec<u8> },
}

impl SaslServer {
    pub fn new(mechanism: Mechanism, config: &SaslConfig, store: Arc<dyn CredentialStore>) -> SaslServer {
        match mechanism {
            Mechanism::Plain => SaslServer::Plain { users: config.plain_users.clone(), done: false },
            Mechanism::Scram(m) => SaslServer::Scram(Box::new(scram::ScramServer::new(m, store))),
        }
    }

    /// Takes the client's next token.
    pub fn step(&mut self, token: &[u8]) -> Result<Step, SaslError> {
        match self {
            SaslServer::Plain { users, done } => {
                if *done {
                    return Err(SaslError::Finished);
                }
                *done = true;
                let user = plain::authenticate(token, |u| users.get(u).cloned())?;
                Ok(Step::Done { user, response: Vec::new() })
            }
            SaslServer::Scram(s) => s.step(token),
        }
    }
}

/// Compares secrets without returning early at the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
