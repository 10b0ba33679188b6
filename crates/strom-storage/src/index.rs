//! Sparse indexes of one segment, in Kafka's file formats:
//! `.index` holds 8-byte entries (relative offset u32, file position u32), `.timeindex` holds
//! 12-byte entries (max timestamp so far i64, relative offset u32), both big-endian.
//!
//! An entry is added after at least `index.interval.bytes` of batches, so memory is bounded by
//! `segment.bytes / index.interval.bytes` entries per segment. Entries live in memory and are
//! appended to the files on flush and roll; on open a file is trusted only if every entry is
//! well formed, ascending and inside the log file, and is otherwise rebuilt from the log.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::LogError;

/// One segment's offset and time index.
#[derive(Debug)]
pub struct SegmentIndex {
    /// (relative offset, position) ascending in both.
    pub offsets: Vec<(u32, u32)>,
    /// (max timestamp so far, relative offset) ascending in both.
    pub times: Vec<(i64, u32)>,
    offsets_persisted: usize,
    times_persisted: usize,
    offset_path: PathBuf,
    time_path: PathBuf,
}

impl SegmentIndex {
    pub fn new(offset_path: PathBuf, time_path: PathBuf) -> Self {
        SegmentIndex {
            offsets: Vec::new(),
            times: Vec::new(),
            offsets_persisted: 0,
            times_persisted: 0,
            offset_path,
            time_path,
        }
    }

    /// Loads both files; `None` if either is missing or not trustworthy for a log of
    /// `log_size` bytes.
    pub fn load(offset_path: PathBuf, time_path: PathBuf, log_size: u64) -> Option<Self> {
        let ob = std::fs::read(&offset_path).ok()?;
        let tb = std::fs::read(&time_path).ok()?;
        if ob.len() % 8 != 0 || tb.len() % 12 != 0 {
            return None;
        }
        let offsets: Vec<(u32, u32)> = ob
            .chunks_exact(8)
            .map(|c| (u32::from_be_bytes([c[0], c[1], c[2], c[3]]), u32::from_be_bytes([c[4], c[5], c[6], c[7]])))
            .collect();
        let times: Vec<(i64, u32)> = tb
            .chunks_exact(12)
            .map(|c| {
                let mut t = [0u8; 8];
                t.copy_from_slice(&c[..8]);
                (i64::from_be_bytes(t), u32::from_be_bytes([c[8], c[9], c[10], c[11]]))
            })
            .collect();
        let ascending_offsets = offsets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let inside = offsets.last().is_none_or(|(_, p)| (*p as u64) < log_size);
        let ascending_times = times.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1);
        if !(ascending_offsets && inside && ascending_times) {
            return None;
        }
        let (op, tp) = (offsets.len(), times.len());
        Some(SegmentIndex { offsets, times, offsets_persisted: op, times_persisted: tp, offset_path, time_path })
    }

    /// The last entry at or before `relative_offset`: (its relative offset, position).
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        let i = self.offsets.partition_point(|(o, _)| *o <= relative_offset);
        if i == 0 {
            (0, 0)
        } else {
            self.offsets[i - 1]
        }
    }

    /// The position to start scanning for the first record with timestamp ≥ `ts`.
    pub fn lookup_time(&self, ts: i64) -> u32 {
        // Entries record the max timestamp so far; the last entry below `ts` is a safe start.
        let i = self.times.partition_point(|(t, _)| *t < ts);
        if i == 0 {
            0
        } else {
            self.lookup(self.times[i - 1].1).1
        }
    }

    /// Drops entries at or past `position` (the log is being cut there).
    pub fn truncate_to_position(&mut self, position: u32) {
        self.offsets.retain(|(_, p)| *p < position);
        let last_rel = self.offsets.last().map(|(o, _)| *o);
        self.times.retain(|(_, o)| last_rel.is_some_and(|l| *o <= l));
        // The files no longer match: rewrite them at the next persist.
        self.offsets_persisted = usize::MAX;
        self.times_persisted = usize::MAX;
    }

    /// Appends the entries not yet on disk (or rewrites the files after a truncation).
    pub fn persist(&mut self, sync: bool) -> Result<(), LogError> {
        persist_entries(&self.offset_path, &self.offsets, &mut self.offsets_persisted, sync, |e, out| {
            out.extend_from_slice(&e.0.to_be_bytes());
            out.extend_from_slice(&e.1.to_be_bytes());
        })?;
        persist_entries(&self.time_path, &self.times, &mut self.times_persisted, sync, |e, out| {
            out.extend_from_slice(&e.0.to_be_bytes());
            out.extend_from_slice(&e.1.to_be_bytes());
        })
    }

    pub fn offset_path(&self) -> &Path {
        &self.offset_path
    }

    pub fn time_path(&self) -> &Path {
        &self.time_path
    }

    pub fn delete_files(&self) {
        let _ = std::fs::remove_file(&self.offset_path);
        let _ = std::fs::remove_file(&self.time_path);
    }
}

fn persist_entries<T>(
    path: &Path,
    entries: &[T],
    persisted: &mut usize,
    sync: bool,
    encode: impl Fn(&T, &mut Vec<u8>),
) -> Result<(), LogError> {
    let rewrite = *persisted > entries.len();
    if !rewrite && *persisted == entries.len() && path.exists() {
        return Ok(());
    }
    let from = if rewrite { 0 } else { *persisted };
    let mut buf = Vec::new();
    for e in &entries[from..] {
        encode(e, &mut buf);
    }
    let io = |e| LogError::io(path, e);
    let f = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    if rewrite {
        crate::power_loss::truncate(&f, 0, || f.set_len(0)).map_err(io)?;
    }
    crate::power_loss::write(&f, || (&f).write_all(&buf)).map_err(io)?;
    if sync {
        crate::durable::fdatasync(&f).map_err(io)?;
    }
    *persisted = entries.len();
    Ok(())
}
