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
//! - **Transactions (Kafka's cleaner):** nothing at or past the last stable offset is cleaned
//!   (`uncleanable_from`): a record of a transaction still open may yet be aborted, and must
//!   not supersede the committed record of its key before that is known. A batch of an
//!   aborted transaction (the transaction index names it) is no record of its key: never
//!   counted as a key's latest, and removed. A marker (control batch) is kept while any batch
//!   of its transaction is kept, and while it is younger than `delete_retention_ms` (a
//!   consumer that read the transaction's records must see how it ended); then it goes too,
//!   as Kafka's cleaner drops markers, so a compacted topic written in transactions (and
//!   `__consumer_offsets` under exactly-once) does not grow by one marker per transaction.
//!
//! **Lock rule:** a cleaning never holds the log while it reads or writes data. Under the log
//! lock [`Log::plan_clean`] lists the sealed segments to clean; off the lock
//! [`CleanPlan::prepare`] reads them (at most `io_max_bytes_per_second`) and writes the
//! cleaned files; under the lock again [`Log::install_clean`] swaps them in, unless a
//! truncation ran meanwhile or a planned segment is gone or changed (then the work is
//! dropped and done again later). Sealed segments change only by truncation, retention or
//! cleaning, so what was read is what is replaced.
//!
//! **Crash rule:** before the first segment is replaced, the log's sparse-below checkpoint is
//! moved to the active segment's base (recovery accepts holes only below it, and keeps
//! checking density above). A segment is replaced by writing `<segment>.log.cleaned` beside it and
//! fsyncing it, removing the old segment's index files, renaming the cleaned file over the
//! `.log` (atomic) and fsyncing the directory, then writing the indexes anew. A crash before
//! the rename leaves the old segment whole (the `.cleaned` file is removed on open; missing
//! indexes are rebuilt by scanning); after it, the new segment is whole and is scanned. A
//! segment cleaned to nothing (but the first) is removed instead of replaced: its indexes,
//! then its file, then the directory fsync'd; reads and recovery step over the hole it leaves.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// `min.compaction.lag.ms`: a segment is cleaned only once its newest record is this old.
    pub min_compaction_lag_ms: u64,
    /// `log.cleaner.io.max.bytes.per.second` (`None`: unthrottled).
    pub io_max_bytes_per_second: Option<u64>,
    /// Segments reaching this offset are not cleaned: the partition's last stable offset
    /// (the transactions rule in the module docs). `i64::MAX`: no bound.
    pub uncleanable_from: i64,
}

impl CleanOptions {
    /// Cleaning now with the log's settings.
    pub fn for_config(config: &crate::LogConfig, now_ms: i64, io_max_bytes_per_second: Option<u64>) -> Self {
        CleanOptions {
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
            min_compaction_lag_ms: config.min_compaction_lag_ms,
            io_max_bytes_per_second,
            uncleanable_from: i64::MAX,
        }
    }

    /// Cleaning now, with Kafka's defaults otherwise.
    pub fn at(now_ms: i64) -> Self {
        CleanOptions {
            now_ms,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            io_max_bytes_per_second: None,
            uncleanable_from: i64::MAX,
        }
    }
}

/// What a cleaning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_rewritten: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
}

/// A segment to clean, as it was when planned.
#[derive(Debug, Clone)]
struct Planned {
    base: i64,
    path: PathBuf,
    size: u64,
}

/// Sealed segments to clean, listed under the log lock ([`Log::plan_clean`]).
#[derive(Debug)]
pub struct CleanPlan {
    segments: Vec<Planned>,
    /// The aborted transactions with records in the planned segments.
    aborted: Vec<crate::AbortedTxn>,
    active_base: i64,
    truncations: u64,
    opts: CleanOptions,
}

/// Cleaned files written beside their segments, to be swapped in ([`Log::install_clean`]).
#[derive(Debug)]
pub struct PreparedClean {
    /// (planned segment, cleaned file) for each segment that changes.
    replacements: Vec<(Planned, PathBuf)>,
    active_base: i64,
    truncations: u64,
    stats: CleanStats,
}

