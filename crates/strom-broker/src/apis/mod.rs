//! Request dispatch. [`SUPPORTED`] is the one table of APIs and versions this broker serves:
//! ApiVersions advertises it and the decoder refuses anything outside it. Each API has its
//! module; they share the [`Broker`] context.

pub mod access;
mod admin;
pub use admin::source as config_source;
mod api_versions;
mod fetch;
pub use fetch::{FetchLease, FetchMemory};
mod forward;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod transactions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strom_metadata::image::MetadataImage;
use strom_protocol::frame::{self, FrameError, Request};
use strom_protocol::kafka_protocol::messages::{ApiKey, RequestKind};
use strom_protocol::kafka_protocol::protocol::Encodable;
use strom_protocol::proto::controller as pb;

use crate::coordinator::group::{GroupCoordinator, OffsetStore};
use crate::coordinator::txn::TxnCoordinator;
use crate::lifecycle::BrokerLifecycle;
use crate::metrics::BrokerMetrics;
use crate::replica::ReplicaManager;
use crate::BrokerSettings;

/// (API, lowest version, highest version) served. Ranges start at Kafka 4.0's KIP-896 floors
/// and end at Kafka 4.0's highest versions (or the codec's, if lower).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
];

/// The supported version range of `key`, if served.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == key).map(|(_, lo, hi)| (*lo, *hi))
}

/// What the request handlers share.
pub struct Broker {
    pub settings: BrokerSettings,
    pub lifecycle: Arc<BrokerLifecycle>,
    pub replicas: Arc<ReplicaManager>,
    /// Producer ids handed out from the current controller block: (next, end).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    pub groups: GroupCoordinator,
    pub offsets: OffsetStore,
    pub txns: TxnCoordinator,
    /// Connections for the WriteTxnMarkers this broker sends as a transaction coordinator.
    markers: transactions::MarkerConnections,
    pub metrics: Arc<BrokerMetrics>,
    /// Room for consumer Fetch responses (`fetch.response.memory.max.bytes`).
    pub fetch_memory: FetchMemory,
}

/// A response frame to write (in pieces: a Fetch response's records are the log's own
/// buffers, `frame::encode_response_spliced`), with the fetch memory it holds until it is
/// written.
pub struct Response {
    pub frame: frame::FrameParts,
    _lease: Option<FetchLease>,
}

impl Response {
    fn new(frame: Bytes) -> Response {
        Response { frame: frame.into(), _lease: None }
    }
}

/// The request handlers.
pub struct Apis {
    broker: Broker,
}

/// The API name of a request frame (`Produce`, `Fetch`, …), as the metrics label it.
pub fn api_name(raw: &[u8]) -> Option<String> {
    let (k, _, _) = strom_protocol::frame::peek_header(raw).ok()?;
    ApiKey::try_from(k).ok().map(|k| format!("{k:?}"))
}

impl Apis {
    /// SCRAM credentials as this broker's metadata image has them (for SASL listeners).
    pub fn credentials(&self) -> Arc<dyn strom_security::sasl::CredentialStore> {
        Arc::new(crate::authenticator::ImageCredentials(self.broker.lifecycle.clone()))
    }

    /// Waits until the broker may serve clients (see [`BrokerLifecycle::wait_ready_to_serve`]).
    pub async fn wait_ready_to_serve(&self) {
        self.broker.lifecycle.wait_ready_to_serve().await
    }
}

/// A forwarded admin request that could not reach an active controller.
#[derive(Debug, thiserror::Error)]
#[error("controller unavailable: {0}")]
pub struct ForwardFailed(String);

/// Why a request ends its connection.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// An acks=0 produce failed for these partitions (`topic-partition: code`).
    #[error("acks=0 produce failed ({0}); closing the connection so the producer refreshes its metadata")]
    AcksZeroFailed(String),
}

impl Broker {
    pub fn image(&self) -> Arc<MetadataImage> {
        self.lifecycle.image()
    }

