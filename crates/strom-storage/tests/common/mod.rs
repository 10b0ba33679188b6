//! Helpers shared by the storage tests.
#![allow(dead_code)]

use strom_protocol::batch::{build_batch, BatchView};
use strom_storage::{Log, LogConfig};

/// A batch of `n` records whose values encode `tag` and their index, so content can be
/// checked after it has been given offsets.
pub fn batch(tag: u64, n: usize, ts: i64) -> Vec<u8> {
    let values: Vec<Vec<u8>> =
        (0..n).map(|i| format!("{tag}:{i}:{}", "x".repeat((tag % 50) as usize)).into_bytes()).collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    build_batch(0, ts, &refs)
}

/// `bytes` as stored: base offset and leader epoch patched.
pub fn as_stored(bytes: &[u8], base: i64, epoch: i32) -> Vec<u8> {
    let mut out = strom_protocol::batch::patched_prefix(bytes, base, epoch).to_vec();
    out.extend_from_slice(&bytes[16..]);
    out
}

/// Every batch from the log start to the LEO, read in pieces, concatenated.
pub fn read_all(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    while at < log.log_end_offset() {
        let r = log.read(at, 64 * 1024, None).expect("read");
        assert!(!r.records.is_empty(), "read at {at} returned nothing before the LEO {}", log.log_end_offset());
        assert!(r.next_offset > at);
        out.extend_from_slice(&r.records);
        at = r.next_offset;
    }
    out
}

/// Splits stored bytes into batches (validated).
pub fn batches(mut bytes: &[u8]) -> Vec<(i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let v = BatchView::parse_validated(bytes).expect("stored batch is valid");
        out.push((v.base_offset(), v.last_offset(), v.bytes().to_vec()));
        bytes = &bytes[v.size()..];
    }
    out
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: None,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}
