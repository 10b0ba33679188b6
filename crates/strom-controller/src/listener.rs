//! The controller listener: gRPC over plain TCP, or over TLS when the listener is `SSL` or
//! `SASL_SSL`, after a SASL PLAIN login when it is `SASL_PLAINTEXT` or `SASL_SSL`
//! ([`strom_metadata::controller_sasl`]).
//!
//! Every connection is accepted here and handed to tonic as a [`ControllerStream`] that
//! carries its [`Peer`]: the address and the principal (`User:<SASL user>` on a SASL
//! listener; else `User:<certificate subject>` mapped by `ssl.principal.mapping.rules` for a
//! client with a certificate; `User:ANONYMOUS` otherwise). With an authorizer configured, [`authorize_cluster_action`] lets a call
//! through only for a principal allowed CLUSTER_ACTION on the cluster (a super user, or an
//! ACL), as Kafka's controller checks its brokers' and peers' requests.
//!
//! TLS handshakes and SASL exchanges run in their own tasks, bounded together by
//! [`AUTHENTICATION_TIMEOUT`], so a slow or hostile client never holds up the accept loop; a
//! failed one closes that connection only and is logged (without the password) and counted
//! (`Controller::failed_authentications`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use strom_metadata::acl::{authorize, AuthorizerSettings, Operation, Requester, ResourceType, CLUSTER_NAME};
use strom_metadata::controller_sasl::{self, ExchangeError};
use strom_security::reload::ListenerTls;
use strom_security::sasl::SaslConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::raft::state_machine::MetadataState;

/// How long a peer has to finish its TLS handshake and SASL exchange.
pub const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections may be in their TLS handshake or SASL exchange at once; more are
/// closed at once (a flood of connections that never finish cannot hold the node's file
/// descriptors and memory; brokers and peers retry).
pub const MAX_PENDING_AUTHENTICATIONS: usize = 256;

/// Who is on the other end of a controller-listener connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub principal: String,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    async fn sasl_accept(&mut self, config: &SaslConfig, max_frame: usize) -> Result<String, ExchangeError> {
        match self {
            Io::Plain(s) => controller_sasl::accept(s, config, max_frame).await,
            Io::Tls(s) => controller_sasl::accept(s.as_mut(), config, max_frame).await,
        }
    }
}

/// One accepted connection, plain or TLS, with its peer.
pub struct ControllerStream {
    io: Io,
    peer: Peer,
}

impl tonic::transport::server::Connected for ControllerStream {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for ControllerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ControllerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Accepts connections on `listener` until `shutdown`, runs the TLS handshake of each when
/// `tls` is set and the SASL login when `sasl` is, and yields the connections ready for gRPC.
pub fn incoming(
    node_id: i32,
    listener: TcpListener,
    tls: Option<Arc<ListenerTls>>,
    sasl: Option<(SaslConfig, usize)>,
    failed: prometheus_client::metrics::counter::Counter,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<ControllerStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let sasl = sasl.map(Arc::new);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_AUTHENTICATIONS));
    tokio::spawn(async move {
        let mut backoff_ms = 1;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => {
                    backoff_ms = 1;
                    a
                }
                Err(e) => {
                    tracing::warn!(node = node_id, error = %e, backoff_ms, "controller listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(1000);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tls.is_none() && sasl.is_none() {
                let principal = format!("User:{}", strom_security::ANONYMOUS);
                let stream = ControllerStream { io: Io::Plain(tcp), peer: Peer { addr, principal } };
                if tx.send(Ok(stream)).await.is_err() {
                    return;
                }
                continue;
            }
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                failed.inc();
                tracing::warn!(node = node_id, %addr, limit = MAX_PENDING_AUTHENTICATIONS, "controller listener: too many connections authenticating; closed");
                continue;
            };
            let (tx, shutdown, tls, sasl, failed) =
                (tx.clone(), shutdown.clone(), tls.clone(), sasl.clone(), failed.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let authenticated = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(AUTHENTICATION_TIMEOUT, authenticate(tcp, tls, sasl)) => match r {
                        Ok(r) => r,
                        Err(_) => Err("timed out".to_string()),
                    },
                };
                match authenticated {
                    Ok((io, principal)) => {
                        let _ = tx.send(Ok(ControllerStream { io, peer: Peer { addr, principal } })).await;
                    }
                    Err(reason) => {
                        failed.inc();
                        tracing::info!(node = node_id, %addr, %reason, "controller listener: connection refused");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The TLS handshake (when `tls`), then the SASL login (when `sasl`) of one connection: its
/// stream and principal, or why it was refused (a message naming no secret).
async fn authenticate(
    tcp: TcpStream,
    tls: Option<Arc<ListenerTls>>,
    sasl: Option<Arc<(SaslConfig, usize)>>,
) -> Result<(Io, String), String> {
    let mut principal = format!("User:{}", strom_security::ANONYMOUS);
    let mut io = match &tls {
        None => Io::Plain(tcp),
        Some(tls) => {
            let server = tls.server.as_ref().map(|s| s.get()).ok_or("no TLS server configuration")?;
            let stream = tokio_rustls::TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            match tls.settings.principal_of(stream.get_ref().1.peer_certificates()) {
                Ok(Some(name)) => principal = format!("User:{name}"),
                Ok(None) => {}
                Err(e) => return Err(format!("certificate refused: {e}")),
            }
            Io::Tls(Box::new(stream))
        }
    };
    if let Some(sasl) = &sasl {
        let (config, max_frame) = sasl.as_ref();
        let user = io.sasl_accept(config, *max_frame).await.map_err(|e| e.to_string())?;
        principal = format!("User:{user}");
    }
    Ok((io, principal))
}

/// A gRPC interceptor for the controller's services: with an authorizer, the caller must be
/// allowed CLUSTER_ACTION on the cluster (brokers and controllers are; nobody else is).
pub fn authorize_cluster_action(
    node_id: i32,
    settings: Option<AuthorizerSettings>,
    metadata: Arc<MetadataState>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let Some(settings) = settings.as_ref() else { return Ok(req) };
        let Some(peer) = req.extensions().get::<Peer>() else {
            return Err(tonic::Status::permission_denied("CLUSTER_AUTHORIZATION_FAILED: unknown caller"));
        };
        let host = peer.addr.ip().to_string();
        let who = Requester { principal: &peer.principal, host: &host };
        let image = metadata.image();
        if authorize(&image.acls, settings, &who, Operation::ClusterAction, ResourceType::Cluster, CLUSTER_NAME) {
            return Ok(req);
        }
        tracing::warn!(node = node_id, principal = %peer.principal, %host, "controller listener: call refused (no CLUSTER_ACTION)");
        Err(tonic::Status::permission_denied(format!(
            "CLUSTER_AUTHORIZATION_FAILED: {} may not CLUSTER_ACTION on the cluster",
            peer.principal
        )))
    }
}
