//! One segment: a `.log` file of whole batches, named by its base offset, and its indexes.

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use strom_protocol::batch::{self, BatchView, HEADER_LEN};

use crate::index::SegmentIndex;
use crate::txn_index::TxnIndex;
use crate::LogError;

/// `00000000000000000042` and friends.
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// The header fields the log needs while scanning.
#[derive(Debug, Clone, Copy)]
pub struct BatchMeta {
    pub position: u64,
    pub size: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub leader_epoch: i32,
    pub records: i32,
}

impl BatchMeta {
    pub fn of(v: &BatchView<'_>, position: u64) -> Self {
        BatchMeta {
            position,
            size: v.size() as u64,
            base_offset: v.base_offset(),
            last_offset: v.last_offset(),
            max_timestamp: v.max_timestamp(),
            leader_epoch: v.partition_leader_epoch(),
            records: v.records_count(),
        }
    }
}

/// Why a scan stopped before the end of the file.
#[derive(Debug)]
pub struct ScanStop {
    pub position: u64,
    pub reason: String,
}

/// One segment: a `.log` file of whole batches and its sparse indexes.
///
/// **File handles:** only the active segment keeps its log file open. A sealed segment
/// (rolled, or older than the last at open) opens the file for the duration of one operation
/// ([`Segment::reader`]) and closes it after, so a node's open descriptors are bounded by its
/// partition count, not by how much data it holds. Index files are never held open.
pub struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    /// `Some` while the segment is the active one (see the type's docs).
    file: Option<File>,
    /// Bytes of whole batches in the file.
    pub size: u64,
    /// Offset after the last batch (`base_offset` when empty).
    pub next_offset: i64,
    /// Largest batch max timestamp, and the last offset of that batch (-1 when none).
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// Max timestamp of the first batch: the segment's age for `segment.ms`.
    pub first_timestamp: Option<i64>,
    pub index: SegmentIndex,
    /// Aborted transactions whose markers are in this segment (`.txnindex`).
    pub txn: TxnIndex,
    bytes_since_index: u64,
    index_interval_bytes: u64,
}

