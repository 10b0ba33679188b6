//! strom-security: who is on the other end of a connection.
//!
//! # Layout
//! - [`tls`]: one listener's `ssl.*` settings under Kafka's key names, the rustls server
//!   configuration built from them (PEM or PKCS12 keystores and truststores, client
//!   authentication, protocol versions, cipher suites), and the principal of a client
//!   certificate.
//! - [`principal`]: `ssl.principal.mapping.rules`, a certificate subject to a principal name.
//! - [`reload`]: a listener's TLS in use, rebuilt when its certificate files change.
//! - [`sasl`]: the SASL mechanisms served (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), one
//!   authentication's exchange, Kafka's JAAS config entries, SCRAM credentials.
//!
//! **Architecture invariant:** no setting silently weakens security: a value this crate
//! cannot honour is an error that names its key (see [`tls`]'s rule).

pub mod principal;
pub mod reload;
pub mod sasl;
pub mod tls;

/// The rustls this crate builds configurations for (so users name the same types).
pub use rustls;

/// A principal's name when nothing authenticated the connection (PLAINTEXT, or TLS without
/// a client certificate), as Kafka's `User:ANONYMOUS`.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// Whether a config key holds a secret: DescribeConfigs answers it as sensitive, with no
/// value (as Kafka's `ConfigDef.Type.PASSWORD` keys), and logs never print it.
pub fn is_sensitive(key: &str) -> bool {
    // Kafka's PASSWORD-typed keys: passwords, the inline key, and (as Kafka types them) the
    // inline certificate chain and trusted certificates.
    key.ends_with(".password")
        || key.ends_with("ssl.keystore.key")
        || key.ends_with("ssl.keystore.certificate.chain")
        || key.ends_with("ssl.truststore.certificates")
        || key.ends_with("sasl.jaas.config")
}
