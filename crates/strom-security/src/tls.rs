//! TLS settings under Kafka's key names, and the rustls configurations built from them.
//!
//! [`TlsSettings::from_keys`] reads the `ssl.*` keys of one listener (the caller resolves
//! `listener.name.<listener>.ssl.*` overrides before asking); [`TlsSettings::server_config`]
//! reads the key and certificate files and builds a rustls server configuration.
//!
//! **Rule: nothing weaker than asked.** A protocol version, cipher suite, keystore type or
//! key this module cannot honour is an error naming the key, never a silent fallback:
//! `ssl.enabled.protocols` may name only TLSv1.2 and TLSv1.3 (rustls has nothing older),
//! `ssl.cipher.suites` only suites rustls implements, `ssl.keystore.type` PEM or PKCS12.
//!
//! **Principal:** a client that presents a certificate (mTLS) is `User:<subject>`, the
//! subject written as Java's `X500Principal.getName()` writes it (RFC 2253: most specific
//! RDN first, `CN=alice,OU=eng,O=example`), which is what Kafka's default principal builder
//! gives and what ACLs and `super.users` are written against.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

pub use crate::principal::{NoMatchingRule, PrincipalMapper};

/// Why TLS settings cannot be used; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: {reason}")]
    Setting { key: String, reason: String },
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration refused by rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn setting(key: &str, reason: impl Into<String>) -> TlsError {
    TlsError::Setting { key: key.to_string(), reason: reason.into() }
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate asked for.
    None,
    /// Asked for; a client without one is let in (as `ANONYMOUS` on an SSL listener).
    Requested,
    /// A client without a certificate the truststore vouches for is refused.
    Required,
}

/// Where the broker's own key and certificate chain come from (`ssl.keystore.*`).
#[derive(Clone, PartialEq, Eq)]
pub enum KeyStore {
    /// `ssl.keystore.type=PEM`, `ssl.keystore.location`: one file with the private key
    /// (PKCS#8, PKCS#1 or SEC1, unencrypted) and the certificate chain.
    PemFile(PathBuf),
    /// `ssl.keystore.type=PEM` with `ssl.keystore.key` and `ssl.keystore.certificate.chain`
    /// given inline.
    PemInline { key: String, chain: String },
    /// `ssl.keystore.type=PKCS12`, `ssl.keystore.location`, `ssl.keystore.password`.
    Pkcs12 { path: PathBuf, password: String },
}

/// Which certificate authorities vouch for peers (`ssl.truststore.*`).
#[derive(Clone, PartialEq, Eq)]
pub enum TrustStore {
    PemFile(PathBuf),
    PemInline(String),
    Pkcs12 { path: PathBuf, password: String },
}

// Passwords and private keys never reach a log line.
impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyStore::PemFile(p) => f.debug_tuple("PemFile").field(p).finish(),
            KeyStore::PemInline { .. } => f.write_str("PemInline(..)"),
            KeyStore::Pkcs12 { path, .. } => f.debug_struct("Pkcs12").field("path", path).finish_non_exhaustive(),
        }
    }
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustStore::PemFile(p) => f.debug_tuple("PemFile").field(p).finish(),
            TrustStore::PemInline(_) => f.write_str("PemInline(..)"),
            TrustStore::Pkcs12 { path, .. } => f.debug_struct("Pkcs12").field("path", path).finish_non_exhaustive(),
        }
    }
}

/// One listener's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub keystore: KeyStore,
    pub truststore: Option<TrustStore>,
    pub client_auth: ClientAuth,
    /// `ssl.enabled.protocols`: TLSv1.2 and/or TLSv1.3.
    pub tls12: bool,
    pub tls13: bool,
    /// `ssl.cipher.suites` (IANA names); empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// `ssl.principal.mapping.rules`: a client certificate's subject to a principal name.
    pub principal_mapper: PrincipalMapper,
    /// `ssl.allow.dn.changes` / `ssl.allow.san.changes` (Kafka's, default false): whether a
    /// keystore replaced while the listener runs may bring a certificate with another subject
    /// / other subject alternative names.
    pub allow_dn_changes: bool,
    pub allow_san_changes: bool,
}