impl Segment {
    fn paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
        let stem = file_stem(base_offset);
        (dir.join(format!("{stem}.log")), dir.join(format!("{stem}.index")), dir.join(format!("{stem}.timeindex")))
    }

    /// A new empty segment (an existing file of the same name is emptied). The directory is
    /// fsync'd, so the new file's entry survives a crash with whatever is then synced into it.
    pub fn create(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Result<Self, LogError> {
        let (log_path, ip, tp) = Self::paths(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|e| LogError::io(&log_path, e))?;
        let _ = std::fs::remove_file(&ip);
        let _ = std::fs::remove_file(&tp);
        let _ = std::fs::remove_file(log_path.with_extension("txnindex"));
        crate::durable::sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
        Ok(Self::with_file(base_offset, log_path, file, 0, SegmentIndex::new(ip, tp), index_interval_bytes))
    }

    /// Opens an existing segment file. Nothing is trusted yet: the caller either
    /// [`Segment::load_trusted`]s or [`Segment::recover`]s it.
    pub fn open(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Result<Self, LogError> {
        let (log_path, ip, tp) = Self::paths(dir, base_offset);
        let file = OpenOptions::new().read(true).write(true).open(&log_path).map_err(|e| LogError::io(&log_path, e))?;
        let size = file.metadata().map_err(|e| LogError::io(&log_path, e))?.len();
        Ok(Self::with_file(base_offset, log_path, file, size, SegmentIndex::new(ip, tp), index_interval_bytes))
    }

    /// A segment over `file` with nothing known about its batches yet.
    fn with_file(
        base_offset: i64,
        log_path: PathBuf,
        file: File,
        size: u64,
        index: SegmentIndex,
        index_interval_bytes: u64,
    ) -> Self {
        Segment {
            base_offset,
            txn: TxnIndex::new(log_path.with_extension("txnindex")),
            log_path,
            file: Some(file),
            size,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_timestamp: None,
            index,
            bytes_since_index: 0,
            index_interval_bytes,
        }
    }

    fn io(&self, e: std::io::Error) -> LogError {
        LogError::io(&self.log_path, e)
    }

    /// The log file: the held handle of an active segment, or a fresh one for a sealed one.
    fn file(&self) -> Result<FileRef<'_>, LogError> {
        match &self.file {
            Some(f) => Ok(FileRef::Held(f)),
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.log_path)
                .map(FileRef::Opened)
                .map_err(|e| self.io(e)),
        }
    }

    /// Closes the held file handle (the segment is no longer the active one).
    pub fn seal(&mut self) {
        self.file = None;
    }

    /// Holds the file open again (the segment became the active one after a truncation).
    pub fn unseal(&mut self) -> Result<(), LogError> {
        if self.file.is_none() {
            let f = OpenOptions::new().read(true).write(true).open(&self.log_path).map_err(|e| self.io(e))?;
            self.file = Some(f);
        }
        Ok(())
    }

    /// A reader over the segment's batches, holding one file handle for its whole life (a
    /// read of many batches opens a sealed segment once, not once per batch).
    pub fn reader(&self) -> Result<SegmentReader<'_>, LogError> {
        Ok(SegmentReader { seg: self, file: self.file()? })
    }

    /// The header of the batch at `position` (length and magic checked, no CRC).
    pub fn header_at(&self, position: u64) -> Result<BatchMeta, LogError> {
        self.reader()?.header_at(position)
    }

    /// Appends batches back to back with one positioned vectored write (`pwritev`): each
    /// batch's `prefix` (the first 16 bytes, patched on the leader) and `rest` (the producer's
    /// bytes) go to the page cache without being joined in memory first.
    pub fn append_run(&mut self, run: &[BatchParts<'_>]) -> Result<(), LogError> {
        fail::fail_point!("pwritev", |_| Err(self.io(std::io::Error::other("failpoint pwritev"))));
        let pos = self.size;
        let mut bufs: Vec<IoSlice<'_>> = Vec::with_capacity(run.len() * 2);
        for b in run {
            bufs.push(IoSlice::new(b.prefix));
            bufs.push(IoSlice::new(b.rest));
        }
        let mut slices: &mut [IoSlice<'_>] = &mut bufs;
        let mut at = pos;
        let file = self.file()?;
        while !slices.is_empty() {
            let n = crate::power_loss::write(&file, || pwritev(&file, slices, at)).map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(std::io::ErrorKind::WriteZero.into()));
            }
            at += n as u64;
            IoSlice::advance_slices(&mut slices, n);
        }
        drop(file);
        let mut p = pos;
        for b in run {
            self.track(&b.meta, p);
            p += b.meta.size;
            self.size = p;
        }
        Ok(())
    }

    /// Updates offsets, timestamps and the sparse indexes for a batch at `position`.
    fn track(&mut self, meta: &BatchMeta, position: u64) {
        debug_assert!(meta.base_offset >= self.next_offset, "offsets only grow within a segment");
        if self.first_timestamp.is_none() {
            self.first_timestamp = Some(meta.max_timestamp);
        }
        if meta.max_timestamp > self.max_timestamp {
            self.max_timestamp = meta.max_timestamp;
            self.offset_of_max_timestamp = meta.last_offset;
        }
        if self.size == 0 && position == 0 || self.bytes_since_index >= self.index_interval_bytes {
            let rel = (meta.base_offset - self.base_offset) as u32;
            if self.index.offsets.last().is_none_or(|(o, _)| *o < rel) {
                self.index.offsets.push((rel, position as u32));
            }
            if self.max_timestamp >= 0 && self.index.times.last().is_none_or(|(t, _)| *t < self.max_timestamp) {
                self.index.times.push((self.max_timestamp, rel));
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += meta.size;
        self.next_offset = meta.last_offset + 1;
    }

    /// Trusts the index files and the segment's end (`next_offset` is the next segment's
    /// base, or found by scanning headers from the last index entry for the last segment).
    pub fn load_trusted(&mut self, next_segment_base: Option<i64>) -> Result<bool, LogError> {
        let (ip, tp) = (self.index.offset_path().to_path_buf(), self.index.time_path().to_path_buf());
        let Some(index) = SegmentIndex::load(ip, tp, self.size) else {
            return Ok(false);
        };
        self.index = index;
        if let Some(&(ts, rel)) = self.index.times.last() {
            self.max_timestamp = ts;
            self.offset_of_max_timestamp = self.base_offset + rel as i64;
        }
        match next_segment_base {
            Some(next) => self.next_offset = next,
            None => {
                let (rel, pos) = self.index.lookup(u32::MAX);
                self.next_offset = self.base_offset + rel as i64;
                let mut pos = pos as u64;
                while pos < self.size {
                    let m = self.header_at(pos)?;
                    self.next_offset = m.last_offset + 1;
                    if m.max_timestamp > self.max_timestamp {
                        self.max_timestamp = m.max_timestamp;
                        self.offset_of_max_timestamp = m.last_offset;
                    }
                    pos += m.size;
                }
            }
        }
        if self.size > 0 {
            self.first_timestamp = Some(self.header_at(0)?.max_timestamp);
        }
        self.bytes_since_index = self.index_interval_bytes; // next append may index
        Ok(true)
    }

    /// Scans the whole file, validating every batch (CRC, growing offsets), rebuilding indexes.
    /// Returns the batches kept and where and why the scan stopped early, if it did.
    /// Batches must follow each other densely, except that a batch starting at or below
    /// `sparse_below` may follow a hole (compaction).
    pub fn recover(
        &mut self,
        on_batch: &mut dyn FnMut(&BatchMeta),
        sparse_below: i64,
    ) -> Result<(u64, Option<ScanStop>), LogError> {
        self.index.offsets.clear();
        self.index.times.clear();
        self.index.truncate_to_position(0);
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        self.first_timestamp = None;
        self.bytes_since_index = 0;
        let file_len = self.size;
        self.size = 0;
        // An owned handle: the scan updates `self` as it goes.
        let file = match &self.file {
            Some(f) => f.try_clone().map_err(|e| self.io(e))?,
            None => OpenOptions::new().read(true).open(&self.log_path).map_err(|e| self.io(e))?,
        };
        let mut batches = 0;
        let mut pos = 0u64;
        const CHUNK: u64 = 1 << 20;
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_start = 0u64;
        while pos < file_len {
            // Make sure `buf` holds the batch at `pos` (its claimed size, up to the file end).
            let have = |buf: &Vec<u8>, buf_start: u64| (buf_start + buf.len() as u64).saturating_sub(pos);
            let mut need = batch::LOG_OVERHEAD as u64;
            loop {
                if have(&buf, buf_start) < need.min(file_len - pos) {
                    let len = CHUNK.max(need).min(file_len - pos) as usize;
                    buf.resize(len, 0);
                    file.read_exact_at(&mut buf, pos).map_err(|e| self.io(e))?;
                    buf_start = pos;
                }
                let slice = &buf[(pos - buf_start) as usize..];
                match batch::claimed_size(slice) {
                    Some(Ok(s)) if (s as u64) > need && (s as u64) <= file_len - pos => need = s as u64,
                    _ => break,
                }
            }
            let slice = &buf[(pos - buf_start) as usize..];
            let stop = |reason: String| Ok((batches, Some(ScanStop { position: pos, reason })));
            let v = match BatchView::parse_stored(slice) {
                Ok(v) => v,
                Err(e) => return stop(e.to_string()),
            };
            let meta = BatchMeta::of(&v, pos);
            // Offsets only grow, densely but where a compacted region allows holes.
            let hole_allowed = meta.base_offset <= sparse_below;
            if meta.base_offset < self.next_offset || (meta.base_offset > self.next_offset && !hole_allowed) {
                return stop(format!("batch offset {} does not follow {}", meta.base_offset, self.next_offset - 1));
            }
            self.track(&meta, pos);
            self.size = pos + meta.size;
            on_batch(&meta);
            batches += 1;
            pos += meta.size;
        }
        Ok((batches, None))
    }

    /// The segment's file was replaced (a cleaning, see `cleaner.rs`): learn its batches anew
    /// by scanning it, and write its indexes.
    pub fn reload_after_replace(&mut self, sparse_below: i64) -> Result<(), LogError> {
        self.size = std::fs::metadata(&self.log_path).map_err(|e| self.io(e))?.len();
        let (_, stop) = self.recover(&mut |_| {}, sparse_below)?;
        if let Some(stop) = stop {
            return Err(LogError::Corrupt {
                segment: self.log_path.display().to_string(),
                position: stop.position,
                reason: format!("a cleaned segment does not read back: {}", stop.reason),
            });
        }
        self.finish(true)
    }

    /// Cuts the file at `position` (a batch boundary) and forgets what was after it.
    pub fn truncate_to_position(&mut self, position: u64, next_offset: i64) -> Result<(), LogError> {
        let file = self.file()?;
        crate::power_loss::truncate(&file, position, || file.set_len(position)).map_err(|e| self.io(e))?;
        drop(file);
        self.size = position;
        self.next_offset = next_offset;
        self.index.truncate_to_position(position as u32);
        self.txn.truncate_to(next_offset)?;
        if position == 0 {
            self.first_timestamp = None;
            self.max_timestamp = -1;
            self.offset_of_max_timestamp = -1;
        } else if self.offset_of_max_timestamp >= next_offset {
            // Recompute from the headers that remain (rare: follower truncation).
            let reader = self.reader()?;
            let mut pos = 0;
            let mut max = (-1, -1);
            while pos < position {
                let m = reader.header_at(pos)?;
                if m.max_timestamp > max.0 {
                    max = (m.max_timestamp, m.last_offset);
                }
                pos += m.size;
            }
            drop(reader);
            (self.max_timestamp, self.offset_of_max_timestamp) = max;
        }
        self.bytes_since_index = self.index_interval_bytes;
        Ok(())
    }

    /// The position of the batch containing `offset` (or the first batch after it), scanning
    /// headers forward from the nearest index entry. `None`: past the end.
    pub fn position_of(&self, offset: i64) -> Result<Option<BatchMeta>, LogError> {
        self.reader()?.position_of(offset)
    }

    /// Whether a read from `offset` of about `len` bytes (from the nearest index entry before
    /// it) finds every page in the page cache, by `cachestat(2)` (Linux 6.5+). `false` when
    /// it cannot tell.
    pub fn is_cached(&self, offset: i64, len: u64) -> bool {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let (_, pos) = self.index.lookup(rel);
        let from = pos as u64;
        let len = self.size.saturating_sub(from).min(len);
        if len == 0 {
            return true;
        }
        match self.file() {
            Ok(f) => pages_cached(&f, from, len),
            Err(_) => false,
        }
    }

    /// Makes the file and indexes durable, and records the max timestamp as the last time
    /// index entry (as Kafka does on roll) so a reopened segment knows it.
    pub fn flush(&mut self) -> Result<(), LogError> {
        let file = self.file()?;
        crate::durable::fdatasync(&file).map_err(|e| self.io(e))?;
        drop(file);
        self.finish(true)
    }

    /// Writes the indexes out (the last time-index entry included), fdatasync'd if `sync`.
    pub fn finish(&mut self, sync: bool) -> Result<(), LogError> {
        if self.max_timestamp >= 0 && self.index.times.last().is_none_or(|(t, _)| *t < self.max_timestamp) {
            let rel = (self.offset_of_max_timestamp - self.base_offset) as u32;
            let rel = rel.max(self.index.times.last().map_or(0, |(_, o)| *o));
            self.index.times.push((self.max_timestamp, rel));
        }
        self.index.persist(sync)
    }

    /// The segment's files: its `.log`, `.index` and `.timeindex`.
    pub fn file_paths(&self) -> [PathBuf; 3] {
        [self.log_path.clone(), self.index.offset_path().to_path_buf(), self.index.time_path().to_path_buf()]
    }

    /// Removes the segment's files.
    pub fn delete(self) -> Result<(), LogError> {
        std::fs::remove_file(&self.log_path).map_err(|e| LogError::io(&self.log_path, e))?;
        self.index.delete_files();
        self.txn.delete_file();
        Ok(())
    }

    /// Loads the `.txnindex` (entries past the segment's end dropped); true if it was
    /// damaged (`txn_index`'s rule).
    pub fn load_txn_index(&mut self) -> Result<bool, LogError> {
        let (mut txn, damaged) = TxnIndex::load(self.txn.path().to_path_buf())?;
        txn.truncate_to(self.next_offset)?;
        self.txn = txn;
        Ok(damaged)
    }
}

/// One batch to append: its first 16 bytes and the rest, kept apart so the leader can patch
/// the prefix without copying the batch.
pub struct BatchParts<'a> {
    pub prefix: &'a [u8],
    pub rest: &'a [u8],
    pub meta: BatchMeta,
}

