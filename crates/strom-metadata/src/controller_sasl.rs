//! SASL on the controller listener: one exchange on each new connection, after TLS on
//! `SASL_SSL`, before gRPC starts on it. Brokers log in to the quorum with it, and
//! controllers to their Raft peers.
//!
//! **The exchange** (every frame is a 4-byte big-endian length, then that many bytes; the
//! same framing as Kafka's SASL tokens after a v0 SaslHandshake):
//! 1. The connecting node sends the mechanism's name (`PLAIN`).
//! 2. The listener answers with a status frame: its first byte is [`CONTINUE`] (the
//!    mechanism is enabled; the rest is a challenge, empty for PLAIN), [`FAILED`] (the rest is
//!    a message naming no secret; the listener closes the connection) or [`DONE`]
//!    (authenticated; the rest is the mechanism's final bytes).
//! 3. The connecting node sends a token (PLAIN: `NUL user NUL password`, RFC 4616), the
//!    listener answers with a status frame; repeated until DONE or FAILED.
//!
//! **Rules:**
//! - Only PLAIN is served here, as Kafka's controllers in practice: SCRAM credentials live in
//!   the metadata log, which the quorum would need to read before any of its members could
//!   log in to another. The node configuration refuses the others, naming the key.
//! - A frame longer than `sasl.server.max.receive.size` (a mechanism name: 64 bytes) fails
//!   the exchange before it is buffered; the listener bounds the whole exchange in time
//!   (with the TLS handshake) and the number of connections in it at once.
//! - The principal of an authenticated connection is `User:<user>`; the controller's
//!   authorizer then needs CLUSTER_ACTION for it, as for a certificate's principal.

use std::collections::BTreeMap;
use std::sync::Arc;

use strom_security::sasl::{CredentialStore, Mechanism, SaslConfig, SaslServer, ScramCredential, ScramMechanism, Step};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Status byte: the exchange goes on; a challenge follows.
pub const CONTINUE: u8 = 0;
/// Status byte: the exchange failed; a message follows and the listener closes.
pub const FAILED: u8 = 1;
/// Status byte: authenticated; the mechanism's final bytes follow.
pub const DONE: u8 = 2;

/// The longest mechanism name a listener reads (Kafka's are at most 20 bytes).
const MAX_MECHANISM_NAME_BYTES: usize = 64;

/// The largest frame a connecting node reads from a listener (a guard against a garbage
/// length; a PLAIN exchange answers with a status byte and at most a short message).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why an exchange did not authenticate. The message names no secret.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("i/o during the SASL exchange: {0}")]
    Io(#[from] std::io::Error),
    #[error("a SASL frame of {len} bytes is over the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("SASL mechanism {0} is not enabled on the controller listener")]
    Unsupported(String),
    #[error("SASL authentication failed: {0}")]
    Failed(String),
    #[error("malformed SASL exchange: {0}")]
    Malformed(String),
}

/// How this node logs in to a controller listener (`sasl.mechanism.controller.protocol` and
/// the listener's JAAS `username` / `password`).
#[derive(Clone)]
pub struct PlainLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PlainLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log line.
        f.debug_struct("PlainLogin").field("username", &self.username).finish_non_exhaustive()
    }
}

/// The listener's side: runs the exchange on `stream` with the users of `config`; returns
/// the authenticated user. On failure the listener has already sent FAILED (when the stream
/// still takes it); the caller closes the connection.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    config: &SaslConfig,
    max_frame: usize,
) -> Result<String, ExchangeError> {
    let name = read_frame(stream, MAX_MECHANISM_NAME_BYTES).await?;
    // From an unauthenticated peer: shown (in the answer and the log) escaped.
    let name = String::from_utf8_lossy(&name).escape_debug().to_string();
    let Some(mechanism) =
        Mechanism::from_name(&name).filter(|m| *m == Mechanism::Plain && config.mechanisms.contains(m))
    else {
        let enabled: Vec<&str> =
            config.mechanisms.iter().filter(|m| **m == Mechanism::Plain).map(|m| m.name()).collect();
        let _ =
            write_status(stream, FAILED, format!("mechanism {name} is not enabled (enabled: {enabled:?})").as_bytes())
                .await;
        return Err(ExchangeError::Unsupported(name));
    };
    write_status(stream, CONTINUE, &[]).await?;
    let mut server = SaslServer::new(mechanism, config, Arc::new(NoScram));
    loop {
        let token = read_frame(stream, max_frame).await?;
        match server.step(&token) {
            Ok(Step::Challenge(c)) => write_status(stream, CONTINUE, &c).await?,
            Ok(Step::Done { user, response }) => {
                write_status(stream, DONE, &response).await?;
                return Ok(user);
            }
            Err(e) => {
                let message = e.to_string();
                let _ = write_status(stream, FAILED, message.as_bytes()).await;
                return Err(ExchangeError::Failed(message));
            }
        }
    }
}

