//! The cluster id: Kafka's form (a random v4 UUID as 22 characters of URL-safe base64, no
//! padding, what `kafka-storage.sh random-uuid` prints). It is chosen once, when the first
//! broker registers with a quorum whose metadata log has none: the id the active controller's
//! `meta.properties` holds (from `strom storage format`), else the registering broker's, else
//! a fresh one. It is written to the log as a record, so every node of the cluster agrees on
//! it, and every node keeps it in its `meta.properties`; a node whose stored id differs from
//! the log's refuses to join (INCONSISTENT_CLUSTER_ID).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};

/// Kafka decodes ids with Java's lenient URL-safe decoder: unused trailing bits are ignored.
const LENIENT_URL_SAFE_NO_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// A new random cluster id. Like Kafka's `Uuid.randomUuid`, never one that starts with `-`
/// (a command line would take it for a flag).
pub fn generate() -> String {
    loop {
        let id = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// A cluster id that is not Kafka's form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cluster id {0:?} is not a base64url-encoded 16-byte UUID (22 characters, as `strom storage random-uuid` prints)"
)]
pub struct InvalidClusterId(pub String);

/// Checks that `id` is Kafka's form (what `kafka-storage.sh format -t` accepts).
pub fn validate(id: &str) -> Result<(), InvalidClusterId> {
    match LENIENT_URL_SAFE_NO_PAD.decode(id) {
        Ok(bytes) if bytes.len() == 16 && id.len() == 22 => Ok(()),
        _ => Err(InvalidClusterId(id.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 22);
        assert!((0..2000).map(|_| generate()).all(|id| !id.starts_with('-')));
        assert!(validate(&a).is_ok() && validate(&b).is_ok());
        assert_ne!(a, b);
        // The one in Kafka's quickstart, and one with unused trailing bits set, which Java's
        // decoder (and so Kafka) accepts.
        assert!(validate("MkU3OEVBNTcwNTJENDM2Qg").is_ok());
        assert!(validate("MkU3OEVBNTcwNTJENDM2Qk").is_ok());
        assert!(validate("strom-cluster").is_err());
        assert!(validate("").is_err());
        assert!(validate("MkU3OEVBNTcwNTJENDM2Qk==").is_err());
    }
}
