//! strom-broker: the Kafka-facing half of a node.
//!
//! # Layout
//! - [`server`]: the accept loop ([`server::KafkaListener`]) and one task per connection
//!   ([`server::Connection`]): framing, size limits, idle timeout, in-order responses, TLS.
//! - [`authenticator`]: SASL on `SASL_*` listeners: every frame of a connection passes it
//!   before the handlers see it (the rules at its top).
//! - [`apis`]: the request handlers, one module per Kafka API (or family), and the table of
//!   supported versions that ApiVersions advertises.
//! - [`replica`]: partition replicas: [`replica::Partition`] (log, leader/follower role, high
//!   watermark, what a leader knows of its followers, the wait for a commit) and
//!   [`replica::ReplicaManager`] (the set of replicas, `apply_image`, the fetch path).
//! - [`fetcher`]: the follower side of replication: one fetcher per leader, truncation to the
//!   divergence point, follower appends.
//! - [`coordinator`]: coordinators whose state lives in a compacted internal topic: the group
//!   coordinator (classic consumer-group protocol) and committed offsets in
//!   `__consumer_offsets`, on the shared [`coordinator::state_log::StateLog`].
//! - [`producer_state`]: idempotent producers' sequences per partition (duplicates, order,
//!   epochs), kept by every replica; [`producer_snapshot`]: its `<offset>.snapshot` files, so
//!   a log opens by reading only its tail.
//! - [`isr`]: the leader side of ISR changes (shrink on lag, expand on catch-up) through the
//!   controller's AlterPartition.
//! - [`metrics`]: Prometheus metrics under Kafka's names; state gauges computed at scrape.
//! - [`lifecycle`]: registration and heartbeats with the controller quorum, the metadata
//!   follower that keeps this broker's metadata image, controlled shutdown.
//! - [`dynamic_config`]: the broker configs changed while a node runs (its TLS listeners'
//!   keystores and truststores): the check before they are stored, and their values.
//!
//! **Architecture invariant:** a connection handles one request at a time and answers in
//! request order, as Kafka does (a client may pipeline; responses never overtake).
//!
//! **Architecture invariant:** the broker learns metadata only from the controller's
//! committed log (through [`lifecycle::BrokerLifecycle`]); admin changes are forwarded to the
//! controller, never applied locally first.

use std::collections::BTreeMap;

pub mod apis;
pub mod authenticator;
pub mod coordinator;
pub mod dynamic_config;
pub mod fetcher;
pub mod isr;
pub mod lifecycle;
pub mod metrics;
pub mod producer_snapshot;
pub mod producer_state;
pub mod replica;
pub mod server;

/// What the broker needs from the node configuration.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub node_id: i32,
    pub socket_request_max_bytes: usize,
    /// The authorizer (`authorizer.class.name` set): super users and the no-ACL default;
    /// `None`: no authorization, everyone may do everything (as Kafka without one).
    pub authorizer: Option<strom_metadata::acl::AuthorizerSettings>,
    /// `sasl.server.max.receive.size`: the largest frame before a connection authenticated.
    pub sasl_server_max_receive_size: usize,
    pub max_connections: usize,
    /// `fetch.max.bytes`: the most a consumer's Fetch response carries, whatever it asks.
    pub fetch_max_bytes: usize,
    /// `replica.fetch.response.max.bytes`: the same for a follower's Fetch.
    pub replica_fetch_response_max_bytes: usize,
    /// `fetch.response.memory.max.bytes`: record bytes all consumer Fetch responses of this
    /// broker hold at once, from the read until the response is written ([`apis::FetchMemory`]).
    pub fetch_response_memory_max_bytes: usize,
    /// `offset.metadata.max.bytes`: the longest metadata an offset commit may carry.
    pub offset_metadata_max_bytes: usize,
    pub connections_max_idle_ms: u64,
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i32,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_replication_factor: i16,
    /// `offsets.topic.segment.bytes`: `__consumer_offsets` is created compacted, with this.
    pub offsets_topic_segment_bytes: u64,
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.max.size`: members (pending ones included) a consumer group may hold.
    pub group_max_size: usize,
    /// `group.min.session.timeout.ms`, `group.max.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `offsets.retention.minutes`, in ms: how long an empty group's offsets are kept.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: u64,
    /// The transaction coordinator's settings (`transaction.*` keys).
    pub transactions: coordinator::txn::TxnSettings,
    /// `inter.broker.listener.name`: where this broker reaches the others (WriteTxnMarkers).
    pub inter_broker_listener: String,
    /// How it reaches them there: TLS and SASL when that listener asks for them.
    pub inter_broker_security: strom_client::ClientSecurity,
    /// Per-partition metric series (log size, segments, group lag); off bounds cardinality.
    pub metrics_per_partition: bool,
    /// Topic config key → (effective broker default, DescribeConfigs source).
    pub topic_defaults: BTreeMap<String, (String, i8)>,
    /// Every broker config key → (value, DescribeConfigs source).
    pub broker_configs: BTreeMap<String, (String, i8)>,
    /// The TLS of this broker's client and inter-broker listeners (SSL, SASL_SSL), by
    /// listener name: their keystores and truststores are dynamic configs
    /// ([`dynamic_config`]).
    pub listener_tls: BTreeMap<String, std::sync::Arc<strom_security::reload::ListenerTls>>,
}
