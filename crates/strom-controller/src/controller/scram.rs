//! SCRAM credentials (KIP-554): AlterUserScramCredentials turns into
//! [`MetadataRecord::ScramCredential`] / [`MetadataRecord::RemoveScramCredential`] records.
//!
//! **Rules (Kafka's ScramControlManager):** one result per user named in the request; a user
//! named twice (in upsertions or deletions) is DUPLICATE_RESOURCE and nothing of it changes;
//! an empty name or iterations outside 4096..=16384 is UNACCEPTABLE_CREDENTIAL; a mechanism
//! other than SCRAM-SHA-256 (1) and SCRAM-SHA-512 (2) is UNSUPPORTED_SASL_MECHANISM; deleting
//! a credential that does not exist is RESOURCE_NOT_FOUND. A user's changes commit together.
//! The salted password arrives from the client; only StoredKey and ServerKey are kept.

use std::collections::BTreeMap;

use strom_metadata::image::MetadataImage;
use strom_metadata::records::MetadataRecord;
use strom_security::sasl::scram::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};

use super::{Controller, ControllerError};

pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const RESOURCE_NOT_FOUND: i16 = 91;
pub const DUPLICATE_RESOURCE: i16 = 92;
pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;

/// One change asked for.
#[derive(Debug, Clone)]
pub enum ScramChange {
    Upsert { user: String, mechanism: i8, iterations: i32, salt: Vec<u8>, salted_password: Vec<u8> },
    Delete { user: String, mechanism: i8 },
}

impl ScramChange {
    fn user(&self) -> &str {
        match self {
            ScramChange::Upsert { user, .. } | ScramChange::Delete { user, .. } => user,
        }
    }
}

/// A user's result: Kafka's error code and message (0 and `None` on success).
pub type UserResult = (String, i16, Option<String>);

fn check(image: &MetadataImage, change: &ScramChange) -> Result<MetadataRecord, (i16, String)> {
    let (user, mechanism) = match change {
        ScramChange::Upsert { user, mechanism, .. } | ScramChange::Delete { user, mechanism } => (user, *mechanism),
    };
    if user.is_empty() {
        return Err((UNACCEPTABLE_CREDENTIAL, "Username must not be empty".into()));
    }
    let m = ScramMechanism::from_kafka_type(mechanism)
        .ok_or_else(|| (UNSUPPORTED_SASL_MECHANISM, format!("Unknown SCRAM mechanism {mechanism}")))?;
    match change {
        ScramChange::Upsert { iterations, salt, salted_password, .. } => {
            if *iterations < MIN_ITERATIONS {
                return Err((UNACCEPTABLE_CREDENTIAL, format!("Too few iterations ({iterations} < {MIN_ITERATIONS})")));
            }
            if *iterations > MAX_ITERATIONS {
                return Err((
                    UNACCEPTABLE_CREDENTIAL,
                    format!("Too many iterations ({iterations} > {MAX_ITERATIONS})"),
                ));
            }
            if salt.is_empty() || salted_password.is_empty() {
                return Err((UNACCEPTABLE_CREDENTIAL, "Salt and salted password must not be empty".into()));
            }
            let c = ScramCredential::from_salted_password(m, salt, salted_password, *iterations as u32);
            Ok(MetadataRecord::ScramCredential {
                user: user.clone(),
                mechanism: m.name().into(),
                salt: c.salt,
                stored_key: c.stored_key,
                server_key: c.server_key,
                iterations: c.iterations,
            })
        }
        ScramChange::Delete { .. } => {
            if !image.scram_credentials.get(user).is_some_and(|c| c.contains_key(m.name())) {
                return Err((RESOURCE_NOT_FOUND, "Attempt to delete a user credential that does not exist".into()));
            }
            Ok(MetadataRecord::RemoveScramCredential { user: user.clone(), mechanism: m.name().into() })
        }
    }
}

impl Controller {
    /// AlterUserScramCredentials: the rules at the top of this module. Returns one result per
    /// user, in the order users first appear, and the metadata offset of the change.
    pub async fn alter_scram_credentials(
        &self,
        changes: Vec<ScramChange>,
    ) -> Result<(Vec<UserResult>, i64), ControllerError> {
        self.check_active()?;
        self.write(|image| {
            let mut order: Vec<String> = Vec::new();
            let mut by_user: BTreeMap<String, Vec<&ScramChange>> = BTreeMap::new();
            for c in &changes {
                if !by_user.contains_key(c.user()) {
                    order.push(c.user().to_string());
                }
                by_user.entry(c.user().to_string()).or_default().push(c);
            }
            let mut records = Vec::new();
            let mut results = Vec::new();
            for user in order {
                let mine = &by_user[&user];
                let mut seen = std::collections::BTreeSet::new();
                let duplicate = mine.iter().any(|c| {
                    let m = match c {
                        ScramChange::Upsert { mechanism, .. } | ScramChange::Delete { mechanism, .. } => *mechanism,
                    };
                    !seen.insert(m)
                });
                if duplicate {
                    let msg = "A user credential cannot be altered twice in the same request";
                    results.push((user, DUPLICATE_RESOURCE, Some(msg.to_string())));
                    continue;
                }
                match mine.iter().map(|c| check(image, c)).collect::<Result<Vec<_>, _>>() {
                    Ok(rs) => {
                        records.extend(rs);
                        results.push((user, 0, None));
                    }
                    Err((code, msg)) => results.push((user, code, Some(msg))),
                }
            }
            Ok((records, results))
        })
        .await
    }
}
