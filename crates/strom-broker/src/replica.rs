//! The replica manager: the partition replicas this broker holds, their logs, and their
//! leader/follower state as the metadata image says.
//!
//! Ownership: [`ReplicaManager`] owns every [`Partition`]; only the metadata follower (via
//! [`ReplicaManager::apply_image`]) creates, re-roles or deletes them. A [`Partition`] owns its
//! [`Log`] behind a mutex (appends and reads are short, synchronous file operations).
//!
//! **Architecture invariant (DESIGN.md §3):** the high watermark is the minimum log end offset
//! over the ISR, never above the leader's LEO, and never goes backwards while this broker
//! leads; consumers never read past it. With an ISR of one (this broker) HW = LEO.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use strom_controller::image::MetadataImage;
use strom_storage::{AppendInfo, Log, LogConfig, LogError};
use tokio::sync::Notify;
use uuid::Uuid;

/// A partition's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Leadership as the metadata image last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRole {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
    pub replicas: Vec<i32>,
}

/// One partition replica on this broker.
pub struct Partition {
    pub tp: TopicPartition,
    pub topic_id: Uuid,
    node_id: i32,
    log: Mutex<Log>,
    role: RwLock<ReplicaRole>,
    high_watermark: AtomicI64,
    /// Follower log end offsets reported by their fetches (leader only).
    follower_leo: Mutex<HashMap<i32, i64>>,
}

/// Why a partition operation failed, each with the Kafka code the client gets.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("this broker does not host {0}")]
    UnknownPartition(String),
    #[error("this broker is not the leader of {0}")]
    NotLeader(String),
    #[error("leader epoch {got} is older than the current {current}")]
    FencedLeaderEpoch { got: i32, current: i32 },
    #[error("leader epoch {got} is newer than this broker knows ({current})")]
    UnknownLeaderEpoch { got: i32, current: i32 },
    #[error(transparent)]
    Log(#[from] LogError),
}

impl ReplicaError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            ReplicaError::UnknownPartition(_) => 3,
            ReplicaError::NotLeader(_) => 6,
            ReplicaError::FencedLeaderEpoch { .. } => 74,
            ReplicaError::UnknownLeaderEpoch { .. } => 75,
            ReplicaError::Log(e) => e.kafka_code(),
        }
    }
}

impl Partition {
    pub fn role(&self) -> ReplicaRole {
        self.role.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_leader(&self) -> bool {
        self.role().leader == self.node_id
    }

    /// Runs `f` on the log.
    pub fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut log)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.with_log(|l| l.log_end_offset())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.with_log(|l| l.log_start_offset())
    }

    /// Checks a client's `current_leader_epoch` (-1: not given) against ours.
    pub fn check_epoch(&self, client_epoch: i32) -> Result<(), ReplicaError> {
        let current = self.role().leader_epoch;
        if client_epoch == -1 || client_epoch == current {
            Ok(())
        } else if client_epoch < current {
            Err(ReplicaError::FencedLeaderEpoch { got: client_epoch, current })
        } else {
            Err(ReplicaError::UnknownLeaderEpoch { got: client_epoch, current })
        }
    }

    /// A follower fetched from `offset`: everything before it is on the follower. Returns
    /// true when the high watermark moved.
    pub fn record_follower_fetch(&self, replica: i32, offset: i64) -> bool {
        self.follower_leo.lock().unwrap_or_else(|p| p.into_inner()).insert(replica, offset);
        self.update_high_watermark()
    }

    /// Recomputes the high watermark: the minimum LEO over the ISR (ours for ourselves).
    /// Returns true when it moved.
    pub fn update_high_watermark(&self) -> bool {
        let role = self.role();
        if role.leader != self.node_id {
            return false;
        }
        let leo = self.log_end_offset();
        let followers = self.follower_leo.lock().unwrap_or_else(|p| p.into_inner());
        let hw = role
            .isr
            .iter()
            .map(|r| if *r == self.node_id { leo } else { followers.get(r).copied().unwrap_or(0) })
            .min()
            .unwrap_or(leo)
            .min(leo);
        let old = self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        debug_assert!(self.high_watermark() <= leo, "HW {} above LEO {leo}", self.high_watermark());
        hw > old
    }
}

