//! SASL exchanges driven by a client: PLAIN and both SCRAMs, for a user that exists, fed
//! arbitrary tokens (the first byte picks the mechanism, the rest is split into tokens at
//! 0xff). Every step answers a challenge, a success or a typed error. One pick in four feeds
//! the rest, as a byte stream, to the controller listener's login instead
//! (`strom_metadata::controller_sasl::accept`), which must end (the input runs out) without a
//! panic, never authenticated, and never buffering a frame over its limit.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use strom_security::sasl::scram::{ScramCredential, ScramMechanism};
use strom_security::sasl::{CredentialStore, Mechanism, SaslConfig, SaslServer};

struct Store;

impl CredentialStore for Store {
    fn scram(&self, user: &str, m: ScramMechanism) -> Option<ScramCredential> {
        // Derived once (PBKDF2 is slow on purpose).
        static CREDS: OnceLock<[ScramCredential; 2]> = OnceLock::new();
        let creds = CREDS.get_or_init(|| {
            [ScramMechanism::Sha256, ScramMechanism::Sha512]
                .map(|m| ScramCredential::from_password(m, "alice-secret", b"salt-salt-salt", 4096))
        });
        (user == "alice").then(|| creds[usize::from(m == ScramMechanism::Sha512)].clone())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    if pick % 4 == 3 {
        controller_login(rest);
        return;
    }
    let mechanism = match pick % 3 {
        0 => Mechanism::Plain,
        1 => Mechanism::Scram(ScramMechanism::Sha256),
        _ => Mechanism::Scram(ScramMechanism::Sha512),
    };
    let config = SaslConfig {
        mechanisms: vec![mechanism],
        plain_users: BTreeMap::from([("alice".to_string(), "alice-secret".to_string())]),
        max_reauth_ms: None,
    };
    let mut server = SaslServer::new(mechanism, &config, Arc::new(Store));
    for token in rest.split(|b| *b == 0xff).take(4) {
        if server.step(token).is_err() {
            break;
        }
    }
});

fn controller_login(input: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let users = BTreeMap::from([("alice".to_string(), "alice-secret".to_string())]);
    let config = strom_metadata::controller_sasl::plain_config(users);
    let input = input.to_vec();
    let accepted = rt.block_on(async move {
        let (mut server_side, mut client_side) = tokio::io::duplex(64 * 1024);
        let server =
            tokio::spawn(async move { strom_metadata::controller_sasl::accept(&mut server_side, &config, 1024).await });
        let _ = client_side.write_all(&input).await;
        drop(client_side);
        server.await.expect("the login task panicked")
    });
    // Authenticating needs alice's password, framed: a fuzzer may find it, so only a
    // different user would be a failure.
    if let Ok(user) = accepted {
        assert_eq!(user, "alice");
    }
}
