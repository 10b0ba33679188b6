//! [`Partition`]: one partition replica on this broker: its log, its role (leader or
//! follower, as the metadata image says), its high watermark, and, when it leads, what it
//! knows of its followers. The replication rules in the module above are enforced here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use strom_protocol::batch::{BatchView, TxnMarker};
use strom_storage::{AppendInfo, Log, LogError, ReadPlan, ReadResult};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{ReplicaError, TopicPartition};
use crate::producer_state::{MarkerBatch, ProducerBatch, ProducerStates, SequenceCheck};

/// DUPLICATE_SEQUENCE_NUMBER: a retried batch inside a request of several batches.
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

/// What a leader append did ([`Partition::append_as_leader`]).
#[derive(Debug, Clone)]
pub struct LeaderAppend {
    pub info: AppendInfo,
    pub log_start_offset: i64,
    /// The leader epoch an acks=all wait must see the commit in.
    pub leader_epoch: i32,
    /// A retry of a batch already in the log: nothing was written, `info` says where it is.
    pub duplicate: bool,
}

/// Whether a leader's append is committed ([`Partition::commit_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Committed,
    Pending,
    /// The leadership moved since the append: the records may be gone (NOT_LEADER_OR_FOLLOWER).
    LeadershipLost,
}

/// How a wait for a commit ended ([`Partition::wait_committed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitWait {
    Committed,
    /// Committed, but by an ISR smaller than `min.insync.replicas`.
    CommittedBelowMinIsr,
    /// The leadership moved since the append: the records may be gone.
    LeadershipLost,
    TimedOut,
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
    /// What the leader knows of its followers, from their fetches, and the ISR change it has
    /// on its way to the controller (leader only).
    followers: Mutex<Followers>,
    /// An ISR change for this partition is on its way to the controller.
    isr_change_in_flight: AtomicBool,
    /// Idempotent producers' recent batches (taken inside the log lock).
    producers: Mutex<ProducerStates>,
    /// Producer state snapshots ([`crate::producer_snapshot`]'s rules). Lock order: the log,
    /// then this; a snapshot is written holding this alone, and a truncation deletes the
    /// snapshots past its end holding both, so no snapshot of truncated batches survives.
    snapshots: Mutex<SnapshotMarks>,
    /// Woken on this partition's appends, HW moves and role or ISR changes: its acks=all
    /// waiters wait on it directly, and each fetch long-poll registers its own [`Notify`] in
    /// `watchers` ([`Partition::watch`]), so an append wakes only the fetches that read this
    /// partition.
    wake: Notify,
    watchers: Mutex<Vec<std::sync::Weak<Notify>>>,
    /// The log directory's health (shared by every partition): appends stop once it failed.
    dir_health: Arc<super::LogDirHealth>,
}

/// Where this partition's producer snapshots stand.
#[derive(Debug, Default)]
struct SnapshotMarks {
    /// The offset of the newest snapshot written or loaded (-1: none).
    last_offset: i64,
    /// Bumped by every rebuild (open, truncation): a snapshot copied before one is not written.
    rebuilds: u64,
}

/// A leader's view of its followers. One lock covers both fields, and a leader's high
/// watermark rises only under it: see [`IsrProposal`] for why.
#[derive(Debug, Default)]
struct Followers {
    progress: HashMap<i32, FollowerProgress>,
    /// The ISR change sent to the controller whose outcome this leader does not know yet.
    pending_isr: Option<IsrProposal>,
}

/// An ISR change a leader sends to the controller (AlterPartition), from the role it held.
///
/// **Rule (Kafka's maximal ISR):** from the moment a leader decides to add a follower until it
/// knows the controller's answer, its high watermark counts that follower as an ISR member.
/// The controller may commit the change, and then elect the follower, before the leader hears
/// of it (the reply is lost, or the leader dies first); had the leader's HW moved past the
/// follower's LEO meanwhile, records acknowledged with acks=all would be missing on the new
/// leader. The follower is checked to be at or past the HW under the same lock the HW moves
/// under, so from then on the HW never passes it. A removal needs nothing: the leader keeps
/// counting the member until the removal is committed. The proposal stops counting once its
/// outcome is known here: the role moved past the epochs it was made from (whatever the
/// controller committed is in the role, and it refuses the proposal from then on), or the
/// controller refused it and said the partition is still at those epochs (a refusal is
/// decided on an image holding every batch committed before it, and a batch that may still
/// commit holds the controller's write lock, so no earlier attempt can commit later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
    /// Members of `isr` not in the ISR it was made from.
    pub additions: Vec<i32>,
}

impl IsrProposal {
    /// Whether the proposal is still undecided for a replica in `role`.
    fn in_force(&self, role: &ReplicaRole) -> bool {
        role.leader_epoch == self.leader_epoch && role.partition_epoch == self.partition_epoch
    }
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

    /// The log, once no one else holds this partition (clean shutdown).
    pub(super) fn into_log(self) -> Log {
        self.log.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the log.
    /// Whole batches from `offset` ([`Log::read`]). A sealed segment's are read after the
    /// log lock is released (`Log::plan_read`'s rule), so a read that waits on the disk never
    /// holds up this partition's appends; if the segment was truncated meanwhile, the read
    /// is made again under the lock.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: Option<i64>) -> Result<ReadResult, LogError> {
        match self.with_log(|l| l.plan_read(offset, max_bytes, max_offset))? {
            ReadPlan::Done(r) => Ok(r),
            ReadPlan::Sealed(sealed) => {
                let truncations = sealed.truncations();
                let read = sealed.run();
                // A truncation meanwhile may have deleted the planned segment (the plan's
                // handle still reads it): then the bytes may no longer be the log's.
                self.with_log(|l| match read {
                    Ok(r) if l.truncations() == truncations => Ok(r),
                    Ok(_) => l.read(offset, max_bytes, max_offset),
                    Err(e) => {
                        tracing::debug!(node = self.node_id, partition = %self.tp, error = %e, "sealed read failed; reading under the lock");
                        l.read(offset, max_bytes, max_offset)
                    }
                })
            }
        }
    }

