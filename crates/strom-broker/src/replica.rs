//! The replica manager: the partition replicas this broker holds, their logs, and their
//! leader/follower state as the metadata image says.
//!
//! Ownership: [`ReplicaManager`] owns every [`Partition`]; only the metadata follower (via
//! [`ReplicaManager::apply_image`]) creates, re-roles or deletes them. A [`Partition`] owns its
//! [`Log`] behind a mutex (appends and reads are short, synchronous file operations).
//!
//! **Replication rules (DESIGN.md §3), enforced here:**
//! - The high watermark of a leader is the minimum log end offset over the ISR, never above the
//!   leader's LEO, and never goes backwards while this broker leads; consumers never read past
//!   it. With an ISR of one (this broker) HW = LEO. A follower's HW is the leader's HW as its
//!   last fetch response said, capped at its own LEO.
//! - A follower's LEO is the offset it fetches from: everything before it is on the follower.
//! - A follower is *caught up* at a fetch when it asks for the leader's LEO, or for at least the
//!   LEO the leader had at the follower's previous fetch (Kafka's lastCaughtUpTime rule). One
//!   not caught up for `replica.lag.time.max.ms` is proposed out of the ISR; one outside the
//!   ISR that fetches at or past the HW is proposed back in. Proposals go to the controller
//!   (AlterPartition, checked against the partition epoch); only a committed change alters
//!   the ISR used here.
//! - Becoming leader clears what was known of followers (their LEOs belong to an older epoch)
//!   and records the new leader epoch at the LEO before anything is appended in it.
//! - A replica that leaves the ISR is forgotten too: it rejoins only on fetches made after
//!   it left (a fenced broker may come back with a shorter log than it last reported).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use strom_metadata::image::MetadataImage;
use strom_protocol::batch::BatchView;
use strom_storage::{AppendInfo, Log, LogConfig, LogError};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::producer_state::{ProducerBatch, ProducerStates, SequenceCheck};

/// DUPLICATE_SEQUENCE_NUMBER: a retried batch inside a request of several batches.
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

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

/// What a leader append did ([`ReplicaManager::append_as_leader`]).
#[derive(Debug, Clone)]
pub struct LeaderAppend {
    pub info: AppendInfo,
    pub log_start_offset: i64,
    /// The leader epoch an acks=all wait must see the commit in.
    pub leader_epoch: i32,
    /// A retry of a batch already in the log: nothing was written, `info` says where it is.
    pub duplicate: bool,
}

/// Whether a leader's acks=all append is committed ([`Partition::commit_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Committed,
    Pending,
    /// The leadership moved since the append: the records may be gone (NOT_LEADER_OR_FOLLOWER).
    LeadershipLost,
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
    /// What the leader knows of each follower, from its fetches (leader only).
    followers: Mutex<HashMap<i32, FollowerProgress>>,
    /// An ISR change for this partition is on its way to the controller.
    isr_change_in_flight: AtomicBool,
    /// Idempotent producers' recent batches (taken inside the log lock).
    producers: Mutex<ProducerStates>,
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, Copy)]
struct FollowerProgress {
    /// The follower's LEO (its last fetch offset); -1 until it fetches in this epoch.
    log_end_offset: i64,
    /// When the follower was last caught up (see the module's replication rules).
    last_caught_up: Instant,
    /// The leader's LEO and the time at the follower's previous fetch.
    leader_leo_at_last_fetch: i64,
    last_fetch: Instant,
}

impl FollowerProgress {
    fn new(now: Instant) -> Self {
        FollowerProgress { log_end_offset: -1, last_caught_up: now, leader_leo_at_last_fetch: -1, last_fetch: now }
    }
}

