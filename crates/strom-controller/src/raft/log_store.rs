//! The Raft log and vote, in our own files, fsync'd before openraft is told they are stored.
//!
//! Files, in the controller's metadata directory:
//! - `raft-vote`: the vote as JSON, replaced atomically (write temp, fsync, rename, fsync dir).
//! - `raft-log`: an append-only sequence of frames `[len: u32 BE][crc32c: u32 BE][json op]`,
//!   where an op is an entry, a truncation (`since` index: entries at and after it are gone),
//!   or a purge (everything up to a log id is gone). Opening replays the ops.
//!
//! **Torn tail or corruption (the rule `open` applies).** Every acknowledged frame was
//! fsync'd, so only the last write, never acknowledged, can be incomplete after a crash: a bad
//! frame (short, wrong checksum, undecodable) with nothing intact after it is that torn tail,
//! and is cut and logged. A bad frame followed by an intact one is damage in the middle of the
//! log, entries a quorum may have committed: the node refuses to start as a voter (the file is
//! left as it is) rather than cut them away.
//!   When enough has been purged, the file is rewritten with only the live entries.
//!
//! **Architecture invariant:** `append` calls `log_io_completed` only after `fdatasync`
//! returned; `save_vote` returns only after the vote file and its directory are synced.
//! sled is not used here: its flush uses `sync_file_range`, which is not durable.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{Entry, NodeId, TypeConfig};

const LOG_FILE: &str = "raft-log";
const VOTE_FILE: &str = "raft-vote";
/// Rewrite the log file once this many purged entries are still in it.
const REWRITE_AFTER_PURGED: u64 = 4096;
/// The largest frame read back (a metadata batch is far smaller).
const FRAME_MAX_BYTES: u32 = 64 << 20;

#[derive(Serialize, Deserialize)]
enum LogOp {
    Entry(Entry),
    Truncate { since: u64 },
    Purge(LogId<NodeId>),
}

struct Inner {
    dir: PathBuf,
    file: File,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    purged_in_file: u64,
}

/// The log store; cheap to clone (openraft's log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

fn frame(op: &LogOp) -> Vec<u8> {
    let body = serde_json::to_vec(op).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

use strom_storage::durable::{sync_dir, write_atomically};

/// The first position at or after `from` where an intact frame starts (length in bounds,
/// checksum right, body decodable), if any.
fn next_intact_frame(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(8)).find(|&p| {
        let len = u32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]) as usize;
        let crc = u32::from_be_bytes([data[p + 4], data[p + 5], data[p + 6], data[p + 7]]);
        len > 0
            && len <= FRAME_MAX_BYTES as usize
            && data.len() - p - 8 >= len
            && crc32c::crc32c(&data[p + 8..p + 8 + len]) == crc
            && serde_json::from_slice::<LogOp>(&data[p + 8..p + 8 + len]).is_ok()
    })
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying it.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        // A newly created log file must survive a crash with its directory entry.
        sync_dir(dir)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let mut entries = BTreeMap::new();
        let mut last_purged = None;
        let mut purged_in_file = 0;
        let mut pos = 0usize;
        let mut cut_reason = None;
        let bad = |reason: &'static str, pos: usize| -> std::io::Result<&'static str> {
            match next_intact_frame(&data, pos + 1) {
                None => Ok(reason),
                Some(at) => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "raft log {} is corrupt: a damaged frame ({reason}) at byte {pos} is followed by an \
                         intact one at byte {at}, so entries the quorum may have committed are unreadable; \
                         the node does not start as a voter (the file is left untouched: see docs/operations.md, \
                         \"A damaged metadata log\")",
                        path.display()
                    ),
                )),
            }
        };
        while pos < data.len() {
            if data.len() - pos < 8 {
                cut_reason = Some(bad("torn frame header", pos)?);
                break;
            }
            let len = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
            let crc = u32::from_be_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
            if len > FRAME_MAX_BYTES || data.len() - pos - 8 < len as usize {
                cut_reason = Some(bad("torn frame", pos)?);
                break;
            }
            let body = &data[pos + 8..pos + 8 + len as usize];
            if crc32c::crc32c(body) != crc {
                cut_reason = Some(bad("checksum mismatch", pos)?);
                break;
            }
            let Ok(op) = serde_json::from_slice::<LogOp>(body) else {
                cut_reason = Some(bad("undecodable frame", pos)?);
                break;
            };
            match op {
                LogOp::Entry(e) => {
                    entries.insert(e.log_id.index, e);
                }
                LogOp::Truncate { since } => {
                    entries.split_off(&since);
                }
                LogOp::Purge(id) => {
                    let keep = entries.split_off(&(id.index + 1));
                    purged_in_file += entries.len() as u64;
                    entries = keep;
                    last_purged = Some(id);
                }
            }
            pos += 8 + len as usize;
        }
        if let Some(reason) = cut_reason {
            // Only an unacknowledged tail can be torn: every acknowledged frame was fsync'd.
            tracing::warn!(
                path = %path.display(),
                cut_bytes = data.len() - pos,
                kept_bytes = pos,
                reason,
                "raft log: cut a torn tail"
            );
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        let vote = match fs::read(dir.join(VOTE_FILE)) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(std::io::Error::other)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                file,
                entries,
                last_purged,
                vote,
                purged_in_file,
            })),
        })
    }
}