    /// The last stable offset: the HW, or below it the first offset of a transaction that is
    /// open or whose marker is not committed yet (`producer_state`'s rules).
    pub fn last_stable_offset(&self) -> i64 {
        self.last_stable_offset_at(self.high_watermark())
    }

    /// [`Self::last_stable_offset`] under high watermark `hw` (read once by the caller, so
    /// the two it reports agree), never below the log start (as Kafka: a transaction whose
    /// start retention deleted holds nothing back that a reader could still read).
    pub fn last_stable_offset_at(&self, hw: i64) -> i64 {
        let lso = self.producers.lock().unwrap_or_else(|p| p.into_inner()).last_stable_offset(hw);
        lso.max(self.log_start_offset().min(hw))
    }

    /// Has `producer_id` at `epoch` a transaction open here (`ProducerStates::has_open_txn`)?
    pub fn has_open_txn(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers.lock().unwrap_or_else(|p| p.into_inner()).has_open_txn(producer_id, epoch)
    }

    /// The producers this partition keeps state for (DescribeProducers).
    pub fn describe_producers(&self) -> Vec<crate::producer_state::ProducerDescription> {
        self.producers.lock().unwrap_or_else(|p| p.into_inner()).describe()
    }

    /// The aborted transactions with records in `[from, upper)` (`Log::aborted_txns`).
    pub fn aborted_txns(&self, from: i64, upper: i64) -> Vec<strom_storage::AbortedTxn> {
        self.with_log(|l| l.aborted_txns(from, upper))
    }

