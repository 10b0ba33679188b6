//! How a node reaches the controller listener of another (a broker its quorum, a controller
//! its Raft peers): one lazily connected gRPC channel per address, over plain TCP or over
//! TLS when the controller listener is `SSL` (the listener's truststore checks the server and
//! its host name; the keystore is presented as this node's client certificate, so a listener
//! with `ssl.client.auth=required` admits it).

use std::time::Duration;

use strom_security::reload::ClientTls;
use tonic::transport::{Channel, Endpoint};

/// How long a TCP connect (and a TLS handshake) to a controller may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A channel to `addr` (`host:port`), connected on first use and reconnected by tonic after a
/// failure. `tune` sets the HTTP/2 options of the endpoint (keep-alives).
pub fn lazy_channel(
    addr: &str,
    tls: Option<&ClientTls>,
    tune: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = tune(Endpoint::from_shared(format!("http://{addr}"))?);
    let Some(tls) = tls else {
        return Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).connect_lazy());
    };
    let tls = tls.clone();
    let connector = tower::service_fn(move |uri: http::Uri| {
        let tls = tls.clone();
        async move {
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(80);
            let connect = async {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                tokio_rustls::TlsConnector::from(tls.get()).connect(name, tcp).await
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS connect timed out"))??;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
