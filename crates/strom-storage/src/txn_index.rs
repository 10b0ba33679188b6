//! One segment's aborted transactions: Kafka's `.txnindex` file, 34-byte entries (version
//! i16 = 0, producer id i64, first offset i64, last offset i64, last stable offset i64),
//! big-endian, in the order their abort markers were written.
//!
//! An entry says: producer `producer_id`'s records from `first_offset` up to its abort
//! marker at `last_offset` are aborted; a consumer at read_committed skips them. It sits in
//! the index of the segment that holds the marker. `last_stable_offset` is the partition's
//! first unstable offset once this transaction ended: every transaction aborted later
//! started at or after it, so a search for transactions overlapping a range below it can
//! stop there ([`crate::Log::aborted_txns`]).
//!
//! **Rule:** an entry is written and fdatasync'd when its marker is appended, before the
//! append returns, so the index holds at least every abort marker that survives a crash
//! (aborts are rare next to records: one small sync each). Recovery drops entries whose
//! marker is past the recovered log end; a damaged file keeps its entries up to the damage
//! and says so ([`TxnIndex::load`]), and the partition then rebuilds its transactions from
//! the whole log.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::LogError;

const ENTRY_LEN: usize = 34;
const VERSION: i16 = 0;

/// An aborted transaction of one partition (the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of its abort marker.
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&VERSION.to_be_bytes());
        for v in [self.producer_id, self.first_offset, self.last_offset, self.last_stable_offset] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn decode(c: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| c.get(at..at + 8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes);
        if c.get(..2)? != VERSION.to_be_bytes() {
            return None;
        }
        let t = AbortedTxn {
            producer_id: i64_at(2)?,
            first_offset: i64_at(10)?,
            last_offset: i64_at(18)?,
            last_stable_offset: i64_at(26)?,
        };
        (t.first_offset >= 0 && t.first_offset <= t.last_offset).then_some(t)
    }
}

/// One segment's `.txnindex` (the module's docs).
#[derive(Debug)]
pub struct TxnIndex {
    entries: Vec<AbortedTxn>,
    path: PathBuf,
}

impl TxnIndex {
    /// An empty index (its file is created by the first entry).
    pub fn new(path: PathBuf) -> Self {
        TxnIndex { entries: Vec::new(), path }
    }

    /// Loads the file (none: empty). Returns the index and whether the file was damaged: its
    /// entries up to the damage are kept, and the file is cut to them.
    pub fn load(path: PathBuf) -> Result<(Self, bool), LogError> {
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((TxnIndex::new(path), false)),
            Err(e) => return Err(LogError::io(&path, e)),
        };
        let mut entries: Vec<AbortedTxn> = Vec::with_capacity(data.len() / ENTRY_LEN);
        for c in data.chunks(ENTRY_LEN) {
            match AbortedTxn::decode(c) {
                Some(t) if entries.last().is_none_or(|l| l.last_offset < t.last_offset) => entries.push(t),
                _ => break,
            }
        }
        let index = TxnIndex { entries, path };
        let damaged = index.entries.len() * ENTRY_LEN != data.len();
        if damaged {
            index.rewrite()?;
        }
        Ok((index, damaged))
    }

    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry and syncs it (the module's rule). Entries come in marker order; one
    /// at or below the last (a replay of what is already here) is ignored.
    pub fn append(&mut self, t: AbortedTxn) -> Result<(), LogError> {
        if self.entries.last().is_some_and(|l| l.last_offset >= t.last_offset) {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(ENTRY_LEN);
        t.encode(&mut buf);
        let io = |e| LogError::io(&self.path, e);
        let f = OpenOptions::new().create(true).append(true).open(&self.path).map_err(io)?;
        crate::power_loss::write(&f, || (&f).write_all(&buf)).map_err(io)?;
        crate::durable::fdatasync(&f).map_err(io)?;
        self.entries.push(t);
        Ok(())
    }

    /// Drops the entries whose marker is at or past `end` (a truncation, or recovery's cut).
    pub fn truncate_to(&mut self, end: i64) -> Result<(), LogError> {
        let keep = self.entries.partition_point(|t| t.last_offset < end);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.rewrite()?;
        }
        Ok(())
    }

    /// Replaces the file with the entries in memory (removes it when there are none).
    fn rewrite(&self) -> Result<(), LogError> {
        if self.entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io(&self.path, e)),
                _ => Ok(()),
            };
        }
        let mut buf = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for t in &self.entries {
            t.encode(&mut buf);
        }
        crate::durable::write_atomically(&self.path, &buf).map_err(|e| LogError::io(&self.path, e))
    }

    pub fn delete_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn { producer_id: pid, first_offset: first, last_offset: last, last_stable_offset: last + 1 }
    }

    #[test]
    fn entries_persist_in_kafkas_format_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut idx = TxnIndex::new(path.clone());
        idx.append(txn(7, 0, 4)).unwrap();
        idx.append(txn(8, 2, 9)).unwrap();
        idx.append(txn(8, 2, 9)).unwrap(); // a replay: ignored
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2 * 34);
        assert_eq!(&bytes[..2], &[0, 0], "version 0");
        assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
        let (back, damaged) = TxnIndex::load(path.clone()).unwrap();
        assert!(!damaged);
        assert_eq!(back.entries(), &[txn(7, 0, 4), txn(8, 2, 9)]);

        let mut back = back;
        back.truncate_to(9).unwrap();
        assert_eq!(back.entries(), &[txn(7, 0, 4)]);
        assert_eq!(TxnIndex::load(path.clone()).unwrap().0.entries(), &[txn(7, 0, 4)]);
        back.truncate_to(0).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_damaged_file_keeps_what_precedes_the_damage_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txnindex");
        let mut idx = TxnIndex::new(path.clone());
        idx.append(txn(1, 0, 4)).unwrap();
        idx.append(txn(1, 5, 9)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(34 + 20); // a torn second entry
        std::fs::write(&path, &bytes).unwrap();
        let (idx, damaged) = TxnIndex::load(path.clone()).unwrap();
        assert!(damaged);
        assert_eq!(idx.entries(), &[txn(1, 0, 4)]);
        assert_eq!(std::fs::read(&path).unwrap().len(), 34, "the file is cut to the good entries");
        std::fs::write(&path, [9u8; 34]).unwrap(); // wrong version
        let (idx, damaged) = TxnIndex::load(path).unwrap();
        assert!(damaged && idx.entries().is_empty());
    }
}
