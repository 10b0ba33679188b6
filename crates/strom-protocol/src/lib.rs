//! strom-protocol: what travels on the wire, and nothing that does I/O.
//!
//! # Layout
//! - [`batch`]: a zero-copy view of RecordBatch v2 headers and the batch validator.
//! - [`frame`]: Kafka's size-prefixed framing and request/response headers; request bodies are
//!   the `kafka-protocol` crate's codecs, generated from Kafka's own message specs.
//! - [`values`]: Kafka strings from Rust strings, the clock in Kafka's timestamp unit.
//! - [`proto`]: the node-to-node gRPC types and services generated from `proto/` (Raft
//!   transport between controllers, broker-to-controller calls).
//!
//! **Architecture invariant:** this crate never touches a socket or a file. Every other crate
//! may depend on it; it depends on no other Strom crate.

pub mod batch;
pub mod frame;
pub mod values;

pub use kafka_protocol;

/// gRPC types generated from `proto/` at build time.
pub mod proto {
    /// Raft transport between controllers.
    pub mod raft {
        tonic::include_proto!("strom.raft");
    }
    /// Broker-to-controller calls.
    pub mod controller {
        tonic::include_proto!("strom.controller");
    }
}
