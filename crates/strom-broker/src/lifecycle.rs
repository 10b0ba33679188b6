//! The broker's life with the controller quorum: register, heartbeat (unfenced once caught
//! up), follow the metadata log into our own [`MetadataImage`], and on shutdown ask for a
//! controlled shutdown so leaderships move away before the process exits.
//!
//! Ownership: [`BrokerLifecycle`] is the only writer of the broker's image (a watch channel
//! that request handlers read) and the only caller of [`ReplicaManager::apply_image`].

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strom_metadata::client::ControllerClient;
use strom_metadata::image::MetadataImage;
use strom_metadata::records::RecordBatch;
use strom_protocol::proto::controller as pb;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::replica::ReplicaManager;

/// STALE_BROKER_EPOCH: the controller no longer knows this registration.
const STALE_BROKER_EPOCH: i32 = 77;
/// INCONSISTENT_CLUSTER_ID: this broker's data belongs to another cluster.
const INCONSISTENT_CLUSTER_ID: i32 = 104;

/// Why the broker cannot go on at all (the node stops).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LifecycleError {
    #[error("refusing to join: {0} (the log dirs hold another cluster's data: point this node at its own cluster, or give it empty log dirs)")]
    InconsistentClusterId(String),
}
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A heartbeat to a controller that does not answer this soon is retried on the next voter:
/// well inside `broker.session.timeout.ms`, so one hung voter does not cost the session.
const HEARTBEAT_CALL_TIMEOUT: Duration = Duration::from_millis(700);

pub struct BrokerLifecycle {
    node_id: i32,
    client: ControllerClient,
    listeners: Vec<pb::Endpoint>,
    rack: Option<String>,
    /// The cluster id in this node's `meta.properties`, if it has one (sent on registration).
    cluster_id: Option<String>,
    heartbeat_interval: Duration,
    incarnation: String,
    image: watch::Sender<Arc<MetadataImage>>,
    epoch: AtomicI64,
    fenced: AtomicBool,
    /// Round trip of each heartbeat answered by a controller (`strom_broker_heartbeat_seconds`).
    pub heartbeat_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl BrokerLifecycle {
    pub fn new(
        node_id: i32,
        client: ControllerClient,
        listeners: Vec<pb::Endpoint>,
        rack: Option<String>,
        cluster_id: Option<String>,
        heartbeat_interval: Duration,
    ) -> Arc<Self> {
        let (image, _) = watch::channel(Arc::new(MetadataImage::new()));
        Arc::new(BrokerLifecycle {
            node_id,
            client,
            listeners,
            rack,
            cluster_id,
            heartbeat_interval,
            incarnation: uuid::Uuid::new_v4().to_string(),
            image,
            epoch: AtomicI64::new(-1),
            fenced: AtomicBool::new(true),
            heartbeat_seconds: crate::metrics::latency_histogram(),
        })
    }

    /// The broker's current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.subscribe()
    }

    pub fn broker_epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    pub fn controller(&self) -> &ControllerClient {
        &self.client
    }

