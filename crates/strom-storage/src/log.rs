//! [`Log`]: one partition replica's log.
//!
//! Rules this module keeps (checked with debug assertions where cheap):
//! - offsets are dense and ascending: each batch's base offset is the previous batch's last
//!   offset + 1, across segments; `log_start_offset ≤ next_offset` (the log end offset, LEO);
//! - the leader-epoch cache is ascending in both epoch and start offset, and no entry starts at
//!   or past the LEO;
//! - the recovery point never passes the LEO, and everything below it has been fsync'd.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use strom_protocol::batch::{self, BatchView};

use crate::checkpoint;
use crate::segment::{BatchMeta, BatchParts, Segment};
use crate::txn_index::AbortedTxn;
use crate::{CompressionType, LogConfig, LogError, TimestampType};

const LOG_START_FILE: &str = "log-start-offset-checkpoint";
/// Two iovecs per batch must stay under Linux's IOV_MAX (1024).
const MAX_BATCHES_PER_WRITE: usize = 500;
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// The time the leader stamped on the batches (LogAppendTime), else -1.
    pub log_append_time_ms: i64,
    /// Batches the leader re-encoded into the topic's `compression.type`.
    pub recompressed_batches: u64,
    pub records: i64,
    pub bytes: u64,
}

/// Whole batches read from the log.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Stored batch bytes, exactly as on disk.
    pub records: Bytes,
    /// Offset after the last batch returned (where the next read starts).
    pub next_offset: i64,
}

/// A read decided by [`Log::plan_read`].
pub enum ReadPlan {
    /// Read already (the active segment, or nothing to read).
    Done(ReadResult),
    /// A sealed segment's batches, to read without the log.
    Sealed(SealedRead),
}

/// The read of a sealed segment, with its own file handle ([`Log::plan_read`]'s rule).
pub struct SealedRead {
    /// The log's truncation count when planned ([`Log::truncations`]).
    truncations: u64,
    file: std::fs::File,
    path: PathBuf,
    scan_from: u64,
    size: u64,
    offset: i64,
    limit: i64,
    max_bytes: usize,
}

impl SealedRead {
    /// The log's truncation count when the plan was made: if it changed by the time the
    /// read is used, read again under the lock (a truncation may have deleted the segment).
    pub fn truncations(&self) -> u64 {
        self.truncations
    }

    /// Reads the batches. An error (or nothing found where the plan expected batches: the
    /// file was truncated meanwhile) means: read again under the lock with [`Log::read`].
    pub fn run(self) -> Result<ReadResult, LogError> {
        let view = crate::segment::FileView { file: &self.file, path: &self.path };
        match view.read_batches(self.scan_from, self.size, self.offset, self.limit, self.max_bytes)? {
            Some((records, next_offset)) => Ok(ReadResult { records, next_offset }),
            None => Err(LogError::io(
                &self.path,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the sealed segment was truncated"),
            )),
        }
    }
}

/// What recovery found on open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub clean_shutdown: bool,
    pub segments: usize,
    pub segments_scanned: usize,
    pub batches_scanned: u64,
    /// Bytes cut from the tail of the last segment, and why.
    pub truncated_bytes: u64,
    pub truncation_reason: Option<String>,
}

pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) segments: BTreeMap<i64, Segment>,
    pub(crate) log_start_offset: i64,
    pub(crate) next_offset: i64,
    /// Offsets below this may have holes (checkpoint `sparse-below-offset-checkpoint`): the
    /// cleaner removed records there, or a follower fetched them from a cleaned leader.
    pub(crate) sparse_below: i64,
    /// The log below this offset has been cleaned (`cleaner-offset-checkpoint`).
    pub(crate) cleaned_below: i64,
    recovery_point: i64,
    /// (leader epoch, first offset written in it), ascending.
    epochs: Vec<(i32, i64)>,
    unflushed_messages: u64,
    first_unflushed_at: Option<Instant>,
    /// Base offsets of sealed segments whose bytes and indexes are not yet fdatasync'd
    /// (rolled, or recovered after a crash), ascending. **Invariant:** every other sealed
    /// segment is durable, so the recovery point never passes one listed here.
    unsynced_sealed: Vec<i64>,
    /// Bumped by every truncation: a sync of sealed segments that ran meanwhile (outside the
    /// log lock) does not move the recovery point.
    pub(crate) truncations: u64,
    /// A `.txnindex` was damaged at open (`txn_index`'s rule): the owner of the producer
    /// state rebuilds the transactions from the whole log.
    txn_index_damaged: bool,
}

