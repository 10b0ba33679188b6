//! The controller listener: gRPC over plain TCP, or over TLS when the listener is `SSL`.
//!
//! Every connection is accepted here and handed to tonic as a [`ControllerStream`] that
//! carries its [`Peer`]: the address and the principal (`User:<certificate subject>` mapped
//! by `ssl.principal.mapping.rules` for a client with a certificate, `User:ANONYMOUS`
//! otherwise). With an authorizer configured, [`authorize_cluster_action`] lets a call
//! through only for a principal allowed CLUSTER_ACTION on the cluster (a super user, or an
//! ACL), as Kafka's controller checks its brokers' and peers' requests.
//!
//! TLS handshakes run in their own tasks, bounded by [`TLS_HANDSHAKE_TIMEOUT`], so a slow or
//! hostile client never holds up the accept loop; a failed handshake closes that connection
//! only and is logged.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use strom_metadata::acl::{authorize, AuthorizerSettings, Operation, Requester, ResourceType, CLUSTER_NAME};
use strom_security::reload::ListenerTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::raft::state_machine::MetadataState;

/// How long a peer has to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
/// `tls` is set, and yields the connections ready for gRPC.
pub fn incoming(
    node_id: i32,
    listener: TcpListener,
    tls: Option<Arc<ListenerTls>>,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<ControllerStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
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
            let anonymous = format!("User:{}", strom_security::ANONYMOUS);
            let Some(tls) = tls.clone() else {
                let stream = ControllerStream { io: Io::Plain(tcp), peer: Peer { addr, principal: anonymous } };
                if tx.send(Ok(stream)).await.is_err() {
                    return;
                }
                continue;
            };
            let (tx, shutdown) = (tx.clone(), shutdown.clone());
            tokio::spawn(async move {
                let Some(server) = tls.server.as_ref().map(|s| s.get()) else { return };
                let handshake = tokio_rustls::TlsAcceptor::from(server).accept(tcp);
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake) => match r {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(node = node_id, %addr, error = %e, "controller listener: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(node = node_id, %addr, "controller listener: TLS handshake timed out");
                            return;
                        }
                    },
                };
                let principal = match tls.settings.principal_of(stream.get_ref().1.peer_certificates()) {
                    Ok(Some(name)) => format!("User:{name}"),
                    Ok(None) => anonymous,
                    Err(e) => {
                        tracing::info!(node = node_id, %addr, error = %e, "controller listener: peer refused");
                        return;
                    }
                };
                let stream = ControllerStream { io: Io::Tls(Box::new(stream)), peer: Peer { addr, principal } };
                let _ = tx.send(Ok(stream)).await;
            });
        }
    });
    ReceiverStream::new(rx)
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