    /// Waits until the image has reached `offset` (or `within` passes); true if it has.
    pub async fn wait_for_offset(&self, offset: i64, within: Duration) -> bool {
        let mut rx = self.image.subscribe();
        let reached = tokio::time::timeout(within, rx.wait_for(|img| img.offset >= offset)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Waits until this broker may serve clients: it has registered, its image has caught up
    /// with the metadata log as of joining (it holds its own registration), and that image
    /// shows this broker unfenced. Before the catch-up its view of topics and leaders may be
    /// arbitrarily old; before the unfence its Metadata answer would list no broker at all
    /// (fenced brokers are not listed), and librdkafka's admin client then waits for a
    /// controller it can never reach. So the Kafka listeners keep connections in the accept
    /// backlog until both hold.
    pub async fn wait_ready_to_serve(&self) {
        let mut rx = self.image.subscribe();
        let _ = rx
            .wait_for(|img| {
                let epoch = self.epoch.load(Ordering::Acquire);
                epoch >= 0
                    && img.offset >= epoch
                    && img.cluster_id.is_some()
                    && img.brokers.get(&self.node_id).is_some_and(|b| b.epoch == epoch && !b.fenced)
            })
            .await;
    }

    /// Registers until accepted; `Ok(None)` on shutdown.
    async fn register(&self, shutdown: &CancellationToken) -> Result<Option<i64>, LifecycleError> {
        loop {
            let req = pb::RegisterBrokerRequest {
                broker_id: self.node_id,
                incarnation_id: self.incarnation.clone().into_bytes(),
                listeners: self.listeners.clone(),
                rack: self.rack.clone(),
                cluster_id: self.cluster_id.clone(),
            };
            let r = self.client.call(Duration::from_secs(5), CALL_TIMEOUT, |mut c| {
                let req = req.clone();
                async move { c.register_broker(req).await }
            });
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                r = r => match r {
                    Ok(r) if r.error_code == 0 => {
                        tracing::info!(node = self.node_id, broker_epoch = r.broker_epoch, "registered with the controller");
                        self.epoch.store(r.broker_epoch, Ordering::Release);
                        // Wake `wait_ready_to_serve`, which reads the epoch when the image changes.
                        self.image.send_modify(|_| {});
                        return Ok(Some(r.broker_epoch));
                    }
                    Ok(r) if r.error_code == INCONSISTENT_CLUSTER_ID => {
                        return Err(LifecycleError::InconsistentClusterId(r.error_message));
                    }
                    Ok(r) => tracing::warn!(node = self.node_id, code = r.error_code, error = %r.error_message, "registration refused; retrying"),
                    Err(e) => tracing::warn!(node = self.node_id, error = %e, "controller unreachable; retrying registration"),
                }
            }
        }
    }

    /// Runs until `shutdown`: registration, heartbeats and the metadata follower. On shutdown
    /// it performs a controlled shutdown (bounded in time) before returning. An error means
    /// the broker must not go on (the node stops).
    ///
    /// The heartbeats run where this is called (the node's control runtime); the metadata
    /// follower, which opens and closes partition logs, runs on `data_plane`.
    pub async fn run(
        self: Arc<Self>,
        replicas: Arc<ReplicaManager>,
        data_plane: tokio::runtime::Handle,
        shutdown: CancellationToken,
    ) -> Result<(), LifecycleError> {
        let Some(_) = self.register(&shutdown).await? else { return Ok(()) };
        let follower = data_plane.spawn(self.clone().follow_metadata(replicas, shutdown.clone()));
        let mut tick = tokio::time::interval(self.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self.heartbeat(false).await {
                Ok(r) if r.error_code == STALE_BROKER_EPOCH => {
                    tracing::warn!(node = self.node_id, "controller lost our registration; registering again");
                    match self.register(&shutdown).await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            follower.abort();
                            return Err(e);
                        }
                    }
                }
                Ok(r) if r.error_code == 0 => {
                    let was = self.fenced.swap(r.is_fenced, Ordering::AcqRel);
                    if was != r.is_fenced {
                        tracing::info!(node = self.node_id, fenced = r.is_fenced, "broker fencing state changed");
                    }
                    // Heartbeat promptly until unfenced, so startup is fast.
                    if r.is_fenced {
                        tick.reset_after(Duration::from_millis(50));
                    }
                }
                Ok(r) => tracing::debug!(node = self.node_id, code = r.error_code, "heartbeat refused"),
                Err(e) => tracing::warn!(node = self.node_id, error = %e, "heartbeat failed"),
            }
        }
        // Controlled shutdown: leaderships move away while we can still answer clients.
        match tokio::time::timeout(Duration::from_secs(5), self.heartbeat(true)).await {
            Ok(Ok(r)) if r.error_code == 0 && r.should_shut_down => {
                tracing::info!(node = self.node_id, "controlled shutdown complete")
            }
            other => {
                tracing::warn!(node = self.node_id, result = ?other.map(|r| r.map(|r| r.error_code)), "controlled shutdown incomplete")
            }
        }
        follower.abort();
        Ok(())
    }

    async fn heartbeat(
        &self,
        want_shutdown: bool,
    ) -> Result<pb::BrokerHeartbeatResponse, strom_metadata::client::ClientError> {
        let req = pb::BrokerHeartbeatRequest {
            broker_id: self.node_id,
            broker_epoch: self.broker_epoch(),
            current_metadata_offset: self.image.borrow().offset,
            want_fence: false,
            want_shutdown,
        };
        let started = std::time::Instant::now();
        let answer = self
            .client
            .call(self.heartbeat_interval.max(CALL_TIMEOUT), HEARTBEAT_CALL_TIMEOUT, |mut c| async move {
                c.broker_heartbeat(req).await
            })
            .await;
        if answer.is_ok() {
            self.heartbeat_seconds.observe(started.elapsed().as_secs_f64());
        }
        answer
    }

    /// Long-polls the active controller for committed metadata and applies it.
    async fn follow_metadata(self: Arc<Self>, replicas: Arc<ReplicaManager>, shutdown: CancellationToken) {
        loop {
            let after = self.image.borrow().offset;
            let broker_id = self.node_id;
            let r = self.client.call(Duration::from_secs(5), Duration::from_secs(3), |mut c| async move {
                c.fetch_metadata(pb::FetchMetadataRequest { broker_id, after_offset: after, max_wait_ms: 1000 }).await
            });
            let r = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = r => r,
            };
            let r = match r {
                Ok(r) if r.error_code == 0 => r,
                Ok(r) => {
                    tracing::debug!(node = self.node_id, code = r.error_code, "metadata fetch refused");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(node = self.node_id, error = %e, "metadata fetch failed");
                    continue;
                }
            };
            let mut image = self.image();
            let mut changed = false;
            if let Some(snapshot) = r.snapshot {
                match serde_json::from_slice::<MetadataImage>(&snapshot) {
                    Ok(mut img) => {
                        img.reindex();
                        tracing::info!(
                            node = self.node_id,
                            offset = img.offset,
                            "metadata image replaced from a snapshot"
                        );
                        image = Arc::new(img);
                        changed = true;
                    }
                    Err(e) => {
                        tracing::error!(node = self.node_id, error = %e, "undecodable metadata snapshot");
                        continue;
                    }
                }
            }
            for env in r.records {
                if env.offset <= image.offset {
                    continue;
                }
                match RecordBatch::decode(&env.data) {
                    Ok(batch) => {
                        for e in Arc::make_mut(&mut image).apply_batch(env.offset, &batch.records) {
                            tracing::error!(node = self.node_id, offset = env.offset, error = %e, "metadata record refused");
                        }
                        changed = true;
                    }
                    Err(e) => {
                        // A record this node cannot read: stop following rather than diverge.
                        tracing::error!(node = self.node_id, offset = env.offset, error = %e, "cannot read metadata; upgrade this node");
                        break;
                    }
                }
            }
            if changed {
                replicas.apply_image(&image);
                self.image.send_replace(image);
            }
        }
    }
}
