//! How a node reaches the controller listener of another (a broker its quorum, a controller
//! its Raft peers): one lazily connected gRPC channel per address, over plain TCP, over TLS
//! when the controller listener is `SSL` or `SASL_SSL` (the listener's truststore checks the
//! server and its host name; the keystore is presented as this node's client certificate, so
//! a listener with `ssl.client.auth=required` admits it), and logged in with SASL PLAIN
//! ([`crate::controller_sasl`]) when it is `SASL_PLAINTEXT` or `SASL_SSL`.

use std::time::Duration;

use strom_security::reload::ClientTls;
use tonic::transport::{Channel, Endpoint};

use crate::controller_sasl::{self, PlainLogin};

/// How long a TCP connect (with its TLS handshake and SASL exchange) to a controller may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How this node protects its connections to controller listeners.
#[derive(Clone, Debug, Default)]
pub struct ControllerSecurity {
    /// TLS (`SSL`, `SASL_SSL`): the configuration current when a connection starts.
    pub tls: Option<ClientTls>,
    /// SASL PLAIN (`SASL_PLAINTEXT`, `SASL_SSL`).
    pub sasl: Option<PlainLogin>,
}

/// The byte stream under a controller connection.
trait ByteStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ByteStream for T {}

/// A channel to `addr` (`host:port`), connected on first use and reconnected by tonic after a
/// failure. `tune` sets the HTTP/2 options of the endpoint (keep-alives).
pub fn lazy_channel(
    addr: &str,
    security: &ControllerSecurity,
    tune: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = tune(Endpoint::from_shared(format!("http://{addr}"))?);
    if security.tls.is_none() && security.sasl.is_none() {
        return Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).connect_lazy());
    }
    let security = security.clone();
    let connector = tower::service_fn(move |uri: http::Uri| {
        let security = security.clone();
        async move {
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(80);
            let connect = async {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let mut stream: Box<dyn ByteStream> = match &security.tls {
                    None => Box::new(tcp),
                    Some(tls) => {
                        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                        Box::new(tokio_rustls::TlsConnector::from(tls.get()).connect(name, tcp).await?)
                    }
                };
                if let Some(login) = &security.sasl {
                    controller_sasl::login(&mut stream, login)
                        .await
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
                }
                Ok::<_, std::io::Error>(stream)
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "controller connect timed out"))??;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