/// The `ssl.*` keys [`TlsSettings::from_keys`] reads (and so the ones a listener may set):
/// these and [`RECONFIGURABLE_KEYS`] ([`keys`] lists both).
pub const STATIC_KEYS: &[&str] = &[
    "ssl.client.auth",
    "ssl.enabled.protocols",
    "ssl.protocol",
    "ssl.cipher.suites",
    "ssl.endpoint.identification.algorithm",
    "ssl.principal.mapping.rules",
    "ssl.allow.dn.changes",
    "ssl.allow.san.changes",
];

/// Every `ssl.*` key a listener may set.
pub fn keys() -> impl Iterator<Item = &'static str> {
    RECONFIGURABLE_KEYS.iter().chain(STATIC_KEYS).copied()
}

/// Whether `key` is one of [`keys`].
pub fn is_key(key: &str) -> bool {
    RECONFIGURABLE_KEYS.contains(&key) || STATIC_KEYS.contains(&key)
}

/// The keys a running listener's TLS may change (Kafka's reconfigurable SSL configs): its
/// keystore and truststore. The rest (client auth, protocols, suites, mapping rules) needs a
/// restart.
pub const RECONFIGURABLE_KEYS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.password",
    "ssl.truststore.certificates",
];

/// The `(listener, key)` a dynamic broker config names, if it is one a running listener may
/// change: `listener.name.<listener>.<key>`, the listener name in lower case (as Kafka's
/// prefix writes it), `<key>` in [`RECONFIGURABLE_KEYS`] (Kafka takes dynamic SSL updates
/// only with the listener prefix).
pub fn reconfigurable(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("listener.name.")?;
    let (listener, key) = rest.split_once('.')?;
    let lower = !listener.is_empty() && !listener.bytes().any(|b| b.is_ascii_uppercase());
    (lower && RECONFIGURABLE_KEYS.contains(&key)).then_some((listener, key))
}