/// What a follower fetch changed on the leader.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetchOutcome {
    pub high_watermark_moved: bool,
    /// The follower is outside the ISR and has caught up to the HW: propose it back in.
    pub expand_isr: bool,
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
    #[error("producer sequence check failed (Kafka error {0})")]
    ProducerSequence(i16),
    #[error("the ISR of {partition} has {isr} replicas, fewer than min.insync.replicas {min_isr}")]
    NotEnoughReplicas { partition: String, isr: usize, min_isr: usize },
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
            ReplicaError::ProducerSequence(code) => *code,
            ReplicaError::NotEnoughReplicas { .. } => crate::producer_state::NOT_ENOUGH_REPLICAS,
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

    /// Whether records this broker appended as leader in `leader_epoch`, ending before `end`,
    /// are committed. **Rule:** only the leader's own high watermark in the epoch it appended
    /// in commits them. Once the leadership moved (even back to this broker, in a later
    /// epoch) the answer is [`Commit::LeadershipLost`]: as a follower this broker's HW follows
    /// the new leader's log, where those offsets may hold other records after truncation.
    /// The HW is read before the role, and epochs only grow, so a HW read while still leader
    /// in `leader_epoch` is never mistaken for a follower's.
    pub fn commit_state(&self, end: i64, leader_epoch: i32) -> Commit {
        let hw = self.high_watermark();
        // Read under the lock, not cloned: this runs on every acks=all wakeup.
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        if role.leader != self.node_id || role.leader_epoch != leader_epoch {
            Commit::LeadershipLost
        } else if hw >= end {
            Commit::Committed
        } else {
            Commit::Pending
        }
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

    /// A follower fetched from `offset`: everything before it is on the follower.
    pub fn record_follower_fetch(&self, replica: i32, offset: i64) -> FollowerFetchOutcome {
        let role = self.role();
        if role.leader != self.node_id || !role.replicas.contains(&replica) {
            return FollowerFetchOutcome::default();
        }
        let leo = self.log_end_offset();
        let now = Instant::now();
        {
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            let f = followers.entry(replica).or_insert_with(|| FollowerProgress::new(now));
            if offset >= leo {
                f.last_caught_up = now;
            } else if f.leader_leo_at_last_fetch >= 0 && offset >= f.leader_leo_at_last_fetch {
                f.last_caught_up = f.last_caught_up.max(f.last_fetch);
            }
            f.log_end_offset = offset;
            f.leader_leo_at_last_fetch = leo;
            f.last_fetch = now;
        }
        let high_watermark_moved = self.update_high_watermark();
        let epoch_start = self.with_log(|l| l.epochs().last().map_or(0, |(_, start)| *start));
        let expand_isr = !role.isr.contains(&replica) && offset >= self.high_watermark() && offset >= epoch_start;
        FollowerFetchOutcome { high_watermark_moved, expand_isr }
    }

    /// ISR members (other than this leader) not caught up within `lag_max`.
    pub fn lagging_isr_members(&self, lag_max: Duration, now: Instant) -> Vec<i32> {
        let role = self.role();
        if role.leader != self.node_id {
            return vec![];
        }
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        role.isr
            .iter()
            .copied()
            .filter(|r| *r != self.node_id)
            .filter(|r| followers.get(r).is_some_and(|f| now.saturating_duration_since(f.last_caught_up) > lag_max))
            .collect()
    }

    /// The ISR this leader wants: the current one without members lagging more than
    /// `lag_max`, plus caught-up followers that `eligible` allows (unfenced brokers). `None`
    /// when it is the current ISR (or this broker does not lead).
    pub fn desired_isr(&self, lag_max: Duration, now: Instant, eligible: impl Fn(i32) -> bool) -> Option<Vec<i32>> {
        let role = self.role();
        if role.leader != self.node_id {
            return None;
        }
        let hw = self.high_watermark();
        let epoch_start = self.with_log(|l| l.epochs().last().map_or(0, |(_, start)| *start));
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        let lagging =
            |r: &i32| followers.get(r).is_some_and(|f| now.saturating_duration_since(f.last_caught_up) > lag_max);
        let caught_up = |r: &i32| {
            followers.get(r).is_some_and(|f| {
                f.log_end_offset >= hw
                    && f.log_end_offset >= epoch_start
                    && now.saturating_duration_since(f.last_caught_up) <= lag_max
            })
        };
        let isr: Vec<i32> = role
            .replicas
            .iter()
            .copied()
            .filter(|r| {
                *r == self.node_id
                    || (role.isr.contains(r) && !lagging(r))
                    || (!role.isr.contains(r) && caught_up(r) && eligible(*r))
            })
            .collect();
        debug_assert!(isr.contains(&self.node_id), "a leader is always in its own ISR");
        let mut current = role.isr.clone();
        current.sort_unstable();
        let mut wanted = isr.clone();
        wanted.sort_unstable();
        (current != wanted).then_some(isr)
    }

    /// Marks an ISR proposal as sent; false if one already is.
    pub fn begin_isr_change(&self) -> bool {
        !self.isr_change_in_flight.swap(true, Ordering::AcqRel)
    }

    pub fn end_isr_change(&self) {
        self.isr_change_in_flight.store(false, Ordering::Release);
    }

    /// The controller committed an ISR change this leader asked for: use it now rather than
    /// when the metadata image catches up (Kafka does the same with the AlterPartition reply).
    pub fn apply_committed_isr(&self, leader_epoch: i32, partition_epoch: i32, isr: Vec<i32>) {
        {
            let mut role = self.role.write().unwrap_or_else(|p| p.into_inner());
            if role.leader_epoch != leader_epoch || partition_epoch <= role.partition_epoch {
                return;
            }
            role.partition_epoch = partition_epoch;
            role.isr = isr;
        }
        self.update_high_watermark();
    }

    /// A follower's HW: the leader's, capped at our LEO.
    pub fn set_follower_high_watermark(&self, leader_hw: i64) {
        let leo = self.log_end_offset();
        self.high_watermark.store(leader_hw.min(leo).max(0), Ordering::Release);
    }

    /// Recomputes the high watermark: the minimum LEO over the ISR (ours for ourselves).
    /// Returns true when it moved.
    pub fn update_high_watermark(&self) -> bool {
        let role = self.role();
        if role.leader != self.node_id {
            return false;
        }
        let leo = self.log_end_offset();
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        let hw = role
            .isr
            .iter()
            .map(|r| if *r == self.node_id { leo } else { followers.get(r).map_or(0, |f| f.log_end_offset.max(0)) })
            .min()
            .unwrap_or(leo)
            .min(leo);
        let old = self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        debug_assert!(self.high_watermark() <= leo, "HW {} above LEO {leo}", self.high_watermark());
        hw > old
    }

    /// Rebuilds the idempotent producer state from the whole log (on open, after truncation).
    pub fn rebuild_producer_state(&self) {
        self.with_log(|l| self.rebuild_producer_state_from(l));
    }

    /// [`Self::rebuild_producer_state`] for a caller that already holds the log lock (a
    /// truncation rebuilds in the same critical section, so no append sees a state that still
    /// lists truncated batches).
    pub fn rebuild_producer_state_from(&self, l: &mut Log) {
        {
            let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
            producers.clear();
            let mut offset = l.log_start_offset();
            while offset < l.log_end_offset() {
                match l.read(offset, 1 << 20, None) {
                    Ok(r) if r.next_offset > offset => {
                        producers.record_stored(&r.records);
                        offset = r.next_offset;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(node = self.node_id, partition = %self.tp, error = %e, "cannot rebuild producer state");
                        break;
                    }
                }
            }
            if producers.producers() > 0 {
                tracing::debug!(node = self.node_id, partition = %self.tp, producers = producers.producers(), "producer state rebuilt");
            }
        }
    }

    /// The follower path: appends fetched batches (offsets from the leader) and records their
    /// producers. `still_valid` is checked under the log lock first.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        now_ms: i64,
        still_valid: impl FnOnce() -> bool,
    ) -> Result<Option<AppendInfo>, LogError> {
        self.with_log(|l| {
            if !still_valid() {
                return Ok(None);
            }
            let info = l.append_as_follower(records, now_ms)?;
            self.producers.lock().unwrap_or_else(|p| p.into_inner()).record_stored(records);
            Ok(Some(info))
        })
    }

    /// This broker became leader (or leads in a new epoch).
    fn become_leader(&self, leader_epoch: i32) {
        let now = Instant::now();
        let replicas = self.role().replicas;
        {
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            followers.clear();
            for r in replicas.into_iter().filter(|r| *r != self.node_id) {
                followers.insert(r, FollowerProgress::new(now));
            }
        }
        let leo = self.log_end_offset();
        // A follower's HW may sit above a log it has since truncated.
        let _ = self.high_watermark.fetch_min(leo, Ordering::AcqRel);
        if let Err(e) = self.with_log(|l| l.assign_leader_epoch(leader_epoch)) {
            tracing::error!(node = self.node_id, partition = %self.tp, error = %e, "cannot record the leader epoch");
        }
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
    /// Partitions whose ISR may need to change (a follower caught up), for the ISR manager.
    isr_checks: Mutex<Vec<Arc<Partition>>>,
    pub isr_check_wanted: Notify,
}

