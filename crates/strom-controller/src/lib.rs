//! strom-controller: the metadata quorum (KRaft-style), replicated with openraft over tonic.
//!
//! # Layout
//! - [`cluster_id`]: the cluster id's form and generation, and the rule for choosing it.
//! - [`records`]: the typed, versioned metadata records (the only way metadata changes).
//! - [`image`]: [`image::MetadataImage`], metadata as of one offset, built by applying records;
//!   the controller and every broker keep one.
//! - [`placement`]: where replicas and preferred leaders of new partitions go.
//! - [`topic_config`]: topic config keys, their validation, topic-name rules.
//! - [`raft`]: openraft wiring: the fsync'd log store, the state machine (snapshots in sled), the
//!   gRPC transport between controllers.
//! - [`controller`]: [`controller::Controller`], one quorum member; when active it turns
//!   requests into records (and fences brokers that miss heartbeats).
//! - [`service`] / [`admin`]: the gRPC service brokers call, and the Kafka admin requests they
//!   forward.
//! - [`client`]: the broker's side: find the active controller, follow redirects.
//!
//! **API boundary:** brokers reach the controller only through [`client::ControllerClient`]
//! and learn metadata only by applying records to their own [`image::MetadataImage`].

pub mod admin;
pub mod client;
pub mod cluster_id;
pub mod controller;
pub mod image;
pub mod placement;
pub mod raft;
pub mod records;
pub mod service;
pub mod topic_config;
