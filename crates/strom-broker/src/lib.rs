//! strom-broker: the Kafka-facing half of a node.
//!
//! # Layout
//! - [`server`]: the accept loop ([`server::KafkaListener`]) and one task per connection
//!   ([`server::Connection`]): framing, size limits, idle timeout, in-order responses.
//! - [`apis`]: the request handlers, one module per Kafka API (or family), and the table of
//!   supported versions that ApiVersions advertises.
//! - [`replica`]: the replica manager: partition logs, leader/follower role, high watermark.
//! - [`lifecycle`]: registration and heartbeats with the controller quorum, the metadata
//!   follower that keeps this broker's metadata image, controlled shutdown.
//!
//! **Architecture invariant:** a connection handles one request at a time and answers in
//! request order, as Kafka does (a client may pipeline; responses never overtake).
//!
//! **Architecture invariant:** the broker learns metadata only from the controller's
//! committed log (through [`lifecycle::BrokerLifecycle`]); admin changes are forwarded to the
//! controller, never applied locally first.

use std::collections::BTreeMap;

pub mod apis;
pub mod lifecycle;
pub mod replica;
pub mod server;

/// What the broker needs from the node configuration.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub node_id: i32,
    pub cluster_id: String,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    pub connections_max_idle_ms: u64,
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i32,
    /// Topic config key → (effective broker default, DescribeConfigs source).
    pub topic_defaults: BTreeMap<String, (String, i8)>,
    /// Every broker config key → (value, DescribeConfigs source).
    pub broker_configs: BTreeMap<String, (String, i8)>,
}