impl TlsSettings {
    /// Reads one listener's settings; `get(key)` answers a key's value (already resolved from
    /// the per-listener override, if any). An SSL or SASL_SSL listener needs a keystore.
    pub fn from_keys(raw_get: impl Fn(&str) -> Option<String>) -> Result<TlsSettings, TlsError> {
        let get = |k: &str| raw_get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let keystore_type = get("ssl.keystore.type").unwrap_or_else(|| "JKS".into()).to_ascii_uppercase();
        let inline_key = get("ssl.keystore.key");
        let inline_chain = get("ssl.keystore.certificate.chain");
        let location = get("ssl.keystore.location");
        let keystore = match (inline_key, inline_chain) {
            (Some(key), Some(chain)) => {
                if keystore_type != "PEM" {
                    return Err(setting("ssl.keystore.type", "inline keys (ssl.keystore.key) need the type PEM"));
                }
                if location.is_some() {
                    return Err(setting("ssl.keystore.location", "set either a location or inline PEM keys, not both"));
                }
                KeyStore::PemInline { key, chain }
            }
            (Some(_), None) => return Err(setting("ssl.keystore.certificate.chain", "needed with ssl.keystore.key")),
            (None, Some(_)) => return Err(setting("ssl.keystore.key", "needed with ssl.keystore.certificate.chain")),
            (None, None) => {
                let path = PathBuf::from(location.ok_or_else(|| {
                    setting("ssl.keystore.location", "a TLS listener needs a keystore (or ssl.keystore.key)")
                })?);
                match keystore_type.as_str() {
                    "PEM" => KeyStore::PemFile(path),
                    "PKCS12" => {
                        let password = get("ssl.keystore.password")
                            .ok_or_else(|| setting("ssl.keystore.password", "a PKCS12 keystore needs its password"))?;
                        KeyStore::Pkcs12 { path, password }
                    }
                    other => {
                        return Err(setting(
                            "ssl.keystore.type",
                            format!("{other} is not supported: use PEM or PKCS12 (convert a JKS store with keytool -importkeystore -deststoretype PKCS12)"),
                        ))
                    }
                }
            }
        };
        if let Some(kp) = get("ssl.key.password") {
            // A PKCS12 store holds the key under the store's password; encrypted PEM keys
            // are not read. A different password would be a key Strom cannot use.
            let same = matches!(&keystore, KeyStore::Pkcs12 { password, .. } if *password == kp);
            if !same {
                return Err(setting(
                    "ssl.key.password",
                    "encrypted private keys are not supported: use an unencrypted PEM key or a PKCS12 store whose key has the store's password",
                ));
            }
        }
        let truststore_type = get("ssl.truststore.type").unwrap_or_else(|| "JKS".into()).to_ascii_uppercase();
        let truststore = match (get("ssl.truststore.certificates"), get("ssl.truststore.location")) {
            (Some(_), Some(_)) => {
                return Err(setting("ssl.truststore.location", "set either a location or ssl.truststore.certificates"))
            }
            (Some(pem), None) => Some(TrustStore::PemInline(pem)),
            (None, Some(path)) => Some(match truststore_type.as_str() {
                "PEM" => TrustStore::PemFile(path.into()),
                "PKCS12" => TrustStore::Pkcs12 {
                    path: path.into(),
                    password: get("ssl.truststore.password")
                        .ok_or_else(|| setting("ssl.truststore.password", "a PKCS12 truststore needs its password"))?,
                },
                other => {
                    return Err(setting("ssl.truststore.type", format!("{other} is not supported: use PEM or PKCS12")))
                }
            }),
            (None, None) => None,
        };
        let client_auth = match get("ssl.client.auth").unwrap_or_else(|| "none".into()).to_ascii_lowercase().as_str() {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            other => return Err(setting("ssl.client.auth", format!("{other}: expected none, requested or required"))),
        };
        if client_auth != ClientAuth::None && truststore.is_none() {
            return Err(setting(
                "ssl.truststore.location",
                "ssl.client.auth needs a truststore to check clients against",
            ));
        }
        let (mut tls12, mut tls13) = (false, false);
        for p in get("ssl.enabled.protocols").unwrap_or_else(|| "TLSv1.2,TLSv1.3".into()).split(',') {
            match p.trim() {
                "TLSv1.2" => tls12 = true,
                "TLSv1.3" => tls13 = true,
                "" => {}
                other => {
                    return Err(setting(
                        "ssl.enabled.protocols",
                        format!("{other} is not supported (TLSv1.2 and TLSv1.3 are; older versions are insecure)"),
                    ))
                }
            }
        }
        if !tls12 && !tls13 {
            return Err(setting("ssl.enabled.protocols", "enables no protocol"));
        }
        if let Some(p) = get("ssl.protocol") {
            if !["TLS", "TLSv1.2", "TLSv1.3"].contains(&p.as_str()) {
                return Err(setting("ssl.protocol", format!("{p} is not supported (TLS, TLSv1.2 or TLSv1.3)")));
            }
        }
        // Host name verification of servers (this node as a client of other brokers): Kafka's
        // default `https`; turning it off is not offered (it would weaken what was asked).
        if let Some(a) = raw_get("ssl.endpoint.identification.algorithm").map(|v| v.trim().to_string()) {
            if !a.eq_ignore_ascii_case("https") {
                return Err(setting(
                    "ssl.endpoint.identification.algorithm",
                    format!("{a}: only https (verify the server's host name) is supported"),
                ));
            }
        }
        let cipher_suites: Vec<String> = get("ssl.cipher.suites")
            .map(|s| s.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect())
            .unwrap_or_default();
        let principal_mapper = match get("ssl.principal.mapping.rules") {
            Some(rules) => PrincipalMapper::parse(&rules).map_err(|e| setting("ssl.principal.mapping.rules", e.0))?,
            None => PrincipalMapper::default(),
        };
        let flag = |key: &str| match get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(setting(key, format!("expected true or false, got {other}"))),
        };
        let allow_dn_changes = flag("ssl.allow.dn.changes")?;
        let allow_san_changes = flag("ssl.allow.san.changes")?;
        let settings = TlsSettings {
            keystore,
            truststore,
            client_auth,
            tls12,
            tls13,
            cipher_suites,
            principal_mapper,
            allow_dn_changes,
            allow_san_changes,
        };
        settings.provider()?; // unknown suite names fail here, at start
        Ok(settings)
    }

    /// The crypto provider: ring's, narrowed to `ssl.cipher.suites` when set. (rustls marks
    /// ring's provider deprecated for lacking post-quantum key exchange; aws-lc-rs has it but
    /// needs cmake and a C build this project's machines do not carry.)
    #[allow(deprecated)]
    fn provider(&self) -> Result<CryptoProvider, TlsError> {
        let mut provider = rustls::crypto::ring::default_provider();
        if self.cipher_suites.is_empty() {
            return Ok(provider);
        }
        let mut chosen = Vec::new();
        for name in &self.cipher_suites {
            let found = provider.cipher_suites.iter().find(|s| suite_name(s) == name.as_str()).ok_or_else(|| {
                let known: Vec<String> = provider.cipher_suites.iter().map(suite_name).collect();
                setting("ssl.cipher.suites", format!("{name} is not supported; supported: {}", known.join(", ")))
            })?;
            chosen.push(*found);
        }
        provider.cipher_suites = chosen;
        Ok(provider)
    }

    fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let mut v = Vec::new();
        if self.tls13 {
            v.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }

    /// Reads the keystore (and truststore) and builds the server side of a listener.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(self.provider()?);
        let (chain, key) = load_keystore(&self.keystore)?;
        let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&self.versions())?;
        let builder = match (self.client_auth, &self.truststore) {
            (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
            (auth, Some(trust)) => {
                let roots = Arc::new(load_truststore(trust)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = if auth == ClientAuth::Requested { verifier.allow_unauthenticated() } else { verifier };
                let verifier = verifier
                    .build()
                    .map_err(|e| setting("ssl.truststore.location", format!("cannot check clients with it: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key_name = match &self.keystore {
            KeyStore::PemInline { .. } => "ssl.keystore.key",
            _ => "ssl.keystore.location",
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| setting(key_name, format!("the key does not match the certificate or is unusable: {e}")))?;
        Ok(Arc::new(config))
    }

    /// The client side, for this node's own connections to other brokers on this listener:
    /// servers are checked against the truststore (which must be given) and their host name
    /// (`ssl.endpoint.identification.algorithm=https`, Kafka's default); the keystore is
    /// presented as the client certificate (so mTLS listeners let brokers in).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = Arc::new(self.provider()?);
        let trust = self.truststore.as_ref().ok_or_else(|| {
            setting(
                "ssl.truststore.location",
                "this node connects to the listener on other nodes over TLS: it needs a truststore",
            )
        })?;
        let roots = load_truststore(trust)?;
        let (chain, key) = load_keystore(&self.keystore)?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&self.versions())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| setting("ssl.keystore.location", format!("unusable as a client certificate: {e}")))?;
        Ok(Arc::new(config))
    }

    /// The principal name of a client that presented `chain` (its first certificate is its
    /// own): the subject mapped by `ssl.principal.mapping.rules`. `Ok(None)`: no certificate.
    pub fn principal_of(&self, chain: Option<&[CertificateDer<'_>]>) -> Result<Option<String>, NoMatchingRule> {
        let Some(subject) = chain.and_then(|c| c.first()).and_then(subject_of) else { return Ok(None) };
        self.principal_mapper.name(&subject).map(Some)
    }

    /// The principal name this node has when it presents its own certificate (the keystore's)
    /// to a listener with these settings: the subject, mapped by the rules.
    pub fn own_principal(&self) -> Result<String, TlsError> {
        let (chain, _) = load_keystore(&self.keystore)?;
        let subject = chain
            .first()
            .and_then(subject_of)
            .ok_or_else(|| setting("ssl.keystore.location", "the certificate's subject cannot be read"))?;
        self.principal_mapper.name(&subject).map_err(|e| setting("ssl.principal.mapping.rules", e.to_string()))
    }

    /// Reads the keystore and the truststore (when one is set), whether or not a side of the
    /// listener uses it: a store that is given must be usable.
    pub fn load_all(&self) -> Result<(), TlsError> {
        load_keystore(&self.keystore)?;
        if let Some(t) = &self.truststore {
            load_truststore(t)?;
        }
        Ok(())
    }

    /// Who the keystore's certificate says this node is: its subject and its subject
    /// alternative names (DNS names and IP addresses), as a replaced keystore is compared.
    pub fn identity(&self) -> Result<CertificateIdentity, TlsError> {
        let (chain, _) = load_keystore(&self.keystore)?;
        let cert = chain.first().ok_or_else(|| setting("ssl.keystore.location", "holds no certificate"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| setting("ssl.keystore.location", format!("the certificate does not parse: {e}")))?;
        let mut sans: Vec<String> = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| ext.value.general_names.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default();
        sans.sort();
        Ok(CertificateIdentity { subject: subject_of(cert).unwrap_or_default(), sans })
    }

    /// Kafka's rule for a keystore replaced while the listener runs: the new certificate must
    /// have the subject and the subject alternative names of `current`, unless
    /// `ssl.allow.dn.changes` / `ssl.allow.san.changes` allow it.
    pub fn check_identity(&self, current: &CertificateIdentity) -> Result<CertificateIdentity, TlsError> {
        let new = self.identity()?;
        if new.subject != current.subject && !self.allow_dn_changes {
            return Err(setting(
                "ssl.keystore.location",
                format!(
                    "the new certificate's subject {} is not the current one's ({}); set ssl.allow.dn.changes=true \
                     to allow it",
                    new.subject, current.subject
                ),
            ));
        }
        if new.sans != current.sans && !self.allow_san_changes {
            return Err(setting(
                "ssl.keystore.location",
                format!(
                    "the new certificate's subject alternative names {:?} are not the current one's ({:?}); set \
                     ssl.allow.san.changes=true to allow it",
                    new.sans, current.sans
                ),
            ));
        }
        Ok(new)
    }

    /// The files this listener's TLS reads (watched for changes: a changed file reloads).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        match &self.keystore {
            KeyStore::PemFile(p) | KeyStore::Pkcs12 { path: p, .. } => out.push(p.clone()),
            KeyStore::PemInline { .. } => {}
        }
        match &self.truststore {
            Some(TrustStore::PemFile(p)) | Some(TrustStore::Pkcs12 { path: p, .. }) => out.push(p.clone()),
            _ => {}
        }
        out
    }
}

/// A client that only checks servers (a tool, a plain client): the trust roots from a PEM
/// file or a PKCS12 store, TLSv1.2/1.3, no client certificate. `key` names the setting in
pub fn client_trusting(store: &TrustStore) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = load_truststore(store)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A suite's IANA name (`TLS_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384`),
/// as Kafka's `ssl.cipher.suites` lists them.
fn suite_name(s: &rustls::SupportedCipherSuite) -> String {
    let name = s.suite().as_str().unwrap_or("").to_string();
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// The largest keystore or truststore file read (a CA bundle is a few hundred KiB).
pub const MAX_STORE_BYTES: u64 = 16 * 1024 * 1024;

/// A store file: a regular file (not a pipe or device that could block or never end) of at
/// most [`MAX_STORE_BYTES`].
fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let fail = |source| TlsError::Read { key: key.into(), path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(fail)?;
    if !meta.is_file() {
        return Err(setting(key, format!("{} is not a regular file", path.display())));
    }
    if meta.len() > MAX_STORE_BYTES {
        return Err(setting(key, format!("{} is over {MAX_STORE_BYTES} bytes", path.display())));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path).and_then(|f| f.take(MAX_STORE_BYTES).read_to_end(&mut out)).map_err(fail)?;
    Ok(out)
}

/// The subject and subject alternative names of a node's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateIdentity {
    pub subject: String,
    pub sans: Vec<String>,
}

fn pem_certs(key: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setting(key, format!("unreadable PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(setting(key, "holds no certificate"));
    }
    Ok(certs)
}

fn pem_key(key: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| setting(key, format!("no unencrypted private key (PKCS#8, PKCS#1 or SEC1 PEM) found: {e}")))
}

fn pkcs12(key: &str, path: &Path, password: &str) -> Result<p12_keystore::KeyStore, TlsError> {
    let data = read(key, path)?;
    p12_keystore::KeyStore::from_pkcs12(&data, password)
        .map_err(|e| setting(key, format!("cannot open the PKCS12 store {} (wrong password?): {e}", path.display())))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn load_keystore(store: &KeyStore) -> Result<Identity, TlsError> {
    match store {
        KeyStore::PemFile(path) => {
            let key = "ssl.keystore.location";
            let pem = read(key, path)?;
            Ok((pem_certs(key, &pem)?, pem_key(key, &pem)?))
        }
        KeyStore::PemInline { key, chain } => Ok((
            pem_certs("ssl.keystore.certificate.chain", chain.as_bytes())?,
            pem_key("ssl.keystore.key", key.as_bytes())?,
        )),
        KeyStore::Pkcs12 { path, password } => {
            let key = "ssl.keystore.location";
            let store = pkcs12(key, path, password)?;
            let (_, chain) =
                store.private_key_chain().ok_or_else(|| setting(key, "the PKCS12 store holds no private key"))?;
            let certs: Vec<CertificateDer<'static>> =
                chain.chain().iter().map(|c| CertificateDer::from(c.as_der().to_vec())).collect();
            if certs.is_empty() {
                return Err(setting(key, "the PKCS12 store's key has no certificate"));
            }
            Ok((certs, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().to_vec()))))
        }
    }
}

