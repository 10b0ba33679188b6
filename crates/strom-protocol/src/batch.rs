//! A zero-copy view of a Kafka RecordBatch (magic v2) header.
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset              ┐ outside the CRC: the broker patches these two
//!      8     4  batchLength             │ (bytes after this field)
//!     12     4  partitionLeaderEpoch    ┘
//!     16     1  magic (2)
//!     17     4  crc (CRC-32C of bytes 21..end)
//!     21     2  attributes (bits 0-2 compression, 3 timestamp type, 4 transactional, 5 control)
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordsCount
//!     61        records…
//! ```
//!
//! Validation reads only the header and checks the CRC; it never decodes records.

/// Bytes of the header before the records.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: the bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// The only record format Strom stores.
pub const MAGIC_V2: i8 = 2;

const CRC_START: usize = 21;

/// What is wrong with a batch. Each maps to the Kafka error a producer gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("batch length {0} is impossible")]
    BadLength(i32),
    #[error("record batch magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    BadRecordCount { count: i32, last_offset_delta: i32 },
}

impl BatchError {
    /// The Kafka error code for a producer (CORRUPT_MESSAGE, UNSUPPORTED_VERSION, INVALID_RECORD).
    pub fn kafka_code(&self) -> i16 {
        match self {
            BatchError::Truncated { .. } | BatchError::BadLength(_) | BatchError::CrcMismatch { .. } => 2,
            BatchError::UnsupportedMagic(_) => 35,
            BatchError::BadRecordCount { .. } => 87,
        }
    }
}

/// A borrowed view of one batch (header and records).
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
}

impl std::fmt::Debug for BatchView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchView")
            .field("base_offset", &self.base_offset())
            .field("size", &self.size())
            .field("records", &self.records_count())
            .finish()
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The total size of the batch starting at `buf[0]` as its header claims, if the first 12
/// bytes are present.
pub fn claimed_size(buf: &[u8]) -> Option<Result<usize, BatchError>> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, 8);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Some(Err(BatchError::BadLength(len)));
    }
    Some(Ok(LOG_OVERHEAD + len as usize))
}

impl<'a> BatchView<'a> {
    /// Parses the first batch in `buf`: checks the length and magic only (cheap: used when
    /// scanning stored data whose CRC was checked on the way in). Returns the view and its size.
    pub fn parse(buf: &'a [u8]) -> Result<BatchView<'a>, BatchError> {
        let size = match claimed_size(buf) {
            None => return Err(BatchError::Truncated { needed: LOG_OVERHEAD, have: buf.len() }),
            Some(r) => r?,
        };
        if buf.len() < size {
            return Err(BatchError::Truncated { needed: size, have: buf.len() });
        }
        let magic = buf[16] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(BatchView { bytes: &buf[..size] })
    }

    /// [`parse`](Self::parse) plus the CRC-32C and the record count checks: what a batch from
    /// the network or a torn file must pass.
    pub fn parse_validated(buf: &'a [u8]) -> Result<BatchView<'a>, BatchError> {
        let v = Self::parse(buf)?;
        let computed = crc32c::crc32c(&v.bytes[CRC_START..]);
        if computed != v.crc() {
            return Err(BatchError::CrcMismatch { stored: v.crc(), computed });
        }
        if v.records_count() < 1 || v.last_offset_delta() != v.records_count() - 1 {
            return Err(BatchError::BadRecordCount {
                count: v.records_count(),
                last_offset_delta: v.last_offset_delta(),
            });
        }
        Ok(v)
    }

    /// [`parse`](Self::parse) plus the CRC-32C and a record count a compacted batch may have
    /// (at most `lastOffsetDelta + 1`: the cleaner removes records but keeps offsets): what a
    /// stored or replicated batch must pass. A producer's batch must pass
    /// [`parse_validated`](Self::parse_validated).
    pub fn parse_stored(buf: &'a [u8]) -> Result<BatchView<'a>, BatchError> {
        let v = Self::parse(buf)?;
        let computed = crc32c::crc32c(&v.bytes[CRC_START..]);
        if computed != v.crc() {
            return Err(BatchError::CrcMismatch { stored: v.crc(), computed });
        }
        if v.records_count() < 1 || v.last_offset_delta() < v.records_count() - 1 {
            return Err(BatchError::BadRecordCount {
                count: v.records_count(),
                last_offset_delta: v.last_offset_delta(),
            });
        }
        Ok(v)
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
    pub fn base_offset(&self) -> i64 {
        be_i64(self.bytes, 0)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.bytes, 12)
    }
    pub fn crc(&self) -> u32 {
        be_i32(self.bytes, 17) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, 21)
    }
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes() & 0x7) as u8
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, 23)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + self.last_offset_delta() as i64
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, 27)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, 35)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.bytes, 43)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.bytes, 51)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, 53)
    }
    pub fn records_count(&self) -> i32 {
        be_i32(self.bytes, 57)
    }
}

