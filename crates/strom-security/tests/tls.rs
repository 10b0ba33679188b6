//! TLS settings as a node's configuration gives them: what is refused (with the key named),
//! stores of each kind read into a working rustls configuration, and the mTLS principal.

use std::collections::HashMap;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use strom_security::rustls::pki_types::CertificateDer;
use strom_security::tls::{ClientAuth, TlsError, TlsSettings};

struct Pki {
    dir: tempfile::TempDir,
    ca_der: Vec<u8>,
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
    server_cert_pem: String,
    server_der: Vec<u8>,
    server_key_der: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(vec![]).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    // Encoded in this order (rcgen's default CN would otherwise come first).
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "strom");
    params.distinguished_name.push(DnType::OrganizationalUnitName, "test");
    params.distinguished_name.push(DnType::CommonName, "alice");
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        dir: tempfile::tempdir().unwrap(),
        ca_der: ca.der().to_vec(),
        ca_pem: ca.pem(),
        server_pem: format!("{}{}", key.serialize_pem(), cert.pem()),
        server_key_pem: key.serialize_pem(),
        server_cert_pem: cert.pem(),
        server_der: cert.der().to_vec(),
        server_key_der: key.serialize_der(),
    }
}

fn settings(keys: &[(&str, &str)]) -> Result<TlsSettings, TlsError> {
    let map: HashMap<String, String> = keys.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    TlsSettings::from_keys(|k| map.get(k).cloned())
}

fn refused_key(keys: &[(&str, &str)]) -> String {
    match settings(keys).and_then(|s| s.server_config().map(|_| s)) {
        Ok(_) => panic!("{keys:?} was accepted"),
        Err(TlsError::Setting { key, .. }) | Err(TlsError::Read { key, .. }) => key,
        Err(e) => panic!("{keys:?}: {e}"),
    }
}

#[test]
fn settings_strom_cannot_honour_are_refused_with_the_key_named() {
    let p = pki();
    let pem = p.dir.path().join("server.pem");
    std::fs::write(&pem, &p.server_pem).unwrap();
    let pem = pem.to_str().unwrap();
    assert_eq!(refused_key(&[]), "ssl.keystore.location");
    assert_eq!(refused_key(&[("ssl.keystore.location", "/k.jks")]), "ssl.keystore.type"); // JKS, the default
    assert_eq!(
        refused_key(&[("ssl.keystore.type", "PEM"), ("ssl.keystore.location", "/nonexistent")]),
        "ssl.keystore.location"
    );
    assert_eq!(
        refused_key(&[("ssl.keystore.type", "PKCS12"), ("ssl.keystore.location", pem)]),
        "ssl.keystore.password"
    );
    let base = [("ssl.keystore.type", "PEM"), ("ssl.keystore.location", pem)];
    for (extra, key) in [
        (("ssl.enabled.protocols", "TLSv1.1,TLSv1.2"), "ssl.enabled.protocols"),
        (("ssl.cipher.suites", "TLS_RSA_WITH_RC4_128_MD5"), "ssl.cipher.suites"),
        (("ssl.client.auth", "required"), "ssl.truststore.location"),
        (("ssl.client.auth", "sometimes"), "ssl.client.auth"),
        (("ssl.key.password", "secret"), "ssl.key.password"),
        (("ssl.protocol", "SSLv3"), "ssl.protocol"),
    ] {
        assert_eq!(refused_key(&[base[0], base[1], extra]), key, "{extra:?}");
    }
    // A keystore whose key is not the certificate's.
    let other = KeyPair::generate().unwrap().serialize_pem();
    let mismatched = [
        ("ssl.keystore.type", "PEM"),
        ("ssl.keystore.key", other.as_str()),
        ("ssl.keystore.certificate.chain", p.server_cert_pem.as_str()),
    ];
    assert_eq!(refused_key(&mismatched), "ssl.keystore.key");
}

