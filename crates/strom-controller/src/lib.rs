//! strom-controller: the metadata quorum (KRaft-style), replicated with openraft over tonic.
//! The metadata model it replicates (records, image, topic configs) is `strom-metadata`.
//!
//! # Layout
//! - [`raft`]: openraft wiring: the fsync'd log store, the state machine (snapshots in sled), the
//!   gRPC transport between controllers.
//! - [`cluster_identity`]: which cluster id a controller knows; Raft RPCs between clusters are
//!   refused.
//! - [`controller`]: [`controller::Controller`], one quorum member; when active it turns
//!   requests into records (and fences brokers that miss heartbeats).
//! - [`listener`]: the controller listener: connections over TCP or TLS, each with its
//!   peer's principal, and the CLUSTER_ACTION check every call passes when an authorizer is
//!   configured.
//! - [`placement`]: where replicas and preferred leaders of new partitions go.
//! - [`service`] / [`admin`]: the gRPC service brokers call, and the Kafka admin requests they
//!   forward.
//!
//! **API boundary:** brokers reach the controller only through
//! `strom_metadata::client::ControllerClient`, over the gRPC service in [`service`].

pub mod admin;
pub mod cluster_identity;
pub mod controller;
pub mod listener;
pub mod placement;
pub mod raft;
pub mod service;