/// A segment's log file: held by the active segment, or opened for one operation.
enum FileRef<'a> {
    Held(&'a File),
    Opened(File),
}

impl std::ops::Deref for FileRef<'_> {
    type Target = File;
    fn deref(&self) -> &File {
        match self {
            FileRef::Held(f) => f,
            FileRef::Opened(f) => f,
        }
    }
}

/// Reads one segment's batches through one file handle (see [`Segment::reader`]).
pub struct SegmentReader<'a> {
    seg: &'a Segment,
    file: FileRef<'a>,
}

impl SegmentReader<'_> {
    fn view(&self) -> FileView<'_> {
        FileView { file: &self.file, path: &self.seg.log_path }
    }

    /// Reads `len` bytes at `position` ([`FileView::read_at`]).
    pub fn read_at(&self, position: u64, len: usize) -> Result<Bytes, LogError> {
        self.view().read_at(position, len)
    }

    /// The header of the batch at `position` (length and magic checked, no CRC).
    pub fn header_at(&self, position: u64) -> Result<BatchMeta, LogError> {
        self.view().header_at(position)
    }

    /// The position of the batch containing `offset` (or the first batch after it), scanning
    /// headers forward from the nearest index entry. `None`: past the end.
    pub fn position_of(&self, offset: i64) -> Result<Option<BatchMeta>, LogError> {
        let seg = self.seg;
        self.view().position_of(seg.scan_start(offset), seg.size, offset)
    }

    /// Whole batches from the one holding `offset` ([`FileView::read_batches`]).
    pub fn read_batches(&self, offset: i64, limit: i64, max_bytes: usize) -> Result<Option<(Bytes, i64)>, LogError> {
        let seg = self.seg;
        self.view().read_batches(seg.scan_start(offset), seg.size, offset, limit, max_bytes)
    }
}

