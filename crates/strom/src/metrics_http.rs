//! The node's HTTP endpoint (`metrics.listener`): `/metrics` in Prometheus text format,
//! `/healthz` (the process is up) and `/readyz` (the broker is unfenced and caught up; the
//! controller, if this node is one, sees an active controller).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strom_broker::apis::Apis;
use strom_controller::controller::Controller;
use tokio_util::sync::CancellationToken;

struct Endpoint {
    registry: Registry,
    apis: Option<Arc<Apis>>,
    controller: Option<Arc<Controller>>,
    active_controller: Gauge,
    controller_offset: Gauge,
    raft_term: Gauge,
}

impl Endpoint {
    fn metrics(&self) -> impl IntoResponse {
        if let Some(a) = &self.apis {
            a.refresh_metrics();
        }
        if let Some(c) = &self.controller {
            self.active_controller.set(i64::from(c.is_active()));
            self.controller_offset.set(c.metadata.image().offset);
            self.raft_term.set(c.raft_term() as i64);
        }
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            Ok(()) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                out,
            ),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], e.to_string()),
        }
    }

    fn ready(&self) -> (StatusCode, &'static str) {
        if self.apis.as_ref().is_some_and(|a| !a.is_ready()) {
            return (StatusCode::SERVICE_UNAVAILABLE, "broker not ready (fenced or catching up)\n");
        }
        if self.controller.as_ref().is_some_and(|c| c.active_controller().is_none()) {
            return (StatusCode::SERVICE_UNAVAILABLE, "no active controller\n");
        }
        (StatusCode::OK, "ready\n")
    }
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    apis: Option<Arc<Apis>>,
    controller: Option<Arc<Controller>>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut registry = Registry::default();
    if let Some(a) = &apis {
        a.metrics().register(&mut registry);
    }
    let active_controller = Gauge::default();
    let controller_offset = Gauge::default();
    let raft_term = Gauge::default();
    if let Some(c) = &controller {
        registry.register(
            "kafka_server_raftmetrics_current_epoch",
            "The metadata quorum's current epoch (Raft term) as this member knows it: it grows with every election",
            raft_term.clone(),
        );
        registry.register(
            "kafka_controller_kafkacontroller_activecontrollercount",
            "1 on the active controller, 0 on other quorum members",
            active_controller.clone(),
        );
        registry.register(
            "strom_controller_metadata_offset",
            "The last metadata offset this controller applied",
            controller_offset.clone(),
        );
        registry.register(
            "kafka_controller_controllereventmanager_eventqueueprocessingtime_seconds",
            "Time for a metadata change to be planned and committed",
            c.write_seconds.clone(),
        );
        registry.register(
            "strom_controller_failed_authentications",
            "Connections to the controller listener refused for a failed TLS handshake or SASL login",
            c.failed_authentications.clone(),
        );
    }
    let endpoint = Arc::new(Endpoint { registry, apis, controller, active_controller, controller_offset, raft_term });
    let app = Router::new()
        .route(
            "/metrics",
            get({
                let e = endpoint.clone();
                move || async move { e.metrics() }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get({
                let e = endpoint.clone();
                move || async move { e.ready() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    Ok((bound, task))
}