/// Sealed segments to fdatasync outside the log lock ([`Log::sealed_to_sync`]), then report
/// back with [`Log::sealed_synced`].
#[derive(Debug)]
pub struct SealedSync {
    bases: Vec<i64>,
    /// Every file to fdatasync: each segment's `.log`, `.index` and `.timeindex`.
    pub paths: Vec<PathBuf>,
    truncations: u64,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from a crash if needed.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Log, RecoveryReport), LogError> {
        if !dir.exists() {
            // A new partition: its directory's entry must survive a crash too.
            std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
            if let Some(parent) = dir.parent() {
                crate::durable::sync_dir(parent).map_err(|e| LogError::io(parent, e))?;
            }
        }
        let clean_marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = clean_marker.exists();
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let name = entry.map_err(|e| LogError::io(dir, e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            } else if name.ends_with(".tmp") || name.ends_with(crate::cleaner::CLEANED_SUFFIX) {
                // A replacement not completed (a checkpoint, or a cleaning): the original
                // file is intact.
                let _ = std::fs::remove_file(dir.join(name.as_ref()));
            }
        }
        bases.sort_unstable();
        let recovery_point = if clean { i64::MAX } else { checkpoint::read_recovery_point(dir).unwrap_or(-1) };
        let sparse_below = checkpoint::read_sparse_below(dir).unwrap_or(-1);
        let mut report = RecoveryReport { clean_shutdown: clean, segments: bases.len(), ..Default::default() };
        let mut segments = BTreeMap::new();
        let mut scanned_epochs: Vec<(i32, i64)> = Vec::new();
        let scan_from_idx = bases.iter().rposition(|b| *b <= recovery_point).unwrap_or(0);
        let mut recovered = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let mut seg = Segment::open(dir, base, config.index_interval_bytes)?;
            let last = i + 1 == bases.len();
            let trusted = (clean || i < scan_from_idx) && seg.load_trusted(bases.get(i + 1).copied())?;
            if !trusted {
                report.segments_scanned += 1;
                let file_len = seg.size;
                let mut on_batch = |m: &BatchMeta| {
                    if scanned_epochs.last().is_none_or(|(e, _)| m.leader_epoch > *e) && m.leader_epoch >= 0 {
                        scanned_epochs.push((m.leader_epoch, m.base_offset));
                    }
                };
                let (n, stop) = seg.recover(&mut on_batch, sparse_below)?;
                report.batches_scanned += n;
                if let Some(stop) = stop {
                    if !last {
                        return Err(LogError::Corrupt {
                            segment: seg.log_path.display().to_string(),
                            position: stop.position,
                            reason: stop.reason,
                        });
                    }
                    let cut = file_len - stop.position;
                    tracing::warn!(
                        segment = %seg.log_path.display(),
                        position = stop.position,
                        bytes_cut = cut,
                        batches_kept = n,
                        reason = %stop.reason,
                        "recovery cut a torn or corrupt tail"
                    );
                    seg.truncate_to_position(stop.position, seg.next_offset)?;
                    report.truncated_bytes = cut;
                    report.truncation_reason = Some(stop.reason);
                }
                if let Some(prev) = segments.values().last() {
                    let prev: &Segment = prev;
                    // A compacted segment may end before the next one's base (its last
                    // records removed), never after it.
                    if seg.size > 0 && (prev.next_offset > base || (prev.next_offset < base && base > sparse_below)) {
                        return Err(LogError::Corrupt {
                            segment: seg.log_path.display().to_string(),
                            position: 0,
                            reason: format!("segment starts at {base}, previous ends at {}", prev.next_offset),
                        });
                    }
                }
            }
            if !trusted {
                // Read back or rewritten, but not known to be on disk.
                recovered.push(base);
            }
            segments.insert(base, seg);
        }
        let _ = std::fs::remove_file(&clean_marker);
        let mut txn_index_damaged = false;
        for seg in segments.values_mut() {
            if seg.load_txn_index()? {
                tracing::warn!(segment = %seg.log_path.display(), "damaged transaction index: cut to its good entries");
                txn_index_damaged = true;
            }
        }
        let log_start_file =
            checkpoint::read(dir, LOG_START_FILE).and_then(|l| l.first().and_then(|s| s.parse::<i64>().ok()));
        if segments.is_empty() {
            let start = log_start_file.unwrap_or(0);
            segments.insert(start, Segment::create(dir, start, config.index_interval_bytes)?);
        }
        // Only the active (last) segment holds its file open.
        for seg in segments.values_mut().rev().skip(1) {
            seg.seal();
        }
        let first_base = *segments.keys().next().unwrap_or(&0);
        let next_offset = segments.values().last().map_or(first_base, |s| s.next_offset);
        let log_start_offset = log_start_file.unwrap_or(first_base).clamp(first_base, next_offset);

        let mut epochs = checkpoint::read_leader_epochs(dir).unwrap_or_default();
        for (e, o) in scanned_epochs {
            if epochs.last().is_none_or(|(le, _)| e > *le) {
                epochs.push((e, o));
            }
        }
        epochs.retain(|(_, o)| *o < next_offset);
        let active_base = segments.keys().next_back().copied();
        recovered.retain(|b| Some(*b) != active_base && segments.contains_key(b));
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            next_offset,
            sparse_below,
            cleaned_below: checkpoint::read_cleaned_below(dir).unwrap_or(0),
            recovery_point: 0,
            epochs,
            unflushed_messages: 0,
            first_unflushed_at: None,
            unsynced_sealed: recovered,
            truncations: 0,
            txn_index_damaged,
        };
        log.flush()?;
        checkpoint::write_leader_epochs(dir, &log.epochs)?;
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    /// The first offset still stored.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    /// The log end offset (LEO): the offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }
    /// The latest leader epoch written to this log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.last().map(|(e, _)| *e)
    }
    /// The leader-epoch cache: (epoch, start offset) ascending.
    pub fn epochs(&self) -> &[(i32, i64)] {
        &self.epochs
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    /// Whether a [`Self::read`] from `offset` of up to `max_bytes` finds its bytes in the
    /// page cache (so it cannot wait on the disk). Best effort: `false` when unknown.
    pub fn is_cached(&self, offset: i64, max_bytes: usize) -> bool {
        if offset < self.log_start_offset || offset >= self.next_offset {
            return true; // nothing to read
        }
        // A batch may straddle the limit, and the index entry may sit before the offset.
        let span = max_bytes as u64 + 2 * self.config.index_interval_bytes + 64 * 1024;
        let mut segs = self.segments.range(..=offset).next_back().into_iter().chain(self.segments.range(offset + 1..));
        match segs.next() {
            // At a segment's end the read goes on in the next one.
            Some((_, seg)) if seg.next_offset > offset => seg.is_cached(offset, span),
            Some(_) => segs.next().is_none_or(|(_, seg)| seg.is_cached(offset, span)),
            None => true,
        }
    }

    /// Whether an append of `incoming` bytes may wait on the disk beyond writing to the page
    /// cache: it would flush (`flush.messages`), roll the segment (a new file, a directory
    /// fsync) or, for a leader in `leader_epoch`, record a new epoch (a checkpoint fsync'd).
    /// Best effort: a page-cache write can still be throttled by writeback.
    pub fn append_may_block(&self, incoming: u64, now_ms: i64, leader_epoch: Option<i32>) -> bool {
        let Some(active) = self.segments.values().next_back() else { return true };
        let cfg = &self.config;
        let roll = active.size > 0
            && (active.size + incoming > cfg.segment_bytes
                || cfg
                    .segment_ms
                    .zip(active.first_timestamp)
                    .is_some_and(|(ms, first)| now_ms.saturating_sub(first) >= ms as i64));
        let flush = self.unflushed_messages + 1 >= cfg.flush_interval_messages;
        let new_epoch = leader_epoch.is_some_and(|e| self.epochs.last().is_none_or(|(last, _)| *last < e));
        roll || flush || new_epoch
    }

    /// The base offset of the active segment (it changes when the log rolls).
    pub fn active_base_offset(&self) -> i64 {
        self.segments.keys().next_back().copied().unwrap_or(self.next_offset)
    }
    /// Bytes stored over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    fn active(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }

    /// Appends producer batches as the leader: validates each (magic, length, CRC-32C, record
    /// count, and with CreateTime the timestamp bounds), then assigns offsets from the LEO and
    /// stamps `leader_epoch` (and, with LogAppendTime, `now_ms` as the batch timestamp). All or
    /// nothing: one bad batch refuses the whole append before anything is written.
    pub fn append_as_leader(&mut self, batches: &[u8], leader_epoch: i32, now_ms: i64) -> Result<AppendInfo, LogError> {
        let mut views = self.validate(batches)?;
        let log_append_time = self.config.timestamp_type == TimestampType::LogAppendTime;
        // Before any re-encoding: the records are the same, and they are decoded once here.
        for v in &views {
            self.check_records(v, now_ms, log_append_time)?;
        }
        let recompressed;
        let mut recompressed_batches = 0;
        if let Some(codec) = self.config.compression.codec() {
            if views.iter().any(|v| v.compression() != codec) {
                let (bytes, n) = recompress(&views, self.config.compression)?;
                recompressed = bytes;
                recompressed_batches = n;
                views = self.validate(&recompressed)?;
            }
        }
        let mut next = self.next_offset;
        let mut metas = Vec::with_capacity(views.len());
        for v in &views {
            let m = BatchMeta {
                position: 0,
                size: v.size() as u64,
                base_offset: next,
                last_offset: next + v.last_offset_delta() as i64,
                max_timestamp: if log_append_time { now_ms } else { v.max_timestamp() },
                leader_epoch,
                records: v.records_count(),
            };
            next = m.last_offset + 1;
            metas.push(m);
        }
        self.assign_epoch(leader_epoch, self.next_offset)?;
        // The stored header: only the 16 bytes outside the CRC change, unless the broker sets
        // the timestamp, which rewrites the header through maxTimestamp and its CRC.
        let prefixes: Vec<Prefix> = views
            .iter()
            .zip(&metas)
            .map(|(v, m)| {
                if log_append_time {
                    Prefix::Timestamped(batch::patched_header_log_append_time(
                        v.bytes(),
                        m.base_offset,
                        leader_epoch,
                        now_ms,
                    ))
                } else {
                    Prefix::Offsets(batch::patched_prefix(v.bytes(), m.base_offset, leader_epoch))
                }
            })
            .collect();
        let parts: Vec<BatchParts<'_>> = views
            .iter()
            .zip(&prefixes)
            .zip(&metas)
            .map(|((v, p), m)| BatchParts { prefix: p.bytes(), rest: &v.bytes()[p.bytes().len()..], meta: *m })
            .collect();
        self.write_batches(&parts, now_ms)?;
        let mut info = self.after_append(&metas)?;
        if log_append_time {
            info.log_append_time_ms = now_ms;
        }
        info.recompressed_batches = recompressed_batches;
        Ok(info)
    }

    /// The checks that look at records, as Kafka's validator: in a compacted log every record
    /// has a key; with CreateTime every record's timestamp lies within
    /// `message.timestamp.before.max.ms` / `after.max.ms`. The batch is decoded (decompressed)
    /// once, and only when one of them applies; by default none does.
    fn check_records(&self, v: &BatchView<'_>, now_ms: i64, log_append_time: bool) -> Result<(), LogError> {
        let (before, after) = if log_append_time {
            (None, None)
        } else {
            (self.config.timestamp_before_max_ms, self.config.timestamp_after_max_ms)
        };
        let compact = self.config.compact;
        if !compact && before.is_none() && after.is_none() {
            return Ok(());
        }
        let check = |ts: i64| {
            if before.is_some_and(|b| now_ms.saturating_sub(ts) > b as i64) {
                Err(LogError::InvalidTimestamp {
                    timestamp: ts,
                    now_ms,
                    reason: "earlier than message.timestamp.before.max.ms",
                })
            } else if after.is_some_and(|a| ts.saturating_sub(now_ms) > a as i64) {
                Err(LogError::InvalidTimestamp {
                    timestamp: ts,
                    now_ms,
                    reason: "later than message.timestamp.after.max.ms",
                })
            } else {
                Ok(())
            }
        };
        let mut buf = Bytes::copy_from_slice(v.bytes());
        match strom_protocol::kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf) {
            Ok(sets) => sets.iter().flat_map(|s| s.records.iter()).try_for_each(|r| {
                if compact && r.key.is_none() {
                    return Err(LogError::KeylessRecordInCompactedLog);
                }
                check(r.timestamp)
            }),
            // A codec we cannot decode: keys cannot be checked; for the bounds the header's
            // first and largest timestamps stand in.
            Err(e) if compact => Err(LogError::Recompress(e.to_string())),
            Err(_) => check(v.base_timestamp()).and_then(|()| check(v.max_timestamp())),
        }
    }

    /// Appends batches that already carry offsets and epochs (the follower path): they must
    /// continue the log at the LEO: the first at it or, past records a compacted leader
    /// removed, after it; never before it.
    pub fn append_as_follower(&mut self, batches: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let views = self.validate_stored(batches)?;
        let mut expected = self.next_offset;
        let mut metas = Vec::with_capacity(views.len());
        let mut sparse_below = self.sparse_below;
        for v in &views {
            if v.base_offset() < expected {
                return Err(LogError::NotContiguous { expected, got: v.base_offset() });
            }
            if v.base_offset() > expected {
                sparse_below = sparse_below.max(v.base_offset());
            }
            metas.push(BatchMeta::of(v, 0));
            expected = v.last_offset() + 1;
        }
        // Holes from a compacted leader are recorded before they are written, so recovery
        // takes them for compaction, not corruption.
        if sparse_below > self.sparse_below {
            self.set_sparse_below(sparse_below)?;
        }
        // Epochs first (the checkpoint only grows), then the bytes, as they came.
        for m in &metas {
            if m.leader_epoch >= 0 {
                self.assign_epoch(m.leader_epoch, m.base_offset)?;
            }
        }
        let parts: Vec<BatchParts<'_>> = views
            .iter()
            .zip(&metas)
            .map(|(v, m)| BatchParts { prefix: &v.bytes()[..16], rest: &v.bytes()[16..], meta: *m })
            .collect();
        self.write_batches(&parts, now_ms)?;
        self.after_append(&metas)
    }

    /// Offsets below `offset` may have holes from now on (checkpointed first).
    pub(crate) fn set_sparse_below(&mut self, offset: i64) -> Result<(), LogError> {
        checkpoint::write_sparse_below(&self.dir, offset)?;
        self.sparse_below = offset;
        Ok(())
    }

    /// A producer's batches: dense offsets within each batch.
    fn validate<'a>(&self, batches: &'a [u8]) -> Result<Vec<BatchView<'a>>, LogError> {
        self.validate_with(batches, BatchView::parse_validated)
    }

    /// Replicated batches: they may be compacted (fewer records than offsets).
    fn validate_stored<'a>(&self, batches: &'a [u8]) -> Result<Vec<BatchView<'a>>, LogError> {
        self.validate_with(batches, BatchView::parse_stored)
    }

    fn validate_with<'a>(
        &self,
        batches: &'a [u8],
        parse: fn(&'a [u8]) -> Result<BatchView<'a>, batch::BatchError>,
    ) -> Result<Vec<BatchView<'a>>, LogError> {
        if batches.is_empty() {
            return Err(LogError::Empty);
        }
        let mut views = Vec::new();
        let mut rest = batches;
        while !rest.is_empty() {
            let v = parse(rest)?;
            if v.size() > self.config.max_batch_bytes {
                return Err(LogError::TooLarge { size: v.size(), max: self.config.max_batch_bytes });
            }
            rest = &rest[v.size()..];
            views.push(v);
        }
        Ok(views)
    }

    /// Writes batches in order with one `pwritev` per run of batches that land in the same
    /// segment (a roll ends a run), so a produce request or a follower fetch of many batches
    /// costs one system call, not one per batch.
    fn write_batches(&mut self, batches: &[BatchParts<'_>], now_ms: i64) -> Result<(), LogError> {
        let mut i = 0;
        while i < batches.len() {
            self.maybe_roll(batches[i].meta.size, batches[i].meta.max_timestamp, now_ms)?;
            let room = self.config.segment_bytes.min(u32::MAX as u64).saturating_sub(self.active().size);
            let mut run = batches[i].meta.size;
            let mut j = i + 1;
            while j < batches.len() && j - i < MAX_BATCHES_PER_WRITE && run + batches[j].meta.size <= room {
                run += batches[j].meta.size;
                j += 1;
            }
            let active = self.active();
            active.append_run(&batches[i..j])?;
            let last = batches[j - 1].meta.last_offset;
            debug_assert_eq!(active.next_offset, last + 1);
            self.next_offset = last + 1;
            i = j;
        }
        Ok(())
    }

    fn after_append(&mut self, metas: &[BatchMeta]) -> Result<AppendInfo, LogError> {
        let records: i64 = metas.iter().map(|m| m.records as i64).sum();
        let (Some(first), Some(last)) = (metas.first(), metas.last()) else {
            return Err(LogError::Empty);
        };
        self.unflushed_messages += records as u64;
        self.first_unflushed_at.get_or_insert_with(Instant::now);
        if self.unflushed_messages >= self.config.flush_interval_messages {
            self.flush()?;
        }
        Ok(AppendInfo {
            first_offset: first.base_offset,
            last_offset: last.last_offset,
            max_timestamp: metas.iter().map(|m| m.max_timestamp).max().unwrap_or(-1),
            log_append_time_ms: -1,
            recompressed_batches: 0,
            records,
            bytes: metas.iter().map(|m| m.size).sum(),
        })
    }

    /// A new leader records its epoch as starting at its LEO before it appends anything, so
    /// OffsetForLeaderEpoch answers followers from the previous epochs correctly (Kafka does
    /// the same on becoming leader).
    pub fn assign_leader_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        self.assign_epoch(epoch, self.next_offset)
    }

    /// Records that `epoch` starts at `offset` (if it is new), in the checkpoint too.
    fn assign_epoch(&mut self, epoch: i32, offset: i64) -> Result<(), LogError> {
        if self.epochs.last().is_some_and(|(e, _)| *e >= epoch) {
            return Ok(());
        }
        debug_assert!(self.epochs.last().is_none_or(|(_, o)| *o <= offset));
        self.epochs.push((epoch, offset));
        checkpoint::write_leader_epochs(&self.dir, &self.epochs)
    }

    /// Rolls before an append of `incoming` bytes whose batch has max timestamp `incoming_ts`
    /// when the segment is full, or (`segment.ms`, as Kafka's `LogSegment.shouldRoll`) when the
    /// incoming batch is that much newer than the segment's first batch; with no usable
    /// timestamps, the clock's `now_ms` stands in. Comparing record times with record times
    /// (not with the clock) keeps a producer of old timestamps (a replay, a mirror) from
    /// rolling a segment per batch.
    fn maybe_roll(&mut self, incoming: u64, incoming_ts: i64, now_ms: i64) -> Result<(), LogError> {
        let cfg = self.config.clone();
        let active = self.active();
        let full = active.size > 0 && active.size + incoming > cfg.segment_bytes;
        let old = match (cfg.segment_ms, active.first_timestamp) {
            (Some(ms), Some(first)) if first >= 0 => {
                let at = if incoming_ts >= 0 { incoming_ts } else { now_ms };
                at.saturating_sub(first) >= ms as i64
            }
            (Some(ms), Some(first)) => now_ms.saturating_sub(first) >= ms as i64,
            _ => false,
        };
        // Positions in the index are u32: never let a segment pass 4 GiB.
        let too_big_for_index = active.size + incoming > u32::MAX as u64;
        if full || (old && active.size > 0) || (too_big_for_index && active.size > 0) {
            self.roll()?;
        }
        Ok(())
    }

    /// Closes the active segment (flushed) and starts a new one at the LEO.
    ///
    /// The closed segment's indexes are written but nothing is fdatasync'd here: a roll runs
    /// under the log lock on the append path, and syncing up to `segment.bytes` of dirty
    /// pages there stalls every produce to the partition (Kafka, too, flushes a rolled
    /// segment in the background). The segment is listed as unsynced until
    /// [`Self::sealed_to_sync`] / [`Self::sealed_synced`] or [`Self::flush`] make it durable.
    pub fn roll(&mut self) -> Result<(), LogError> {
        fail::fail_point!("segment_roll", |_| Err(LogError::io(
            &self.dir,
            std::io::Error::other("failpoint segment_roll")
        )));
        if self.active().size == 0 {
            return Ok(()); // nothing to seal
        }
        let next = self.next_offset;
        let closed = self.active().base_offset;
        self.active().finish(false)?;
        let seg = Segment::create(&self.dir, next, self.config.index_interval_bytes)?;
        self.active().seal();
        tracing::info!(dir = %self.dir.display(), base_offset = next, "segment rolled");
        self.segments.insert(next, seg);
        self.unsynced_sealed.push(closed);
        Ok(())
    }

    /// The sealed segments still to fdatasync, if any (called under the log lock; the syncs
    /// run outside it).
    pub fn sealed_to_sync(&self) -> Option<SealedSync> {
        let bases: Vec<i64> = self.unsynced_sealed.iter().copied().filter(|b| self.segments.contains_key(b)).collect();
        if bases.is_empty() && self.unsynced_sealed.is_empty() {
            return None;
        }
        let paths = bases.iter().filter_map(|b| self.segments.get(b)).flat_map(|s| s.file_paths()).collect();
        Some(SealedSync { bases, paths, truncations: self.truncations })
    }

    /// The segments of `done` were fdatasync'd: unless the log was truncated meanwhile, they
    /// leave the unsynced list and the recovery point moves up to the first segment that is
    /// not durable (the first still unsynced, or the active one).
    pub fn sealed_synced(&mut self, done: SealedSync) -> Result<(), LogError> {
        if done.truncations != self.truncations {
            return Ok(());
        }
        self.unsynced_sealed.retain(|b| !done.bases.contains(b) && self.segments.contains_key(b));
        let active_base = self.active().base_offset;
        let durable_below = self.unsynced_sealed.first().copied().unwrap_or(active_base);
        debug_assert!(durable_below <= self.next_offset);
        if durable_below > self.recovery_point {
            checkpoint::write_recovery_point(&self.dir, durable_below)?;
            self.recovery_point = durable_below;
        }
        Ok(())
    }

    /// fdatasyncs the unsynced sealed segments here and now (the flush path).
    fn sync_sealed_now(&mut self) -> Result<(), LogError> {
        if let Some(work) = self.sealed_to_sync() {
            for path in &work.paths {
                sync_file(path)?;
            }
            self.sealed_synced(work)?;
        }
        Ok(())
    }

    /// fdatasync the active segment and its indexes, then move the recovery point to the LEO.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.sync_sealed_now()?;
        self.active().flush()?;
        if self.recovery_point != self.next_offset {
            checkpoint::write_recovery_point(&self.dir, self.next_offset)?;
            self.recovery_point = self.next_offset;
        }
        self.unflushed_messages = 0;
        self.first_unflushed_at = None;
        Ok(())
    }

    /// Flushes if `log.flush.interval.ms` has passed since the oldest unflushed append.
    pub fn flush_if_due(&mut self) -> Result<bool, LogError> {
        match (self.config.flush_interval_ms, self.first_unflushed_at) {
            (Some(ms), Some(t)) if t.elapsed().as_millis() as u64 >= ms => self.flush().map(|_| true),
            _ => Ok(false),
        }
    }

    /// Flushes and marks the shutdown clean, so the next open trusts every segment.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        std::fs::File::create(&marker).and_then(|f| crate::durable::fsync(&f)).map_err(|e| LogError::io(&marker, e))?;
        crate::durable::sync_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))
    }

    /// Reads whole batches from `offset`: at least the first batch (even past `max_bytes`,
    /// as Kafka does, so a consumer is never stuck), then more while they fit. Batches at or
    /// past `max_offset` (the high watermark, for consumers) are not returned.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: Option<i64>) -> Result<ReadResult, LogError> {
        let Some(limit) = self.read_limit(offset, max_offset)? else {
            return Ok(ReadResult { records: Bytes::new(), next_offset: offset });
        };
        for (_, seg) in self.segments.range(..=offset).next_back().into_iter().chain(self.segments.range(offset + 1..))
        {
            if let Some((records, next_offset)) = seg.reader()?.read_batches(offset, limit, max_bytes)? {
                return Ok(ReadResult { records, next_offset });
            }
        }
        Ok(ReadResult { records: Bytes::new(), next_offset: offset })
    }

    /// The offset a read from `offset` stops before (`None`: nothing to read), or
    /// OFFSET_OUT_OF_RANGE.
    fn read_limit(&self, offset: i64, max_offset: Option<i64>) -> Result<Option<i64>, LogError> {
        if offset < self.log_start_offset || offset > self.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end: self.next_offset,
            });
        }
        let limit = max_offset.unwrap_or(self.next_offset).min(self.next_offset);
        Ok((offset < limit).then_some(limit))
    }

    /// Records an aborted transaction whose abort marker was just appended (at
    /// `t.last_offset`), durably before returning (`txn_index`'s rule).
    pub fn add_aborted_txn(&mut self, t: AbortedTxn) -> Result<(), LogError> {
        match self.segments.range_mut(..=t.last_offset).next_back() {
            Some((_, seg)) if t.last_offset < seg.next_offset => seg.txn.append(t),
            _ => Err(LogError::OffsetOutOfRange {
                offset: t.last_offset,
                log_start: self.log_start_offset,
                log_end: self.next_offset,
            }),
        }
    }

    /// The aborted transactions with records in `[from, upper)`: what a read_committed
    /// fetch of that range returns beside the records, in marker order. The search stops at
    /// an entry whose last stable offset reaches `upper` (`txn_index`'s docs: no later
    /// transaction starts below it).
    pub fn aborted_txns(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        let first = self.segments.range(..=from).next_back().map_or(i64::MIN, |(b, _)| *b);
        for seg in self.segments.range(first..).map(|(_, s)| s) {
            for t in seg.txn.entries() {
                if t.last_offset >= from && t.first_offset < upper {
                    out.push(*t);
                }
                if t.last_stable_offset >= upper {
                    return out;
                }
            }
        }
        out
    }

    /// How many truncations this log has had (a sealed read planned before one is stale).
    pub fn truncations(&self) -> u64 {
        self.truncations
    }

    /// Whether a `.txnindex` was damaged at open (the field's docs).
    pub fn txn_index_damaged(&self) -> bool {
        self.txn_index_damaged
    }

    /// The owner rebuilt the transaction index from the whole log.
    pub fn txn_index_rebuilt(&mut self) {
        self.txn_index_damaged = false;
    }

    /// [`Self::read`] in two steps, so the disk reads of a sealed segment need no lock on
    /// the log: what is known in memory (range checks, the segment, the index entry) is
    /// decided here; a read of a sealed segment comes back as a [`ReadPlan::Sealed`] holding
    /// its own file handle, to run after the caller releases the log. Anything else (the
    /// active segment, which appends change, or an offset past a sealed segment's last
    /// batch) is read now.
    ///
    /// **Rule:** a sealed segment's bytes never change in place: a cleaning replaces the
    /// file by a rename and retention unlinks it, and the plan's handle keeps reading the
    /// old file, whose batches were the log's when the plan was made. The one exception is a
    /// follower's truncation (which cuts the segment or deletes it, the plan's handle still
    /// reading the deleted file): the caller compares [`SealedRead::truncations`] with
    /// [`Log::truncations`] under the lock after the read, and reads again under it if they
    /// differ (or if the read failed).
    pub fn plan_read(&self, offset: i64, max_bytes: usize, max_offset: Option<i64>) -> Result<ReadPlan, LogError> {
        let Some(limit) = self.read_limit(offset, max_offset)? else {
            return Ok(ReadPlan::Done(ReadResult { records: Bytes::new(), next_offset: offset }));
        };
        let active = self.segments.keys().next_back().copied();
        match self.segments.range(..=offset).next_back() {
            Some((base, seg)) if Some(*base) != active && offset < seg.next_offset => {
                Ok(ReadPlan::Sealed(SealedRead {
                    truncations: self.truncations,
                    file: seg.detached_file()?,
                    path: seg.log_path.clone(),
                    scan_from: seg.scan_start(offset),
                    size: seg.size,
                    offset,
                    limit,
                    max_bytes,
                }))
            }
            _ => self.read(offset, max_bytes, max_offset).map(ReadPlan::Done),
        }
    }

    /// The first record (at or after the log start) with a timestamp ≥ `ts`: its offset and
    /// timestamp; `None` when every record is older. As Kafka: the time index finds the first
    /// batch whose max timestamp is ≥ `ts`, then that batch's records are read (decompressed
    /// if need be: the one place the log looks inside a batch) for the first record ≥ `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in self.segments.values() {
            if seg.max_timestamp < ts {
                continue;
            }
            let reader = seg.reader()?;
            let mut pos = seg.index.lookup_time(ts) as u64;
            while pos < seg.size {
                let m = reader.header_at(pos)?;
                if m.max_timestamp >= ts && m.last_offset >= self.log_start_offset {
                    let batch = reader.read_at(pos, m.size as usize)?;
                    return Ok(Some(self.first_record_at_or_after(&m, batch, ts)));
                }
                pos += m.size;
            }
        }
        Ok(None)
    }

    /// Within one batch whose max timestamp is ≥ `ts`: the first record at or past the log
    /// start with a timestamp ≥ `ts`. A batch whose records cannot be decoded (it passed the
    /// CRC on append, so this means a codec we cannot read) answers with the batch's own
    /// first offset and max timestamp, which is where the record is found to the batch.
    fn first_record_at_or_after(&self, m: &BatchMeta, mut batch: Bytes, ts: i64) -> (i64, i64) {
        use strom_protocol::kafka_protocol::records::{RecordBatchDecoder, TimestampType};
        let whole_batch = (m.base_offset.max(self.log_start_offset), m.max_timestamp);
        match RecordBatchDecoder::decode_all(&mut batch) {
            Ok(sets) => sets
                .iter()
                .flat_map(|set| set.records.iter())
                // A LogAppendTime batch's records all carry its max timestamp (Kafka's rule).
                .map(|r| {
                    (r.offset, if r.timestamp_type == TimestampType::LogAppend { m.max_timestamp } else { r.timestamp })
                })
                .find(|(offset, t)| *offset >= self.log_start_offset && *t >= ts)
                .unwrap_or(whole_batch),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), base_offset = m.base_offset, error = %e,
                    "cannot read a batch's records for a timestamp lookup; answering for the whole batch");
                whole_batch
            }
        }
    }

    /// The largest timestamp in the log and the offset it belongs to (ListOffsets -3).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.segments
            .values()
            .filter(|s| s.max_timestamp >= 0)
            .max_by_key(|s| s.max_timestamp)
            .map(|s| (s.offset_of_max_timestamp, s.max_timestamp))
    }

    /// Removes everything at and after `offset` (follower truncation). `offset` is rounded
    /// down to the start of the batch containing it. Returns the new LEO.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset >= self.next_offset {
            return Ok(self.next_offset);
        }
        // Truncation is to a batch boundary: the batch containing `offset` goes entirely.
        let cut = match self.segments.range(..=offset).next_back() {
            Some((_, seg)) => seg.position_of(offset)?.map_or(offset, |m| m.base_offset),
            None => offset,
        };
        if cut <= self.log_start_offset {
            return self.truncate_fully_and_start_at(self.log_start_offset);
        }
        let doomed: Vec<i64> = self.segments.range(offset + 1..).map(|(b, _)| *b).collect();
        for b in doomed {
            if let Some(s) = self.segments.remove(&b) {
                s.delete()?;
            }
        }
        let seg = self.active();
        seg.unseal()?; // it may have been sealed before the segments after it went
        let new_end = match seg.position_of(offset)? {
            Some(m) => {
                seg.truncate_to_position(m.position, m.base_offset)?;
                m.base_offset
            }
            None => seg.next_offset,
        };
        self.next_offset = new_end;
        self.after_truncation()?;
        Ok(new_end)
    }

    /// Deletes every segment and starts empty at `offset` (a follower too far behind).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<i64, LogError> {
        for (_, s) in std::mem::take(&mut self.segments) {
            s.delete()?;
        }
        self.segments.insert(offset, Segment::create(&self.dir, offset, self.config.index_interval_bytes)?);
        self.next_offset = offset;
        self.log_start_offset = offset;
        checkpoint::write(&self.dir, LOG_START_FILE, &[offset.to_string()])?;
        self.after_truncation()?;
        Ok(offset)
    }

    fn after_truncation(&mut self) -> Result<(), LogError> {
        self.truncations += 1;
        let active_base = self.active().base_offset;
        let segments = &self.segments;
        self.unsynced_sealed.retain(|b| *b != active_base && segments.contains_key(b));
        let end = self.next_offset;
        let before = self.epochs.len();
        self.epochs.retain(|(_, o)| *o < end);
        if self.epochs.len() != before {
            checkpoint::write_leader_epochs(&self.dir, &self.epochs)?;
        }
        self.recovery_point = self.recovery_point.min(end);
        self.active().flush()?;
        checkpoint::write_recovery_point(&self.dir, self.recovery_point)
    }

    /// OffsetForLeaderEpoch (KIP-101/279): for `epoch`, the largest epoch ≤ it that this log
    /// has and the offset where the next epoch starts (the LEO for the latest). `None` when
    /// the log knows no epoch ≤ `epoch`... and nothing after it either (Kafka's UNDEFINED).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let latest = self.epochs.last()?;
        if latest.0 == epoch {
            return Some((epoch, self.next_offset));
        }
        let higher = self.epochs.iter().find(|(e, _)| *e > epoch)?;
        match self.epochs.iter().rev().find(|(e, _)| *e <= epoch) {
            Some((e, _)) => Some((*e, higher.1)),
            None => Some((epoch, higher.1)),
        }
    }

    /// DeleteRecords: moves the log start offset up to `offset` (≤ LEO) and deletes segments
    /// that lie wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset > self.next_offset || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end: self.next_offset,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            checkpoint::write(&self.dir, LOG_START_FILE, &[offset.to_string()])?;
            self.delete_segments_below_start()?;
        }
        Ok(self.log_start_offset)
    }

    fn delete_segments_below_start(&mut self) -> Result<usize, LogError> {
        let start = self.log_start_offset;
        let doomed: Vec<i64> = self
            .segments
            .iter()
            .rev()
            .skip(1) // never the active segment
            .filter(|(_, s)| s.next_offset <= start)
            .map(|(b, _)| *b)
            .collect();
        for b in &doomed {
            if let Some(s) = self.segments.remove(b) {
                tracing::info!(dir = %self.dir.display(), base_offset = b, "segment deleted");
                s.delete()?;
            }
        }
        Ok(doomed.len())
    }

    /// Retention: deletes the oldest whole segments whose newest record is older than
    /// `retention.ms`, then while the log is over `retention.bytes`. The active segment is
    /// rolled first when it is itself expired. Returns the number of segments deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        if !self.config.delete {
            return Ok(0); // cleanup.policy=compact: the cleaner, not retention, bounds the log
        }
        let cfg = self.config.clone();
        let mut new_start = self.log_start_offset;
        if let Some(ms) = cfg.retention_ms {
            let expired = |s: &Segment| s.size > 0 && s.max_timestamp >= 0 && now_ms - s.max_timestamp > ms as i64;
            if self.segments.values().all(expired) {
                self.roll()?;
            }
            for s in self.segments.values().rev().skip(1).collect::<Vec<_>>().into_iter().rev() {
                if !expired(s) {
                    break;
                }
                new_start = new_start.max(s.next_offset);
            }
        }
        if let Some(limit) = cfg.retention_bytes {
            let mut total = self.size_bytes();
            for s in self.segments.values().rev().skip(1).collect::<Vec<_>>().into_iter().rev() {
                // Kafka's rule: delete the oldest segment while the log stays at or above the
                // limit without it.
                if total < limit + s.size {
                    break;
                }
                total -= s.size;
                new_start = new_start.max(s.next_offset);
            }
        }
        if new_start > self.log_start_offset {
            self.log_start_offset = new_start;
            checkpoint::write(&self.dir, LOG_START_FILE, &[new_start.to_string()])?;
        }
        self.delete_segments_below_start()
    }

    /// Deletes the partition's directory and everything in it.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| LogError::io(&dir, e))
    }
}