/// The 16 bytes outside the CRC with the base offset and leader epoch replaced: written in
/// front of `batch[16..]` so the producer's bytes are stored without being copied or
/// re-encoded.
pub fn patched_prefix(batch: &[u8], base_offset: i64, leader_epoch: i32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0..8].copy_from_slice(&base_offset.to_be_bytes());
    p[8..12].copy_from_slice(&batch[8..12]);
    p[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    p
}

/// Bytes of a batch header through `maxTimestamp`: what a broker-set timestamp rewrites.
pub const TIMESTAMPED_HEADER_LEN: usize = 43;
/// The attributes bit that says the batch's timestamps are the broker's (LogAppendTime).
pub const LOG_APPEND_TIME_FLAG: i16 = 0x08;

/// The first [`TIMESTAMPED_HEADER_LEN`] bytes of `batch` as a broker stores it under
/// `message.timestamp.type=LogAppendTime` (Kafka's `setMaxTimestamp(LOG_APPEND_TIME, now)`):
/// base offset and leader epoch replaced, the timestamp-type attribute set, `maxTimestamp`
/// set to `now_ms`, and the CRC computed anew over the patched header and the producer's
/// unchanged bytes after it. Written in front of `batch[TIMESTAMPED_HEADER_LEN..]`, so the
/// records (compressed or not) are still stored as sent. `batch` must be a validated batch.
pub fn patched_header_log_append_time(
    batch: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    now_ms: i64,
) -> [u8; TIMESTAMPED_HEADER_LEN] {
    let mut h = [0u8; TIMESTAMPED_HEADER_LEN];
    h.copy_from_slice(&batch[..TIMESTAMPED_HEADER_LEN]);
    h[..16].copy_from_slice(&patched_prefix(batch, base_offset, leader_epoch));
    let attributes = i16::from_be_bytes([h[21], h[22]]) | LOG_APPEND_TIME_FLAG;
    h[21..23].copy_from_slice(&attributes.to_be_bytes());
    h[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[CRC_START..]), &batch[TIMESTAMPED_HEADER_LEN..]);
    h[17..21].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Records could not be encoded (the codec failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode a record batch: {0}")]
pub struct EncodeError(pub String);

/// One batch of (key, value) records (value `None`: a tombstone), offsets from 0, every
/// record stamped `timestamp_ms`, no producer id, in `compression`: what the tools, the
/// coordinators' state topics and tests write (kafka-protocol's encoder).
pub fn encode_records(
    records: impl IntoIterator<Item = (Option<bytes::Bytes>, Option<bytes::Bytes>)>,
    timestamp_ms: i64,
    compression: kafka_protocol::records::Compression,
) -> Result<bytes::Bytes, EncodeError> {
    encode_keyed(records, timestamp_ms, compression, None)
}

/// One transactional batch of (key, value) records from producer `producer_id` at `epoch`,
/// offsets from 0, no sequence numbers (-1): what a coordinator writes inside a producer's
/// transaction (Kafka's transactional offset commit), never checked as a producer's sequence.
pub fn encode_transactional_records(
    records: impl IntoIterator<Item = (Option<bytes::Bytes>, Option<bytes::Bytes>)>,
    timestamp_ms: i64,
    producer_id: i64,
    epoch: i16,
) -> Result<bytes::Bytes, EncodeError> {
    let none = kafka_protocol::records::Compression::None;
    encode_keyed(records, timestamp_ms, none, Some((producer_id, epoch)))
}

/// [`encode_records`], as part of `transaction`'s (producer id, epoch) transaction if given.
fn encode_keyed(
    records: impl IntoIterator<Item = (Option<bytes::Bytes>, Option<bytes::Bytes>)>,
    timestamp_ms: i64,
    compression: kafka_protocol::records::Compression,
    transaction: Option<(i64, i16)>,
) -> Result<bytes::Bytes, EncodeError> {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let (producer_id, producer_epoch) = transaction.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: transaction.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // No sequences: the batch's base sequence is -1. The encoder keeps records in one
            // batch only while offset minus sequence stays the same (a decoded batch's records
            // count up from its base sequence), so count up from -1 too; with -1 on every
            // record it writes one batch per record.
            sequence: (i as i32).wrapping_sub(1),
            timestamp: timestamp_ms,
            key,
            value,
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
        .map_err(|e| EncodeError(e.to_string()))?;
    Ok(buf.freeze())
}

/// A transaction marker: the one record of a control batch that ends a producer's
/// transaction on a partition (Kafka's EndTransactionMarker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

impl TxnMarker {
    /// The control batch holding this marker for `producer_id` at `producer_epoch`: Kafka's
    /// layout (transactional and control attributes, base sequence -1; the record's key is
    /// version 0 and the type, 0 abort or 1 commit; its value version 0 and the coordinator
    /// epoch).
    pub fn encode(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        timestamp_ms: i64,
    ) -> Result<bytes::Bytes, EncodeError> {
        use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
        let mut key = Vec::with_capacity(4);
        key.extend_from_slice(&0i16.to_be_bytes());
        key.extend_from_slice(&(self.commit as i16).to_be_bytes());
        let mut value = Vec::with_capacity(6);
        value.extend_from_slice(&0i16.to_be_bytes());
        value.extend_from_slice(&self.coordinator_epoch.to_be_bytes());
        let record = Record {
            transactional: true,
            control: true,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: timestamp_ms,
            key: Some(key.into()),
            value: Some(value.into()),
            headers: Default::default(),
        };
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: Compression::None };
        RecordBatchEncoder::encode(&mut buf, &[record], &options).map_err(|e| EncodeError(e.to_string()))?;
        Ok(buf.freeze())
    }

    /// The marker of a control batch; `None` for any other batch, or a control batch whose
    /// record is not a transaction marker (Kafka has other control types).
    pub fn of(v: &BatchView<'_>) -> Option<TxnMarker> {
        if !v.is_control() {
            return None;
        }
        let mut buf = bytes::Bytes::copy_from_slice(v.bytes());
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).ok()?;
        let record = sets.first()?.records.first()?;
        let (key, value) = (record.key.as_ref()?, record.value.as_ref()?);
        let kind = i16::from_be_bytes(key.get(2..4)?.try_into().ok()?);
        if key.get(..2)? != [0, 0] || !(kind == 0 || kind == 1) {
            return None;
        }
        let coordinator_epoch = i32::from_be_bytes(value.get(2..6)?.try_into().ok()?);
        Some(TxnMarker { commit: kind == 1, coordinator_epoch })
    }
}

