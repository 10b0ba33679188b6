//! The Kafka listener: accepts connections (bounded by a semaphore) and runs one
//! [`Connection`] task each. On shutdown the listener stops accepting, every connection
//! finishes the request it is handling and closes, and [`KafkaListener::run`] returns once
//! the last connection task has ended.
//!
//! Limits shared by a broker's listeners ([`ConnectionLimits`]): connections per client
//! address (`max.connections.per.ip`, a connection over it is closed at once, as Kafka) and
//! request bytes buffered at once over all connections (`queued.max.request.bytes`: a
//! connection whose next request does not fit waits before reading it, which back-pressures
//! the client through TCP). Room for a request is reserved as its bytes arrive
//! ([`frame::RESERVE_STEP`] at a time), never all at once when its length prefix claims it.
//!
//! A TLS listener (`SSL`) runs the TLS handshake in the connection's task, bounded by
//! [`TLS_HANDSHAKE_TIMEOUT`]; a failed handshake (a plaintext client, an untrusted or expired
//! certificate, random bytes) closes that connection only, and is counted and logged.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use strom_protocol::frame::{self, FrameError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::apis::access::Session;
use crate::apis::Apis;
use crate::authenticator::{Authenticator, Gate};
use crate::BrokerSettings;

/// What a listener demands of its connections: TLS (`SSL`, `SASL_SSL`), SASL (`SASL_*`).
#[derive(Clone, Default)]
pub struct ListenerSecurity {
    /// The listener's TLS; each connection takes the server configuration current when it
    /// starts (certificates are reloaded while the listener runs).
    pub tls: Option<Arc<strom_security::reload::ListenerTls>>,
    pub sasl: Option<strom_security::sasl::SaslConfig>,
}

/// Limits every listener of a broker shares.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_per_ip: usize,
    overrides: BTreeMap<IpAddr, usize>,
    open_per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// `queued.max.request.bytes` as permits (one per byte); `None`: unbounded.
    request_memory: Option<Arc<Semaphore>>,
}

impl ConnectionLimits {
    pub fn new(
        max_per_ip: usize,
        overrides: BTreeMap<IpAddr, usize>,
        queued_max_request_bytes: Option<usize>,
    ) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_per_ip,
            overrides,
            open_per_ip: Mutex::default(),
            request_memory: queued_max_request_bytes.map(|b| Arc::new(Semaphore::new(b.min(Semaphore::MAX_PERMITS)))),
        })
    }

    /// No limit beyond `max.connections`.
    pub fn unlimited() -> Arc<Self> {
        Self::new(usize::MAX, BTreeMap::new(), None)
    }

    /// Counts a new connection from `ip`; `None` when that address already has as many as it
    /// may (the connection is then closed).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let limit = self.overrides.get(&ip).copied().unwrap_or(self.max_per_ip);
        let mut open = self.open_per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= limit {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot { limits: self.clone(), ip })
    }
}

/// One connection counted against its address; uncounted when dropped.
struct AddressSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open_per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// How long a client has to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound Kafka listener.
pub struct KafkaListener {
    listener: TcpListener,
    name: String,
    settings: BrokerSettings,
    apis: Arc<Apis>,
    tls: Option<Arc<strom_security::reload::ListenerTls>>,
    sasl: Option<strom_security::sasl::SaslConfig>,
    limits: Arc<ConnectionLimits>,
}