/// Every partition replica this broker holds.
pub struct ReplicaManager {
    node_id: i32,
    log_dir: PathBuf,
    defaults: LogConfig,
    partitions: RwLock<BTreeMap<TopicPartition, Arc<Partition>>>,
    /// Woken on every append and HW move (fetch long-polls and acks=all waiters).
    pub data_arrived: Notify,
}

impl ReplicaManager {
    pub fn new(node_id: i32, log_dir: PathBuf, defaults: LogConfig) -> Self {
        ReplicaManager {
            node_id,
            log_dir,
            defaults,
            partitions: RwLock::new(BTreeMap::new()),
            data_arrived: Notify::new(),
        }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let key = TopicPartition { topic: topic.to_string(), partition };
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(&key).cloned()
    }

    /// All partitions, in order.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn log_dir(&self) -> &std::path::Path {
        &self.log_dir
    }

    /// The log config of `topic`: broker defaults with the topic's overrides.
    pub fn log_config(&self, image: &MetadataImage, topic: &str) -> LogConfig {
        let mut c = self.defaults.clone();
        let Some(over) = image.topic_configs.get(topic) else { return c };
        let num = |k: &str| over.get(k).and_then(|v| v.parse::<i64>().ok());
        let opt = |v: i64| (v >= 0).then_some(v as u64);
        if let Some(v) = num("segment.bytes") {
            c.segment_bytes = v.max(14) as u64;
        }
        if let Some(v) = num("segment.ms") {
            c.segment_ms = opt(v);
        }
        if let Some(v) = num("retention.ms") {
            c.retention_ms = opt(v);
        }
        if let Some(v) = num("retention.bytes") {
            c.retention_bytes = opt(v);
        }
        if let Some(v) = num("index.interval.bytes") {
            c.index_interval_bytes = v.max(1) as u64;
        }
        if let Some(v) = num("flush.messages") {
            c.flush_interval_messages = v.max(1) as u64;
        }
        if let Some(v) = num("flush.ms") {
            c.flush_interval_ms = opt(v);
        }
        if let Some(v) = num("max.message.bytes") {
            c.max_batch_bytes = v.max(0) as usize;
        }
        c
    }

    /// Brings the replicas in line with `image`: opens logs for partitions assigned here,
    /// updates roles and configs, and deletes partitions whose topic is gone.
    pub fn apply_image(&self, image: &MetadataImage) {
        let mut wanted = BTreeMap::new();
        for t in image.topics.values() {
            for (p, part) in &t.partitions {
                if part.replicas.contains(&self.node_id) {
                    wanted.insert(TopicPartition { topic: t.name.clone(), partition: *p }, (t.id, part));
                }
            }
        }
        let mut parts = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        // Gone: the topic was deleted (or the replica moved away).
        let gone: Vec<TopicPartition> = parts.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for tp in gone {
            if let Some(p) = parts.remove(&tp) {
                let dir = p.with_log(|l| l.dir().to_path_buf());
                drop(p);
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => tracing::info!(node = self.node_id, partition = %tp, "partition deleted"),
                    Err(e) => {
                        tracing::warn!(node = self.node_id, partition = %tp, error = %e, "cannot delete partition")
                    }
                }
            }
        }
        for (tp, (topic_id, part)) in wanted {
            let role = ReplicaRole {
                leader: part.leader,
                leader_epoch: part.leader_epoch,
                partition_epoch: part.partition_epoch,
                isr: part.isr.clone(),
                replicas: part.replicas.clone(),
            };
            let config = self.log_config(image, &tp.topic);
            match parts.get(&tp) {
                Some(existing) if existing.topic_id == topic_id => {
                    let old = existing.role();
                    if old != role {
                        if old.leader != role.leader || old.leader_epoch != role.leader_epoch {
                            tracing::info!(
                                node = self.node_id,
                                partition = %tp,
                                leader = role.leader,
                                leader_epoch = role.leader_epoch,
                                isr = ?role.isr,
                                "partition leadership changed"
                            );
                        }
                        *existing.role.write().unwrap_or_else(|p| p.into_inner()) = role;
                        existing.update_high_watermark();
                    }
                    existing.with_log(|l| {
                        if *l.config() != config {
                            l.set_config(config)
                        }
                    });
                }
                _ => {
                    let dir = self.log_dir.join(tp.to_string());
                    match Log::open(&dir, config) {
                        Ok((log, report)) => {
                            if report.truncated_bytes > 0 {
                                tracing::warn!(node = self.node_id, partition = %tp, ?report, "log recovered with a cut tail");
                            }
                            let leo = log.log_end_offset();
                            let p = Arc::new(Partition {
                                tp: tp.clone(),
                                topic_id,
                                node_id: self.node_id,
                                log: Mutex::new(log),
                                role: RwLock::new(role.clone()),
                                high_watermark: AtomicI64::new(0),
                                follower_leo: Mutex::new(HashMap::new()),
                            });
                            if role.isr == [self.node_id] {
                                p.high_watermark.store(leo, Ordering::Release);
                            }
                            p.update_high_watermark();
                            tracing::info!(
                                node = self.node_id,
                                partition = %tp,
                                leader = role.leader,
                                leader_epoch = role.leader_epoch,
                                log_end_offset = leo,
                                "partition replica opened"
                            );
                            parts.insert(tp, p);
                        }
                        Err(e) => {
                            tracing::error!(node = self.node_id, partition = %tp, error = %e, "cannot open partition log; it stays offline")
                        }
                    }
                }
            }
        }
        drop(parts);
        self.data_arrived.notify_waiters();
    }

    /// Appends a producer's batches as leader; returns what was written and the log start
    /// offset.
    pub fn append_as_leader(
        &self,
        p: &Partition,
        records: &[u8],
        now_ms: i64,
    ) -> Result<(AppendInfo, i64), ReplicaError> {
        let role = p.role();
        if role.leader != self.node_id {
            return Err(ReplicaError::NotLeader(p.tp.to_string()));
        }
        let (info, start) = p.with_log(|l| {
            let info = l.append_as_leader(records, role.leader_epoch, now_ms)?;
            Ok::<_, LogError>((info, l.log_start_offset()))
        })?;
        p.update_high_watermark();
        self.data_arrived.notify_waiters();
        Ok((info, start))
    }

    /// Flushes every log that is due (`flush.ms`) and applies retention; run on a timer.
    pub fn housekeeping(&self, now_ms: i64, retention_due: bool) {
        for p in self.all() {
            p.with_log(|l| {
                if let Err(e) = l.flush_if_due() {
                    tracing::error!(node = self.node_id, partition = %p.tp, error = %e, "flush failed");
                }
                if retention_due {
                    match l.apply_retention(now_ms) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(node = self.node_id, partition = %p.tp, segments = n, "retention deleted segments"),
                        Err(e) => tracing::error!(node = self.node_id, partition = %p.tp, error = %e, "retention failed"),
                    }
                }
            });
        }
    }

    /// Flushes and closes every log (clean shutdown).
    pub fn close_all(&self) {
        let parts = std::mem::take(&mut *self.partitions.write().unwrap_or_else(|p| p.into_inner()));
        for (tp, p) in parts {
            match Arc::try_unwrap(p) {
                Ok(p) => {
                    let log = p.log.into_inner().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = log.close() {
                        tracing::warn!(node = self.node_id, partition = %tp, error = %e, "close failed");
                    }
                }
                Err(p) => {
                    if let Err(e) = p.with_log(|l| l.flush()) {
                        tracing::warn!(node = self.node_id, partition = %tp, error = %e, "flush failed");
                    }
                }
            }
        }
    }
}