impl ReplicaManager {
    pub fn new(node_id: i32, log_dir: PathBuf, defaults: LogConfig) -> Self {
        ReplicaManager {
            node_id,
            log_dir,
            defaults,
            partitions: RwLock::new(BTreeMap::new()),
            data_arrived: Notify::new(),
            isr_checks: Mutex::new(Vec::new()),
            isr_check_wanted: Notify::new(),
        }
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// Asks the ISR manager to look at `p` soon.
    pub fn request_isr_check(&self, p: Arc<Partition>) {
        self.isr_checks.lock().unwrap_or_else(|p| p.into_inner()).push(p);
        self.isr_check_wanted.notify_one();
    }

    /// The partitions asked about since the last call.
    pub fn take_isr_checks(&self) -> Vec<Arc<Partition>> {
        std::mem::take(&mut *self.isr_checks.lock().unwrap_or_else(|p| p.into_inner()))
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
                    // The leader may already hold a newer ISR from an AlterPartition reply.
                    let stale = role.leader_epoch == old.leader_epoch && role.partition_epoch < old.partition_epoch;
                    if old != role && !stale {
                        let new_leadership = old.leader != role.leader || old.leader_epoch != role.leader_epoch;
                        if new_leadership {
                            tracing::info!(
                                node = self.node_id,
                                partition = %tp,
                                leader = role.leader,
                                leader_epoch = role.leader_epoch,
                                isr = ?role.isr,
                                "partition leadership changed"
                            );
                        }
                        let leads = role.leader == self.node_id;
                        let epoch = role.leader_epoch;
                        let left_isr: Vec<i32> = old.isr.iter().copied().filter(|r| !role.isr.contains(r)).collect();
                        // Under the log lock: a leader append or a follower truncation
                        // sees the role before or after this change, never during its work.
                        existing.with_log(|_| *existing.role.write().unwrap_or_else(|p| p.into_inner()) = role);
                        if leads && new_leadership {
                            existing.become_leader(epoch);
                        } else if leads && !left_isr.is_empty() {
                            // A replica that left the ISR (fenced: maybe restarted with a
                            // shorter log) must prove itself by fetching again before it can
                            // rejoin: what it fetched before is forgotten.
                            let mut followers = existing.followers.lock().unwrap_or_else(|p| p.into_inner());
                            for r in &left_isr {
                                followers.remove(r);
                            }
                        }
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
                                followers: Mutex::new(HashMap::new()),
                                isr_change_in_flight: AtomicBool::new(false),
                                producers: Mutex::new(ProducerStates::default()),
                            });
                            p.rebuild_producer_state();
                            if role.isr == [self.node_id] {
                                p.high_watermark.store(leo, Ordering::Release);
                            }
                            if role.leader == self.node_id {
                                p.become_leader(role.leader_epoch);
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

    /// Appends a producer's batches as leader. `min_isr` (acks=all writes) refuses a new
    /// write while the ISR is smaller, with NOT_ENOUGH_REPLICAS, as Kafka does.
    ///
    /// **Rule:** a retry of a batch already in the log is not a new write: it is answered
    /// with where the batch is (`duplicate`), whatever the ISR, and the caller waits for it
    /// like any acks=all append. Refusing it would tell the client "not persisted" about a
    /// batch that is; librdkafka, on an OUT_OF_ORDER_SEQUENCE_NUMBER for the batch behind
    /// it, then bumps its producer epoch and writes it again under the new epoch (a
    /// duplicate no sequence check can catch; seen in the chaos test when the ISR grew
    /// between two pipelined requests).
    pub fn append_as_leader(
        &self,
        p: &Partition,
        records: &[u8],
        now_ms: i64,
        min_isr: Option<usize>,
    ) -> Result<LeaderAppend, ReplicaError> {
        if !p.is_leader() {
            return Err(ReplicaError::NotLeader(p.tp.to_string()));
        }
        let appended = p.with_log(|l| {
            // **Rule:** the role is read again under the log lock. Role changes are made under
            // that lock too, so a broker that became a follower (and truncated, and rebuilt
            // its producer state) in between cannot append as a leader after the truncation.
            let role = p.role();
            if role.leader != self.node_id {
                return Err(ReplicaError::NotLeader(p.tp.to_string()));
            }
            let batches: Vec<(Option<ProducerBatch>, i64)> = {
                let mut out = Vec::new();
                let mut rest = records;
                while let Ok(v) = BatchView::parse(rest) {
                    out.push((ProducerBatch::of(&v), v.last_offset_delta() as i64 + 1));
                    rest = &rest[v.size()..];
                }
                out
            };
            let mut producers = p.producers.lock().unwrap_or_else(|p| p.into_inner());
            for (b, _) in &batches {
                let Some(b) = b else { continue };
                match producers.check(b) {
                    SequenceCheck::Append => {}
                    // A retry of a batch already written: answer with where it was written.
                    SequenceCheck::Duplicate { first_offset, last_offset } if batches.len() == 1 => {
                        let info = AppendInfo { first_offset, last_offset, max_timestamp: -1, records: 0, bytes: 0 };
                        return Ok(LeaderAppend {
                            info,
                            log_start_offset: l.log_start_offset(),
                            leader_epoch: role.leader_epoch,
                            duplicate: true,
                        });
                    }
                    SequenceCheck::Duplicate { .. } => {
                        return Err(ReplicaError::ProducerSequence(DUPLICATE_SEQUENCE_NUMBER))
                    }
                    SequenceCheck::Refuse(code) => {
                        tracing::warn!(
                            node = self.node_id,
                            partition = %p.tp,
                            producer_id = b.producer_id,
                            epoch = b.epoch,
                            first_seq = b.first_seq,
                            last_seq = b.last_seq,
                            known = ?producers.last_sequence(b.producer_id),
                            leader_epoch = role.leader_epoch,
                            error_code = code,
                            "producer batch refused"
                        );
                        return Err(ReplicaError::ProducerSequence(code));
                    }
                }
            }
            if let Some(min_isr) = min_isr.filter(|m| role.isr.len() < *m) {
                for b in batches.iter().filter_map(|(b, _)| b.as_ref()) {
                    producers.refused_for_isr(b);
                }
                return Err(ReplicaError::NotEnoughReplicas {
                    partition: p.tp.to_string(),
                    isr: role.isr.len(),
                    min_isr,
                });
            }
            let info = l.append_as_leader(records, role.leader_epoch, now_ms)?;
            let mut next = info.first_offset;
            for (b, count) in &batches {
                if let Some(b) = b {
                    producers.record(b, next, next + count - 1);
                }
                next += count;
            }
            Ok::<_, ReplicaError>(LeaderAppend {
                info,
                log_start_offset: l.log_start_offset(),
                leader_epoch: role.leader_epoch,
                duplicate: false,
            })
        })?;
        if !appended.duplicate {
            p.update_high_watermark();
            self.data_arrived.notify_waiters();
        }
        Ok(appended)
    }

    /// Flushes every log that is due (`flush.ms`), makes rolled segments durable and applies
    /// retention; run on a timer, off the async runtime (it blocks on fdatasync). A rolled
    /// segment is synced outside the log lock, so appends to the partition go on meanwhile.
    pub fn housekeeping(&self, now_ms: i64, retention_due: bool) {
        for p in self.all() {
            if let Some(work) = p.with_log(|l| l.sealed_to_sync()) {
                let synced = work.paths.iter().try_for_each(|path| strom_storage::sync_file(path));
                match synced.and_then(|()| p.with_log(|l| l.sealed_synced(work))) {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(node = self.node_id, partition = %p.tp, error = %e, "syncing rolled segments failed")
                    }
                }
            }
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
