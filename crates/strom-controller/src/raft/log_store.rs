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
//!
//! **The disk is never waited on by an async worker.** One thread, the log writer, owns the
//! files and performs every write in the order it was queued (appends, truncations, purges,
//! rewrites, votes). `append` puts the entries in memory (readable at once, as openraft asks),
//! queues their frames and returns; the writer tells openraft they are stored once synced.
//! So a slow fsync never holds a runtime worker. (openraft 0.9's core itself awaits that
//! callback before its next step, so on the active controller a slow fsync still delays its
//! heartbeats while a metadata append is in flight; 0.10 makes that wait non-blocking.)
//! After one failed write every later one fails too (the
//! file's state is unknown): openraft stops, and `Controller::failed` stops the node.

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
    writer: std::sync::mpsc::Sender<WriteJob>,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    purged_in_file: u64,
}

type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// One write the log writer performs, in queue order, then reports through `done`.
enum WriteJob {
    /// Append frames to the log file and fdatasync it.
    Append { frames: Vec<u8>, done: Done },
    /// Replace the log file with these frames (the module's rewrite after purges).
    Rewrite { frames: Vec<u8>, done: Done },
    /// Replace the vote file.
    Vote { json: Vec<u8>, done: Done },
}

/// The log writer thread's state: the files, and the first error (after which nothing more
/// is written).
struct LogWriter {
    dir: PathBuf,
    file: File,
    broken: Option<String>,
}

impl LogWriter {
    fn run(mut self, jobs: std::sync::mpsc::Receiver<WriteJob>) {
        // Ends when the last LogStore handle is dropped.
        while let Ok(job) = jobs.recv() {
            let (result, done) = match job {
                WriteJob::Append { frames, done } => (self.guarded(|w| w.append(&frames)), done),
                WriteJob::Rewrite { frames, done } => (self.guarded(|w| w.rewrite(&frames)), done),
                WriteJob::Vote { json, done } => {
                    (self.guarded(|w| write_atomically(&w.dir.join(VOTE_FILE), &json)), done)
                }
            };
            done(result);
        }
    }

    fn guarded(&mut self, write: impl FnOnce(&mut Self) -> std::io::Result<()>) -> std::io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(format!("an earlier write to the raft log failed: {why}")));
        }
        let result = write(self);
        if let Err(e) = &result {
            tracing::error!(dir = %self.dir.display(), error = %e, "raft log write failed: no more writes");
            self.broken = Some(e.to_string());
        }
        result
    }

    fn append(&mut self, frames: &[u8]) -> std::io::Result<()> {
        fail::fail_point!("raft_append", |_| Err(std::io::Error::other("failpoint raft_append")));
        let file = &self.file;
        power_loss::write(file, || (&*file).write_all(frames))?;
        fdatasync(file)
    }

    fn rewrite(&mut self, frames: &[u8]) -> std::io::Result<()> {
        let path = self.dir.join(LOG_FILE);
        write_atomically(&path, frames)?;
        self.file = OpenOptions::new().read(true).append(true).open(&path)?;
        Ok(())
    }
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

use strom_storage::durable::{fdatasync, fsync, sync_dir, write_atomically};
use strom_storage::power_loss;

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
            power_loss::truncate(&file, pos as u64, || file.set_len(pos as u64))?;
            fsync(&file)?;
        }
        let vote = match fs::read(dir.join(VOTE_FILE)) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(std::io::Error::other)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (writer, jobs) = std::sync::mpsc::channel();
        let log_writer = LogWriter { dir: dir.to_path_buf(), file, broken: None };
        std::thread::Builder::new().name("raft-log-writer".into()).spawn(move || log_writer.run(jobs))?;
        Ok(LogStore { inner: Arc::new(Mutex::new(Inner { writer, entries, last_purged, vote, purged_in_file })) })
    }
}

