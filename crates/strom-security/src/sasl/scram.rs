//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), the server side, as Kafka's
//! ScramSaslServer: no channel binding (`n,,` or `y,,`), an authorization id only if it is the
//! user, no delegation tokens (`tokenauth=true` is refused).
//!
//! Credentials are stored as Kafka stores them (KIP-554): salt, iterations, StoredKey =
//! H(HMAC(SaltedPassword, "Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key");
//! the password itself is never stored. An unknown user gets a made-up salt and fails at the
//! proof, like a wrong password, so the exchange does not tell which users exist.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::{constant_time_eq, CredentialStore, SaslError, Step};

/// Kafka's bounds on a SCRAM credential's iterations.
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        match name {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// The mechanism's code in AlterUserScramCredentials / DescribeUserScramCredentials.
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<ScramMechanism> {
        match t {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
        match self {
            ScramMechanism::Sha256 => Hmac::<Sha256>::new_from_slice(key)
                .map(|m| m.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
            ScramMechanism::Sha512 => Hmac::<Sha512>::new_from_slice(key)
                .map(|m| m.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi(password, salt, iterations): PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec(),
            ScramMechanism::Sha512 => pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec(),
        }
    }
}

/// What the cluster keeps of a SCRAM password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// From the salted password an AlterUserScramCredentials upsertion carries.
    pub fn from_salted_password(m: ScramMechanism, salt: &[u8], salted_password: &[u8], iterations: u32) -> Self {
        let client_key = m.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: m.hash(&client_key),
            server_key: m.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// From a password (tools and tests).
    pub fn from_password(m: ScramMechanism, password: &str, salt: &[u8], iterations: u32) -> Self {
        Self::from_salted_password(m, salt, &m.salted_password(password.as_bytes(), salt, iterations), iterations)
    }
}

/// Random bytes from the operating system.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    // The OS generator failing is not recoverable in any useful way; a zeroed nonce would be
    // predictable, so fall back to the time-seeded hash rather than zeros.
    if getrandom::getrandom(&mut b).is_err() {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let h = Sha512::digest(seed.to_le_bytes());
        for (i, x) in b.iter_mut().enumerate() {
            *x = h[i % h.len()];
        }
    }
    b
}

/// What the server remembers between the first and the final message.
struct Exchanged {
    user: String,
    credential: ScramCredential,
    known: bool,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

enum State {
    First,
    Final(Box<Exchanged>),
    Done,
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    store: Arc<dyn CredentialStore>,
    state: State,
}

fn malformed(what: &str) -> SaslError {
    SaslError::Malformed(what.to_string())
}

/// `saslname` of RFC 5802: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn decode_saslname(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism, store: Arc<dyn CredentialStore>) -> Self {
        ScramServer { mechanism, store, state: State::First }
    }

    pub fn step(&mut self, token: &[u8]) -> Result<Step, SaslError> {
        let text = std::str::from_utf8(token).map_err(|_| malformed("SCRAM message is not UTF-8"))?;
        match std::mem::replace(&mut self.state, State::Done) {
            State::First => self.client_first(text),
            State::Final(x) => {
                let Exchanged { user, credential, known, gs2_header, client_first_bare, server_first, nonce } = *x;
                let m = self.mechanism;
                let (without_proof, proof) =
                    text.rsplit_once(",p=").ok_or_else(|| malformed("client-final-message has no proof"))?;
                let mut fields = without_proof.split(',');
                let channel = fields.next().and_then(|f| f.strip_prefix("c=")).ok_or_else(|| malformed("no c="))?;
                let got_nonce = fields.next().and_then(|f| f.strip_prefix("r=")).ok_or_else(|| malformed("no r="))?;
                if B64.decode(channel).ok().as_deref() != Some(gs2_header.as_bytes()) {
                    return Err(malformed("channel binding does not match the first message"));
                }
                if got_nonce != nonce {
                    return Err(malformed("nonce does not match"));
                }
                let proof = B64.decode(proof).map_err(|_| malformed("proof is not base64"))?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let client_signature = m.hmac(&credential.stored_key, auth_message.as_bytes());
                if proof.len() != client_signature.len() {
                    return Err(SaslError::ScramBadProof(m.name()));
                }
                let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
                if !known || !constant_time_eq(&m.hash(&client_key), &credential.stored_key) {
                    return Err(SaslError::ScramBadProof(m.name()));
                }
                let server_signature = m.hmac(&credential.server_key, auth_message.as_bytes());
                Ok(Step::Done { user, response: format!("v={}", B64.encode(server_signature)).into_bytes() })
            }
            State::Done => Err(SaslError::Finished),
        }
    }

    fn client_first(&mut self, text: &str) -> Result<Step, SaslError> {
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("client-first-message needs a gs2 header"));
        };
        if flag != "n" && flag != "y" {
            return Err(malformed("channel binding is not supported"));
        }
        let mut fields = bare.split(',');
        let user = fields.next().and_then(|f| f.strip_prefix("n=")).ok_or_else(|| malformed("no n="))?;
        let user = decode_saslname(user)?;
        let client_nonce = fields.next().and_then(|f| f.strip_prefix("r=")).ok_or_else(|| malformed("no r="))?;
        if client_nonce.is_empty() || user.is_empty() {
            return Err(malformed("empty user or nonce"));
        }
        for ext in fields {
            if ext == "tokenauth=true" {
                return Err(malformed("delegation tokens are not supported"));
            }
        }
        if !authzid.is_empty() && authzid.strip_prefix("a=").map(decode_saslname).transpose()?.as_deref() != Some(&user)
        {
            return Err(malformed("the authorization id must be the user"));
        }
        let (credential, known) = match self.store.scram(&user, self.mechanism) {
            Some(c) => (c, true),
            None => {
                let fake = ScramCredential {
                    salt: random_bytes(16),
                    stored_key: vec![0; 32],
                    server_key: vec![0; 32],
                    iterations: MIN_ITERATIONS as u32,
                };
                (fake, false)
            }
        };
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes(24)));
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&credential.salt), credential.iterations);
        self.state = State::Final(Box::new(Exchanged {
            user,
            credential,
            known,
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        }));
        Ok(Step::Challenge(server_first.into_bytes()))
    }
}