    /// The error for a partition this broker holds no replica of: NOT_LEADER_OR_FOLLOWER when
    /// the cluster has it (the client's metadata is stale; it refreshes and retries), else
    /// UNKNOWN_TOPIC_OR_PARTITION. Kafka's ReplicaManager answers the same way.
    pub(crate) fn not_hosted(&self, topic: &str, partition: i32) -> i16 {
        const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
        const NOT_LEADER_OR_FOLLOWER: i16 = 6;
        if self.image().partition(topic, partition).is_some() {
            NOT_LEADER_OR_FOLLOWER
        } else {
            UNKNOWN_TOPIC_OR_PARTITION
        }
    }

    /// Sends an admin request to the active controller in Kafka's encoding, waits until our
    /// own image holds the change, and returns the response body.
    async fn forward(&self, api_key: ApiKey, version: i16, body: &RequestKind) -> Result<Bytes, ForwardFailed> {
        let mut buf = BytesMut::new();
        body.encode(&mut buf, version).map_err(|e| ForwardFailed(e.to_string()))?;
        let req =
            pb::ForwardedKafkaRequest { api_key: api_key as i32, api_version: version as i32, body: buf.to_vec() };
        let r = self
            .lifecycle
            .controller()
            .call(Duration::from_secs(10), Duration::from_secs(5), |mut c| {
                let req = req.clone();
                async move { c.forward(req).await }
            })
            .await
            .map_err(|e| ForwardFailed(e.to_string()))?;
        if r.error_code != 0 {
            return Err(ForwardFailed(format!("error code {}", r.error_code)));
        }
        if r.metadata_offset >= 0 && !self.lifecycle.wait_for_offset(r.metadata_offset, Duration::from_secs(5)).await {
            tracing::warn!(
                node = self.settings.node_id,
                offset = r.metadata_offset,
                "metadata did not reach the change in time"
            );
        }
        Ok(Bytes::from(r.body))
    }

    /// The next producer id, taking a new block from the controller when this one is used up.
    async fn next_producer_id(&self) -> Result<i64, ForwardFailed> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let req = pb::AllocateProducerIdsRequest {
                broker_id: self.settings.node_id,
                broker_epoch: self.lifecycle.broker_epoch(),
            };
            let r = self
                .lifecycle
                .controller()
                .call(Duration::from_secs(10), Duration::from_secs(5), |mut c| async move {
                    c.allocate_producer_ids(req).await
                })
                .await
                .map_err(|e| ForwardFailed(e.to_string()))?;
            if r.error_code != 0 {
                return Err(ForwardFailed(format!("producer id allocation: error code {}", r.error_code)));
            }
            *ids = (r.first_producer_id, r.first_producer_id + r.count as i64);
        }
        ids.0 += 1;
        Ok(ids.0 - 1)
    }

    /// `min.insync.replicas` of `topic`: its override, else the broker's.
    pub(crate) fn min_isr(&self, image: &MetadataImage, topic: &str) -> usize {
        self.topic_config(image, topic)
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.settings.min_insync_replicas as usize)
    }

    /// Topic configs with their effective values: topic overrides over broker defaults.
    pub(crate) fn topic_config(&self, image: &MetadataImage, topic: &str) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> =
            self.settings.topic_defaults.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        if let Some(over) = image.topic_configs.get(topic) {
            out.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }
}

impl Apis {
    pub fn new(settings: BrokerSettings, lifecycle: Arc<BrokerLifecycle>, replicas: Arc<ReplicaManager>) -> Self {
        let groups =
            GroupCoordinator::new(settings.node_id, Duration::from_millis(settings.group_initial_rebalance_delay_ms))
                .with_group_max_size(settings.group_max_size)
                .with_session_timeout_bounds(
                    settings.group_min_session_timeout_ms,
                    settings.group_max_session_timeout_ms,
                );
        let offsets = OffsetStore::new(replicas.clone(), settings.offsets_topic_num_partitions);
        let txns = TxnCoordinator::new(replicas.clone(), settings.transactions.clone());
        let metrics = Arc::new(BrokerMetrics::new(settings.metrics_per_partition, lifecycle.heartbeat_seconds.clone()));
        let fetch_memory = FetchMemory::new(settings.fetch_response_memory_max_bytes);
        Apis {
            broker: Broker {
                fetch_memory,
                settings,
                lifecycle,
                replicas,
                producer_ids: tokio::sync::Mutex::new((0, 0)),
                groups,
                offsets,
                txns,
                markers: Default::default(),
                metrics,
            },
        }
    }

