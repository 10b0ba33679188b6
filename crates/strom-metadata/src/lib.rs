//! strom-metadata: the cluster metadata model, shared by the controller quorum and the broker.
//!
//! Metadata changes only by records appended to the controller's Raft log; every node applies
//! them, in order, to its own image. This crate is that model and the broker's way to the
//! quorum; it links neither Raft nor storage, so a broker-only node carries neither.
//!
//! # Layout
//! - [`records`]: the typed, versioned metadata records (the only way metadata changes), and
//!   the config resources they name.
//! - [`image`]: [`image::MetadataImage`], metadata as of one offset, built by applying records;
//!   the controller and every broker keep one.
//! - [`acl`]: ACLs with Kafka's model, their filters, and the authorization rule every broker
//!   applies to them.
//! - [`topic_config`]: topic config keys, their defaults and validation, topic-name rules.
//! - [`cluster_id`]: the cluster id's form (Kafka's base64url UUID) and its generation.
//! - [`client`]: [`client::ControllerClient`], a broker's handle on the quorum: finds the
//!   active controller, follows redirects.
//! - [`transport`]: the gRPC channel to a controller listener, over TCP or TLS, logged in with
//!   SASL when the listener asks (brokers to the quorum, controllers to their Raft peers).
//! - [`controller_sasl`]: the SASL exchange on a new controller-listener connection, both
//!   sides (PLAIN), before gRPC starts.
//!
//! **API boundary:** brokers reach the controller only through [`client::ControllerClient`]
//! and learn metadata only by applying records to their own [`image::MetadataImage`].

pub mod acl;
pub mod client;
pub mod cluster_id;
pub mod controller_sasl;
pub mod image;
pub mod records;
pub mod topic_config;
pub mod transport;
