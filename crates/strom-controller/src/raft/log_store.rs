//! The Raft log and vote, in our own files, fsync'd before openraft is told they are stored.
//!
//! Files, in the controller's metadata directory:
//! - `raft-vote`: the vote as JSON, replaced atomically (write temp, fsync, rename, fsync dir).
//! - `raft-log`: an append-only sequence of frames `[len: u32 BE][crc32c: u32 BE][json op]`,
//!   where an op is an entry, a truncation (`since` index: entries at and after it are gone),
//!   or a purge (everything up to a log id is gone). Opening replays the ops; a torn or
//!   corrupt tail frame (a crash mid-append, never acknowledged) is cut and logged.
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
        while pos < data.len() {
            if data.len() - pos < 8 {
                cut_reason = Some("torn frame header");
                break;
            }
            let len = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
            let crc = u32::from_be_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
            if len > FRAME_MAX_BYTES || data.len() - pos - 8 < len as usize {
                cut_reason = Some("torn frame");
                break;
            }
            let body = &data[pos + 8..pos + 8 + len as usize];
            if crc32c::crc32c(body) != crc {
                cut_reason = Some("checksum mismatch");
                break;
            }
            let Ok(op) = serde_json::from_slice::<LogOp>(body) else {
                cut_reason = Some("undecodable frame");
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
