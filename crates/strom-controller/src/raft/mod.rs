//! openraft wiring: the type configuration, the log store (our fsync'd files), the state
//! machine (the metadata image, snapshots in sled) and the gRPC transport between
//! controllers.
//!
//! The metadata offset a broker sees is the Raft log index of the entry that carried a
//! record batch.

// openraft fixes the error type of storage calls (`StorageError`, 200+ bytes).
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use strom_metadata::records::RecordBatch;

pub type NodeId = u64;

/// What the state machine answers for one applied entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The metadata offset the entry was applied at.
    pub offset: i64,
    /// Records the image refused (a controller bug if ever non-empty; logged).
    pub refused: Vec<String>,
}

openraft::declare_raft_types!(
    /// Strom's openraft types: entries carry metadata record batches.
    pub TypeConfig:
        D = RecordBatch,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;
