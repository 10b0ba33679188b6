//! Log errors. Which Kafka error code a client gets for each is the broker's business
//! (`strom_broker::replica::ReplicaError`): storage knows nothing of the Kafka API.

use strom_protocol::batch::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    #[error("batch of {size} bytes is larger than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("empty append")]
    Empty,
    #[error("a record without a key cannot be written to a compacted topic")]
    KeylessRecordInCompactedLog,
    #[error("cannot re-encode a batch in the topic's compression.type: {0}")]
    Recompress(String),
    #[error("record timestamp {timestamp} is {reason} the append at {now_ms} allows")]
    InvalidTimestamp { timestamp: i64, now_ms: i64, reason: &'static str },
    #[error("follower batch at offset {got} does not continue the log at {expected}")]
    NotContiguous { expected: i64, got: i64 },
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange { offset: i64, log_start: i64, log_end: i64 },
    #[error("segment {segment} is corrupt at byte {position}: {reason}; the partition is offline")]
    Corrupt { segment: String, position: u64, reason: String },
    #[error("the log is offline after an earlier error")]
    Offline,
}

impl LogError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        LogError::Io { path: path.display().to_string(), source }
    }
}
