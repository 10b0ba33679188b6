//! Log compaction: [`Log::clean`] keeps, in the sealed segments, only the latest record of
//! each key (Kafka's `cleanup.policy=compact`).
//!
//! **Compaction rules:**
//! - The active segment is never cleaned; a record there still supersedes older ones only once
//!   its segment has rolled (as Kafka's cleaner, which stops at the active segment).
//! - Offsets never change: a batch keeps the offsets of the records it keeps, so a compacted
//!   log is sparse; reads of a removed offset return the next batch after it.
//! - One stored batch becomes at most one batch: all of it when every record survives (its
//!   bytes copied unchanged), its survivors re-encoded in the batch's own codec, with its
//!   producer id, epoch, sequences, leader epoch and timestamps, or nothing.
//! - A tombstone (a record with a null value) is kept while its batch is younger than
//!   `delete_retention_ms` (by the batch's max timestamp), so a consumer that read the old
//!   value learns of the delete; after that it goes too.
//! - Records without a key are kept (a compacted topic refuses them at produce; older data
//!   may have them).
//!
//! **Crash rule:** before the first segment is replaced, the log's sparse-below checkpoint is
//! moved to the active segment's base (recovery accepts holes only below it, and keeps
//! checking density above). A segment is replaced by writing `<segment>.log.cleaned` beside it and
//! fsyncing it, removing the old segment's index files, renaming the cleaned file over the
//! `.log` (atomic) and fsyncing the directory, then writing the indexes anew. A crash before
//! the rename leaves the old segment whole (the `.cleaned` file is removed on open; missing
//! indexes are rebuilt by scanning); after it, the new segment is whole and is scanned.

use std::collections::HashMap;
use std::io::Write;

use bytes::{Bytes, BytesMut};
use strom_protocol::batch::{self, BatchView, LOG_APPEND_TIME_FLAG};
use strom_protocol::kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use crate::{durable, Log, LogError};

/// Suffix of a cleaned segment not yet swapped in.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

/// Bytes read per step while cleaning.
const CLEAN_READ_BYTES: usize = 1 << 20;

/// How a cleaning runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanOptions {
    /// The cleaner's clock.
    pub now_ms: i64,
    /// `delete.retention.ms`: how long a tombstone outlives the value it deletes.
    pub delete_retention_ms: u64,
}

/// What a cleaning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_rewritten: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
}

impl Log {
    /// Compacts the sealed segments (the module's rules). Runs under the caller's exclusive
    /// borrow of the log: appends wait while a cleaning runs.
    pub fn clean(&mut self, opts: CleanOptions) -> Result<CleanStats, LogError> {
        let mut stats = CleanStats::default();
        let sealed: Vec<i64> = self.segments.keys().rev().skip(1).rev().copied().collect();
        if sealed.is_empty() {
            return Ok(stats);
        }
        // Pass 1: the latest offset of every key in the sealed segments.
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for base in &sealed {
            self.for_each_batch(*base, |_, records| {
                for r in records {
                    if let Some(k) = &r.key {
                        latest.insert(k.clone(), r.offset);
                    }
                }
            })?;
        }
        // Holes are about to appear below the active segment: say so before the first swap.
        let active_base = self.segments.keys().next_back().copied().unwrap_or(0);
        let mut sparse_recorded = self.sparse_below >= active_base;
        // Pass 2: rewrite each sealed segment that holds a superseded record or an old tombstone.
        for base in sealed {
            let mut out: Vec<u8> = Vec::new();
            let mut removed = 0u64;
            let mut read = 0u64;
            self.try_for_each_batch(base, |v, records| {
                read += v.size() as u64;
                let tombstone_expired = v.max_timestamp().saturating_add(opts.delete_retention_ms as i64) < opts.now_ms;
                let keep = |r: &Record| {
                    let latest_of_key = r.key.as_ref().is_none_or(|k| latest.get(k) == Some(&r.offset));
                    latest_of_key && !(r.value.is_none() && tombstone_expired)
                };
                let kept: Vec<&Record> = records.iter().filter(|r| keep(r)).collect();
                removed += (records.len() - kept.len()) as u64;
                if kept.len() == records.len() {
                    out.extend_from_slice(v.bytes());
                } else if !kept.is_empty() {
                    out.extend_from_slice(&reencode(v, &kept)?);
                }
                Ok(())
            })?;
            stats.bytes_read += read;
            if removed == 0 {
                continue;
            }
            if !sparse_recorded {
                self.set_sparse_below(active_base)?;
                sparse_recorded = true;
            }
            self.replace_segment(base, &out)?;
            stats.segments_rewritten += 1;
            stats.bytes_written += out.len() as u64;
            stats.records_removed += removed;
        }
        if stats.segments_rewritten > 0 {
            tracing::info!(dir = %self.dir.display(), ?stats, "log cleaned");
        }
        Ok(stats)
    }