impl Log {
    /// The sealed segments old enough to clean (`min_compaction_lag_ms`), oldest first; `None`
    /// when there are none. Cheap: call it under the log lock.
    pub fn plan_clean(&self, opts: CleanOptions) -> Option<CleanPlan> {
        let active_base = *self.segments.keys().next_back()?;
        let lag = opts.min_compaction_lag_ms.min(i64::MAX as u64) as i64;
        // A segment's end is the next one's base.
        let ends = self.segments.keys().skip(1).copied();
        let segments: Vec<Planned> = self
            .segments
            .values()
            .zip(ends)
            .take_while(|(s, end)| {
                s.base_offset < active_base
                    && s.max_timestamp <= opts.now_ms.saturating_sub(lag)
                    && *end <= opts.uncleanable_from
            })
            .map(|(s, _)| Planned { base: s.base_offset, path: s.log_path.clone(), size: s.size })
            .collect();
        if segments.is_empty() {
            return None;
        }
        // Only what the plan covers becomes clean; later sealed segments stay dirty.
        let end = self.segments.range(segments.last()?.base + 1..).next().map_or(active_base, |(b, _)| *b);
        let aborted = self.aborted_txns(segments.first()?.base, end);
        Some(CleanPlan { segments, aborted, active_base: end, truncations: self.truncations, opts })
    }

    /// Whether the log is due for cleaning: it is compacted, and the dirty share of its sealed
    /// bytes reached `min.cleanable.dirty.ratio`, or its oldest dirty segment is older than
    /// `max.compaction.lag.ms`.
    pub fn cleaning_due(&self, now_ms: i64) -> bool {
        if !self.config.compact {
            return false;
        }
        let (dirty, all) = self.dirty_bytes();
        if dirty == 0 {
            return false;
        }
        let ratio = dirty as f64 / all.max(1) as f64;
        let overdue = self.config.max_compaction_lag_ms.is_some_and(|lag| {
            self.segments
                .values()
                .find(|s| s.base_offset >= self.cleaned_below)
                .and_then(|s| s.first_timestamp)
                .is_some_and(|first| now_ms.saturating_sub(first) > lag as i64)
        });
        ratio >= self.config.min_cleanable_dirty_ratio || overdue
    }

    /// Bytes of sealed segments at or past the cleaner checkpoint, and of all sealed segments:
    /// the dirty ratio is their quotient (`min.cleanable.dirty.ratio`).
    pub fn dirty_bytes(&self) -> (u64, u64) {
        let active_base = self.segments.keys().next_back().copied().unwrap_or(0);
        let sealed = self.segments.values().filter(|s| s.base_offset < active_base);
        sealed.fold((0, 0), |(dirty, all), s| {
            (dirty + if s.base_offset >= self.cleaned_below { s.size } else { 0 }, all + s.size)
        })
    }

    /// Swaps the prepared files in (the module's lock and crash rules). Returns what changed;
    /// nothing when the log changed under the plan (the files are removed).
    pub fn install_clean(&mut self, prepared: PreparedClean) -> Result<CleanStats, LogError> {
        let unchanged = prepared.truncations == self.truncations
            && prepared
                .replacements
                .iter()
                .all(|(p, _)| self.segments.get(&p.base).is_some_and(|s| s.size == p.size && s.log_path == p.path));
        if !unchanged {
            for (_, cleaned) in &prepared.replacements {
                let _ = std::fs::remove_file(cleaned);
            }
            tracing::debug!(dir = %self.dir.display(), "cleaning dropped: the log changed meanwhile");
            return Ok(CleanStats::default());
        }
        // Holes are about to appear below the cleaned end: say so before the first swap.
        if !prepared.replacements.is_empty() && self.sparse_below < prepared.active_base {
            self.set_sparse_below(prepared.active_base)?;
        }
        for (p, cleaned) in &prepared.replacements {
            self.replace_segment(p.base, cleaned)?;
        }
        if self.cleaned_below < prepared.active_base {
            crate::checkpoint::write_cleaned_below(&self.dir, prepared.active_base)?;
            self.cleaned_below = prepared.active_base;
        }
        Ok(prepared.stats)
    }

