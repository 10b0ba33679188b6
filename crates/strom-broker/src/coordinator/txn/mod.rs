//! The transaction coordinator (KIP-98): each transactional id's producer id, epoch and open
//! transaction, kept in `__transaction_state`.
//!
//! Which broker coordinates an id: the leader of `__transaction_state` partition
//! `abs(java_hash(id)) % transaction.state.log.num.partitions`, as Kafka computes it. Its
//! **coordinator epoch** is that partition's leader epoch, written into every marker so a
//! partition refuses markers from a coordinator that was replaced (TRANSACTION_COORDINATOR_FENCED).
//!
//! **Rules, enforced here and in [`state`]:**
//! - One change of an id at a time: while a change is being written, another request for the
//!   id gets CONCURRENT_TRANSACTIONS (the client retries). A change is applied in memory only
//!   once its record is committed (acks=all), so a failover loses no acknowledged state.
//! - An EndTxn is answered once PrepareCommit/PrepareAbort is committed; the markers are then
//!   written on every partition of the transaction (by [`crate::apis`]'s completion driver,
//!   which retries until each partition took its marker or the topic is gone), and only then
//!   is CompleteCommit/CompleteAbort written.
//! - A broker that starts to lead a state partition loads it (replays it) before it answers
//!   for its ids, and resumes every transaction it finds half-ended (Prepare*): the markers
//!   are written again (a marker written twice ends nothing twice).
//! - A stale completion (its coordinator epoch is not the one this broker loaded the
//!   partition in) writes nothing: the load that replaced it resumed the transaction.
//! - An open transaction past its timeout is aborted under a bumped epoch (its producer is
//!   fenced); an idle id unused for `transactional.id.expiration.ms` is forgotten (tombstoned).
//!
//! **Lock order:** a load runs under the state log's load lock and takes this coordinator's
//! lock; so code holding this coordinator's lock never calls into the state log's loading
//! (`coordinator_partition`, `loaded_leader`): it asks [`StateLog::leads_in_epoch`] with the
//! epoch it recorded itself.

pub mod state;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strom_protocol::values::now_ms;

use crate::coordinator::state_log::StateLog;
use crate::replica::{Partition, ReplicaManager};
use state::{EndStep, InitStep, CONCURRENT_TRANSACTIONS};
pub use state::{InitRequest, TxnMetadata, TxnState};

pub use super::{COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR};

pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
/// How long a state write waits to be committed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker's transaction settings (Kafka's keys).
#[derive(Debug, Clone)]
pub struct TxnSettings {
    /// `transaction.state.log.num.partitions`.
    pub num_partitions: i32,
    /// `transaction.state.log.replication.factor`.
    pub replication_factor: i16,
    /// `transaction.state.log.min.isr`.
    pub min_isr: i32,
    /// `transaction.state.log.segment.bytes`.
    pub segment_bytes: u64,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_check_interval_ms: u64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub expiration_check_interval_ms: u64,
    /// `transaction.partition.verification.enable` (KIP-890).
    pub verification: bool,
}

impl Default for TxnSettings {
    fn default() -> Self {
        TxnSettings {
            num_partitions: 50,
            replication_factor: 1,
            min_isr: 1,
            segment_bytes: 104_857_600,
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
            abort_check_interval_ms: 10_000,
            expiration_check_interval_ms: 3_600_000,
            verification: true,
        }
    }
}

impl TxnSettings {
    /// The configs `__transaction_state` is created with: compacted, as Kafka's.
    pub fn topic_configs(&self) -> Vec<(String, String)> {
        vec![
            ("cleanup.policy".into(), "compact".into()),
            ("min.insync.replicas".into(), self.min_isr.to_string()),
            ("segment.bytes".into(), self.segment_bytes.to_string()),
        ]
    }
}

/// What InitProducerId gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    /// The producer id and epoch to use.
    Ready(i64, i16),
    /// An open transaction of the id is being aborted first: CONCURRENT_TRANSACTIONS, retry.
    AbortStarted,
}

