//! A TLS listener's first bytes from a client, whatever they are: rustls's server side, as
//! strom-security configures it (mutual TLS requested), reads them and answers or fails the
//! handshake; it never panics.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use strom_security::rustls::{ServerConfig, ServerConnection};
use strom_security::tls::TlsSettings;

fn config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let key = rcgen::KeyPair::generate().expect("key");
            let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            let cert = params.self_signed(&key).expect("cert");
            let keys = std::collections::HashMap::from([
                ("ssl.keystore.type", "PEM".to_string()),
                ("ssl.keystore.key", key.serialize_pem()),
                ("ssl.keystore.certificate.chain", cert.pem()),
                ("ssl.truststore.certificates", cert.pem()),
                ("ssl.client.auth", "requested".to_string()),
            ]);
            let settings = TlsSettings::from_keys(|k| keys.get(k).cloned()).expect("settings");
            settings.server_config().expect("server config")
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut conn) = ServerConnection::new(config()) else { return };
    let mut input = data;
    // As the listener reads: in whatever pieces arrive, until the handshake fails.
    while !input.is_empty() {
        match conn.read_tls(&mut input) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if conn.process_new_packets().is_err() {
            break;
        }
        let mut out = Vec::new();
        let _ = conn.write_tls(&mut out);
    }
});