/// The connecting side: logs in to the listener on `stream` with PLAIN.
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, login: &PlainLogin) -> Result<(), ExchangeError> {
    write_frame(stream, Mechanism::Plain.name().as_bytes()).await?;
    let answer = read_status(stream).await?;
    if answer.0 != CONTINUE {
        return Err(ExchangeError::Unsupported(format!("PLAIN ({})", String::from_utf8_lossy(&answer.1))));
    }
    let token = format!("\0{}\0{}", login.username, login.password);
    write_frame(stream, token.as_bytes()).await?;
    match read_status(stream).await? {
        (DONE, _) => Ok(()),
        (FAILED, message) => Err(ExchangeError::Failed(String::from_utf8_lossy(&message).into_owned())),
        (status, _) => Err(ExchangeError::Malformed(format!("unexpected status {status} after a PLAIN token"))),
    }
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> Result<Vec<u8>, ExchangeError> {
    let len = stream.read_u32().await? as usize;
    if len > max {
        return Err(ExchangeError::TooLarge { len, limit: max });
    }
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), ExchangeError> {
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

async fn write_status<S: AsyncWrite + Unpin>(stream: &mut S, status: u8, rest: &[u8]) -> Result<(), ExchangeError> {
    let mut frame = Vec::with_capacity(1 + rest.len());
    frame.push(status);
    frame.extend_from_slice(rest);
    write_frame(stream, &frame).await
}

async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(u8, Vec<u8>), ExchangeError> {
    let mut frame = read_frame(stream, MAX_ANSWER_BYTES).await?;
    if frame.is_empty() {
        return Err(ExchangeError::Malformed("empty status frame".into()));
    }
    let status = frame.remove(0);
    Ok((status, frame))
}

/// The controller listener serves no SCRAM (see the rules above).
struct NoScram;

impl CredentialStore for NoScram {
    fn scram(&self, _: &str, _: ScramMechanism) -> Option<ScramCredential> {
        None
    }
}

/// PLAIN users for tests and tools: a listener config enabling PLAIN for `users`.
pub fn plain_config(users: BTreeMap<String, String>) -> SaslConfig {
    SaslConfig { mechanisms: vec![Mechanism::Plain], plain_users: users, max_reauth_ms: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SaslConfig {
        plain_config([("broker".to_string(), "broker-secret".to_string())].into())
    }

    async fn run(login_as: PlainLogin) -> (Result<String, ExchangeError>, Result<(), ExchangeError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move { accept(&mut a, &config(), 4096).await });
        let client = login(&mut b, &login_as).await;
        (server.await.expect("server task"), client)
    }

    #[tokio::test]
    async fn the_right_password_logs_in_and_a_wrong_one_is_refused() {
        let (server, client) = run(PlainLogin { username: "broker".into(), password: "broker-secret".into() }).await;
        assert_eq!(server.expect("accepted"), "broker");
        client.expect("logged in");

        for (user, password) in [("broker", "wrong"), ("nobody", "broker-secret")] {
            let (server, client) = run(PlainLogin { username: user.into(), password: password.into() }).await;
            assert!(matches!(server, Err(ExchangeError::Failed(_))), "{server:?}");
            let message = client.expect_err("refused").to_string();
            assert!(message.contains("Invalid username or password"), "{message}");
            assert!(!message.contains(password), "the password leaked: {message}");
        }
    }

    #[tokio::test]
    async fn an_unknown_mechanism_and_an_oversized_frame_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move { accept(&mut a, &config(), 4096).await });
        write_frame(&mut b, b"SCRAM-SHA-256").await.expect("write");
        let (status, message) = read_status(&mut b).await.expect("answer");
        assert_eq!(status, FAILED);
        assert!(String::from_utf8_lossy(&message).contains("PLAIN"));
        assert!(matches!(server.await.expect("task"), Err(ExchangeError::Unsupported(_))));

        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move { accept(&mut a, &config(), 4096).await });
        b.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        assert!(matches!(server.await.expect("task"), Err(ExchangeError::TooLarge { .. })));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random and truncated input never panics and never authenticates.
        #[test]
        fn random_bytes_never_authenticate(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let result = rt.block_on(async move {
                let (mut a, mut b) = tokio::io::duplex(4096);
                let server = tokio::spawn(async move { accept(&mut a, &config(), 256).await });
                let _ = b.write_all(&input).await;
                drop(b);
                server.await.expect("task")
            });
            proptest::prop_assert!(result.is_err());
        }
    }
}
