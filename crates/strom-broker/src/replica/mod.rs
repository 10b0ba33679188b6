//! The replica manager: the partition replicas this broker holds, their logs, and their
//! leader/follower state as the metadata image says.
//!
//! Ownership: [`ReplicaManager`] owns every [`Partition`]; only the metadata follower (via
//! [`ReplicaManager::apply_image`]) creates, re-roles or deletes them. A [`Partition`] owns its
//! [`Log`] behind a mutex (appends and reads are short, synchronous file operations).
//!
//! **Replication rules (DESIGN.md §3), enforced here:**
//! - The high watermark of a leader is the minimum log end offset over the ISR, never above the
//!   leader's LEO, and never goes backwards while this broker leads; consumers never read past
//!   it. With an ISR of one (this broker) HW = LEO. A follower's HW is the leader's HW as its
//!   last fetch response said, capped at its own LEO.
//! - A follower's LEO is the offset it fetches from: everything before it is on the follower.
//! - A follower is *caught up* at a fetch when it asks for the leader's LEO, or for at least the
//!   LEO the leader had at the follower's previous fetch (Kafka's lastCaughtUpTime rule). One
//!   not caught up for `replica.lag.time.max.ms` is proposed out of the ISR; one outside the
//!   ISR that fetches at or past the HW is proposed back in. Proposals go to the controller
//!   (AlterPartition, checked against the partition epoch); only a committed change alters
//!   the ISR used here. Until its outcome is known, a proposal's additions count in the
//!   HW as members (Kafka's maximal ISR): the controller may elect a follower it just added
//!   before the leader hears of the change.
//! - Becoming leader clears what was known of followers (their LEOs belong to an older epoch)
//!   and records the new leader epoch at the LEO before anything is appended in it.
//! - A replica that leaves the ISR is forgotten too: it rejoins only on fetches made after
//!   it left (a fenced broker may come back with a shorter log than it last reported).

//!
//! # Layout
//! - [`partition`]: [`Partition`], one replica: log, role, HW, follower progress, the leader
//!   append and the wait for a commit.
//! - [`manager`]: [`ReplicaManager`], the set of replicas, `apply_image`, the fetch path.
//! - [`disk_io`]: [`DiskIo`]: reads and appends of request handlers and the replica fetcher
//!   run off the async workers, at most `num.io.threads` at once (the rule at its top).
//! - [`log_dir`]: [`LogDirHealth`]: the first write or fsync error takes the log directory
//!   offline and stops the broker (the rule at its top).

mod disk_io;
mod log_dir;
mod manager;
mod partition;

pub use disk_io::{DiskIo, DEFAULT_IO_THREADS};
pub use log_dir::LogDirHealth;
pub use manager::ReplicaManager;
pub use partition::{Commit, CommitWait, FollowerFetchOutcome, IsrProposal, LeaderAppend, Partition, ReplicaRole};

use strom_storage::LogError;

/// A partition's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Why a partition operation failed, each with the Kafka code the client gets.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("this broker does not host {0}")]
    UnknownPartition(String),
    #[error("this broker is not the leader of {0}")]
    NotLeader(String),
    #[error("leader epoch {got} is older than the current {current}")]
    FencedLeaderEpoch { got: i32, current: i32 },
    #[error("leader epoch {got} is newer than this broker knows ({current})")]
    UnknownLeaderEpoch { got: i32, current: i32 },
    #[error("producer sequence check failed (Kafka error {0})")]
    ProducerSequence(i16),
    #[error("the ISR of {partition} has {isr} replicas, fewer than min.insync.replicas {min_isr}")]
    NotEnoughReplicas { partition: String, isr: usize, min_isr: usize },
    #[error("cannot encode a transaction marker: {0}")]
    Marker(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

impl ReplicaError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            ReplicaError::UnknownPartition(_) => 3,
            ReplicaError::NotLeader(_) => 6,
            ReplicaError::FencedLeaderEpoch { .. } => 74,
            ReplicaError::UnknownLeaderEpoch { .. } => 75,
            ReplicaError::ProducerSequence(code) => *code,
            ReplicaError::NotEnoughReplicas { .. } => crate::producer_state::NOT_ENOUGH_REPLICAS,
            ReplicaError::Marker(_) => -1, // UNKNOWN_SERVER_ERROR
            ReplicaError::Log(e) => log_error_code(e),
        }
    }
}

/// Kafka's error code for a storage failure.
fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::Io { .. } | LogError::Corrupt { .. } | LogError::Offline => 56, // KAFKA_STORAGE_ERROR
        LogError::Batch(b) => b.kafka_code(),
        LogError::TooLarge { .. } => 10,             // MESSAGE_TOO_LARGE
        LogError::Empty => 87,                       // INVALID_RECORD
        LogError::InvalidTimestamp { .. } => 32,     // INVALID_TIMESTAMP
        LogError::KeylessRecordInCompactedLog => 87, // INVALID_RECORD
        LogError::Recompress(_) => 2,                // CORRUPT_MESSAGE: its records cannot be read
        LogError::NotContiguous { .. } => 2,
        LogError::OffsetOutOfRange { .. } => 1,
    }
}