    /// Plans, prepares and installs a cleaning in one call (holding the log throughout).
    pub fn clean(&mut self, opts: CleanOptions) -> Result<CleanStats, LogError> {
        match self.plan_clean(opts) {
            None => Ok(CleanStats::default()),
            Some(plan) => {
                let prepared = plan.prepare()?;
                self.install_clean(prepared)
            }
        }
    }

    /// Replaces segment `base`'s file with `cleaned` (the module's crash rule). A segment
    /// cleaned to nothing is removed instead, unless it is the first (its base is where the
    /// log starts, which cleaning never moves).
    fn replace_segment(&mut self, base: i64, cleaned: &Path) -> Result<(), LogError> {
        let sparse_below = self.sparse_below;
        let dir = self.dir.clone();
        let first = self.segments.keys().next().copied();
        let empty = std::fs::metadata(cleaned).map_err(|e| LogError::io(cleaned, e))?.len() == 0;
        if empty && first != Some(base) {
            if let Some(seg) = self.segments.remove(&base) {
                // Indexes first: a crash between leaves a log file whose indexes are rebuilt.
                seg.index.delete_files();
                seg.txn.delete_file();
                std::fs::remove_file(&seg.log_path).map_err(|e| LogError::io(&seg.log_path, e))?;
            }
            std::fs::remove_file(cleaned).map_err(|e| LogError::io(cleaned, e))?;
            return durable::sync_dir(&dir).map_err(|e| LogError::io(&dir, e));
        }
        let Some(seg) = self.segments.get_mut(&base) else { return Ok(()) };
        seg.index.delete_files();
        durable::sync_dir(&dir).map_err(|e| LogError::io(&dir, e))?;
        durable::rename(cleaned, &seg.log_path).map_err(|e| LogError::io(&seg.log_path, e))?;
        durable::sync_dir(&dir).map_err(|e| LogError::io(&dir, e))?;
        seg.reload_after_replace(sparse_below)
    }
}

impl CleanPlan {
    /// Reads the planned segments and writes a cleaned file beside each one that changes. No
    /// log lock is needed (the module's lock rule); run it off the async runtime.
    pub fn prepare(self) -> Result<PreparedClean, LogError> {
        let mut throttle = Throttle::new(self.opts.io_max_bytes_per_second);
        let mut stats = CleanStats::default();
        // Pass 1: the latest offset of every key in the planned segments. Control batches
        // (transaction markers) are no records of any key: never counted, always kept (their
        // keys name a marker type, and an abort marker ends what the transaction index says).
        let aborted = |v: &BatchView<'_>| {
            v.is_transactional()
                && self.aborted.iter().any(|t| {
                    t.producer_id == v.producer_id()
                        && t.first_offset <= v.base_offset()
                        && v.base_offset() < t.last_offset
                })
        };
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for p in &self.segments {
            for_each_batch(p, &mut throttle, |v, records| {
                if v.is_control() || aborted(v) {
                    return Ok(());
                }
                for r in records {
                    if let Some(k) = &r.key {
                        latest.insert(k.clone(), r.offset);
                    }
                }
                Ok(())
            })?;
        }
        // Pass 2: each segment that holds a superseded record or an old tombstone, rewritten.
        let mut replacements = Vec::new();
        let past_delete_horizon = |v: &BatchView<'_>| {
            v.max_timestamp().saturating_add(self.opts.delete_retention_ms.min(i64::MAX as u64) as i64)
                < self.opts.now_ms
        };
        // Per producer: does a batch of its transaction since its last marker survive?
        let mut txn_data_kept: HashMap<i64, bool> = HashMap::new();
        for p in &self.segments {
            let mut out: Vec<u8> = Vec::new();
            let mut removed = 0u64;
            for_each_batch(p, &mut throttle, |v, records| {
                if v.is_control() {
                    let data_kept = txn_data_kept.remove(&v.producer_id()).unwrap_or(false);
                    if data_kept || !past_delete_horizon(v) {
                        out.extend_from_slice(v.bytes());
                    } else {
                        removed += records.len() as u64;
                    }
                    return Ok(());
                }
                if aborted(v) {
                    removed += records.len() as u64;
                    return Ok(());
                }
                let tombstone_expired = past_delete_horizon(v);
                let keep = |r: &Record| {
                    let latest_of_key = r.key.as_ref().is_none_or(|k| latest.get(k) == Some(&r.offset));
                    latest_of_key && !(r.value.is_none() && tombstone_expired)
                };
                let kept: Vec<&Record> = records.iter().filter(|r| keep(r)).collect();
                removed += (records.len() - kept.len()) as u64;
                if v.is_transactional() && !kept.is_empty() {
                    txn_data_kept.insert(v.producer_id(), true);
                }
                if kept.len() == records.len() {
                    out.extend_from_slice(v.bytes());
                } else if !kept.is_empty() {
                    out.extend_from_slice(&reencode(v, &kept)?);
                }
                Ok(())
            })?;
            stats.bytes_read += p.size;
            if removed == 0 {
                continue;
            }
            let mut name = p.path.file_name().unwrap_or_default().to_os_string();
            name.push(CLEANED_SUFFIX);
            let cleaned = p.path.with_file_name(name);
            let io = |e| LogError::io(&cleaned, e);
            let f = std::fs::File::create(&cleaned).map_err(io)?;
            crate::power_loss::write(&f, || (&f).write_all(&out)).map_err(io)?;
            durable::fsync(&f).map_err(io)?;
            stats.segments_rewritten += 1;
            stats.bytes_written += out.len() as u64;
            stats.records_removed += removed;
            replacements.push((p.clone(), cleaned));
        }
        Ok(PreparedClean { replacements, active_base: self.active_base, truncations: self.truncations, stats })
    }
}