#[test]
fn every_kind_of_store_makes_a_server_configuration() {
    let p = pki();
    let dir = p.dir.path();
    std::fs::write(dir.join("server.pem"), &p.server_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), &p.ca_pem).unwrap();
    // PKCS12 stores as keytool writes them: the key with its chain, the CA as a trusted entry.
    let mut ks = p12_keystore::KeyStore::new();
    let chain = vec![
        p12_keystore::Certificate::from_der(&p.server_der).unwrap(),
        p12_keystore::Certificate::from_der(&p.ca_der).unwrap(),
    ];
    let key = p12_keystore::PrivateKeyChain::new(&p.server_key_der, [1u8; 20], chain);
    ks.add_entry("broker", p12_keystore::KeyStoreEntry::PrivateKeyChain(key));
    std::fs::write(dir.join("server.p12"), ks.writer("pw").write().unwrap()).unwrap();
    let mut ts = p12_keystore::KeyStore::new();
    ts.add_entry(
        "ca",
        p12_keystore::KeyStoreEntry::Certificate(p12_keystore::Certificate::from_der(&p.ca_der).unwrap()),
    );
    std::fs::write(dir.join("ca.p12"), ts.writer("pw").write().unwrap()).unwrap();
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (server_pem, server_p12, ca_pem, ca_p12) =
        (path("server.pem"), path("server.p12"), path("ca.pem"), path("ca.p12"));
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("ssl.keystore.type", "PEM"), ("ssl.keystore.location", &server_pem)],
        vec![
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.key", &p.server_key_pem),
            ("ssl.keystore.certificate.chain", &p.server_cert_pem),
        ],
        vec![
            ("ssl.keystore.type", "PKCS12"),
            ("ssl.keystore.location", &server_p12),
            ("ssl.keystore.password", "pw"),
            ("ssl.key.password", "pw"),
            ("ssl.truststore.type", "PKCS12"),
            ("ssl.truststore.location", &ca_p12),
            ("ssl.truststore.password", "pw"),
            ("ssl.client.auth", "required"),
        ],
        vec![
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", &server_pem),
            ("ssl.truststore.type", "PEM"),
            ("ssl.truststore.location", &ca_pem),
            ("ssl.client.auth", "requested"),
            ("ssl.enabled.protocols", "TLSv1.3"),
            ("ssl.cipher.suites", "TLS_AES_256_GCM_SHA384,TLS_CHACHA20_POLY1305_SHA256"),
        ],
        vec![
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", &server_pem),
            ("ssl.truststore.certificates", &p.ca_pem),
            ("ssl.client.auth", "required"),
        ],
    ];
    for keys in cases {
        let s = settings(&keys).unwrap_or_else(|e| panic!("{keys:?}: {e}"));
        s.server_config().unwrap_or_else(|e| panic!("{keys:?}: {e}"));
    }
    let s = settings(&[
        ("ssl.keystore.type", "PEM"),
        ("ssl.keystore.location", &server_pem),
        ("ssl.truststore.location", &ca_p12),
        ("ssl.truststore.type", "PKCS12"),
        ("ssl.truststore.password", "pw"),
        ("ssl.client.auth", "required"),
    ])
    .unwrap();
    assert_eq!(s.client_auth, ClientAuth::Required);
    assert_eq!(s.files().len(), 2);
    // A wrong password names the store.
    let wrong = [
        ("ssl.keystore.type", "PKCS12"),
        ("ssl.keystore.location", server_p12.as_str()),
        ("ssl.keystore.password", "nope"),
    ];
    assert_eq!(refused_key(&wrong), "ssl.keystore.location");
}

#[test]
fn the_principal_of_a_client_certificate_is_its_subject_as_kafka_writes_it() {
    let p = pki();
    let subject = strom_security::tls::subject_of(&CertificateDer::from(p.server_der)).unwrap();
    // RFC 2253, most specific first (X500Principal.getName()).
    assert_eq!(subject, "CN=alice,OU=test,O=strom");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Random bytes and truncated handshakes into the server side of TLS: an error or a wait
    /// for more, never a panic, and nothing read as application data.
    #[test]
    fn random_bytes_never_pass_the_tls_handshake(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), 1..6),
        looks_like_tls in proptest::prelude::any::<bool>(),
    ) {
        let p = pki();
        let s = settings(&[
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.key", &p.server_key_pem),
            ("ssl.keystore.certificate.chain", &p.server_cert_pem),
        ]).unwrap();
        let mut conn = strom_security::rustls::ServerConnection::new(s.server_config().unwrap()).unwrap();
        for (i, mut c) in chunks.into_iter().enumerate() {
            if looks_like_tls && i == 0 && c.len() >= 5 {
                // A TLS record header for a ClientHello, then garbage.
                c[..5].copy_from_slice(&[0x16, 0x03, 0x01, 0x01, 0x00]);
            }
            let mut reader: &[u8] = &c;
            if conn.read_tls(&mut reader).is_err() || conn.process_new_packets().is_err() {
                break;
            }
            proptest::prop_assert!(conn.is_handshaking(), "random bytes never finish a handshake");
        }
    }
}