/// Builds a valid uncompressed batch of `values` (no keys, no headers): for tests, benchmarks
/// and tools that need batches without a client.
pub fn build_batch(base_offset: i64, base_timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut r = Vec::with_capacity(v.len() + 16);
        r.push(0); // attributes
        varint(&mut r, 0); // timestamp delta
        varint(&mut r, i as i64); // offset delta
        varint(&mut r, -1); // key: null
        varint(&mut r, v.len() as i64);
        r.extend_from_slice(v);
        varint(&mut r, 0); // headers
        varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    let mut b = Vec::with_capacity(HEADER_LEN + records.len());
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&[0; 4]); // crc, below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&(values.len() as i32 - 1).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(values.len() as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod marker_tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_through_its_control_batch() {
        for marker in
            [TxnMarker { commit: true, coordinator_epoch: 7 }, TxnMarker { commit: false, coordinator_epoch: 0 }]
        {
            let b = marker.encode(42, 3, 1_000).unwrap();
            let v = BatchView::parse_validated(&b).unwrap();
            assert!(v.is_control() && v.is_transactional());
            assert_eq!((v.producer_id(), v.producer_epoch(), v.base_sequence(), v.records_count()), (42, 3, -1, 1));
            assert_eq!(TxnMarker::of(&v), Some(marker));
        }
        let data = build_batch(0, 0, &[b"x"]);
        assert_eq!(TxnMarker::of(&BatchView::parse(&data).unwrap()), None, "not a control batch");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transactional_batch_names_its_producer_and_no_sequence() {
        let recs = (0..3).map(|i| (Some(bytes::Bytes::from(format!("k{i}"))), Some(bytes::Bytes::from("v"))));
        let batch = encode_transactional_records(recs, 1_000, 42, 3).unwrap();
        let v = BatchView::parse(&batch).unwrap();
        assert_eq!(v.size(), batch.len(), "one batch");
        assert!(v.is_transactional() && !v.is_control());
        assert_eq!((v.producer_id(), v.producer_epoch(), v.base_sequence()), (42, 3, -1));
        assert_eq!(v.records_count(), 3);
    }

    #[test]
    fn encode_records_writes_one_batch_without_a_producer() {
        use kafka_protocol::records::{Compression, RecordBatchDecoder};
        let recs = (0..5u8).map(|i| (Some(bytes::Bytes::from(vec![i])), (i != 3).then(|| bytes::Bytes::from(vec![i]))));
        let encoded = encode_records(recs, 7, Compression::Lz4).unwrap();
        let v = BatchView::parse_validated(&encoded).unwrap();
        assert_eq!(v.size(), encoded.len(), "one batch");
        assert_eq!((v.records_count(), v.last_offset_delta(), v.max_timestamp()), (5, 4, 7));
        assert_eq!(i32::from_be_bytes(encoded[53..57].try_into().unwrap()), -1, "base sequence: no producer");
        let mut buf = encoded.clone();
        let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
        let records: Vec<_> = sets.into_iter().flat_map(|s| s.records).collect();
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert!(records[3].value.is_none());
    }

    #[test]
    fn built_batch_validates_and_reads_back() {
        let b = build_batch(0, 1_000, &[b"a", b"bb", b"ccc"]);
        let v = BatchView::parse_validated(&b).unwrap();
        assert_eq!(v.size(), b.len());
        assert_eq!(v.records_count(), 3);
        assert_eq!(v.last_offset_delta(), 2);
        assert_eq!(v.max_timestamp(), 1_000);
        assert_eq!(v.compression(), 0);
    }

    #[test]
    fn every_flipped_byte_inside_the_crc_is_caught() {
        let b = build_batch(0, 1_000, &[b"hello", b"world"]);
        for i in CRC_START..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(BatchView::parse_validated(&c).is_err(), "flip at {i} not caught");
        }
    }

    #[test]
    fn patching_offset_and_epoch_keeps_the_crc_valid() {
        let b = build_batch(0, 5, &[b"x"]);
        let mut p = patched_prefix(&b, 42, 7).to_vec();
        p.extend_from_slice(&b[16..]);
        let v = BatchView::parse_validated(&p).unwrap();
        assert_eq!((v.base_offset(), v.partition_leader_epoch()), (42, 7));
    }

    #[test]
    fn a_log_append_time_header_is_valid_and_says_so() {
        let b = build_batch(0, 5, &[b"x", b"y"]);
        let mut p = patched_header_log_append_time(&b, 42, 7, 1_700_000_000_000).to_vec();
        p.extend_from_slice(&b[TIMESTAMPED_HEADER_LEN..]);
        let v = BatchView::parse_validated(&p).expect("the new CRC covers the patched header");
        assert_eq!((v.base_offset(), v.partition_leader_epoch()), (42, 7));
        assert_eq!(v.max_timestamp(), 1_700_000_000_000);
        assert_eq!(v.base_timestamp(), 5, "the producer's first timestamp is kept");
        assert_ne!(v.attributes() & LOG_APPEND_TIME_FLAG, 0);
        let mut buf = bytes::Bytes::from(p);
        let set = &kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).unwrap()[0];
        // A reader takes maxTimestamp as every record's timestamp when the type is LogAppend
        // (Kafka's DefaultRecordBatch; kafka-protocol reports the type and leaves that to us).
        assert!(set.records.iter().all(|r| r.timestamp_type == kafka_protocol::records::TimestampType::LogAppend));
    }

    #[test]
    fn bad_headers_are_refused_with_their_kafka_code() {
        let b = build_batch(0, 5, &[b"x"]);
        assert_eq!(BatchView::parse_validated(&b[..30]).unwrap_err().kafka_code(), 2);
        let mut m = b.clone();
        m[16] = 1;
        assert_eq!(BatchView::parse_validated(&m).unwrap_err().kafka_code(), 35);
        let mut l = b.clone();
        l[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert!(matches!(BatchView::parse(&l), Err(BatchError::BadLength(3))));
    }
}
