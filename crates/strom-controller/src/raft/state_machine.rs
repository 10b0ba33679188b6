//! The controller's state machine: committed metadata record batches applied to a
//! [`MetadataImage`], plus the recent batches brokers fetch, plus snapshots.
//!
//! Ownership: openraft owns the [`StateMachineStore`] and is the only writer; the controller
//! services read through [`MetadataState`] (a shared handle) and wait on its watch channel for
//! newly applied offsets (the broker metadata long-poll).
//!
//! Snapshots are stored in sled (tree `snapshot`, keys `meta` and `data`). sled's own flush
//! only calls `sync_file_range`, which leaves file metadata and the device cache unsynced, so
//! after a flush we `fsync` every file in sled's directory: a snapshot openraft may purge the
//! log behind is durable before `build_snapshot` / `install_snapshot` return.

use std::collections::VecDeque;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Applied, Entry, NodeId, TypeConfig};
use strom_metadata::image::MetadataImage;

/// Recent batches kept for brokers; one further behind gets the whole image instead.
const RECENT_BATCHES_MAX: usize = 10_000;

type Meta = SnapshotMeta<NodeId, BasicNode>;

struct State {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    image: Arc<MetadataImage>,
    /// Encoded batches with offsets above `recent_base`, in order.
    recent: VecDeque<(i64, Bytes)>,
    /// Every batch above this offset is in `recent`.
    recent_base: i64,
    snapshot_index: u64,
}

/// What a broker asked for in `FetchMetadata`.
pub enum MetadataDelta {
    /// Batches after the broker's offset, in order.
    Batches(Vec<(i64, Bytes)>),
    /// The broker is too far behind: the whole image.
    Image(Arc<MetadataImage>),
}

/// Read access to the applied metadata, shared with the controller services.
pub struct MetadataState {
    state: RwLock<State>,
    applied: watch::Sender<i64>,
    db: sled::Db,
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    image: MetadataImage,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

impl MetadataState {
    /// The image as last applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.read().image.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that changes whenever a batch is applied (value: the image offset).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// What a broker at `after_offset` needs, at most `max_batches` batches.
    pub fn delta_after(&self, after_offset: i64, max_batches: usize) -> MetadataDelta {
        let s = self.read();
        if after_offset < s.recent_base {
            return MetadataDelta::Image(s.image.clone());
        }
        let start = s.recent.partition_point(|(o, _)| *o <= after_offset);
        MetadataDelta::Batches(s.recent.iter().skip(start).take(max_batches).cloned().collect())
    }

    /// Durably stores a snapshot in sled: insert, flush, then fsync sled's files, on a
    /// blocking thread (never on an async worker: see log_store.rs).
    async fn store_snapshot(&self, snap: &StoredSnapshot) -> Result<Vec<u8>, StorageError<NodeId>> {
        let data = serde_json::to_vec(snap).map_err(sm_err)?;
        let (db, dir, stored) = (self.db.clone(), self.dir.clone(), data.clone());
        tokio::task::spawn_blocking(move || -> Result<(), StorageError<NodeId>> {
            db.insert("snapshot", stored).map_err(sm_err)?;
            db.flush().map_err(sm_err)?;
            fsync_tree(&dir).map_err(sm_err)
        })
        .await
        .map_err(sm_err)??;
        Ok(data)
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError<NodeId>> {
        match self.db.get("snapshot").map_err(sm_err)? {
            Some(v) => {
                let mut s: StoredSnapshot = serde_json::from_slice(&v).map_err(sm_err)?;
                s.image.reindex();
                Ok(Some(s))
            }
            None => Ok(None),
        }
    }

    fn install(&self, snap: StoredSnapshot) {
        let mut s = self.write();
        s.last_applied = snap.meta.last_log_id;
        s.membership = snap.meta.last_membership.clone();
        s.recent.clear();
        s.recent_base = snap.image.offset;
        s.image = Arc::new(snap.image);
        let offset = s.image.offset;
        drop(s);
        self.applied.send_replace(offset);
    }
}

fn fsync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            strom_storage::durable::fsync(&std::fs::File::open(entry.path())?)?;
        } else if entry.file_type()?.is_dir() {
            fsync_tree(&entry.path())?;
        }
    }
    strom_storage::durable::sync_dir(dir)
}

/// The state machine openraft drives.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<MetadataState>,
}

impl StateMachineStore {
    /// Opens the sled database in `dir` and restores the last snapshot, if any.
    pub fn open(dir: &Path) -> Result<(StateMachineStore, Arc<MetadataState>), StorageError<NodeId>> {
        let db = sled::open(dir).map_err(sm_err)?;
        let (applied, _) = watch::channel(-1);
        let shared = Arc::new(MetadataState {
            state: RwLock::new(State {
                last_applied: None,
                membership: StoredMembership::default(),
                image: Arc::new(MetadataImage::new()),
                recent: VecDeque::new(),
                recent_base: -1,
                snapshot_index: 0,
            }),
            applied,
            db,
            dir: dir.to_path_buf(),
        });
        if let Some(snap) = shared.load_snapshot()? {
            tracing::info!(offset = snap.image.offset, "metadata: restored the state machine from its snapshot");
            shared.install(snap);
        }
        Ok((StateMachineStore { shared: shared.clone() }, shared))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (snap, index) = {
            let mut s = self.shared.write();
            s.snapshot_index += 1;
            let last = s.last_applied;
            let meta = Meta {
                last_log_id: last,
                last_membership: s.membership.clone(),
                snapshot_id: format!("{}-{}", last.map_or(0, |l| l.index), s.snapshot_index),
            };
            (StoredSnapshot { meta, image: (*s.image).clone() }, s.snapshot_index)
        };
        let data = self.shared.store_snapshot(&snap).await?;
        tracing::info!(offset = snap.image.offset, bytes = data.len(), index, "metadata: snapshot built");
        Ok(Snapshot { meta: snap.meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let s = self.shared.read();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut s = self.shared.write();
        for entry in entries {
            let offset = entry.log_id.index as i64;
            s.last_applied = Some(entry.log_id);
            let mut refused = Vec::new();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    let errors = Arc::make_mut(&mut s.image).apply_batch(offset, &batch.records);
                    for e in errors {
                        tracing::error!(offset, error = %e, "metadata: the image refused a committed record");
                        refused.push(e.to_string());
                    }
                    s.recent.push_back((offset, Bytes::from(batch.encode())));
                    while s.recent.len() > RECENT_BATCHES_MAX {
                        if let Some((o, _)) = s.recent.pop_front() {
                            s.recent_base = o;
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            out.push(Applied { offset, refused });
        }
        let image_offset = s.image.offset;
        drop(s);
        self.shared.applied.send_replace(image_offset);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut snap: StoredSnapshot = serde_json::from_slice(snapshot.get_ref()).map_err(sm_err)?;
        snap.image.reindex();
        snap.meta = meta.clone();
        self.shared.store_snapshot(&snap).await?;
        tracing::info!(offset = snap.image.offset, "metadata: installed a snapshot from the leader");
        self.shared.install(snap);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let Some(v) = self.shared.db.get("snapshot").map_err(sm_err)? else { return Ok(None) };
        let snap: StoredSnapshot = serde_json::from_slice(&v).map_err(sm_err)?;
        Ok(Some(Snapshot { meta: snap.meta, snapshot: Box::new(Cursor::new(v.to_vec())) }))
    }
}
