//! Per-log settings (the topic-level names in comments).

/// How a [`crate::Log`] behaves. Built from broker defaults and topic overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch is this old.
    pub segment_ms: Option<u64>,
    /// `retention.ms`: delete segments whose newest record is older (`None`: forever).
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete oldest segments while the log is larger (`None`: no limit).
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: bytes between two index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages`: fdatasync after this many messages (1: every append).
    pub flush_interval_messages: u64,
    /// `flush.ms`: fdatasync when the oldest unflushed append is this old.
    pub flush_interval_ms: Option<u64>,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_batch_bytes: usize,
    /// `message.timestamp.type`: whose timestamps a leader stores.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: with CreateTime, a record timestamped more than this
    /// before the append is refused (`None`: Kafka's Long.MAX_VALUE, no check).
    pub timestamp_before_max_ms: Option<u64>,
    /// `message.timestamp.after.max.ms`: the same for timestamps after the append.
    pub timestamp_after_max_ms: Option<u64>,
    /// `compression.type`: the codec a leader stores batches in.
    pub compression: CompressionType,
    /// `cleanup.policy` names `delete`: retention by time and size applies (a compact-only log
    /// is never deleted by them).
    pub delete: bool,
    /// `cleanup.policy` names `compact`: the cleaner keeps the latest record per key, and a
    /// produced record without a key is refused.
    pub compact: bool,
    /// `delete.retention.ms`: how long the cleaner keeps a tombstone.
    pub delete_retention_ms: u64,
    /// `min.cleanable.dirty.ratio`: clean once this share of the sealed bytes is dirty.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: u64,
    /// `max.compaction.lag.ms`: a dirty segment this old is cleaned whatever the ratio
    /// (`None`: Kafka's Long.MAX_VALUE).
    pub max_compaction_lag_ms: Option<u64>,
}

/// `compression.type`: `producer` stores each batch as sent; any other value is the codec
/// every stored batch has, the leader re-encoding a batch sent in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionType {
    #[default]
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionType {
    /// Kafka's name (the config value).
    pub fn parse(name: &str) -> Option<CompressionType> {
        Some(match name.trim() {
            "producer" => CompressionType::Producer,
            "uncompressed" => CompressionType::Uncompressed,
            "gzip" => CompressionType::Gzip,
            "snappy" => CompressionType::Snappy,
            "lz4" => CompressionType::Lz4,
            "zstd" => CompressionType::Zstd,
            _ => return None,
        })
    }

    /// The codec id in a batch's attributes (`None` for `producer`: any).
    pub fn codec(self) -> Option<u8> {
        match self {
            CompressionType::Producer => None,
            CompressionType::Uncompressed => Some(0),
            CompressionType::Gzip => Some(1),
            CompressionType::Snappy => Some(2),
            CompressionType::Lz4 => Some(3),
            CompressionType::Zstd => Some(4),
        }
    }
}

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamps are stored as sent.
    #[default]
    CreateTime,
    /// The leader sets each batch's timestamp to the time of the append.
    LogAppendTime,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3_600_000),
            retention_ms: Some(7 * 24 * 3_600_000),
            retention_bytes: None,
            index_interval_bytes: 4096,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: None,
            max_batch_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: None,
            timestamp_after_max_ms: None,
            compression: CompressionType::Producer,
            delete: true,
            compact: false,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: None,
        }
    }
}