/// The client side of one SCRAM exchange (for Strom's own tools and, later, brokers talking
/// to brokers): [`ScramClient::first`], then [`ScramClient::finish`] with the server's first
/// message, then [`ScramClient::verify`] with its final one.
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    client_first_bare: String,
    nonce: String,
    expected_server_signature: Option<Vec<u8>>,
}

/// RFC 5802's escaping of a user name.
fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Self {
        let nonce = B64.encode(random_bytes(24));
        ScramClient {
            mechanism,
            password: password.to_string(),
            client_first_bare: format!("n={},r={nonce}", encode_saslname(user)),
            nonce,
            expected_server_signature: None,
        }
    }

    /// client-first-message.
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// client-final-message, from server-first-message.
    pub fn finish(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        let m = self.mechanism;
        let text = std::str::from_utf8(server_first).map_err(|_| malformed("server-first-message is not UTF-8"))?;
        let mut f = text.split(',');
        let nonce = f.next().and_then(|x| x.strip_prefix("r=")).ok_or_else(|| malformed("no r="))?;
        let salt = f.next().and_then(|x| x.strip_prefix("s=")).ok_or_else(|| malformed("no s="))?;
        let iterations: u32 = f
            .next()
            .and_then(|x| x.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| malformed("no i="))?;
        if !nonce.starts_with(&self.nonce)
            || !(MIN_ITERATIONS as u32..=MAX_ITERATIONS as u32 * 16).contains(&iterations)
        {
            return Err(malformed("the server's nonce or iteration count is not acceptable"));
        }
        let salt = B64.decode(salt).map_err(|_| malformed("salt is not base64"))?;
        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = m.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let server_key = m.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(m.hmac(&server_key, auth.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final-message: the server knew the credential too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), SaslError> {
        let text = std::str::from_utf8(server_final).map_err(|_| malformed("server-final-message is not UTF-8"))?;
        let v = text.strip_prefix("v=").ok_or_else(|| malformed("server-final-message has no v="))?;
        let got = B64.decode(v).map_err(|_| malformed("server signature is not base64"))?;
        match &self.expected_server_signature {
            Some(expected) if constant_time_eq(expected, &got) => Ok(()),
            _ => Err(malformed("the server's signature does not match: it does not know this credential")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(ScramMechanism, ScramCredential);
    impl CredentialStore for One {
        fn scram(&self, user: &str, m: ScramMechanism) -> Option<ScramCredential> {
            (user == "alice" && m == self.0).then(|| self.1.clone())
        }
    }

    /// The client side of RFC 5802, as a test oracle.
    fn client(m: ScramMechanism, server: &mut ScramServer, user: &str, password: &str) -> Result<Step, SaslError> {
        let bare = format!("n={user},r=clientnonce");
        let Step::Challenge(first) = server.step(format!("n,,{bare}").as_bytes())? else { panic!("challenge") };
        let first = String::from_utf8(first).unwrap();
        let mut f = first.split(',');
        let nonce = f.next().unwrap().strip_prefix("r=").unwrap();
        let salt = B64.decode(f.next().unwrap().strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = f.next().unwrap().strip_prefix("i=").unwrap().parse().unwrap();
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{bare},{first},{without_proof}");
        let sig = m.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let result = server.step(format!("{without_proof},p={}", B64.encode(proof)).as_bytes())?;
        if let Step::Done { response, .. } = &result {
            let server_key = m.hmac(&salted, b"Server Key");
            let expected = format!("v={}", B64.encode(m.hmac(&server_key, auth.as_bytes())));
            assert_eq!(String::from_utf8(response.clone()).unwrap(), expected, "the server proves itself");
        }
        Ok(result)
    }

    #[test]
    fn scram_exchanges_for_both_mechanisms() {
        for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let cred = ScramCredential::from_password(m, "alice-secret", b"salt-of-alice", 4096);
            let store: Arc<dyn CredentialStore> = Arc::new(One(m, cred));
            let mut s = ScramServer::new(m, store.clone());
            assert!(
                matches!(client(m, &mut s, "alice", "alice-secret"), Ok(Step::Done { user, .. }) if user == "alice")
            );
            let mut s = ScramServer::new(m, store.clone());
            assert_eq!(client(m, &mut s, "alice", "wrong"), Err(SaslError::ScramBadProof(m.name())));
            let mut s = ScramServer::new(m, store.clone());
            assert_eq!(client(m, &mut s, "bob", "alice-secret"), Err(SaslError::ScramBadProof(m.name())));
            let mut s = ScramServer::new(m, store.clone());
            assert!(matches!(s.step(b"p=tls-unique,,n=alice,r=x"), Err(SaslError::Malformed(_))));
            let mut s = ScramServer::new(m, store);
            assert!(matches!(s.step(b"n,,n=alice,r=x,tokenauth=true"), Err(SaslError::Malformed(_))));
        }
    }

    #[test]
    fn the_client_and_server_agree() {
        let m = ScramMechanism::Sha512;
        let store: Arc<dyn CredentialStore> = Arc::new(One(m, ScramCredential::from_password(m, "pw", b"salt", 4096)));
        let mut server = ScramServer::new(m, store);
        let mut client = ScramClient::new(m, "alice", "pw");
        let Step::Challenge(first) = server.step(&client.first()).unwrap() else { panic!() };
        let last = client.finish(&first).unwrap();
        let Step::Done { user, response } = server.step(&last).unwrap() else { panic!() };
        assert_eq!(user, "alice");
        client.verify(&response).unwrap();
        assert!(client.verify(b"v=AAAA").is_err());
    }

    #[test]
    fn user_names_are_unescaped() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(decode_saslname("a=zz").is_err());
    }
}