impl Inner {
    fn write_ops(&mut self, ops: &[LogOp]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for op in ops {
            buf.extend_from_slice(&frame(op));
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }

    /// Replaces the log file with the purge marker and the live entries.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut buf = Vec::new();
        if let Some(p) = self.last_purged {
            buf.extend_from_slice(&frame(&LogOp::Purge(p)));
        }
        for e in self.entries.values() {
            buf.extend_from_slice(&frame(&LogOp::Entry(e.clone())));
        }
        let path = self.dir.join(LOG_FILE);
        write_atomically(&path, &buf)?;
        self.file = OpenOptions::new().read(true).append(true).open(&path)?;
        self.purged_in_file = 0;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        let last = inner.entries.values().next_back().map(|e| e.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        let write = |dir: &Path| -> std::io::Result<()> {
            write_atomically(&dir.join(VOTE_FILE), &serde_json::to_vec(vote).map_err(std::io::Error::other)?)
        };
        write(&inner.dir).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().await;
        let ops: Vec<LogOp> = entries.into_iter().map(LogOp::Entry).collect();
        let result = inner.write_ops(&ops);
        if result.is_ok() {
            for op in ops {
                if let LogOp::Entry(e) = op {
                    inner.entries.insert(e.log_id.index, e);
                }
            }
        }
        let err = result.as_ref().err().map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(result);
        match err {
            Some(e) => Err(io_err(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner.write_ops(&[LogOp::Truncate { since: log_id.index }]).map_err(io_err)?;
        inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner.write_ops(&[LogOp::Purge(log_id)]).map_err(io_err)?;
        let keep = inner.entries.split_off(&(log_id.index + 1));
        inner.purged_in_file += inner.entries.len() as u64;
        inner.entries = keep;
        inner.last_purged = Some(log_id);
        if inner.purged_in_file >= REWRITE_AFTER_PURGED {
            inner.rewrite().map_err(io_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> LogOp {
        LogOp::Entry(Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank })
    }

    /// A log file of `n` entry frames; returns its bytes and where each frame starts.
    fn log_file(dir: &Path, n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut data = Vec::new();
        let mut starts = Vec::new();
        for i in 1..=n {
            starts.push(data.len());
            data.extend_from_slice(&frame(&entry(i)));
        }
        fs::write(dir.join(LOG_FILE), &data).unwrap();
        (data, starts)
    }

    async fn indexes(store: &LogStore) -> Vec<u64> {
        store.inner.lock().await.entries.keys().copied().collect()
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut data, _) = log_file(dir.path(), 5);
        // Half of a sixth frame (a crash mid-append).
        let sixth = frame(&entry(6));
        data.extend_from_slice(&sixth[..sixth.len() / 2]);
        fs::write(dir.path().join(LOG_FILE), &data).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store).await, vec![1, 2, 3, 4, 5]);
        assert_eq!(fs::metadata(dir.path().join(LOG_FILE)).unwrap().len() as usize, data.len() - sixth.len() / 2);
    }

    #[tokio::test]
    async fn a_zero_filled_tail_is_cut() {
        // File size extended before the data reached the disk: zeros where the last write was.
        let dir = tempfile::tempdir().unwrap();
        let (mut data, _) = log_file(dir.path(), 3);
        data.extend_from_slice(&[0u8; 300]);
        fs::write(dir.path().join(LOG_FILE), &data).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store).await, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn damage_in_the_middle_refuses_to_open_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut data, starts) = log_file(dir.path(), 5);
        data[starts[1] + 12] ^= 0x55; // inside the second frame's body
        fs::write(dir.path().join(LOG_FILE), &data).unwrap();
        let e = LogStore::open(dir.path()).err().expect("a damaged middle opened");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert_eq!(fs::read(dir.path().join(LOG_FILE)).unwrap(), data, "the file was changed");
        // The last frame damaged instead: a tail, cut.
        let (mut data, starts) = log_file(dir.path(), 5);
        data[starts[4] + 12] ^= 0x55;
        fs::write(dir.path().join(LOG_FILE), &data).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store).await, vec![1, 2, 3, 4]);
    }
}
