//! strom-client: a Kafka connection that sends typed requests and reads typed responses.
//!
//! It is deliberately small: one TCP connection, one request in flight, requests and
//! responses are the `kafka-protocol` crate's message types. The broker's follower fetcher
//! uses it to fetch from partition leaders (Kafka's Fetch with a replica id, as Kafka's own
//! replicas do), and the CLI tools (`strom topics`, the console tools, `strom perf`) use it to
//! talk to any Kafka-compatible cluster.
//!
//! **API boundary:** [`Connection::send`] is the one way a Strom process speaks Kafka as a
//! client; errors are typed ([`ClientError`]) and never panic on what the server sends.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use strom_protocol::kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use strom_protocol::kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The byte stream under a connection: TCP, or TLS over it.
trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// The largest response this client reads (a guard against a garbage length prefix).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("connection to {addr} timed out")]
    Timeout { addr: String },
    #[error("i/o with {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("cannot encode {api:?} v{version}: {reason}")]
    Encode { api: i16, version: i16, reason: String },
    #[error("malformed response from {addr}: {reason}")]
    Malformed { addr: String, reason: String },
    #[error("authentication with {addr} failed: {reason}")]
    Authentication { addr: String, reason: String },
}

/// How a connection authenticates (SASL over plain TCP, `security.protocol=SASL_PLAINTEXT`).
#[derive(Clone)]
pub struct SaslCredentials {
    pub mechanism: strom_security::sasl::Mechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How a connection protects itself: TLS (`SSL`, `SASL_SSL`) and SASL (`SASL_*`).
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// TLS: the configuration current when a connection starts (a broker's certificates are
    /// reloaded while it runs).
    pub tls: Option<strom_security::reload::ClientTls>,
    pub sasl: Option<SaslCredentials>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity").field("tls", &self.tls.is_some()).field("sasl", &self.sasl).finish()
    }
}

/// One connection to a Kafka broker.
pub struct Connection {
    addr: String,
    stream: BufReader<Box<dyn ByteStream>>,
    client_id: String,
    next_correlation_id: i32,
    timeout: Duration,
}

impl Connection {
    /// Connects to `addr` (`host:port`); `timeout` bounds the connect and every request.
    pub async fn connect(addr: &str, client_id: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let stream = Self::tcp(addr, timeout).await?;
        Ok(Self::over(Box::new(stream), addr, client_id, timeout))
    }