    fn for_each_batch(&self, base: i64, mut f: impl FnMut(&BatchView<'_>, &[Record])) -> Result<(), LogError> {
        self.try_for_each_batch(base, |v, r| {
            f(v, r);
            Ok(())
        })
    }

    /// Calls `f` with every batch of segment `base` and its decoded records.
    fn try_for_each_batch(
        &self,
        base: i64,
        mut f: impl FnMut(&BatchView<'_>, &[Record]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let Some(seg) = self.segments.get(&base) else { return Ok(()) };
        let reader = seg.reader()?;
        let mut pos = 0u64;
        while pos < seg.size {
            let len = (CLEAN_READ_BYTES as u64).min(seg.size - pos) as usize;
            let mut chunk = reader.read_at(pos, len)?;
            if let Some(Ok(claimed)) = batch::claimed_size(&chunk) {
                if claimed > chunk.len() {
                    chunk = reader.read_at(pos, claimed)?;
                }
            }
            let mut rest: &[u8] = &chunk;
            let mut advanced = 0u64;
            while let Ok(v) = BatchView::parse(rest) {
                let mut bytes = Bytes::copy_from_slice(v.bytes());
                let records: Vec<Record> = RecordBatchDecoder::decode_all(&mut bytes)
                    .map_err(|e| LogError::Recompress(format!("cannot decode a batch to clean it: {e}")))?
                    .into_iter()
                    .flat_map(|s| s.records)
                    .collect();
                f(&v, &records)?;
                advanced += v.size() as u64;
                rest = &rest[v.size()..];
            }
            if advanced == 0 {
                return Err(LogError::Corrupt {
                    segment: seg.log_path.display().to_string(),
                    position: pos,
                    reason: "unreadable batch while cleaning".into(),
                });
            }
            pos += advanced;
        }
        Ok(())
    }

    /// Swaps segment `base`'s file for `contents` (the module's crash rule).
    fn replace_segment(&mut self, base: i64, contents: &[u8]) -> Result<(), LogError> {
        let sparse_below = self.sparse_below;
        let Some(seg) = self.segments.get_mut(&base) else { return Ok(()) };
        let log_path = seg.log_path.clone();
        let mut cleaned_name = log_path.file_name().unwrap_or_default().to_os_string();
        cleaned_name.push(CLEANED_SUFFIX);
        let cleaned = log_path.with_file_name(cleaned_name);
        let io = |e| LogError::io(&cleaned, e);
        let mut f = std::fs::File::create(&cleaned).map_err(io)?;
        f.write_all(contents).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        seg.index.delete_files();
        durable::sync_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        std::fs::rename(&cleaned, &log_path).map_err(|e| LogError::io(&log_path, e))?;
        durable::sync_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        seg.reload_after_replace(sparse_below)?;
        Ok(())
    }
}

/// `kept` (records of `v`) as one batch in `v`'s codec, with `v`'s producer fields, leader
/// epoch, attributes and timestamps.
fn reencode(v: &BatchView<'_>, kept: &[&Record]) -> Result<Vec<u8>, LogError> {
    let compression = match v.compression() {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    };
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(&mut out, kept.iter().copied(), &RecordEncodeOptions { version: 2, compression })
        .map_err(|e| LogError::Recompress(e.to_string()))?;
    let mut out = out.to_vec();
    if v.attributes() & LOG_APPEND_TIME_FLAG != 0 {
        // The broker's timestamp is the batch's max timestamp, which the encoder does not know.
        let base_offset = i64::from_be_bytes(out[0..8].try_into().unwrap_or_default());
        let header =
            batch::patched_header_log_append_time(&out, base_offset, v.partition_leader_epoch(), v.max_timestamp());
        out[..header.len()].copy_from_slice(&header);
    }
    Ok(out)
}