/// A transaction as ListTransactions and DescribeTransactions show it.
#[derive(Debug, Clone)]
pub struct TxnListing {
    pub transactional_id: String,
    pub meta: TxnMetadata,
}

#[derive(Default)]
struct Inner {
    txns: HashMap<String, TxnMetadata>,
    /// Ids with a change being written (the one-change-at-a-time rule).
    changing: HashSet<String>,
    /// State partition → the leader epoch this broker loaded it in: its coordinator epoch.
    loaded: HashMap<i32, i32>,
    /// Ids whose transaction must be completed (markers, then Complete*).
    to_complete: BTreeSet<String>,
    /// Ids whose completion is running.
    completing: HashSet<String>,
}

pub struct TxnCoordinator {
    log: StateLog,
    pub settings: TxnSettings,
    inner: Mutex<Inner>,
    /// Wakes the completion driver when `to_complete` grows.
    pub completions: tokio::sync::Notify,
}

impl TxnCoordinator {
    pub fn new(replicas: Arc<ReplicaManager>, settings: TxnSettings) -> Self {
        TxnCoordinator {
            log: StateLog::new(TRANSACTION_STATE_TOPIC, replicas, settings.num_partitions),
            settings,
            inner: Mutex::new(Inner::default()),
            completions: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Does this broker coordinate `txn_id` now, in the epoch it loaded its partition in?
    /// (Safe under this coordinator's lock: the lock order in the module docs.)
    fn coordinates(&self, inner: &Inner, txn_id: &str) -> Option<i32> {
        let p = self.log.partition_of(txn_id);
        let epoch = *inner.loaded.get(&p)?;
        self.log.leads_in_epoch(p, epoch).then_some(epoch)
    }

    /// The state partition of `txn_id` and its coordinator epoch, if this broker coordinates
    /// it (loading the partition first when it leads it in a new epoch).
    fn coordinator(&self, txn_id: &str) -> Result<(Arc<Partition>, i32), i16> {
        let part = self.log.coordinator_partition(txn_id, |p, part| self.load(p, part))?;
        let p = self.log.partition_of(txn_id);
        let epoch = self.lock().loaded.get(&p).copied().ok_or(COORDINATOR_NOT_AVAILABLE)?;
        Ok((part, epoch))
    }

    /// Loads every state partition this broker leads and has not loaded in its leader epoch,
    /// so half-ended transactions there are resumed without waiting for a request.
    pub fn load_led_partitions(&self) {
        for p in 0..self.log.num_partitions() {
            if self.log.leads_partition(p) && self.log.loaded_leader(p).is_none() {
                if let Err(code) = self.log.load_partition(p, |p, part| self.load(p, part)) {
                    tracing::warn!(node = self.log.node_id(), partition = p, code, "transaction state not loaded");
                }
            }
        }
    }

    /// Replays state partition `p` (the coordinator's rules in the module docs).
    fn load(&self, p: i32, part: &Partition) -> Result<(), i16> {
        let epoch = part.role().leader_epoch;
        // From here a completion of the previous epoch writes nothing; one that wrote before
        // is in the log this load replays. What an earlier leadership left in memory goes now,
        // so nothing answers from it under the new epoch before the replay replaces it.
        {
            let mut inner = self.lock();
            inner.loaded.insert(p, epoch);
            inner.txns.retain(|id, _| self.log.partition_of(id) != p);
            inner.to_complete.retain(|id| self.log.partition_of(id) != p);
        }
        let node_id = self.log.node_id();
        let mut found: HashMap<String, TxnMetadata> = HashMap::new();
        let records = self.log.replay(p, part, |r| {
            let Some(key) = r.key else { return };
            let Ok(id) = String::from_utf8(key.to_vec()) else {
                tracing::warn!(node = node_id, partition = p, "transaction state record with a non-UTF-8 key skipped");
                return;
            };
            match r.value.map(|v| serde_json::from_slice::<TxnMetadata>(&v)) {
                None => {
                    found.remove(&id);
                }
                Some(Ok(m)) => {
                    found.insert(id, m);
                }
                Some(Err(e)) => {
                    tracing::warn!(node = node_id, partition = p, error = %e, "unreadable transaction state skipped")
                }
            }
        })?;
        let ids = found.len();
        let mut inner = self.lock();
        inner.txns.retain(|id, _| self.log.partition_of(id) != p);
        let mut resumed = 0;
        for (id, m) in found {
            if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                inner.to_complete.insert(id.clone());
                resumed += 1;
            }
            inner.txns.insert(id, m);
        }
        drop(inner);
        if resumed > 0 {
            self.completions.notify_one();
        }
        tracing::info!(
            node = node_id,
            partition = p,
            coordinator_epoch = epoch,
            records,
            ids,
            resumed,
            "loaded transaction state"
        );
        Ok(())
    }

    /// Writes the change `decide` makes to `txn_id`'s state (None: nothing to write) and
    /// applies it once committed. Returns what was written.
    async fn change(
        &self,
        txn_id: &str,
        decide: impl FnOnce(Option<&TxnMetadata>) -> Result<Option<TxnMetadata>, i16>,
    ) -> Result<Option<TxnMetadata>, i16> {
        self.change_in(txn_id, None, decide).await
    }

    /// [`Self::change`], only while this broker coordinates `txn_id` in `expected_epoch`
    /// (when given): else NOT_COORDINATOR.
    async fn change_in(
        &self,
        txn_id: &str,
        expected_epoch: Option<i32>,
        decide: impl FnOnce(Option<&TxnMetadata>) -> Result<Option<TxnMetadata>, i16>,
    ) -> Result<Option<TxnMetadata>, i16> {
        let (part, epoch) = self.coordinator(txn_id)?;
        if expected_epoch.is_some_and(|e| e != epoch) {
            return Err(NOT_COORDINATOR);
        }
        let p = self.log.partition_of(txn_id);
        let (next, appended) = {
            let mut inner = self.lock();
            if inner.changing.contains(txn_id) {
                return Err(CONCURRENT_TRANSACTIONS);
            }
            let Some(next) = decide(inner.txns.get(txn_id))? else { return Ok(None) };
            if inner.loaded.get(&p) != Some(&epoch) {
                return Err(NOT_COORDINATOR);
            }
            let value = serde_json::to_vec(&next).map_err(|_| COORDINATOR_NOT_AVAILABLE)?;
            let appended = self.log.start_append(&part, &[(txn_id.as_bytes().to_vec(), Some(value))])?;
            inner.changing.insert(txn_id.to_string());
            (next, appended)
        };
        let committed = self.log.wait_committed(&part, appended, WRITE_TIMEOUT).await;
        let mut inner = self.lock();
        inner.changing.remove(txn_id);
        committed?;
        if inner.loaded.get(&p) != Some(&epoch) {
            return Err(NOT_COORDINATOR);
        }
        inner.txns.insert(txn_id.to_string(), next.clone());
        Ok(Some(next))
    }

    /// Does InitProducerId for `txn_id` need a new producer id (a new id, or its epoch ran
    /// out)? The caller allocates one from the controller before [`Self::init_producer_id`].
    pub fn needs_producer_id(&self, txn_id: &str) -> Result<bool, i16> {
        self.coordinator(txn_id)?;
        Ok(self.lock().txns.get(txn_id).is_none_or(|m| m.producer_epoch >= i16::MAX - 1))
    }

    /// InitProducerId for `txn_id` (rules in [`state::init_producer_id`]); `new_producer_id`
    /// is the id allocated when [`Self::needs_producer_id`] said so.
    pub async fn init_producer_id(
        &self,
        txn_id: &str,
        req: InitRequest,
        new_producer_id: Option<i64>,
    ) -> Result<InitOutcome, i16> {
        if req.timeout_ms <= 0 || req.timeout_ms > self.settings.max_timeout_ms {
            return Err(INVALID_TRANSACTION_TIMEOUT);
        }
        let mut outcome = None;
        let written = self
            .change(txn_id, |cur| {
                // Another InitProducerId may have taken the id's first producer id meanwhile.
                let alloc = || new_producer_id.ok_or(CONCURRENT_TRANSACTIONS);
                match state::init_producer_id(cur, req, now_ms(), alloc)? {
                    InitStep::Write(m) => Ok(Some(m)),
                    InitStep::Answer(m) => {
                        outcome = Some(InitOutcome::Ready(m.producer_id, m.producer_epoch));
                        Ok(None)
                    }
                    InitStep::AbortFirst(m) => {
                        outcome = Some(InitOutcome::AbortStarted);
                        Ok(Some(m))
                    }
                }
            })
            .await?;
        match (outcome, written) {
            (Some(InitOutcome::AbortStarted), _) => {
                tracing::info!(
                    node = self.log.node_id(),
                    transactional_id = txn_id,
                    "open transaction aborted: a new producer initialised"
                );
                self.queue_completion(txn_id);
                Ok(InitOutcome::AbortStarted)
            }
            (Some(ready), _) => Ok(ready),
            (None, Some(m)) => Ok(InitOutcome::Ready(m.producer_id, m.producer_epoch)),
            (None, None) => Err(COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn.
    pub async fn add_partitions(
        &self,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), i16> {
        self.change(txn_id, |cur| state::add_partitions(cur, producer_id, epoch, partitions, now_ms())).await?;
        Ok(())
    }

    /// Transaction verification (KIP-890): is `topic`-`partition` in the open transaction of
    /// `txn_id`, by `producer_id` at `epoch`? A leader asks before it takes the first
    /// transactional batch of a producer's transaction, so a batch outside every transaction
    /// (a late retry of an aborted one, a buggy client) never opens one no marker will end.
    pub fn verify(&self, txn_id: &str, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> Result<(), i16> {
        self.coordinator(txn_id)?;
        let inner = self.lock();
        state::verify(inner.txns.get(txn_id), producer_id, epoch, topic, partition)
    }

    /// EndTxn: answered once Prepare* is committed; the markers follow.
    pub async fn end_txn(&self, txn_id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<(), i16> {
        let written = self
            .change(txn_id, |cur| match state::end_txn(cur, producer_id, epoch, commit, now_ms())? {
                EndStep::Prepare(m) => Ok(Some(m)),
                EndStep::AlreadyDone => Ok(None),
            })
            .await?;
        if written.is_some() {
            self.queue_completion(txn_id);
        }
        Ok(())
    }

    fn queue_completion(&self, txn_id: &str) {
        self.lock().to_complete.insert(txn_id.to_string());
        self.completions.notify_one();
    }

    /// Ids queued for completion and not being completed; each is marked as being completed
    /// until [`Self::completion_ended`].
    pub fn take_completions(&self) -> Vec<String> {
        let mut inner = self.lock();
        let queued: Vec<String> = std::mem::take(&mut inner.to_complete).into_iter().collect();
        let mut out = Vec::new();
        for id in queued {
            if inner.completing.insert(id.clone()) {
                out.push(id);
            } else {
                // Running already: it looks again before it stops.
                inner.to_complete.insert(id);
            }
        }
        out
    }

    /// A completion of `txn_id` stopped (done, or no longer this broker's).
    pub fn completion_ended(&self, txn_id: &str) {
        let mut inner = self.lock();
        inner.completing.remove(txn_id);
        if inner.to_complete.contains(txn_id) {
            drop(inner);
            self.completions.notify_one();
        }
    }

    /// The half-ended transaction of `txn_id` and the coordinator epoch to write its markers
    /// with, while this broker coordinates it in that epoch.
    pub fn prepared(&self, txn_id: &str) -> Option<(TxnMetadata, i32)> {
        let inner = self.lock();
        let epoch = self.coordinates(&inner, txn_id)?;
        let m = inner.txns.get(txn_id)?;
        if !matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return None;
        }
        Some((m.clone(), epoch))
    }

    /// Every marker of `prepared` is written: CompleteCommit/CompleteAbort, if the state is
    /// still `prepared` and this broker still coordinates it in `epoch`.
    pub async fn complete(&self, txn_id: &str, prepared: &TxnMetadata, epoch: i32) -> Result<(), i16> {
        self.change_in(txn_id, Some(epoch), |cur| {
            if cur != Some(prepared) {
                return Err(NOT_COORDINATOR);
            }
            Ok(Some(state::complete(prepared, now_ms())))
        })
        .await?;
        Ok(())
    }

    /// Aborts every loaded open transaction past its timeout (its producer fenced by a bumped
    /// epoch). Returns how many.
    pub async fn abort_timed_out(&self) -> usize {
        let now = now_ms();
        let due: Vec<String> = {
            let inner = self.lock();
            inner
                .txns
                .iter()
                .filter(|(id, m)| {
                    state::abort_timed_out(m, now).is_some()
                        && !inner.changing.contains(*id)
                        && self.coordinates(&inner, id).is_some()
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut aborted = 0;
        for id in due {
            let r = self.change(&id, |cur| Ok(cur.and_then(|m| state::abort_timed_out(m, now_ms())))).await;
            match r {
                Ok(Some(m)) => {
                    tracing::info!(
                        node = self.log.node_id(),
                        transactional_id = %id,
                        producer_id = m.producer_id,
                        timeout_ms = m.timeout_ms,
                        "transaction timed out: aborted, producer fenced"
                    );
                    self.queue_completion(&id);
                    aborted += 1;
                }
                Ok(None) => {}
                Err(code) => {
                    tracing::debug!(node = self.log.node_id(), transactional_id = %id, code, "timed-out transaction not aborted now")
                }
            }
        }
        aborted
    }

    /// Forgets idle ids unused for `transactional.id.expiration.ms` (a tombstone each).
    pub async fn expire_ids(&self) -> usize {
        let now = now_ms();
        let expiration = self.settings.id_expiration_ms;
        let due: Vec<String> = {
            let inner = self.lock();
            inner
                .txns
                .iter()
                .filter(|(id, m)| {
                    state::is_expired(m, now, expiration)
                        && !inner.changing.contains(*id)
                        && self.coordinates(&inner, id).is_some()
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut expired = 0;
        for id in due {
            if self.tombstone(&id, now, expiration).await.is_ok_and(|done| done) {
                expired += 1;
            }
        }
        expired
    }

    async fn tombstone(&self, txn_id: &str, now: i64, expiration: i64) -> Result<bool, i16> {
        let (part, epoch) = self.coordinator(txn_id)?;
        let p = self.log.partition_of(txn_id);
        let appended = {
            let mut inner = self.lock();
            let still_expired = inner.txns.get(txn_id).is_some_and(|m| state::is_expired(m, now, expiration));
            if !still_expired || inner.changing.contains(txn_id) || inner.loaded.get(&p) != Some(&epoch) {
                return Ok(false);
            }
            let appended = self.log.start_append(&part, &[(txn_id.as_bytes().to_vec(), None)])?;
            inner.changing.insert(txn_id.to_string());
            appended
        };
        let committed = self.log.wait_committed(&part, appended, WRITE_TIMEOUT).await;
        let mut inner = self.lock();
        inner.changing.remove(txn_id);
        committed?;
        inner.txns.remove(txn_id);
        tracing::info!(node = self.log.node_id(), transactional_id = txn_id, "transactional id expired");
        Ok(true)
    }

    /// The ids this broker coordinates now, with their state.
    pub fn list(&self) -> Vec<TxnListing> {
        let inner = self.lock();
        inner
            .txns
            .iter()
            .filter(|(id, _)| self.coordinates(&inner, id).is_some())
            .map(|(id, m)| TxnListing { transactional_id: id.clone(), meta: m.clone() })
            .collect()
    }

    /// `txn_id`'s state, if this broker coordinates it (loading first if needed).
    pub fn describe(&self, txn_id: &str) -> Result<Option<TxnMetadata>, i16> {
        self.coordinator(txn_id)?;
        Ok(self.lock().txns.get(txn_id).cloned())
    }
}