    async fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout { addr: addr.to_string() })?
            .map_err(|source| ClientError::Connect { addr: addr.to_string(), source })?;
        // Small requests (fetches, acks) must not wait for Nagle.
        stream.set_nodelay(true).map_err(|source| ClientError::Io { addr: addr.to_string(), source })?;
        Ok(stream)
    }

    fn over(stream: Box<dyn ByteStream>, addr: &str, client_id: &str, timeout: Duration) -> Connection {
        Connection {
            addr: addr.to_string(),
            stream: BufReader::with_capacity(64 * 1024, stream),
            client_id: client_id.to_string(),
            next_correlation_id: 1,
            timeout,
        }
    }

    /// Connects with `security`: the TLS handshake (the server checked against the trust
    /// roots and its host name, the part of `addr` before the port), then SASL.
    pub async fn connect_secure(
        addr: &str,
        client_id: &str,
        timeout: Duration,
        security: &ClientSecurity,
    ) -> Result<Connection, ClientError> {
        let tcp = Self::tcp(addr, timeout).await?;
        let stream: Box<dyn ByteStream> = match &security.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
                let fail = |reason: String| ClientError::Authentication { addr: addr.to_string(), reason };
                let name = strom_security::rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| fail(format!("bad TLS server name {host}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(tls.get());
                let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| ClientError::Timeout { addr: addr.to_string() })?
                    .map_err(|e| fail(format!("TLS handshake: {e}")))?;
                Box::new(stream)
            }
        };
        let mut c = Self::over(stream, addr, client_id, timeout);
        if let Some(sasl) = &security.sasl {
            c.authenticate(sasl).await?;
        }
        Ok(c)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Authenticates with SASL (SaslHandshake v1, then SaslAuthenticate v2 tokens), as a
    /// Kafka client does on a SASL_PLAINTEXT listener.
    pub async fn authenticate(&mut self, creds: &SaslCredentials) -> Result<(), ClientError> {
        use strom_protocol::kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        use strom_security::sasl::{scram::ScramClient, Mechanism};
        let addr = self.addr.clone();
        let fail = |reason: String| ClientError::Authentication { addr: addr.clone(), reason };
        let mut hs = SaslHandshakeRequest::default();
        hs.mechanism = StrBytes::from_string(creds.mechanism.name().to_string());
        let r = self.send(1, &hs, Duration::ZERO).await?;
        if r.error_code != 0 {
            let offered: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(fail(format!(
                "mechanism {} refused (error {}; offered: {offered:?})",
                creds.mechanism.name(),
                r.error_code
            )));
        }
        let step = |token: Vec<u8>| {
            let mut a = SaslAuthenticateRequest::default();
            a.auth_bytes = token.into();
            a
        };
        match creds.mechanism {
            Mechanism::Plain => {
                let token = format!("\0{}\0{}", creds.username, creds.password).into_bytes();
                let r = self.send(2, &step(token), Duration::ZERO).await?;
                if r.error_code != 0 {
                    return Err(fail(r.error_message.map(|m| m.to_string()).unwrap_or_default()));
                }
            }
            Mechanism::Scram(m) => {
                let mut client = ScramClient::new(m, &creds.username, &creds.password);
                let r = self.send(2, &step(client.first()), Duration::ZERO).await?;
                if r.error_code != 0 {
                    return Err(fail(r.error_message.map(|m| m.to_string()).unwrap_or_default()));
                }
                let last = client.finish(&r.auth_bytes).map_err(|e| fail(e.to_string()))?;
                let r = self.send(2, &step(last), Duration::ZERO).await?;
                if r.error_code != 0 {
                    return Err(fail(r.error_message.map(|m| m.to_string()).unwrap_or_default()));
                }
                client.verify(&r.auth_bytes).map_err(|e| fail(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Sends `req` at `version` and waits for its response (bounded by the timeout given at
    /// connect, plus `extra_wait` for requests that long-poll on the server).
    pub async fn send<R: Request>(
        &mut self,
        version: i16,
        req: &R,
        extra_wait: Duration,
    ) -> Result<R::Response, ClientError> {
        let frame = self.encode(version, req)?;
        let correlation_id = self.next_correlation_id - 1;
        let addr = self.addr.clone();
        let io = |source| ClientError::Io { addr: addr.clone(), source };
        let exchange = async {
            self.stream.get_mut().write_all(&frame).await.map_err(io)?;
            let size = self.stream.read_i32().await.map_err(io)?;
            if size < 0 || size as usize > MAX_RESPONSE_BYTES {
                return Err(ClientError::Malformed { addr: addr.clone(), reason: format!("response length {size}") });
            }
            let mut body = vec![0u8; size as usize];
            self.stream.read_exact(&mut body).await.map_err(io)?;
            Ok(body)
        };
        let body = tokio::time::timeout(self.timeout + extra_wait, exchange)
            .await
            .map_err(|_| ClientError::Timeout { addr: self.addr.clone() })??;
        let malformed = |reason: String| ClientError::Malformed { addr: self.addr.clone(), reason };
        let mut buf = bytes::Bytes::from(body);
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .map_err(|e| malformed(format!("header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(malformed(format!(
                "correlation id {} where {correlation_id} was expected",
                header.correlation_id
            )));
        }
        let resp = R::Response::decode(&mut buf, version).map_err(|e| malformed(format!("body: {e}")))?;
        if buf.has_remaining() {
            return Err(malformed(format!("{} bytes after the body", buf.remaining())));
        }
        Ok(resp)
    }

    fn encode<R: Request>(&mut self, version: i16, req: &R) -> Result<BytesMut, ClientError> {
        let fail = |reason: String| ClientError::Encode { api: R::KEY, version, reason };
        let api = ApiKey::try_from(R::KEY).map_err(|_| fail("unknown API key".into()))?;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.next_correlation_id;
        header.client_id = Some(StrBytes::from_string(self.client_id.clone()));
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let header_version = api.request_header_version(version);
        let size = header.compute_size(header_version).map_err(|e| fail(e.to_string()))?
            + req.compute_size(version).map_err(|e| fail(e.to_string()))?;
        let mut out = BytesMut::with_capacity(4 + size);
        out.put_i32(size as i32);
        header.encode(&mut out, header_version).map_err(|e| fail(e.to_string()))?;
        req.encode(&mut out, version).map_err(|e| fail(e.to_string()))?;
        Ok(out)
    }
}