    pub fn metrics(&self) -> &Arc<BrokerMetrics> {
        &self.broker.metrics
    }

    /// Recomputes the state gauges; the metrics endpoint calls it before each scrape.
    pub fn refresh_metrics(&self) {
        let b = &self.broker;
        b.metrics.refresh(&b.image(), &b.replicas, &b.offsets, b.settings.min_insync_replicas);
    }

    /// Ready to serve: registered, unfenced, caught up with the metadata log.
    pub fn is_ready(&self) -> bool {
        !self.broker.lifecycle.is_fenced()
    }

    /// The group coordinator's timer: session expiry and rebalance deadlines; groups this
    /// broker no longer coordinates are dropped (their members rejoin at the new coordinator).
    /// Every few seconds it also makes sure `__consumer_offsets` is compacted (a cluster made
    /// before it was is switched).
    pub async fn run_group_timer(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        const OFFSETS_TOPIC_CHECK_TICKS: u32 = 50;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let b = &self.broker;
            b.groups.forget(|g| b.offsets.leads(g));
            for (group, membership) in b.offsets.take_memberships() {
                b.groups.restore(&group, membership);
            }
            b.groups.tick();
            ticks = ticks.wrapping_add(1);
            if ticks % OFFSETS_TOPIC_CHECK_TICKS == 1 && self.is_ready() {
                groups::ensure_offsets_topic_compacted(b).await;
            }
        }
    }

    /// The offsets store's upkeep, every second: an emptied group's emptiness is stored (so
    /// retention counts from it after a failover), partitions holding records from before
    /// keys are rewritten with keys, and every `offsets.retention.check.interval.ms` expired
    /// offsets are tombstoned (rules in [`crate::coordinator::group::offsets`]).
    pub async fn run_offsets_upkeep(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
        let b = &self.broker;
        let check_every = Duration::from_millis(b.settings.offsets_retention_check_interval_ms.max(1));
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(check_every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_check = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for (group, membership) in b.groups.unstored_empty() {
                if let Err(code) = b.offsets.store_membership(&group, membership, WRITE_TIMEOUT).await {
                    tracing::warn!(node = b.settings.node_id, group = %group, code, "empty group not stored");
                }
            }
            for p in b.offsets.keyless_partitions() {
                if let Err(code) = b.offsets.rewrite_keyless(p, WRITE_TIMEOUT).await {
                    tracing::warn!(node = b.settings.node_id, partition = p, code, "keyless offsets not rewritten");
                }
            }
            if last_check.elapsed() >= check_every {
                last_check = tokio::time::Instant::now();
                let expired = b
                    .offsets
                    .expire(
                        b.settings.offsets_retention_ms,
                        |g| b.groups.retention_start(g),
                        |g| b.groups.remove_if_empty(g),
                        WRITE_TIMEOUT,
                    )
                    .await;
                b.metrics.expired_offsets.inc_by(expired as u64);
            }
        }
    }

    /// The transaction coordinator's driver: loads the `__transaction_state` partitions this
    /// broker starts to lead (resuming what was half-ended there), completes ended
    /// transactions (markers, then Complete*), aborts transactions past their timeout every
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms` and forgets expired ids
    /// every `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub async fn run_transactions(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let b = &self.broker;
        let settings = b.settings.transactions.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_abort_check = tokio::time::Instant::now();
        let mut last_expiry_check = tokio::time::Instant::now();
        let mut aborting: Option<tokio::task::JoinHandle<()>> = None;
        let mut expiring: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = b.txns.completions.notified() => {}
                _ = tick.tick() => {}
            }
            b.txns.load_led_partitions();
            for id in b.txns.take_completions() {
                let apis = self.clone();
                tokio::spawn(async move {
                    transactions::complete_transaction(&apis.broker, &id).await;
                    apis.broker.txns.completion_ended(&id);
                });
            }
            // Timeouts and expiry write and wait for commits: off this loop, so completions and
            // loads never wait behind them (one pass of each at a time).
            if last_abort_check.elapsed() >= Duration::from_millis(settings.abort_check_interval_ms)
                && aborting.as_ref().is_none_or(|t| t.is_finished())
            {
                last_abort_check = tokio::time::Instant::now();
                let apis = self.clone();
                aborting = Some(tokio::spawn(async move {
                    apis.broker.txns.abort_timed_out().await;
                }));
            }
            if last_expiry_check.elapsed() >= Duration::from_millis(settings.expiration_check_interval_ms)
                && expiring.as_ref().is_none_or(|t| t.is_finished())
            {
                last_expiry_check = tokio::time::Instant::now();
                let apis = self.clone();
                expiring = Some(tokio::spawn(async move {
                    let b = &apis.broker;
                    let expired = b.txns.expire_ids().await;
                    if expired > 0 {
                        tracing::info!(node = b.settings.node_id, ids = expired, "transactional ids expired");
                    }
                }));
            }
        }
    }

    /// Handles one request frame that arrived on `listener`; returns the response frame, or
    /// `None` when Kafka sends no response. An error closes the connection.
    /// Handles one request frame, read off the socket at `received`.
    pub async fn handle(
        &self,
        raw: Bytes,
        listener: &str,
        received: std::time::Instant,
        session: &access::Session,
    ) -> Result<Option<Response>, RequestError> {
        let started = std::time::Instant::now();
        let key = api_name(&raw);
        let result = self.dispatch(raw, listener, session).await;
        if let Some(k) = key {
            let queued = started.saturating_duration_since(received).as_secs_f64();
            self.broker.metrics.record_request(&k, queued, received.elapsed().as_secs_f64());
        }
        result
    }

    async fn dispatch(
        &self,
        raw: Bytes,
        listener: &str,
        session: &access::Session,
    ) -> Result<Option<Response>, RequestError> {
        let request = match frame::decode_request(raw, supported) {
            Ok(r) => r,
            Err(FrameError::UnsupportedVersion { api: ApiKey::ApiVersions, correlation_id, .. }) => {
                // KIP-511: answer an ApiVersions we cannot parse at v0 with the ranges we have.
                return Ok(Some(Response::new(api_versions::unsupported(correlation_id)?)));
            }
            Err(e) => return Err(e.into()),
        };
        let Request { api_key, header, body } = request;
        let version = header.request_api_version;
        let cid = header.correlation_id;
        let b = &self.broker;
        let a = &access::Access::new(session, b.settings.authorizer.as_ref(), b.image());
        let respond = |m: &dyn ErasedEncodable| Ok(Some(Response::new(m.encode_frame(api_key, version, cid)?)));
        match &body {
            RequestKind::ApiVersions(_) => respond(&api_versions::response()),
            RequestKind::Metadata(r) => respond(&metadata::handle(b, a, r, version, listener).await),
            RequestKind::Produce(r) => {
                match produce::handle(b, a, r, version, header.client_id.as_deref().unwrap_or("")).await {
                    produce::ProduceAnswer::Response(resp) => respond(&resp),
                    produce::ProduceAnswer::Nothing => Ok(None),
                    produce::ProduceAnswer::Close(failed) => Err(RequestError::AcksZeroFailed(failed)),
                }
            }
            RequestKind::Fetch(r) => {
                let (resp, lease) = fetch::handle(b, a, r, version).await;
                let records: Vec<Bytes> =
                    resp.responses.iter().flat_map(|t| &t.partitions).filter_map(|p| p.records.clone()).collect();
                let frame = frame::encode_response_spliced(api_key, version, cid, &resp, &records)?;
                // The records' room is held until the frame is written (FetchMemory's rule).
                Ok(Some(Response { frame, _lease: lease }))
            }
            RequestKind::ListOffsets(r) => respond(&offsets::list_offsets(b, a, r, version)),
            RequestKind::OffsetForLeaderEpoch(r) => respond(&offsets::offset_for_leader_epoch(b, a, r)),
            RequestKind::DeleteRecords(r) => respond(&offsets::delete_records(b, a, r)),
            RequestKind::InitProducerId(r) => match r.transactional_id.as_ref() {
                Some(id) => respond(&transactions::init_transactional_producer_id(b, a, r, &id.0, version).await),
                None => respond(&admin::init_producer_id(b, a, r).await),
            },
            RequestKind::AddPartitionsToTxn(r) => respond(&transactions::add_partitions_to_txn(b, a, r, version).await),
            RequestKind::AddOffsetsToTxn(r) => respond(&transactions::add_offsets_to_txn(b, a, r, version).await),
            RequestKind::EndTxn(r) => respond(&transactions::end_txn(b, a, r, version).await),
            RequestKind::TxnOffsetCommit(r) => respond(&transactions::txn_offset_commit(b, a, r, version).await),
            RequestKind::ListTransactions(r) => respond(&transactions::list_transactions(b, a, r)),
            RequestKind::DescribeTransactions(r) => respond(&transactions::describe_transactions(b, a, r)),
            RequestKind::DescribeConfigs(r) => respond(&admin::describe_configs(b, a, r)),
            RequestKind::DescribeCluster(r) => respond(&admin::describe_cluster(b, r, listener)),
            RequestKind::DescribeLogDirs(r) => respond(&admin::describe_log_dirs(b, a, r)),
            RequestKind::FindCoordinator(r) => respond(&groups::find_coordinator(b, a, r, version, listener).await),
            RequestKind::JoinGroup(r) => {
                let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
                respond(&groups::join_group(b, a, r, version, &client_id).await)
            }
            RequestKind::SyncGroup(r) => respond(&groups::sync_group(b, a, r).await),
            RequestKind::Heartbeat(r) => respond(&groups::heartbeat(b, a, r)),
            RequestKind::LeaveGroup(r) => respond(&groups::leave_group(b, a, r, version)),
            RequestKind::OffsetCommit(r) => respond(&groups::offset_commit(b, a, r).await),
            RequestKind::OffsetFetch(r) => respond(&groups::offset_fetch(b, a, r, version)),
            RequestKind::ListGroups(r) => respond(&groups::list_groups(b, a, r)),
            RequestKind::DescribeGroups(r) => respond(&groups::describe_groups(b, a, r)),
            RequestKind::DeleteGroups(r) => respond(&groups::delete_groups(b, a, r).await),
            RequestKind::OffsetDelete(r) => respond(&groups::offset_delete(b, a, r).await),
            RequestKind::DescribeUserScramCredentials(r) => respond(&admin::describe_user_scram_credentials(b, a, r)),
            RequestKind::DescribeAcls(r) => respond(&admin::describe_acls(a, b, r)),
            RequestKind::WriteTxnMarkers(r) => respond(&transactions::write_txn_markers(b, a, r).await),
            RequestKind::DescribeProducers(r) => respond(&transactions::describe_producers(b, a, r)),
            // On a listener without SASL (on a SASL listener the authenticator answers these).
            RequestKind::SaslHandshake(_) => respond(&admin::sasl_handshake_without_sasl()),
            RequestKind::SaslAuthenticate(_) => respond(&admin::sasl_authenticate_without_sasl()),
            RequestKind::CreateTopics(_)
            | RequestKind::DeleteTopics(_)
            | RequestKind::CreatePartitions(_)
            | RequestKind::AlterConfigs(_)
            | RequestKind::AlterUserScramCredentials(_)
            | RequestKind::CreateAcls(_)
            | RequestKind::DeleteAcls(_)
            | RequestKind::IncrementalAlterConfigs(_) => {
                Ok(forward::handle(b, a, api_key, version, cid, body).await?.map(Response::new))
            }
            _ => Err(FrameError::UnsupportedVersion { api: api_key, version, correlation_id: cid }.into()),
        }
    }
}

/// Lets the dispatcher encode any response type through one closure.
trait ErasedEncodable {
    fn encode_frame(&self, api_key: ApiKey, version: i16, correlation_id: i32) -> Result<Bytes, FrameError>;
    /// The body alone (no header, no length).
    fn encode_body(&self, out: &mut BytesMut, version: i16);
}

impl<M: Encodable> ErasedEncodable for M {
    fn encode_frame(&self, api_key: ApiKey, version: i16, correlation_id: i32) -> Result<Bytes, FrameError> {
        frame::encode_response(api_key, version, correlation_id, self)
    }

    fn encode_body(&self, out: &mut BytesMut, version: i16) {
        // Our own response types at a version the decoder accepted encode.
        let _ = self.encode(out, version);
    }
}