impl Segment {
    /// Where a header scan for `offset` starts: the nearest offset index entry at or below it.
    pub fn scan_start(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        self.index.lookup(rel).1 as u64
    }

    /// A handle of the log file that outlives the segment's lock: the read of a sealed segment
    /// goes on without the log (`Log::plan_read`). A sealed file only changes by a truncation
    /// (the reader then fails and the caller reads again under the lock) or is replaced by a
    /// rename or deleted (the handle keeps the old file, which stays whole).
    pub fn detached_file(&self) -> Result<File, LogError> {
        match &self.file {
            Some(f) => f.try_clone().map_err(|e| self.io(e)),
            None => OpenOptions::new().read(true).open(&self.log_path).map_err(|e| self.io(e)),
        }
    }
}

/// Reads of one log file: positioned reads, batch headers, header scans.
pub struct FileView<'a> {
    pub file: &'a File,
    /// For errors.
    pub path: &'a Path,
}

impl FileView<'_> {
    fn io(&self, e: std::io::Error) -> LogError {
        LogError::io(self.path, e)
    }

    /// Reads `len` bytes at `position`, into memory that is not zeroed first (`pread` into
    /// the buffer's spare capacity: a fetch's bytes are written once, not twice).
    pub fn read_at(&self, position: u64, len: usize) -> Result<Bytes, LogError> {
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        while buf.len() < len {
            let at = position + buf.len() as u64;
            let n = rustix::io::pread(self.file, rustix::buffer::spare_capacity(&mut buf), at)
                .map_err(|e| self.io(e.into()))?;
            if n == 0 {
                return Err(self.io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
            }
        }
        buf.truncate(len);
        Ok(Bytes::from(buf))
    }

    /// The header of the batch at `position` (length and magic checked, no CRC).
    pub fn header_at(&self, position: u64) -> Result<BatchMeta, LogError> {
        let mut h = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut h, position).map_err(|e| self.io(e))?;
        let size = match batch::claimed_size(&h) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(e.into()),
            None => unreachable!("a full header was read"),
        };
        // Parse with a header-only view: the records are not needed here.
        let mut fake = [0u8; HEADER_LEN];
        fake.copy_from_slice(&h);
        fake[8..12].copy_from_slice(&((HEADER_LEN - batch::LOG_OVERHEAD) as i32).to_be_bytes());
        let v = BatchView::parse(&fake)?;
        let mut m = BatchMeta::of(&v, position);
        m.size = size as u64;
        Ok(m)
    }

    /// The batch containing `offset` (or the first one after it), scanning headers from
    /// `from` up to `size`. `None`: past the end.
    pub fn position_of(&self, from: u64, size: u64, offset: i64) -> Result<Option<BatchMeta>, LogError> {
        let mut pos = from;
        while pos < size {
            let m = self.header_at(pos)?;
            if m.last_offset >= offset {
                return Ok(Some(m));
            }
            pos += m.size;
        }
        Ok(None)
    }

    /// Whole batches from the one holding `offset` (or the first after it), scanning from
    /// `from`, stopping before a batch that starts at or past `limit` or that would take the
    /// bytes past `max_bytes` (a first batch is returned whole). `None`: no batch holds
    /// `offset` or follows it in this file; `Some` of empty bytes: the first batch starts at
    /// or past `limit`. Returns the bytes and the offset after the last batch.
    pub fn read_batches(
        &self,
        from: u64,
        size: u64,
        offset: i64,
        limit: i64,
        max_bytes: usize,
    ) -> Result<Option<(Bytes, i64)>, LogError> {
        let Some(first) = self.position_of(from, size, offset)? else { return Ok(None) };
        if first.base_offset >= limit {
            return Ok(Some((Bytes::new(), offset)));
        }
        let mut end = first.position + first.size;
        let mut next_offset = first.last_offset + 1;
        while end < size {
            let m = self.header_at(end)?;
            if m.base_offset >= limit || (end + m.size - first.position) as usize > max_bytes {
                break;
            }
            end += m.size;
            next_offset = m.last_offset + 1;
        }
        Ok(Some((self.read_at(first.position, (end - first.position) as usize)?, next_offset)))
    }
}

/// `cachestat(2)`'s syscall number (the same on every architecture); libc does not name it
/// on all targets yet.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Whether every page of `file[from..from + len]` is in the page cache (`cachestat(2)`);
/// `false` when the kernel cannot say (older than 6.5, or an error).
fn pages_cached(file: &File, from: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let page = rustix::param::page_size() as u64;
    let range = CachestatRange { off: from, len };
    let mut stat = Cachestat::default();
    // SAFETY: both pointers are to live, properly laid out structs for the call's duration;
    // the kernel writes only `stat`.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    let pages = (from + len).div_ceil(page) - from / page;
    r == 0 && stat.nr_cache >= pages
}

/// `pwritev(2)`: std has no positioned vectored write.
fn pwritev(file: &File, bufs: &[IoSlice<'_>], offset: u64) -> std::io::Result<usize> {
    let iovcnt = bufs.len().min(1024) as libc::c_int; // IOV_MAX on Linux
                                                      // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (documented by std); the fd is
                                                      // open for the life of `file`; the buffers outlive the call.
    let n =
        unsafe { libc::pwritev(file.as_raw_fd(), bufs.as_ptr() as *const libc::iovec, iovcnt, offset as libc::off_t) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