    /// Writes a transaction marker for `producer_id` as leader (the transaction coordinator's
    /// WriteTxnMarkers): the producer's open transaction on this partition ends, and an
    /// aborted one enters the transaction index before this returns. A marker from an older
    /// producer or coordinator epoch is refused (`producer_state`'s rules).
    pub fn append_txn_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: TxnMarker,
        now_ms: i64,
        min_isr: usize,
    ) -> Result<LeaderAppend, ReplicaError> {
        if !self.is_leader() {
            return Err(ReplicaError::NotLeader(self.tp.to_string()));
        }
        if self.dir_health.is_offline() {
            return Err(LogError::Offline.into());
        }
        let m = MarkerBatch { producer_id, epoch: producer_epoch, marker, timestamp: now_ms };
        let batch = marker.encode(producer_id, producer_epoch, now_ms).map_err(|e| ReplicaError::Marker(e.0))?;
        let appended = self.with_log(|l| {
            // The role again under the log lock (append_as_leader's rule).
            let role = self.role();
            if role.leader != self.node_id {
                return Err(ReplicaError::NotLeader(self.tp.to_string()));
            }
            let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
            producers.check_marker(&m).map_err(ReplicaError::ProducerSequence)?;
            // Markers are written with acks=all (as Kafka): refused below min.insync.replicas.
            if role.isr.len() < min_isr {
                return Err(ReplicaError::NotEnoughReplicas {
                    partition: self.tp.to_string(),
                    isr: role.isr.len(),
                    min_isr,
                });
            }
            let info = l
                .append_as_leader(&batch, role.leader_epoch, now_ms)
                .map_err(|e| self.dir_health.check(self.node_id, "append", e))?;
            if let Some(t) = producers.record_marker(&m, info.first_offset) {
                l.add_aborted_txn(t).map_err(|e| self.dir_health.check(self.node_id, "transaction index", e))?;
            }
            Ok::<_, ReplicaError>(LeaderAppend {
                info,
                log_start_offset: l.log_start_offset(),
                leader_epoch: role.leader_epoch,
                duplicate: false,
            })
        })?;
        self.update_high_watermark();
        self.wake();
        Ok(appended)
    }

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
            let f = followers.progress.entry(replica).or_insert_with(|| FollowerProgress::new(now));
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
            .filter(|r| {
                followers.progress.get(r).is_some_and(|f| now.saturating_duration_since(f.last_caught_up) > lag_max)
            })
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
        let lagging = |r: &i32| {
            followers.progress.get(r).is_some_and(|f| now.saturating_duration_since(f.last_caught_up) > lag_max)
        };
        let caught_up = |r: &i32| {
            followers.progress.get(r).is_some_and(|f| {
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

    /// Starts an ISR change to `isr` from the role this leader holds now, unless one is on its
    /// way already, this broker no longer leads, or a member it adds is no longer at or past
    /// the HW. From here until its outcome is known ([`Self::isr_change_decided`], or the
    /// role moves past it) the HW counts the members it adds ([`IsrProposal`]'s rule); no
    /// other change is proposed until [`Self::release_isr_change`].
    pub fn begin_isr_change(&self, isr: Vec<i32>) -> Option<IsrProposal> {
        if self.isr_change_in_flight.swap(true, Ordering::AcqRel) {
            return None;
        }
        let proposal = {
            // The followers' lock first, then the role: the HW moves under this lock, so no
            // HW computed without the additions is stored after they are checked here.
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            let role = self.role.read().unwrap_or_else(|p| p.into_inner());
            let hw = self.high_watermark();
            let additions: Vec<i32> = isr.iter().copied().filter(|r| !role.isr.contains(r)).collect();
            let valid = role.leader == self.node_id
                && isr.contains(&self.node_id)
                && isr.iter().all(|r| role.replicas.contains(r))
                && additions.iter().all(|r| followers.progress.get(r).is_some_and(|f| f.log_end_offset >= hw));
            let proposal = valid.then(|| IsrProposal {
                leader_epoch: role.leader_epoch,
                partition_epoch: role.partition_epoch,
                isr,
                additions,
            });
            if let Some(proposal) = &proposal {
                // One left undecided (its task ended at shutdown or in a panic) may still
                // commit: its additions go on counting beside the new one's.
                let mut pending = proposal.clone();
                if let Some(old) = followers.pending_isr.as_ref().filter(|old| old.in_force(&role)) {
                    for r in &old.additions {
                        if !pending.additions.contains(r) {
                            pending.additions.push(*r);
                        }
                    }
                }
                followers.pending_isr = Some(pending);
            }
            proposal
        };
        if proposal.is_none() {
            self.isr_change_in_flight.store(false, Ordering::Release);
        }
        proposal
    }

    /// Whether `proposal` is still undecided: this broker holds the role it was made from.
    pub fn isr_change_undecided(&self, proposal: &IsrProposal) -> bool {
        proposal.in_force(&self.role.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The outcome of `proposal` is known ([`IsrProposal`]'s rule): the HW stops counting its
    /// additions (and may move at once).
    pub fn isr_change_decided(&self, proposal: &IsrProposal) {
        {
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            let same = |p: &IsrProposal| {
                (p.leader_epoch, p.partition_epoch, &p.isr)
                    == (proposal.leader_epoch, proposal.partition_epoch, &proposal.isr)
            };
            if followers.pending_isr.as_ref().is_some_and(same) {
                followers.pending_isr = None;
            }
        }
        if self.update_high_watermark() {
            self.wake();
        }
    }

    /// Another ISR change may be proposed. A proposal whose outcome is not known stays pending
    /// (a later one from the same epochs counts its additions too).
    pub fn release_isr_change(&self) {
        self.isr_change_in_flight.store(false, Ordering::Release);
    }

    /// Forgets what `replicas` fetched: they are proposed into the ISR again only on fetches
    /// made from now on (the controller left them out: fenced, maybe restarted with a shorter
    /// log).
    pub fn forget_followers(&self, replicas: &[i32]) {
        let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        for r in replicas {
            followers.progress.remove(r);
        }
    }

    /// The controller committed an ISR change this leader asked for (or says what the ISR
    /// now is): use it now rather than when the metadata image catches up (Kafka does the
    /// same with the AlterPartition reply).
    pub fn apply_committed_isr(&self, leader_epoch: i32, partition_epoch: i32, isr: Vec<i32>) {
        let left_isr: Vec<i32> = {
            let mut role = self.role.write().unwrap_or_else(|p| p.into_inner());
            if role.leader_epoch != leader_epoch || partition_epoch <= role.partition_epoch {
                return;
            }
            if !isr.iter().all(|r| role.replicas.contains(r)) {
                tracing::warn!(node = self.node_id, partition = %self.tp, ?isr, replicas = ?role.replicas, "ISR from the controller is not within the replicas; waiting for the metadata image");
                return;
            }
            let left = role.isr.iter().copied().filter(|r| !isr.contains(r)).collect();
            role.partition_epoch = partition_epoch;
            role.isr = isr;
            left
        };
        // As in `apply_role`: a member that left (the controller may have fenced it: a restart
        // with a shorter log) rejoins only on fetches made after it left.
        if !left_isr.is_empty() {
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            for r in &left_isr {
                followers.progress.remove(r);
            }
        }
        if self.update_high_watermark() {
            self.wake();
        }
    }

    /// A follower's HW: the leader's, capped at our LEO.
    pub fn set_follower_high_watermark(&self, leader_hw: i64) {
        let leo = self.log_end_offset();
        let hw = leader_hw.min(leo).max(0);
        self.high_watermark.store(hw, Ordering::Release);
        self.producers.lock().unwrap_or_else(|p| p.into_inner()).forget_ended_below(hw);
    }

    /// Recomputes the high watermark: the minimum LEO over the ISR (ours for ourselves) and
    /// the members an undecided ISR change adds ([`IsrProposal`]). Returns true when it moved.
    pub fn update_high_watermark(&self) -> bool {
        // The followers' lock first, then the role, then the LEO. A role read under this lock
        // that predates a committed ISR still finds the proposal that adds to it pending (the
        // role changes before the proposal ends, which takes this lock). A LEO read after a
        // role that says "leader" cannot predate a truncation as follower. The role's lock is
        // released before the log's is taken (elsewhere the log's comes first).
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        let role = self.role();
        if role.leader != self.node_id {
            return false;
        }
        let leo = self.log_end_offset();
        let pending =
            followers.pending_isr.as_ref().filter(|p| p.in_force(&role)).map_or(&[][..], |p| &p.additions[..]);
        let hw = role
            .isr
            .iter()
            .chain(pending)
            .map(|r| {
                if *r == self.node_id {
                    leo
                } else {
                    followers.progress.get(r).map_or(0, |f| f.log_end_offset.max(0))
                }
            })
            .min()
            .unwrap_or(leo)
            .min(leo);
        let old = self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        debug_assert!(self.high_watermark() <= leo, "HW {} above LEO {leo}", self.high_watermark());
        hw > old
    }

    /// Forgets producers silent for `max_age_ms` ([`ProducerStates::expire`]); under the log
    /// lock, like every change to the producer state.
    pub fn expire_producers(&self, now_ms: i64, max_age_ms: i64) -> usize {
        self.with_log(|_| self.producers.lock().unwrap_or_else(|p| p.into_inner()).expire(now_ms, max_age_ms))
    }

    /// How many idempotent producers this partition keeps state for.
    pub fn producer_count(&self) -> usize {
        self.producers.lock().unwrap_or_else(|p| p.into_inner()).producers()
    }

    /// Wakes whoever waits on this partition: acks=all waiters and the fetches watching it.
    pub fn wake(&self) {
        self.wake.notify_waiters();
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|w| match w.upgrade() {
            Some(n) => {
                // A permit is kept if the fetch is between reads: no wake-up is lost.
                n.notify_one();
                true
            }
            None => false,
        });
    }

    /// A fetch long-poll asks to be woken by this partition's changes until it drops `waiter`.
    pub fn watch(&self, waiter: &Arc<Notify>) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|w| w.strong_count() > 0);
        watchers.push(Arc::downgrade(waiter));
    }

    /// Rebuilds the idempotent producer state (on open, after truncation): from the newest
    /// usable snapshot and the log after it, or from the whole log.
    pub fn rebuild_producer_state(&self) {
        self.with_log(|l| self.rebuild_producer_state_from(l));
    }

    /// [`Self::rebuild_producer_state`] for a caller that already holds the log lock (a
    /// truncation rebuilds in the same critical section, so no append sees a state that still
    /// lists truncated batches, and the snapshots past the new end are gone before anything
    /// is appended again).
    pub fn rebuild_producer_state_from(&self, l: &mut Log) {
        self.rebuild_producers(l, false);
    }

    /// [`Self::rebuild_producer_state_from`] after the log restarted empty at a new offset (a
    /// follower far behind its leader's log start): every snapshot describes the discarded
    /// log, so all are deleted first (`producer_snapshot`'s rules).
    pub fn restart_producer_state_from(&self, l: &mut Log) {
        self.rebuild_producers(l, true);
    }

    fn rebuild_producers(&self, l: &mut Log, forget_snapshots: bool) {
        {
            let mut marks = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            marks.rebuilds += 1;
            if forget_snapshots {
                crate::producer_snapshot::delete_after(l.dir(), -1);
            }
            let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
            let end = l.log_end_offset();
            // A damaged transaction index is rebuilt from the whole log (txn_index's rule).
            let whole_log = l.txn_index_damaged();
            let snapshot =
                if whole_log { None } else { crate::producer_snapshot::load_latest(l.dir(), end, self.node_id) };
            let mut offset = match snapshot {
                Some((at, loaded)) => {
                    *producers = loaded;
                    marks.last_offset = at;
                    at.max(l.log_start_offset())
                }
                None => {
                    producers.clear();
                    marks.last_offset = -1;
                    l.log_start_offset()
                }
            };
            while offset < l.log_end_offset() {
                match l.read(offset, 1 << 20, None) {
                    Ok(r) if r.next_offset > offset => {
                        for t in producers.record_stored(&r.records) {
                            if let Err(e) = l.add_aborted_txn(t) {
                                tracing::error!(node = self.node_id, partition = %self.tp, error = %e, "cannot index an aborted transaction");
                            }
                        }
                        offset = r.next_offset;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(node = self.node_id, partition = %self.tp, error = %e, "cannot rebuild producer state");
                        break;
                    }
                }
            }
            if whole_log && offset >= l.log_end_offset() {
                l.txn_index_rebuilt();
            }
            if producers.producers() > 0 {
                tracing::debug!(node = self.node_id, partition = %self.tp, producers = producers.producers(), "producer state rebuilt");
            }
        }
    }

    /// Whether a leader append of `bytes` may wait on the disk (`Log::append_may_block`).
    pub fn append_may_block(&self, bytes: usize, now_ms: i64) -> bool {
        let epoch = self.role().leader_epoch;
        self.with_log(|l| l.append_may_block(bytes as u64, now_ms, Some(epoch)))
    }

    /// Whether a read from `offset` of up to `max_bytes` finds its pages cached.
    pub fn read_is_cached(&self, offset: i64, max_bytes: usize) -> bool {
        self.with_log(|l| l.is_cached(offset, max_bytes))
    }

    /// Writes a producer state snapshot when the log rolled since the last one (housekeeping
    /// calls it, off the async runtime), or always with `force` (a clean close). The state is
    /// copied under the log lock, the file written outside it ([`crate::producer_snapshot`]).
    pub fn snapshot_producers(&self, force: bool) -> Result<(), strom_storage::LogError> {
        let copied = self.with_log(|l| {
            let marks = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            let end = l.log_end_offset();
            let rolled = l.active_base_offset() > marks.last_offset;
            let due = end > marks.last_offset.max(0) && (force || rolled);
            due.then(|| {
                let bytes = self.producers.lock().unwrap_or_else(|p| p.into_inner()).encode_snapshot();
                (end, bytes, marks.rebuilds, l.dir().to_path_buf())
            })
        });
        let Some((end, bytes, rebuilds, dir)) = copied else { return Ok(()) };
        let mut marks = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if marks.rebuilds != rebuilds {
            return Ok(()); // truncated meanwhile: the copy may list batches that are gone
        }
        match crate::producer_snapshot::write(&dir, end, &bytes) {
            Ok(()) => {}
            // The partition was deleted meanwhile (its directory went): nothing to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(strom_storage::LogError::Io { path: dir.display().to_string(), source }),
        }
        marks.last_offset = end;
        Ok(())
    }

    /// The follower path: appends fetched batches (offsets from the leader) and records their
    /// producers. `still_valid` is checked under the log lock first.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        now_ms: i64,
        still_valid: impl FnOnce() -> bool,
    ) -> Result<Option<AppendInfo>, LogError> {
        if self.dir_health.is_offline() {
            return Err(LogError::Offline);
        }
        self.with_log(|l| {
            if !still_valid() {
                return Ok(None);
            }
            let info = l
                .append_as_follower(records, now_ms)
                .map_err(|e| self.dir_health.check(self.node_id, "follower append", e))?;
            let aborted = self.producers.lock().unwrap_or_else(|p| p.into_inner()).record_stored(records);
            for t in aborted {
                l.add_aborted_txn(t).map_err(|e| self.dir_health.check(self.node_id, "transaction index", e))?;
            }
            Ok(Some(info))
        })
    }

    /// This broker became leader (or leads in a new epoch).
    fn become_leader(&self, leader_epoch: i32) {
        let now = Instant::now();
        let replicas = self.role().replicas;
        {
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            followers.progress.clear();
            followers.pending_isr = None; // made in an older epoch: the controller refuses it
            for r in replicas.into_iter().filter(|r| *r != self.node_id) {
                followers.progress.insert(r, FollowerProgress::new(now));
            }
        }
        let leo = self.log_end_offset();
        // A follower's HW may sit above a log it has since truncated.
        let _ = self.high_watermark.fetch_min(leo, Ordering::AcqRel);
        if let Err(e) = self.with_log(|l| l.assign_leader_epoch(leader_epoch)) {
            tracing::error!(node = self.node_id, partition = %self.tp, error = %e, "cannot record the leader epoch");
        }
    }

    /// A replica just opened from `log`: its producer state rebuilt from the log, its HW
    /// known where it can be (the sole ISR member holds everything), and, if it leads, its
    /// leader epoch recorded.
    pub(super) fn open(
        tp: TopicPartition,
        topic_id: Uuid,
        node_id: i32,
        log: Log,
        role: ReplicaRole,
        dir_health: Arc<super::LogDirHealth>,
    ) -> Arc<Partition> {
        let leo = log.log_end_offset();
        let p = Arc::new(Partition {
            dir_health,
            tp: tp.clone(),
            topic_id,
            node_id,
            log: Mutex::new(log),
            role: RwLock::new(role.clone()),
            high_watermark: AtomicI64::new(0),
            followers: Mutex::new(Followers::default()),
            isr_change_in_flight: AtomicBool::new(false),
            producers: Mutex::new(ProducerStates::default()),
            snapshots: Mutex::new(SnapshotMarks { last_offset: -1, rebuilds: 0 }),
            wake: Notify::new(),
            watchers: Mutex::new(Vec::new()),
        });
        p.rebuild_producer_state();
        if role.isr == [node_id] {
            p.high_watermark.store(leo, Ordering::Release);
        }
        if role.leader == node_id {
            p.become_leader(role.leader_epoch);
        }
        p.update_high_watermark();
        tracing::info!(
            node = node_id,
            partition = %tp,
            leader = role.leader,
            leader_epoch = role.leader_epoch,
            log_end_offset = leo,
            "partition replica opened"
        );
        p
    }

    /// The metadata image names a new role for this replica: apply it (unless it is older
    /// than an ISR this leader already took from an AlterPartition reply).
    pub(super) fn apply_role(&self, role: ReplicaRole) {
        // Compared and written under the log lock (a leader append or a follower truncation
        // sees the role before or after this change, never during its work) and the role's
        // write lock: an ISR taken from an AlterPartition reply meanwhile is never overwritten
        // by an older image.
        let old = self.with_log(|_| {
            let mut current = self.role.write().unwrap_or_else(|p| p.into_inner());
            // The leader may already hold a newer ISR from an AlterPartition reply.
            let stale = role.leader_epoch == current.leader_epoch && role.partition_epoch < current.partition_epoch;
            (*current != role && !stale).then(|| std::mem::replace(&mut *current, role.clone()))
        });
        let Some(old) = old else { return };
        debug_assert!(
            role.leader_epoch >= old.leader_epoch,
            "{}: leader epoch went back from {} to {}",
            self.tp,
            old.leader_epoch,
            role.leader_epoch
        );
        debug_assert!(role.isr.iter().all(|r| role.replicas.contains(r)), "{}: ISR ⊄ replicas in {role:?}", self.tp);
        let new_leadership = old.leader != role.leader || old.leader_epoch != role.leader_epoch;
        if new_leadership {
            tracing::info!(
                node = self.node_id,
                partition = %self.tp,
                leader = role.leader,
                leader_epoch = role.leader_epoch,
                isr = ?role.isr,
                "partition leadership changed"
            );
        }
        let leads = role.leader == self.node_id;
        let epoch = role.leader_epoch;
        let left_isr: Vec<i32> = old.isr.iter().copied().filter(|r| !role.isr.contains(r)).collect();
        if leads && new_leadership {
            self.become_leader(epoch);
        } else if leads && !left_isr.is_empty() {
            // A replica that left the ISR (fenced: maybe restarted with a
            // shorter log) must prove itself by fetching again before it can
            // rejoin: what it fetched before is forgotten.
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            for r in &left_isr {
                followers.progress.remove(r);
            }
        }
        self.update_high_watermark();
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
        records: &[u8],
        now_ms: i64,
        min_isr: Option<usize>,
    ) -> Result<LeaderAppend, ReplicaError> {
        self.append_as_leader_verified(records, now_ms, min_isr, None)
    }

    /// Starts a transaction verification for `producer_id` at `epoch` (KIP-890): the token
    /// [`Self::append_as_leader_verified`] requires, void once a marker of the producer is
    /// written meanwhile.
    pub fn start_verification(&self, producer_id: i64, epoch: i16) -> u64 {
        self.producers.lock().unwrap_or_else(|p| p.into_inner()).start_verification(producer_id, epoch)
    }

    /// [`Self::append_as_leader`]; with `verified` (producer id, epoch, token), a batch that
    /// would open that producer's transaction here is taken only if its verification still
    /// holds (INVALID_TXN_STATE otherwise: the transaction ended while it was verified).
    pub fn append_as_leader_verified(
        &self,
        records: &[u8],
        now_ms: i64,
        min_isr: Option<usize>,
        verified: Option<(i64, i16, u64)>,
    ) -> Result<LeaderAppend, ReplicaError> {
        if !self.is_leader() {
            return Err(ReplicaError::NotLeader(self.tp.to_string()));
        }
        if self.dir_health.is_offline() {
            return Err(LogError::Offline.into());
        }
        let appended = self.with_log(|l| {
            // **Rule:** the role is read again under the log lock. Role changes are made under
            // that lock too, so a broker that became a follower (and truncated, and rebuilt
            // its producer state) in between cannot append as a leader after the truncation.
            let role = self.role();
            if role.leader != self.node_id {
                return Err(ReplicaError::NotLeader(self.tp.to_string()));
            }
            // Each batch: its producer's sequence check, a coordinator's transaction it opens
            // (`ProducerStates::record_coordinator_txn`), and its record count.
            type Parsed = (Option<ProducerBatch>, Option<(i64, i16)>, i64);
            let batches: Vec<Parsed> = {
                let mut out = Vec::new();
                let mut rest = records;
                while let Ok(v) = BatchView::parse(rest) {
                    let coordinator = crate::producer_state::coordinator_txn(&v);
                    out.push((ProducerBatch::of(&v), coordinator, v.last_offset_delta() as i64 + 1));
                    rest = &rest[v.size()..];
                }
                out
            };
            let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
            for (_, coordinator, _) in &batches {
                if let Some((pid, epoch)) = coordinator {
                    producers.check_coordinator_txn(*pid, *epoch).map_err(ReplicaError::ProducerSequence)?;
                }
            }
            if let Some((pid, epoch, token)) = verified {
                let opens = batches
                    .iter()
                    .flat_map(|(b, _, _)| b)
                    .any(|b| b.transactional && b.producer_id == pid && !producers.has_open_txn(pid, epoch));
                if opens && !producers.verification_holds(pid, epoch, token) {
                    return Err(ReplicaError::ProducerSequence(crate::producer_state::INVALID_TXN_STATE));
                }
            }
            for (b, _, _) in &batches {
                let Some(b) = b else { continue };
                match producers.check(b) {
                    SequenceCheck::Append => {}
                    // A retry of a batch already written: answer with where it was written.
                    SequenceCheck::Duplicate { first_offset, last_offset } if batches.len() == 1 => {
                        let info = AppendInfo {
                            first_offset,
                            last_offset,
                            max_timestamp: -1,
                            log_append_time_ms: -1,
                            recompressed_batches: 0,
                            records: 0,
                            bytes: 0,
                        };
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
                            partition = %self.tp,
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
                for b in batches.iter().filter_map(|(b, _, _)| b.as_ref()) {
                    producers.refused_for_isr(b);
                }
                return Err(ReplicaError::NotEnoughReplicas {
                    partition: self.tp.to_string(),
                    isr: role.isr.len(),
                    min_isr,
                });
            }
            let info = l
                .append_as_leader(records, role.leader_epoch, now_ms)
                .map_err(|e| self.dir_health.check(self.node_id, "append", e))?;
            let mut next = info.first_offset;
            for (b, coordinator, count) in &batches {
                if let Some(b) = b {
                    producers.record(b, next, next + count - 1);
                } else if let Some((pid, epoch)) = coordinator {
                    producers.record_coordinator_txn(*pid, *epoch, next);
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
            self.update_high_watermark();
            self.wake();
        }
        Ok(appended)
    }

    /// Waits, woken by appends and HW moves (never polling), until records this broker
    /// appended as leader in `leader_epoch`, ending before `end`, are committed
    /// ([`Self::commit_state`]), the leadership moves, or `deadline` passes; produce's
    /// acks=all and offset commits both wait here.
    ///
    /// Committed while the ISR has fewer than `min_isr` members is
    /// [`CommitWait::CommittedBelowMinIsr`] (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND), except
    /// for a `retry` (a batch found already in the log, see [`Self::append_as_leader`]): that
    /// waits for the ISR to grow back, and is below-min only at the deadline.
    pub async fn wait_committed(
        &self,
        end: i64,
        leader_epoch: i32,
        min_isr: usize,
        retry: bool,
        deadline: tokio::time::Instant,
    ) -> CommitWait {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.commit_state(end, leader_epoch) {
                Commit::Committed if self.role().isr.len() >= min_isr => return CommitWait::Committed,
                Commit::Committed if !retry => return CommitWait::CommittedBelowMinIsr,
                Commit::Committed | Commit::Pending => {}
                Commit::LeadershipLost => return CommitWait::LeadershipLost,
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return match self.commit_state(end, leader_epoch) {
                    Commit::Committed => CommitWait::CommittedBelowMinIsr,
                    _ => CommitWait::TimedOut,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(dir: &std::path::Path, name: &str) -> Arc<Partition> {
        let (log, _) = Log::open(&dir.join(format!("{name}-0")), strom_storage::LogConfig::default()).unwrap();
        let role = ReplicaRole { leader: 1, leader_epoch: 0, partition_epoch: 0, isr: vec![1], replicas: vec![1] };
        let tp = TopicPartition { topic: name.into(), partition: 0 };
        Partition::open(tp, Uuid::nil(), 1, log, role, Arc::default())
    }

    fn one_record() -> bytes::Bytes {
        strom_protocol::batch::encode_records(
            [(None, Some(bytes::Bytes::from_static(b"v")))],
            0,
            strom_protocol::kafka_protocol::records::Compression::None,
        )
        .unwrap()
    }

    #[test]
    fn an_append_wakes_only_the_fetches_watching_its_partition() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (leader(dir.path(), "a"), leader(dir.path(), "b"));
        let (on_a, on_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        a.watch(&on_a);
        b.watch(&on_b);
        a.append_as_leader(&one_record(), 0, None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let woken = |n: &Arc<Notify>| {
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(50), n.notified()).await.is_ok() })
        };
        assert!(woken(&on_a), "the fetch on a was not woken by a's append");
        assert!(!woken(&on_b), "the fetch on b was woken by a's append");
        // A watcher that went away is forgotten at the next wake.
        drop(on_a);
        a.append_as_leader(&one_record(), 0, None).unwrap();
        assert!(a.watchers.lock().unwrap().is_empty());
    }

    /// Leader 1 of replicas 1, 2, 3 with ISR {1, 2} and `records` records appended.
    fn leader_of_three(dir: &std::path::Path, records: usize) -> Arc<Partition> {
        let (log, _) = Log::open(&dir.join("t-0"), strom_storage::LogConfig::default()).unwrap();
        let role =
            ReplicaRole { leader: 1, leader_epoch: 3, partition_epoch: 7, isr: vec![1, 2], replicas: vec![1, 2, 3] };
        let tp = TopicPartition { topic: "t".into(), partition: 0 };
        let p = Partition::open(tp, Uuid::nil(), 1, log, role, Arc::default());
        for _ in 0..records {
            p.append_as_leader(&one_record(), 0, None).unwrap();
        }
        p
    }

    /// The bug the chaos test caught: the controller committed follower 3 into the ISR and
    /// elected it, while the leader, not yet told, had acknowledged records 3 lacked.
    #[test]
    fn a_follower_being_added_to_the_isr_holds_the_hw_back_until_the_controller_answers() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path(), 10);
        p.record_follower_fetch(2, 10);
        assert_eq!(p.high_watermark(), 10);
        // Follower 3 catches up to the HW: the leader proposes it back in.
        assert!(p.record_follower_fetch(3, 10).expand_isr);
        let wanted = p.desired_isr(Duration::from_secs(30), Instant::now(), |_| true).unwrap();
        assert_eq!(wanted, vec![1, 2, 3]);
        let proposal = p.begin_isr_change(wanted.clone()).unwrap();
        assert_eq!((proposal.leader_epoch, proposal.partition_epoch, proposal.additions.clone()), (3, 7, vec![3]));
        assert!(p.begin_isr_change(wanted.clone()).is_none(), "one proposal at a time");
        // More records, fetched by 2 only: the HW waits for 3 while the answer is unknown.
        for _ in 0..5 {
            p.append_as_leader(&one_record(), 0, None).unwrap();
        }
        p.record_follower_fetch(2, 15);
        assert_eq!(p.high_watermark(), 10, "the HW passed a follower the controller may have made leader");
        assert_eq!(p.commit_state(15, 3), Commit::Pending);
        p.record_follower_fetch(3, 12);
        assert_eq!(p.high_watermark(), 12);
        // Committed (the reply): 3 is a member, the proposal is over.
        p.apply_committed_isr(3, 8, wanted);
        assert!(!p.isr_change_undecided(&proposal));
        p.isr_change_decided(&proposal);
        p.release_isr_change();
        assert_eq!(p.high_watermark(), 12);
        p.record_follower_fetch(3, 15);
        assert_eq!(p.high_watermark(), 15);
    }

    #[test]
    fn a_refused_or_overtaken_isr_proposal_stops_holding_the_hw_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path(), 10);
        p.record_follower_fetch(2, 10);
        p.record_follower_fetch(3, 10);
        let proposal = p.begin_isr_change(vec![1, 2, 3]).unwrap();
        p.append_as_leader(&one_record(), 0, None).unwrap();
        p.record_follower_fetch(2, 11);
        assert_eq!(p.high_watermark(), 10);
        // The metadata image moves the partition on (another change was committed first):
        // the proposal can no longer be committed, and the ISR is what the image says.
        p.apply_role(ReplicaRole {
            leader: 1,
            leader_epoch: 3,
            partition_epoch: 8,
            isr: vec![1, 2],
            replicas: vec![1, 2, 3],
        });
        assert!(!p.isr_change_undecided(&proposal));
        assert_eq!(p.high_watermark(), 11);
        p.release_isr_change();
        // 3 is proposed again once it is back at the HW.
        assert!(p.begin_isr_change(vec![1, 2, 3]).is_none(), "3 is behind the HW now");
        p.record_follower_fetch(3, 11);
        let proposal = p.begin_isr_change(vec![1, 2, 3]).unwrap();
        assert!(p.isr_change_undecided(&proposal));
        p.append_as_leader(&one_record(), 0, None).unwrap();
        p.record_follower_fetch(2, 12);
        assert_eq!(p.high_watermark(), 11);
        // Its task ends without an answer (shutdown): it stays pending, and a later proposal
        // from the same epochs (here one dropping 2) counts its addition too.
        p.release_isr_change();
        assert_eq!(p.high_watermark(), 11);
        let later = p.begin_isr_change(vec![1]).unwrap();
        assert!(later.additions.is_empty());
        p.append_as_leader(&one_record(), 0, None).unwrap();
        p.record_follower_fetch(2, 13);
        assert_eq!(p.high_watermark(), 11, "the undecided proposal's addition stopped counting");
        // The later one refused on unchanged epochs (a refusal is final): the HW goes on over
        // the ISR it has.
        p.isr_change_decided(&later);
        p.release_isr_change();
        assert_eq!(p.high_watermark(), 13);
        // A member that leaves through a reply (the controller fenced it) is forgotten: it is
        // proposed back only on fetches made after it left.
        p.record_follower_fetch(3, 13);
        p.apply_committed_isr(3, 9, vec![1, 3]);
        p.apply_committed_isr(3, 10, vec![1]);
        assert!(p.begin_isr_change(vec![1, 3]).is_none(), "3 rejoined on what it fetched before it left");
        p.record_follower_fetch(3, 13);
        assert!(p.begin_isr_change(vec![1, 3]).is_some());
    }

    /// One record from producer 7, epoch 0, at sequence `seq`.
    fn idempotent(seq: i32) -> bytes::Bytes {
        producer_record(7, seq, false)
    }

    /// One record from producer `pid`, epoch 0, at sequence `seq`, transactional or not.
    fn producer_record(pid: i64, seq: i32, transactional: bool) -> bytes::Bytes {
        let mut b = one_record().to_vec();
        if transactional {
            b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
        }
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b.into()
    }

    #[test]
    fn a_reopened_log_knows_its_producers_from_the_snapshot_and_the_tail_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), "snap");
        for seq in 0..3 {
            assert!(!p.append_as_leader(&idempotent(seq), 0, None).unwrap().duplicate);
        }
        p.snapshot_producers(true).unwrap();
        let snapshot = dir.path().join("snap-0").join("00000000000000000003.snapshot");
        assert!(snapshot.exists(), "no snapshot at the log end");
        assert!(!p.append_as_leader(&idempotent(3), 0, None).unwrap().duplicate);
        drop(p);

        let p = leader(dir.path(), "snap");
        // Seq 2 is known from the snapshot, seq 3 from the log after it: retries of both are
        // duplicates, not appended again.
        assert!(p.append_as_leader(&idempotent(2), 0, None).unwrap().duplicate);
        assert!(p.append_as_leader(&idempotent(3), 0, None).unwrap().duplicate);
        assert_eq!(p.log_end_offset(), 4);
        assert!(p.append_as_leader(&idempotent(5), 0, None).is_err(), "a gap is out of order");

        // A log cut below the snapshot (a follower's truncation, an unsynced tail lost in a
        // crash): the snapshot is deleted, and the state forgets the batches cut.
        drop(p);
        let (mut log, _) = Log::open(&dir.path().join("snap-0"), strom_storage::LogConfig::default()).unwrap();
        log.truncate_to(2).unwrap();
        drop(log);
        let p = leader(dir.path(), "snap");
        assert!(!snapshot.exists(), "a snapshot of truncated batches survived");
        assert!(p.append_as_leader(&idempotent(1), 0, None).unwrap().duplicate);
        assert!(!p.append_as_leader(&idempotent(2), 0, None).unwrap().duplicate);
    }

    #[test]
    fn a_log_restarted_at_the_leaders_start_forgets_every_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), "restart");
        p.append_as_leader(&idempotent(0), 0, None).unwrap();
        p.snapshot_producers(true).unwrap();
        assert_eq!(crate::producer_snapshot::offsets(&dir.path().join("restart-0")), vec![1]);
        // A follower far behind restarts its log at the leader's log start (100): its old
        // snapshot (at 1, below 100) describes the log it threw away.
        p.with_log(|l| {
            l.truncate_fully_and_start_at(100).unwrap();
            p.restart_producer_state_from(l);
        });
        assert!(crate::producer_snapshot::offsets(&dir.path().join("restart-0")).is_empty());
        assert_eq!(p.producer_count(), 0);
    }

    /// One transactional record from producer `pid`, epoch 0, at sequence `seq`.
    fn transactional(pid: i64, seq: i32) -> bytes::Bytes {
        producer_record(pid, seq, true)
    }

    #[test]
    fn the_last_stable_offset_waits_for_open_transactions_and_aborts_are_indexed_durably() {
        use strom_storage::AbortedTxn;
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), "txn");
        let abort = TxnMarker { commit: false, coordinator_epoch: 0 };
        let commit = TxnMarker { commit: true, coordinator_epoch: 0 };
        p.append_as_leader(&one_record(), 0, None).unwrap(); // 0
        p.append_as_leader(&transactional(1, 0), 0, None).unwrap(); // 1: producer 1's opens
        p.append_as_leader(&transactional(2, 0), 0, None).unwrap(); // 2: producer 2's opens
        assert_eq!((p.high_watermark(), p.last_stable_offset()), (3, 1));

        assert_eq!(p.append_txn_marker(1, 0, abort, 0, 1).unwrap().info.first_offset, 3);
        assert_eq!(p.last_stable_offset(), 2, "producer 2's transaction is still open");
        let aborted = AbortedTxn { producer_id: 1, first_offset: 1, last_offset: 3, last_stable_offset: 2 };
        assert_eq!(p.aborted_txns(0, 10), vec![aborted]);
        assert_eq!(p.aborted_txns(4, 10), vec![], "nothing aborted from 4 on");
        p.append_txn_marker(2, 0, commit, 0, 1).unwrap(); // 4
        assert_eq!(p.last_stable_offset(), 5);
        assert!(matches!(
            p.append_txn_marker(1, -1, abort, 0, 1),
            Err(ReplicaError::ProducerSequence(crate::producer_state::INVALID_PRODUCER_EPOCH))
        ));
        p.append_as_leader(&transactional(2, 1), 0, None).unwrap(); // 5: producer 2's next
        assert_eq!(p.last_stable_offset(), 5);

        // Reopened (no snapshot: the state is replayed from the log): the same.
        drop(p);
        let p = leader(dir.path(), "txn");
        assert_eq!((p.high_watermark(), p.last_stable_offset()), (6, 5));
        assert_eq!(p.aborted_txns(0, 10), vec![aborted]);
        // From a snapshot: the open transaction is in it.
        p.snapshot_producers(true).unwrap();
        drop(p);
        let p = leader(dir.path(), "txn");
        assert_eq!(p.last_stable_offset(), 5);

        // A damaged transaction index is rebuilt from the whole log.
        drop(p);
        let index = dir.path().join("txn-0").join("00000000000000000000.txnindex");
        assert_eq!(std::fs::metadata(&index).unwrap().len(), 34);
        std::fs::write(&index, [7u8; 20]).unwrap();
        let p = leader(dir.path(), "txn");
        assert_eq!(p.aborted_txns(0, 10), vec![aborted]);
        assert_eq!(std::fs::metadata(&index).unwrap().len(), 34);
    }
}