/// Calls `f` with every batch of the planned segment (up to its planned size) and its
/// decoded records, reading the file by path in bounded chunks.
fn for_each_batch(
    p: &Planned,
    throttle: &mut Throttle,
    mut f: impl FnMut(&BatchView<'_>, &[Record]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let file = std::fs::File::open(&p.path).map_err(|e| LogError::io(&p.path, e))?;
    let read = |pos: u64, len: usize| -> Result<Vec<u8>, LogError> {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, pos).map_err(|e| LogError::io(&p.path, e))?;
        Ok(buf)
    };
    let mut pos = 0u64;
    while pos < p.size {
        let mut chunk = read(pos, (CLEAN_READ_BYTES as u64).min(p.size - pos) as usize)?;
        if let Some(Ok(claimed)) = batch::claimed_size(&chunk) {
            if claimed > chunk.len() && pos + claimed as u64 <= p.size {
                chunk = read(pos, claimed)?;
            }
        }
        throttle.took(chunk.len() as u64);
        let chunk = Bytes::from(chunk);
        let mut advanced = 0u64;
        while let Ok(v) = BatchView::parse(&chunk[advanced as usize..]) {
            // The decoder takes the batch as a slice of the chunk: no copy.
            let mut bytes = chunk.slice(advanced as usize..advanced as usize + v.size());
            let records: Vec<Record> = RecordBatchDecoder::decode_all(&mut bytes)
                .map_err(|e| LogError::Recompress(format!("cannot decode a batch to clean it: {e}")))?
                .into_iter()
                .flat_map(|s| s.records)
                .collect();
            f(&v, &records)?;
            advanced += v.size() as u64;
        }
        if advanced == 0 {
            return Err(LogError::Corrupt {
                segment: p.path.display().to_string(),
                position: pos,
                reason: "unreadable batch while cleaning".into(),
            });
        }
        pos += advanced;
    }
    Ok(())
}

/// `log.cleaner.io.max.bytes.per.second`: sleeps the cleaning thread so that what it has
/// read since it started never runs ahead of the rate.
struct Throttle {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle { rate: rate.filter(|r| *r > 0), started: Instant::now(), bytes: 0 }
    }

    fn took(&mut self, n: u64) {
        self.bytes += n;
        let Some(rate) = self.rate else { return };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
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
