//! SASL authentication of one connection on a `SASL_PLAINTEXT` or `SASL_SSL` listener: every
//! frame passes [`Authenticator::on_frame`] before it reaches the request handlers.
//!
//! **Authentication rules (Kafka's SaslServerAuthenticator):**
//! - Until authenticated, a connection may send only ApiVersions, then SaslHandshake (v0 or
//!   v1) naming a mechanism the listener enables. Anything else closes the connection; an
//!   unknown mechanism is answered UNSUPPORTED_SASL_MECHANISM, with the enabled ones, and
//!   closed. Frames are limited to `sasl.server.max.receive.size` until then.
//! - After a v1 handshake the tokens come in SaslAuthenticate requests (v0–v2); after a v0
//!   handshake they come as bare length-prefixed tokens and are answered the same way.
//! - A failed exchange is answered SASL_AUTHENTICATION_FAILED (with a message that names no
//!   secret) and the connection closed; the failure is counted and logged without the
//!   password.
//! - `connections.max.reauth.ms` (KIP-368): the last SaslAuthenticate answer carries the
//!   session's lifetime; once it has passed, any request but SaslHandshake, SaslAuthenticate
//!   and ApiVersions closes the connection. Re-authentication (a new handshake on an
//!   authenticated connection) must use the same mechanism and end as the same user.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use strom_protocol::frame::{self, FrameError};
use strom_protocol::kafka_protocol::messages::{ApiKey, RequestKind, SaslAuthenticateResponse, SaslHandshakeResponse};
use strom_protocol::values::str_bytes;
use strom_security::sasl::{CredentialStore, Mechanism, SaslConfig, SaslServer, ScramCredential, ScramMechanism, Step};

use crate::lifecycle::BrokerLifecycle;
use crate::metrics::BrokerMetrics;

pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// SCRAM credentials as this broker's metadata image has them.
pub struct ImageCredentials(pub Arc<BrokerLifecycle>);

impl CredentialStore for ImageCredentials {
    fn scram(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        let image = self.0.image();
        let c = image.scram_credentials.get(user)?.get(mechanism.name())?;
        Some(ScramCredential {
            salt: c.salt.clone(),
            stored_key: c.stored_key.clone(),
            server_key: c.server_key.clone(),
            iterations: c.iterations,
        })
    }
}

/// What to do with a frame.
#[derive(Debug)]
pub enum Gate {
    /// An authenticated (or ApiVersions) request: handle it as usual.
    Dispatch(Bytes),
    /// Answered here: send this frame.
    Reply(Bytes),
    /// Send this frame, then close the connection.
    ReplyAndClose(Bytes, String),
    /// Close the connection at once.
    Close(String),
}

enum State {
    /// Nothing yet (or only ApiVersions): a SaslHandshake is expected.
    AwaitHandshake,
    /// A handshake chose `mechanism`; tokens follow (`raw`: a v0 handshake, bare tokens).
    Exchange { server: SaslServer, mechanism: Mechanism, raw: bool, previous: Option<String> },
    /// Authenticated as `user` until `expires` (if sessions expire).
    Authenticated { user: String, mechanism: Mechanism, expires: Option<Instant> },
}

/// One connection's SASL state.
pub struct Authenticator {
    config: SaslConfig,
    store: Arc<dyn CredentialStore>,
    metrics: Arc<BrokerMetrics>,
    max_receive_bytes: usize,
    state: State,
}

impl Authenticator {
    pub fn new(
        config: SaslConfig,
        store: Arc<dyn CredentialStore>,
        metrics: Arc<BrokerMetrics>,
        max_receive_bytes: usize,
    ) -> Self {
        Authenticator { config, store, metrics, max_receive_bytes, state: State::AwaitHandshake }
    }