impl KafkaListener {
    /// Binds `addr` (for example `127.0.0.1:9092`); with TLS every connection starts with a
    /// TLS handshake, with SASL it authenticates before anything else.
    pub async fn bind(
        name: &str,
        addr: &str,
        settings: BrokerSettings,
        apis: Arc<Apis>,
        security: ListenerSecurity,
        limits: Arc<ConnectionLimits>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(KafkaListener {
            listener,
            name: name.to_string(),
            settings,
            apis,
            tls: security.tls,
            sasl: security.sasl,
            limits,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `shutdown`, then waits for every connection to close.
    pub async fn run(self, shutdown: CancellationToken) {
        let limit = Arc::new(Semaphore::new(self.settings.max_connections));
        let tasks = TaskTracker::new();
        let mut backoff_ms = 1;
        // Connections wait in the accept backlog until the broker has caught up with the
        // metadata log and is unfenced: answering from a stale image would tell clients that
        // topics do not exist or that old leaders still lead, and answering while fenced
        // would list no broker at all.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = self.apis.wait_ready_to_serve() => {}
        }
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff_ms = 1;
                    a
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %self.name, error = %e, backoff_ms, "accept failed");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(1000);
                    continue;
                }
            };
            let Some(address_slot) = self.limits.admit(peer.ip()) else {
                // max.connections.per.ip: closed at once, as Kafka.
                tracing::debug!(listener = %self.name, %peer, "connection refused: max.connections.per.ip reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let listener = self.name.clone();
            let auth = self.sasl.clone().map(|config| {
                Authenticator::new(
                    config,
                    self.apis.credentials(),
                    self.apis.metrics().clone(),
                    self.settings.sasl_server_max_receive_size,
                )
            });
            let conn = Connection {
                stream,
                listener: self.name.clone(),
                peer,
                settings: self.settings.clone(),
                apis: self.apis.clone(),
                shutdown: shutdown.clone(),
                auth,
                session: Session::anonymous(peer.ip().to_string()),
                request_memory: self.limits.request_memory.clone(),
                _address_slot: address_slot,
            };
            let span = tracing::debug_span!("conn", node = self.settings.node_id, %peer);
            let metrics = self.apis.metrics().clone();
            let tls = self.tls.clone();
            let node = self.settings.node_id;
            metrics.connections.inc();
            tasks.spawn(
                async move {
                    let result = match tls {
                        None => conn.run().await,
                        Some(tls) => match conn.tls_handshake(&tls).await {
                            Ok(conn) => conn.run().await,
                            Err(ConnectionError::ShuttingDown) => Ok(()),
                            Err(e @ ConnectionError::Principal(_)) => {
                                metrics.failed_authentications.inc();
                                tracing::info!(node, listener = %listener, error = %e, "TLS client refused");
                                Err(e)
                            }
                            Err(e) => {
                                metrics.failed_handshakes.inc();
                                tracing::info!(node, listener = %listener, error = %e, "TLS handshake failed");
                                Err(e)
                            }
                        },
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection closed");
                    }
                    metrics.connections.dec();
                    drop(permit);
                }
                .instrument(span),
            );
        }
        tasks.close();
        tasks.wait().await;
        tracing::debug!(listener = %self.name, "listener stopped");
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Request(#[from] crate::apis::RequestError),
    #[error("idle for {0} ms")]
    Idle(u64),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("TLS handshake not finished within {0:?}")]
    TlsTimeout(Duration),
    #[error("{0}")]
    Principal(#[from] strom_security::tls::NoMatchingRule),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("SASL: {0}")]
    Authentication(String),
}

/// One client connection: reads frames, hands each to [`Apis`], writes the answer. `S` is
/// the byte stream: a TCP stream, or TLS over one.
pub struct Connection<S> {
    stream: S,
    /// The listener name (Metadata answers with each broker's endpoint on it).
    listener: String,
    peer: SocketAddr,
    settings: BrokerSettings,
    apis: Arc<Apis>,
    shutdown: CancellationToken,
    /// SASL listeners: the connection's authentication, which every frame passes first.
    auth: Option<Authenticator>,
    /// Who is on the other end (the authorizer asks about them): the SASL user, else the
    /// client certificate's subject (mTLS), else ANONYMOUS.
    session: Session,
    /// `queued.max.request.bytes`, shared by every connection of the broker.
    request_memory: Option<Arc<Semaphore>>,
    _address_slot: AddressSlot,
}

impl Connection<tokio::net::TcpStream> {
    /// Runs the server side of a TLS handshake; the connection then speaks over TLS.
    async fn tls_handshake(
        self,
        tls: &strom_security::reload::ListenerTls,
    ) -> Result<Connection<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>, ConnectionError> {
        let Connection {
            stream,
            listener,
            peer,
            settings,
            apis,
            shutdown,
            auth,
            mut session,
            request_memory,
            _address_slot,
        } = self;
        let Some(server) = tls.server.as_ref() else {
            return Err(ConnectionError::Tls(std::io::Error::other("the listener has no server certificate")));
        };
        let acceptor = TlsAcceptor::from(server.get());
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return Err(ConnectionError::ShuttingDown),
            r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => match r {
                Err(_) => return Err(ConnectionError::TlsTimeout(TLS_HANDSHAKE_TIMEOUT)),
                Ok(Err(e)) => return Err(ConnectionError::Tls(e)),
                Ok(Ok(s)) => s,
            },
        };
        // mTLS: the client certificate's subject, mapped by ssl.principal.mapping.rules, is
        // the principal (Kafka's default builder); a subject no rule maps is refused.
        if let Some(name) = tls.settings.principal_of(stream.get_ref().1.peer_certificates())? {
            session.principal = format!("User:{name}");
        }
        Ok(Connection {
            stream,
            listener,
            peer,
            settings,
            apis,
            shutdown,
            auth,
            session,
            request_memory,
            _address_slot,
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The largest frame accepted now (smaller before a SASL connection authenticated).
    fn frame_limit(&self) -> usize {
        let socket_max = self.settings.socket_request_max_bytes;
        self.auth.as_ref().map_or(socket_max, |a| a.frame_limit(socket_max))
    }

    async fn run(mut self) -> Result<(), ConnectionError> {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let idle = Duration::from_millis(self.settings.connections_max_idle_ms);
        // When the bytes now in `buf` were read: a pipelined request waits from then until
        // the requests before it are answered (its queue time).
        let mut received = Instant::now();
        // Room in `queued.max.request.bytes` held for the request at the front of `buf`, from
        // before its bytes are read until it is answered.
        let mut held: Option<OwnedSemaphorePermit> = None;
        loop {
            while let Some(frame) = frame::split_frame(&mut buf, self.frame_limit())? {
                let _held_for_this_request = held.take();
                let gate = match self.auth.as_mut() {
                    Some(a) => a.on_frame(frame),
                    None => Gate::Dispatch(frame),
                };
                let frame = match gate {
                    Gate::Dispatch(frame) => frame,
                    Gate::Reply(answer) => {
                        self.stream.write_all(&answer).await?;
                        if let Some(user) = self.auth.as_ref().and_then(|a| a.user()) {
                            self.session.principal = format!("User:{user}");
                        }
                        continue;
                    }
                    Gate::ReplyAndClose(answer, why) => {
                        self.stream.write_all(&answer).await?;
                        self.stream.flush().await?;
                        let _ = self.stream.shutdown().await;
                        return Err(ConnectionError::Authentication(why));
                    }
                    Gate::Close(why) => return Err(ConnectionError::Authentication(why)),
                };
                let api = crate::apis::api_name(&frame);
                // `None`: an acks=0 produce, which Kafka never answers.
                if let Some(response) = self.apis.handle(frame, &self.listener, received, &self.session).await? {
                    let ready = Instant::now();
                    write_parts(&mut self.stream, &response.frame.0).await?;
                    if let Some(api) = api {
                        self.apis.metrics().record_response_send(&api, ready.elapsed().as_secs_f64());
                    }
                }
            }
            if let (None, Some(memory), Some(len)) = (&held, &self.request_memory, frame::pending_frame_len(&buf)) {
                // Wait for room for the whole request before reading it (the length prefix was
                // checked against socket.request.max.bytes, which the pool is at least).
                let want = u32::try_from(len).unwrap_or(u32::MAX);
                held = tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    p = memory.clone().acquire_many_owned(want) => p.ok(),
                };
            }
            let read = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                r = tokio::time::timeout(idle, self.stream.read_buf(&mut buf)) => r,
            };
            match read {
                Err(_) => return Err(ConnectionError::Idle(self.settings.connections_max_idle_ms)),
                Ok(Ok(0)) => {
                    tracing::trace!(peer = %self.peer, "peer closed");
                    return Ok(());
                }
                Ok(Ok(_)) => received = Instant::now(),
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }
}

/// Writes `parts` in order, as many as the socket takes per vectored write (at most 64
/// pieces each).
async fn write_parts<S: AsyncWrite + Unpin>(stream: &mut S, parts: &[bytes::Bytes]) -> std::io::Result<()> {
    use bytes::Buf;
    if let [one] = parts {
        return stream.write_all(one).await;
    }
    let mut queue: std::collections::VecDeque<bytes::Bytes> = parts.iter().filter(|p| !p.is_empty()).cloned().collect();
    while !queue.is_empty() {
        let slices: Vec<std::io::IoSlice<'_>> = queue.iter().take(64).map(|p| std::io::IoSlice::new(p)).collect();
        let mut n = stream.write_vectored(&slices).await?;
        drop(slices);
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(front) = queue.front_mut() else { break };
            if n >= front.len() {
                n -= front.len();
                queue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[tokio::test]
    async fn pieces_arrive_whole_and_in_order_through_short_writes() {
        let parts: Vec<bytes::Bytes> =
            (0..200u32).map(|i| bytes::Bytes::from(vec![i as u8; (i as usize * 37) % 3000])).collect();
        let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        // A pipe far smaller than the frame: writes come back short.
        let (mut w, mut r) = tokio::io::duplex(1000);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        });
        write_parts(&mut w, &parts).await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), expected);
    }
}