impl Inner {
    /// Queues a write; `done` runs on the writer thread once it is durable (or failed).
    fn queue(&self, job: WriteJob) {
        if let Err(std::sync::mpsc::SendError(job)) = self.writer.send(job) {
            let done = match job {
                WriteJob::Append { done, .. } | WriteJob::Rewrite { done, .. } | WriteJob::Vote { done, .. } => done,
            };
            done(Err(std::io::Error::other("the raft log writer has stopped")));
        }
    }

    /// Queues a write and waits until it is durable.
    async fn write(&self, make: impl FnOnce(Done) -> WriteJob) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue(make(Box::new(move |r| {
            let _ = tx.send(r);
        })));
        rx.await.unwrap_or_else(|_| Err(std::io::Error::other("the raft log writer has stopped")))
    }

    fn frames<'a>(ops: impl IntoIterator<Item = &'a LogOp>) -> Vec<u8> {
        let mut buf = Vec::new();
        for op in ops {
            buf.extend_from_slice(&frame(op));
        }
        buf
    }

    /// The log file's contents after purges: the purge marker and the live entries.
    fn live_frames(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Some(p) = self.last_purged {
            buf.extend_from_slice(&frame(&LogOp::Purge(p)));
        }
        for e in self.entries.values() {
            buf.extend_from_slice(&frame(&LogOp::Entry(e.clone())));
        }
        buf
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
        let json = serde_json::to_vec(vote).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        inner
            .write(|done| WriteJob::Vote { json, done })
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
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
        // Readable at once, durable when the writer calls back (the module's rule). The
        // frames are queued under the lock, so the file's order is the memory's.
        let mut inner = self.inner.lock().await;
        let ops: Vec<LogOp> = entries.into_iter().map(LogOp::Entry).collect();
        let frames = Inner::frames(&ops);
        for op in ops {
            if let LogOp::Entry(e) = op {
                inner.entries.insert(e.log_id.index, e);
            }
        }
        inner.queue(WriteJob::Append { frames, done: Box::new(move |r| callback.log_io_completed(r)) });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        let frames = Inner::frames(&[LogOp::Truncate { since: log_id.index }]);
        inner.write(|done| WriteJob::Append { frames, done }).await.map_err(io_err)?;
        inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        let frames = Inner::frames(&[LogOp::Purge(log_id)]);
        inner.write(|done| WriteJob::Append { frames, done }).await.map_err(io_err)?;
        let keep = inner.entries.split_off(&(log_id.index + 1));
        inner.purged_in_file += inner.entries.len() as u64;
        inner.entries = keep;
        inner.last_purged = Some(log_id);
        if inner.purged_in_file >= REWRITE_AFTER_PURGED {
            let frames = inner.live_frames();
            inner.write(|done| WriteJob::Rewrite { frames, done }).await.map_err(io_err)?;
            inner.purged_in_file = 0;
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

    #[tokio::test]
    async fn writes_queued_through_the_writer_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let n = REWRITE_AFTER_PURGED + 100;
        {
            let inner = store.inner.lock().await;
            let ops: Vec<LogOp> = (1..=n).map(entry).collect();
            let frames = Inner::frames(&ops);
            inner.write(|done| WriteJob::Append { frames, done }).await.unwrap();
        }
        // The entries were written without going through memory: reopen to load them.
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store).await.len() as u64, n);
        store.truncate(LogId::new(CommittedLeaderId::new(1, 1), n - 10)).await.unwrap();
        // Past REWRITE_AFTER_PURGED purged entries: the file is rewritten with the live ones.
        store.purge(LogId::new(CommittedLeaderId::new(1, 1), n - 20)).await.unwrap();
        let vote = Vote::new(3, 2);
        store.save_vote(&vote).await.unwrap();
        let size_after = fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store).await, ((n - 19)..(n - 10)).collect::<Vec<_>>());
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert!(size_after < 4096, "the log file was not rewritten after the purge: {size_after} bytes");
    }
}