    /// The authenticated user, once there is one.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated { user, .. } => Some(user),
            State::Exchange { previous: Some(user), .. } => Some(user),
            _ => None,
        }
    }

    fn authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated { .. } | State::Exchange { previous: Some(_), .. })
    }

    /// The largest frame the connection may send now: `sasl.server.max.receive.size` until it
    /// authenticated (checked on the length prefix, before the frame is buffered or any room
    /// in `queued.max.request.bytes` is taken for it), then `socket_max`.
    pub fn frame_limit(&self, socket_max: usize) -> usize {
        if self.authenticated() {
            socket_max
        } else {
            self.max_receive_bytes.min(socket_max)
        }
    }

    /// Passes one frame through the rules at the top of this module.
    pub fn on_frame(&mut self, raw: Bytes) -> Gate {
        if !self.authenticated() && raw.len() > self.max_receive_bytes {
            return Gate::Close(format!(
                "{} bytes before authentication, over sasl.server.max.receive.size ({})",
                raw.len(),
                self.max_receive_bytes
            ));
        }
        if let State::Exchange { raw: true, .. } = self.state {
            return self.raw_token(raw);
        }
        let Ok((key, version, correlation_id)) = frame::peek_header(&raw) else {
            return Gate::Close("truncated request during SASL authentication".into());
        };
        let api = ApiKey::try_from(key).ok();
        match (&self.state, api) {
            (_, Some(ApiKey::ApiVersions)) => Gate::Dispatch(raw),
            (State::AwaitHandshake, Some(ApiKey::SaslHandshake)) => self.handshake(raw, None),
            (State::Authenticated { expires, .. }, Some(other)) => {
                if other == ApiKey::SaslHandshake {
                    return self.handshake(raw, Some(version));
                }
                if expires.is_some_and(|e| Instant::now() >= e) {
                    return Gate::Close("the SASL session expired (connections.max.reauth.ms)".into());
                }
                if other == ApiKey::SaslAuthenticate {
                    // Kafka answers this outside an exchange with ILLEGAL_SASL_STATE.
                    return self.authenticate_error(
                        version,
                        correlation_id,
                        ILLEGAL_SASL_STATE,
                        "no exchange in progress",
                    );
                }
                Gate::Dispatch(raw)
            }
            (State::Exchange { raw: false, .. }, Some(ApiKey::SaslAuthenticate)) => self.authenticate(raw),
            (State::Authenticated { .. }, None) => Gate::Dispatch(raw), // unknown API: the handlers refuse it
            _ => Gate::Close(format!("unexpected request (API key {key}) during SASL authentication")),
        }
    }

    fn handshake(&mut self, raw: Bytes, reauth_version: Option<i16>) -> Gate {
        let request = match frame::decode_request(raw, |k| (k == ApiKey::SaslHandshake).then_some((0, 1))) {
            Ok(r) => r,
            Err(e) => return Gate::Close(format!("bad SaslHandshake: {e}")),
        };
        let RequestKind::SaslHandshake(body) = &request.body else {
            return Gate::Close("bad SaslHandshake".into());
        };
        let version = request.header.request_api_version;
        let cid = request.header.correlation_id;
        let mut resp = SaslHandshakeResponse::default();
        resp.mechanisms = self.config.mechanisms.iter().map(|m| str_bytes(m.name())).collect();
        let asked = Mechanism::from_name(body.mechanism.as_str()).filter(|m| self.config.mechanisms.contains(m));
        let previous = match &self.state {
            State::Authenticated { user, mechanism, .. } => Some((user.clone(), *mechanism)),
            _ => None,
        };
        let encode = |resp: &SaslHandshakeResponse| frame::encode_response(ApiKey::SaslHandshake, version, cid, resp);
        let Some(mechanism) = asked else {
            resp.error_code = UNSUPPORTED_SASL_MECHANISM;
            return match encode(&resp) {
                Ok(f) => Gate::ReplyAndClose(f, format!("unsupported SASL mechanism {}", body.mechanism.as_str())),
                Err(e) => Gate::Close(e.to_string()),
            };
        };
        if let Some((_, was)) = &previous {
            // Re-authentication: v1 only (tokens in SaslAuthenticate), the same mechanism.
            if reauth_version == Some(0) || *was != mechanism {
                resp.error_code = ILLEGAL_SASL_STATE;
                return match encode(&resp) {
                    Ok(f) => Gate::ReplyAndClose(f, "re-authentication must use the same mechanism".into()),
                    Err(e) => Gate::Close(e.to_string()),
                };
            }
        }
        self.state = State::Exchange {
            server: SaslServer::new(mechanism, &self.config, self.store.clone()),
            mechanism,
            raw: version == 0,
            previous: previous.map(|(u, _)| u),
        };
        match encode(&resp) {
            Ok(f) => Gate::Reply(f),
            Err(e) => Gate::Close(e.to_string()),
        }
    }

    /// One step of the exchange; on success the new state, on failure the error message.
    fn step(&mut self, token: &[u8]) -> Result<(Vec<u8>, bool), String> {
        let State::Exchange { server, mechanism, previous, .. } = &mut self.state else {
            return Err("no exchange in progress".into());
        };
        let mechanism = *mechanism;
        match server.step(token) {
            Ok(Step::Challenge(c)) => Ok((c, false)),
            Ok(Step::Done { user, response }) => {
                if previous.as_ref().is_some_and(|p| *p != user) {
                    self.metrics.failed_authentications.inc();
                    return Err("re-authentication must be as the same user".into());
                }
                tracing::debug!(user = %user, mechanism = mechanism.name(), "authenticated");
                self.metrics.successful_authentications.inc();
                let expires = self.config.max_reauth_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
                self.state = State::Authenticated { user, mechanism, expires };
                Ok((response, true))
            }
            Err(e) => {
                self.metrics.failed_authentications.inc();
                tracing::info!(mechanism = mechanism.name(), reason = %e, "SASL authentication failed");
                Err(e.to_string())
            }
        }
    }

    fn authenticate(&mut self, raw: Bytes) -> Gate {
        let request = match frame::decode_request(raw, |k| (k == ApiKey::SaslAuthenticate).then_some((0, 2))) {
            Ok(r) => r,
            Err(FrameError::UnsupportedVersion { .. }) => {
                return Gate::Close("unsupported SaslAuthenticate version".into())
            }
            Err(e) => return Gate::Close(format!("bad SaslAuthenticate: {e}")),
        };
        let RequestKind::SaslAuthenticate(body) = &request.body else {
            return Gate::Close("bad SaslAuthenticate".into());
        };
        let version = request.header.request_api_version;
        let cid = request.header.correlation_id;
        match self.step(&body.auth_bytes) {
            Ok((bytes, done)) => {
                let mut resp = SaslAuthenticateResponse::default();
                resp.auth_bytes = Bytes::from(bytes);
                if done {
                    resp.session_lifetime_ms = self.config.max_reauth_ms.map_or(0, |ms| ms.min(i64::MAX as u64) as i64);
                }
                match frame::encode_response(ApiKey::SaslAuthenticate, version, cid, &resp) {
                    Ok(f) => Gate::Reply(f),
                    Err(e) => Gate::Close(e.to_string()),
                }
            }
            Err(message) => {
                self.state = State::AwaitHandshake;
                self.authenticate_error(version, cid, SASL_AUTHENTICATION_FAILED, &message)
            }
        }
    }

    fn authenticate_error(&mut self, version: i16, correlation_id: i32, code: i16, message: &str) -> Gate {
        let mut resp = SaslAuthenticateResponse::default();
        resp.error_code = code;
        resp.error_message = Some(str_bytes(message));
        match frame::encode_response(ApiKey::SaslAuthenticate, version, correlation_id, &resp) {
            Ok(f) => Gate::ReplyAndClose(f, message.to_string()),
            Err(e) => Gate::Close(e.to_string()),
        }
    }

    /// A bare token after a v0 handshake; answered with a bare token.
    fn raw_token(&mut self, token: Bytes) -> Gate {
        match self.step(&token) {
            Ok((bytes, _)) => {
                let mut out = BytesMut::with_capacity(4 + bytes.len());
                out.put_i32(bytes.len() as i32);
                out.extend_from_slice(&bytes);
                Gate::Reply(out.freeze())
            }
            Err(message) => Gate::Close(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strom_security::sasl::{ScramCredential, ScramMechanism};

    struct NoUsers;
    impl CredentialStore for NoUsers {
        fn scram(&self, _: &str, _: ScramMechanism) -> Option<ScramCredential> {
            None
        }
    }

    fn authenticator() -> Authenticator {
        let config = SaslConfig {
            mechanisms: vec![Mechanism::Plain, Mechanism::Scram(ScramMechanism::Sha256)],
            plain_users: [("alice".to_string(), "secret".to_string())].into(),
            max_reauth_ms: None,
        };
        Authenticator::new(
            config,
            Arc::new(NoUsers),
            Arc::new(BrokerMetrics::new(false, crate::metrics::latency_histogram())),
            4096,
        )
    }

    /// A request frame (no length prefix) with a v1 header.
    fn frame(api: ApiKey, version: i16, body: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(api as i16);
        b.put_i16(version);
        b.put_i32(7);
        b.put_i16(-1); // null client id
        b.extend_from_slice(body);
        b.freeze()
    }

    #[test]
    fn only_api_versions_and_the_handshake_pass_before_authentication() {
        let mut a = authenticator();
        assert!(matches!(a.on_frame(frame(ApiKey::ApiVersions, 0, &[])), Gate::Dispatch(_)));
        assert!(matches!(a.on_frame(frame(ApiKey::Metadata, 4, &[0, 0, 0, 0, 0])), Gate::Close(_)));
        let mut a = authenticator();
        // SaslHandshake v1 for an unknown mechanism: answered with the enabled ones, then closed.
        let mut body = BytesMut::new();
        body.put_i16(6);
        body.extend_from_slice(b"GSSAPI");
        assert!(matches!(a.on_frame(frame(ApiKey::SaslHandshake, 1, &body)), Gate::ReplyAndClose(..)));
        // PLAIN, then a wrong password: SASL_AUTHENTICATION_FAILED and closed; the right one: in.
        for (password, ok) in [("wrong", false), ("secret", true)] {
            let mut a = authenticator();
            let mut body = BytesMut::new();
            body.put_i16(5);
            body.extend_from_slice(b"PLAIN");
            assert!(matches!(a.on_frame(frame(ApiKey::SaslHandshake, 1, &body)), Gate::Reply(_)));
            let token = format!("\0alice\0{password}");
            let mut body = BytesMut::new();
            body.put_i32(token.len() as i32);
            body.extend_from_slice(token.as_bytes());
            let gate = a.on_frame(frame(ApiKey::SaslAuthenticate, 1, &body));
            assert_eq!(matches!(gate, Gate::Reply(_)), ok, "{gate:?}");
            assert_eq!(a.user(), ok.then_some("alice"));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random frames, truncated handshakes and random tokens never panic; before
        /// authentication nothing but ApiVersions is dispatched.
        #[test]
        fn random_frames_never_get_past_authentication(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 1..8),
            handshake_first in any::<bool>(),
        ) {
            let mut a = authenticator();
            if handshake_first {
                let mut body = BytesMut::new();
                body.put_i16(13);
                body.extend_from_slice(b"SCRAM-SHA-256");
                let _ = a.on_frame(frame(ApiKey::SaslHandshake, 1, &body));
            }
            for f in frames {
                let bytes = Bytes::from(f);
                let api = frame::peek_header(&bytes).ok().map(|(k, _, _)| k);
                match a.on_frame(bytes) {
                    Gate::Dispatch(_) => prop_assert_eq!(api, Some(ApiKey::ApiVersions as i16)),
                    Gate::Close(_) | Gate::ReplyAndClose(..) => break,
                    Gate::Reply(_) => {}
                }
                prop_assert!(a.user().is_none(), "no user without a password");
            }
        }
    }
}