/// `views` with every batch not already in `target`'s codec decoded and encoded again in it
/// (kafka-protocol's codecs; keys, values, headers, timestamps, producer id, epoch and
/// sequences kept). Returns the new bytes and how many batches were re-encoded.
fn recompress(views: &[BatchView<'_>], target: CompressionType) -> Result<(Vec<u8>, u64), LogError> {
    use strom_protocol::kafka_protocol::records::{
        Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    };
    let compression = match target {
        CompressionType::Producer | CompressionType::Uncompressed => Compression::None,
        CompressionType::Gzip => Compression::Gzip,
        CompressionType::Snappy => Compression::Snappy,
        CompressionType::Lz4 => Compression::Lz4,
        CompressionType::Zstd => Compression::Zstd,
    };
    let options = RecordEncodeOptions { version: 2, compression };
    let mut out = bytes::BytesMut::new();
    let mut n = 0;
    for v in views {
        if Some(v.compression()) == target.codec() {
            out.extend_from_slice(v.bytes());
            continue;
        }
        let mut buf = Bytes::copy_from_slice(v.bytes());
        let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| LogError::Recompress(e.to_string()))?;
        let records: Vec<_> = sets.into_iter().flat_map(|s| s.records).collect();
        RecordBatchEncoder::encode(&mut out, records.iter(), &options)
            .map_err(|e| LogError::Recompress(e.to_string()))?;
        n += 1;
    }
    Ok((out.to_vec(), n))
}

/// The stored form of a batch's first bytes (see [`Log::append_as_leader`]).
enum Prefix {
    Offsets([u8; 16]),
    Timestamped([u8; batch::TIMESTAMPED_HEADER_LEN]),
}

impl Prefix {
    fn bytes(&self) -> &[u8] {
        match self {
            Prefix::Offsets(p) => p,
            Prefix::Timestamped(p) => p,
        }
    }
}

/// fdatasync of one file by path; a file already gone (retention deleted its segment) needs
/// no sync.
pub fn sync_file(path: &Path) -> Result<(), LogError> {
    match std::fs::File::open(path) {
        Ok(f) => crate::durable::fdatasync(&f).map_err(|e| LogError::io(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(path, e)),
    }
}
