//! strom-storage: the partition log.
//!
//! # Layout
//! - [`log`]: [`Log`], one partition replica's log: append (leader and follower paths), read,
//!   lookups, truncation, retention, flush, recovery on open. It owns its directory.
//! - `segment`: one `.log` file with its sparse `.index` and `.timeindex`.
//! - `index`: the sparse offset and time indexes (in memory, persisted on flush and roll).
//! - `checkpoint`: the leader-epoch and recovery-point checkpoint files.
//! - `txn_index`: a segment's aborted transactions (Kafka's `.txnindex`).
//! - [`cleaner`]: log compaction (`Log::clean`): latest record per key in sealed segments,
//!   offsets kept, each cleaned segment swapped in atomically.
//! - [`durable`]: replacing a file atomically and durably; every such file of every crate is
//!   written through it.
//! - [`error`]: [`LogError`], every failure (the broker maps them to Kafka error codes).
//!
//! On disk, as Kafka: `<dir>/<topic>-<partition>/00000000000000000000.log|.index|.timeindex`,
//! `leader-epoch-checkpoint`, and (one per partition here, where Kafka keeps one per log dir)
//! `recovery-point-offset-checkpoint`.
//!
//! **Architecture invariant:** stored batches are byte-for-byte the producer's, except the base
//! offset and partition leader epoch, which sit outside the CRC, and except where the topic
//! asks otherwise: `message.timestamp.type=LogAppendTime` rewrites the header through its
//! timestamps, and a `compression.type` other than `producer` re-encodes a batch sent in
//! another codec (the one place the append path decodes records; counted in
//! `AppendInfo::recompressed_batches`). The read path never re-encodes.
//!
//! **Architecture invariant:** everything below the recovery point has been fsync'd; recovery
//! validates everything above it and cuts only a torn or corrupt tail of the last segment.
//!
//! **Architecture invariant:** offsets only grow: densely within what a producer sent, with
//! holes where the cleaner removed records (a compacted log is sparse; a read of a removed
//! offset returns the next batch).

mod checkpoint;
pub mod cleaner;
mod config;
pub mod durable;
pub mod error;
mod index;
pub mod log;
pub mod power_loss;
mod segment;
mod txn_index;

pub use cleaner::{CleanOptions, CleanPlan, CleanStats, PreparedClean};
pub use config::{CompressionType, LogConfig, TimestampType};
pub use error::LogError;
pub use log::{sync_file, AppendInfo, Log, ReadPlan, ReadResult, RecoveryReport, SealedRead, SealedSync};
pub use txn_index::AbortedTxn;
