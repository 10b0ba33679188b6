//! strom-broker: the Kafka-facing half of a node.
//!
//! # Layout
//! - [`server`]: the accept loop ([`server::KafkaListener`]) and one task per connection
//!   ([`server::Connection`]): framing, size limits, idle timeout, in-order responses.
//! - [`apis`]: the request handlers, one module per Kafka API, and the table of supported
//!   versions that ApiVersions advertises.
//!
//! **Architecture invariant:** a connection handles one request at a time and answers in
//! request order, as Kafka does (a client may pipeline; responses never overtake).

pub mod apis;
pub mod server;

/// Limits and identity the broker's network layer needs from the node configuration.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub node_id: i32,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    pub connections_max_idle_ms: u64,
}