fn load_truststore(store: &TrustStore) -> Result<RootCertStore, TlsError> {
    let key = match store {
        TrustStore::PemInline(_) => "ssl.truststore.certificates",
        _ => "ssl.truststore.location",
    };
    let certs = match store {
        TrustStore::PemFile(path) => pem_certs(key, &read(key, path)?)?,
        TrustStore::PemInline(pem) => pem_certs(key, pem.as_bytes())?,
        TrustStore::Pkcs12 { path, password } => {
            let store = pkcs12(key, path, password)?;
            let mut certs = Vec::new();
            for (_, entry) in store.entries() {
                match entry {
                    p12_keystore::KeyStoreEntry::Certificate(c) => {
                        certs.push(CertificateDer::from(c.as_der().to_vec()))
                    }
                    p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                        certs.extend(chain.chain().iter().map(|c| CertificateDer::from(c.as_der().to_vec())))
                    }
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            }
            certs
        }
    };
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| setting(key, format!("a certificate cannot be trusted: {e}")))?;
    }
    if roots.is_empty() {
        return Err(setting(
            key,
            "holds no trusted certificate (a PKCS12 truststore's certificates must be trusted entries, \
             as keytool -importcert writes them; or use a PEM truststore)",
        ));
    }
    Ok(roots)
}

/// The principal name of a peer's certificate: its subject in RFC 2253 form, most specific
/// RDN first (`CN=alice,OU=eng,O=example`), as Kafka's default principal builder writes it.
/// `None` for a certificate that does not parse (a verified one always does).
pub fn subject_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut rdns = Vec::new();
    for rdn in parsed.subject().iter_rdn() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let oid = attr.attr_type();
                let name = x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| oid.to_id_string());
                let value = attr.as_str().map(escape_rfc2253).unwrap_or_default();
                format!("{name}={value}")
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// RFC 2253 escaping of an attribute value.
fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
