//! The metadata log's records: every change to cluster metadata is one of these, committed
//! through Raft and applied, in log order, by the controller's state machine and by every
//! broker's [`crate::image::MetadataImage`].
//!
//! **Compatibility rule:** records are serde-encoded JSON inside a versioned [`RecordBatch`].
//! A field added later carries `#[serde(default)]`, so a newer node reads an older record; a
//! record kind is never renamed or removed. A node that meets a batch with a `version` above
//! [`RECORD_VERSION`] refuses it (it must be upgraded) instead of guessing.

use serde::{Deserialize, Serialize};

/// The record format this node writes.
pub const RECORD_VERSION: u16 = 1;

/// A listener a broker advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: String,
}

/// Where a config entry applies.
/// Kafka's resource type codes for configs (DescribeConfigs / AlterConfigs).
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
}

/// One typed change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A broker (re)registered; `epoch` is the metadata offset of this registration, unique
    /// per incarnation. A registered broker starts fenced.
    RegisterBroker {
        broker_id: i32,
        incarnation_id: String,
        epoch: i64,
        listeners: Vec<Endpoint>,
        #[serde(default)]
        rack: Option<String>,
    },
    /// The broker may not lead or be in an ISR (missed heartbeats, or shut down).
    FenceBroker { broker_id: i32, epoch: i64 },
    /// The broker is alive and caught up with the metadata log.
    UnfenceBroker { broker_id: i32, epoch: i64 },
    /// A topic exists with this id. Its partitions follow as [`MetadataRecord::Partition`].
    Topic { name: String, topic_id: uuid::Uuid },
    /// A partition's full state (on creation).
    Partition {
        topic_id: uuid::Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A change to a partition. A new leader bumps the leader epoch; every change bumps the
    /// partition epoch.
    PartitionChange {
        topic_id: uuid::Uuid,
        partition: i32,
        #[serde(default)]
        isr: Option<Vec<i32>>,
        #[serde(default)]
        leader: Option<i32>,
    },
    /// Set (`Some`) or remove (`None`) one config key.
    Config { resource: ConfigResource, key: String, value: Option<String> },
    /// The topic and all its partitions are gone.
    RemoveTopic { topic_id: uuid::Uuid },
    /// Producer ids `[first, first + count)` now belong to `broker_id`.
    ProducerIds { broker_id: i32, first: i64, count: i64 },
    /// The cluster's id ([`crate::cluster_id`]); written once, before the first registration.
    ClusterId { cluster_id: String },
    /// `user`'s SCRAM credential for `mechanism` (`SCRAM-SHA-256`, `SCRAM-SHA-512`), set or
    /// replaced: what KIP-554 keeps of a password (never the password itself).
    ScramCredential {
        user: String,
        mechanism: String,
        salt: Vec<u8>,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
        iterations: u32,
    },
    /// `user`'s SCRAM credential for `mechanism` is gone.
    RemoveScramCredential { user: String, mechanism: String },
    /// An ACL exists ([`crate::acl`]).
    Acl { binding: crate::acl::AclBinding },
    /// An ACL is gone.
    RemoveAcl { binding: crate::acl::AclBinding },
}

/// What one Raft log entry carries: the records of one controller operation, applied
/// atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch {
    pub version: u16,
    pub records: Vec<MetadataRecord>,
}

/// A batch that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("metadata record batch version {0} is newer than this node understands ({RECORD_VERSION})")]
    TooNew(u16),
    #[error("malformed metadata record batch: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl RecordBatch {
    pub fn new(records: Vec<MetadataRecord>) -> Self {
        RecordBatch { version: RECORD_VERSION, records }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data structs with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let batch: RecordBatch = serde_json::from_slice(bytes)?;
        if batch.version > RECORD_VERSION {
            return Err(RecordError::TooNew(batch.version));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        let b = RecordBatch::new(vec![
            MetadataRecord::Topic { name: "t".into(), topic_id: uuid::Uuid::from_u128(7) },
            MetadataRecord::Config { resource: ConfigResource::Topic("t".into()), key: "k".into(), value: None },
        ]);
        assert_eq!(RecordBatch::decode(&b.encode()).unwrap(), b);
    }

    #[test]
    fn an_older_record_without_new_fields_still_reads() {
        // A RegisterBroker written before `rack` existed.
        let old = br#"{"version":1,"records":[{"type":"RegisterBroker","broker_id":1,"incarnation_id":"x","epoch":3,"listeners":[]}]}"#;
        let b = RecordBatch::decode(old).unwrap();
        assert!(matches!(&b.records[0], MetadataRecord::RegisterBroker { rack: None, epoch: 3, .. }));
    }

    #[test]
    fn a_newer_batch_is_refused() {
        let newer = br#"{"version":99,"records":[]}"#;
        assert!(matches!(RecordBatch::decode(newer), Err(RecordError::TooNew(99))));
    }
}
