//! One transactional id's state and the transitions the transaction APIs ask of it, as pure
//! functions: each takes the state now and the request, and answers with the state to write
//! (or a Kafka error code). [`super::TxnCoordinator`] writes it and applies it once committed.
//!
//! **Transitions (Kafka's `TransactionMetadata`):**
//! ```text
//!   Empty ──AddPartitions──▶ Ongoing ──EndTxn(commit)──▶ PrepareCommit ──markers──▶ CompleteCommit
//!     ▲                         │    ──EndTxn(abort)───▶ PrepareAbort  ──markers──▶ CompleteAbort
//!     │                         └─ timeout / InitProducerId: epoch bumped, then PrepareAbort
//!   CompleteCommit / CompleteAbort ──AddPartitions──▶ Ongoing (a new transaction)
//!   Empty / Complete* ──InitProducerId──▶ the same state, epoch + 1
//!   Empty / Complete*, unused for `transactional.id.expiration.ms` ──▶ gone (a tombstone)
//! ```
//! A request from a producer id other than the id's is INVALID_PRODUCER_ID_MAPPING, from an
//! older epoch PRODUCER_FENCED; while a commit or abort is being completed (Prepare*), a
//! request that needs another state gets CONCURRENT_TRANSACTIONS and the client retries.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub const CONCURRENT_TRANSACTIONS: i16 = 51;
pub const INVALID_TXN_STATE: i16 = 48;
pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const PRODUCER_FENCED: i16 = 90;

/// The last epoch a producer id may have: past it, InitProducerId gives a new producer id.
const MAX_EPOCH: i16 = i16::MAX - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name (ListTransactions, DescribeTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// No transaction open or ending: the id may start one, or expire.
    pub fn is_idle(self) -> bool {
        matches!(self, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort)
    }
}

/// A transactional id's state, as written to `__transaction_state` (JSON, keyed by the id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub producer_id: i64,
    /// The producer id before the last one (when the epoch ran out), else -1.
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, else -1: an InitProducerId retried after its answer
    /// was lost names it (KIP-360) and gets the current epoch back.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Wall-clock ms when the open transaction started (-1: none).
    pub txn_start_ms: i64,
    pub last_update_ms: i64,
}

/// What InitProducerId asks.
#[derive(Debug, Clone, Copy)]
pub struct InitRequest {
    pub timeout_ms: i32,
    /// KIP-360: the producer id and epoch the client had, when it has one.
    pub expected: Option<(i64, i16)>,
}

/// What an InitProducerId does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStep {
    /// Write this; answer with its producer id and epoch.
    Write(TxnMetadata),
    /// A retried request whose bump was written already: answer with this, write nothing.
    Answer(TxnMetadata),
    /// A transaction is open: abort it under a bumped epoch (fencing its producer), then
    /// answer CONCURRENT_TRANSACTIONS; the client retries and gets the next epoch.
    AbortFirst(TxnMetadata),
}

/// The transition of InitProducerId. `current` is `None` for an id never seen; `new_producer_id`
/// allocates one (a new id, or an epoch run out).
pub fn init_producer_id(
    current: Option<&TxnMetadata>,
    req: InitRequest,
    now_ms: i64,
    new_producer_id: impl FnOnce() -> Result<i64, i16>,
) -> Result<InitStep, i16> {
    let Some(cur) = current else {
        if req.expected.is_some_and(|(pid, _)| pid >= 0) {
            // A producer id this coordinator never gave to this transactional id.
            return Err(INVALID_PRODUCER_ID_MAPPING);
        }
        return Ok(InitStep::Write(TxnMetadata {
            producer_id: new_producer_id()?,
            last_producer_id: -1,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms: req.timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            txn_start_ms: -1,
            last_update_ms: now_ms,
        }));
    };
    // KIP-360: a client that names its producer must name the current one (or, retrying a
    // bump, the one just before it).
    let retry_of_last_bump = match req.expected {
        None => false,
        Some((pid, _)) if pid < 0 => false,
        Some((pid, epoch)) => {
            let current = pid == cur.producer_id && epoch == cur.producer_epoch;
            let previous = (pid == cur.producer_id && epoch == cur.last_producer_epoch && cur.last_producer_epoch >= 0)
                || (pid == cur.last_producer_id && cur.last_producer_id >= 0);
            if !current && !previous {
                return Err(PRODUCER_FENCED);
            }
            previous && !current
        }
    };
    match cur.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(CONCURRENT_TRANSACTIONS),
        TxnState::Ongoing => {
            let mut next = cur.clone();
            bump_epoch_for_fencing(&mut next);
            next.state = TxnState::PrepareAbort;
            next.last_update_ms = now_ms;
            Ok(InitStep::AbortFirst(next))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            if retry_of_last_bump {
                return Ok(InitStep::Answer(cur.clone()));
            }
            let mut next = cur.clone();
            if cur.producer_epoch >= MAX_EPOCH {
                next.last_producer_id = cur.producer_id;
                next.producer_id = new_producer_id()?;
                next.producer_epoch = 0;
                next.last_producer_epoch = -1;
            } else {
                next.last_producer_epoch = cur.producer_epoch;
                next.producer_epoch = cur.producer_epoch + 1;
            }
            next.timeout_ms = req.timeout_ms;
            next.state = TxnState::Empty;
            next.partitions.clear();
            next.txn_start_ms = -1;
            next.last_update_ms = now_ms;
            Ok(InitStep::Write(next))
        }
    }
}

/// An abort forced on a producer (its timeout, or a new producer's InitProducerId) bumps its
/// epoch, so the markers written with it fence the old producer on every partition. The old
/// epoch is not remembered as "the last one": the fenced producer must not pass for a client
/// retrying a lost InitProducerId (KIP-360) and get the new epoch (Kafka's
/// prepareFenceProducerEpoch). It may reach i16::MAX; the next InitProducerId then gives a
/// new producer id.
fn bump_epoch_for_fencing(m: &mut TxnMetadata) {
    m.producer_epoch = m.producer_epoch.saturating_add(1);
    m.last_producer_epoch = -1;
}

/// The checks every request of a producer inside its transaction passes first.
fn check_producer(current: Option<&TxnMetadata>, producer_id: i64, epoch: i16) -> Result<&TxnMetadata, i16> {
    let cur = current.ok_or(INVALID_PRODUCER_ID_MAPPING)?;
    if cur.producer_id != producer_id {
        return Err(INVALID_PRODUCER_ID_MAPPING);
    }
    if cur.producer_epoch != epoch {
        return Err(PRODUCER_FENCED);
    }
    Ok(cur)
}

/// AddPartitionsToTxn (and AddOffsetsToTxn, which adds the group's offsets partition):
/// `Ok(None)` when every partition is in the transaction already.
pub fn add_partitions(
    current: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    now_ms: i64,
) -> Result<Option<TxnMetadata>, i16> {
    let cur = check_producer(current, producer_id, epoch)?;
    match cur.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(CONCURRENT_TRANSACTIONS),
        TxnState::Ongoing if partitions.iter().all(|tp| cur.partitions.contains(tp)) => Ok(None),
        TxnState::Ongoing | TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            let mut next = cur.clone();
            if cur.state != TxnState::Ongoing {
                next.partitions.clear();
                next.txn_start_ms = now_ms;
            }
            next.state = TxnState::Ongoing;
            next.partitions.extend(partitions.iter().cloned());
            next.last_update_ms = now_ms;
            Ok(Some(next))
        }
    }
}

/// The check of TxnOffsetCommit (the group coordinator asks it of the producer's epoch only:
/// the transaction coordinator is elsewhere).
pub fn check_in_transaction(current: Option<&TxnMetadata>, producer_id: i64, epoch: i16) -> Result<(), i16> {
    let cur = check_producer(current, producer_id, epoch)?;
    match cur.state {
        TxnState::Ongoing => Ok(()),
        _ => Err(INVALID_TXN_STATE),
    }
}

/// Transaction verification: the partition is in the producer's open transaction.
pub fn verify(
    current: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<(), i16> {
    let cur = check_producer(current, producer_id, epoch)?;
    let added = cur.partitions.iter().any(|(t, p)| t == topic && *p == partition);
    if cur.state == TxnState::Ongoing && added {
        Ok(())
    } else {
        Err(INVALID_TXN_STATE)
    }
}

/// What an EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndStep {
    /// Write this (PrepareCommit or PrepareAbort), then the markers.
    Prepare(TxnMetadata),
    /// A retry of an end already done: nothing to do.
    AlreadyDone,
}

/// The transition of EndTxn.
pub fn end_txn(
    current: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<EndStep, i16> {
    let cur = check_producer(current, producer_id, epoch)?;
    match (cur.state, commit) {
        (TxnState::Ongoing, _) => {
            let mut next = cur.clone();
            next.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
            next.last_update_ms = now_ms;
            Ok(EndStep::Prepare(next))
        }
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(EndStep::AlreadyDone),
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(CONCURRENT_TRANSACTIONS),
        _ => Err(INVALID_TXN_STATE),
    }
}

/// The transaction's end once every marker is written: Complete*, no partitions.
pub fn complete(prepared: &TxnMetadata, now_ms: i64) -> TxnMetadata {
    let mut next = prepared.clone();
    next.state = match prepared.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        _ => TxnState::CompleteAbort,
    };
    next.partitions.clear();
    next.last_update_ms = now_ms;
    next
}

/// An open transaction past its timeout: aborted under a bumped epoch (the producer is
/// fenced), as Kafka's coordinator does.
pub fn abort_timed_out(current: &TxnMetadata, now_ms: i64) -> Option<TxnMetadata> {
    if current.state != TxnState::Ongoing || now_ms < current.txn_start_ms.saturating_add(current.timeout_ms as i64) {
        return None;
    }
    let mut next = current.clone();
    bump_epoch_for_fencing(&mut next);
    next.state = TxnState::PrepareAbort;
    next.last_update_ms = now_ms;
    Some(next)
}

/// An idle id unused for `expiration_ms` (`transactional.id.expiration.ms`) is forgotten.
pub fn is_expired(current: &TxnMetadata, now_ms: i64, expiration_ms: i64) -> bool {
    current.state.is_idle() && now_ms.saturating_sub(current.last_update_ms) >= expiration_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(cur: Option<&TxnMetadata>, expected: Option<(i64, i16)>) -> Result<InitStep, i16> {
        init_producer_id(cur, InitRequest { timeout_ms: 60_000, expected }, 1_000, || Ok(7))
    }

    fn written(step: Result<InitStep, i16>) -> TxnMetadata {
        match step {
            Ok(InitStep::Write(m)) => m,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    #[test]
    fn a_new_id_gets_a_producer_id_at_epoch_0_and_each_init_bumps_it() {
        let m = written(init(None, None));
        assert_eq!((m.producer_id, m.producer_epoch, m.state), (7, 0, TxnState::Empty));
        let m2 = written(init(Some(&m), None));
        assert_eq!((m2.producer_id, m2.producer_epoch, m2.last_producer_epoch), (7, 1, 0));
        // KIP-360: the retry of that bump (naming epoch 0) gets epoch 1 back, unwritten.
        assert_eq!(init(Some(&m2), Some((7, 0))), Ok(InitStep::Answer(m2.clone())));
        // Naming the current epoch bumps again; naming anything else is fenced.
        assert_eq!(written(init(Some(&m2), Some((7, 1)))).producer_epoch, 2);
        assert_eq!(init(Some(&m2), Some((8, 1))), Err(PRODUCER_FENCED));
        assert_eq!(init(None, Some((8, 0))), Err(INVALID_PRODUCER_ID_MAPPING));
    }

    #[test]
    fn an_exhausted_epoch_gets_a_new_producer_id() {
        let mut m = written(init(None, None));
        m.producer_id = 3;
        m.producer_epoch = MAX_EPOCH;
        let next = written(init(Some(&m), None));
        assert_eq!((next.producer_id, next.producer_epoch, next.last_producer_id), (7, 0, 3));
    }

    #[test]
    fn init_during_an_open_transaction_aborts_it_under_a_bumped_epoch() {
        let m = written(init(None, None));
        let open = add_partitions(Some(&m), 7, 0, &[tp("t", 0)], 2_000).unwrap().unwrap();
        match init(Some(&open), None) {
            Ok(InitStep::AbortFirst(a)) => {
                assert_eq!((a.state, a.producer_epoch), (TxnState::PrepareAbort, 1));
                assert_eq!(a.partitions.len(), 1);
                // The fenced producer cannot pass for a retry of a lost bump (KIP-360).
                assert_eq!(init(Some(&complete(&a, 3_500)), Some((7, 0))), Err(PRODUCER_FENCED));
                // The old producer is fenced from here on.
                assert_eq!(end_txn(Some(&a), 7, 0, true, 3_000), Err(PRODUCER_FENCED));
                // And a retried InitProducerId waits for the abort to complete.
                assert_eq!(init(Some(&a), None), Err(CONCURRENT_TRANSACTIONS));
                let done = complete(&a, 4_000);
                assert_eq!(written(init(Some(&done), None)).producer_epoch, 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transaction_goes_ongoing_prepare_complete() {
        let m = written(init(None, None));
        assert_eq!(add_partitions(None, 7, 0, &[tp("t", 0)], 1), Err(INVALID_PRODUCER_ID_MAPPING));
        assert_eq!(add_partitions(Some(&m), 8, 0, &[tp("t", 0)], 1), Err(INVALID_PRODUCER_ID_MAPPING));
        assert_eq!(add_partitions(Some(&m), 7, 1, &[tp("t", 0)], 1), Err(PRODUCER_FENCED));
        let open = add_partitions(Some(&m), 7, 0, &[tp("t", 0)], 5).unwrap().unwrap();
        assert_eq!((open.state, open.txn_start_ms), (TxnState::Ongoing, 5));
        // Adding what is there already writes nothing; more partitions are added.
        assert_eq!(add_partitions(Some(&open), 7, 0, &[tp("t", 0)], 6), Ok(None));
        let open = add_partitions(Some(&open), 7, 0, &[tp("u", 1)], 7).unwrap().unwrap();
        assert_eq!(open.partitions.len(), 2);
        assert_eq!(open.txn_start_ms, 5);
        assert_eq!(check_in_transaction(Some(&open), 7, 0), Ok(()));
        assert_eq!(verify(Some(&open), 7, 0, "u", 1), Ok(()));
        assert_eq!(verify(Some(&open), 7, 0, "u", 2), Err(INVALID_TXN_STATE), "not added");
        assert_eq!(verify(Some(&open), 7, 1, "u", 1), Err(PRODUCER_FENCED));
        assert_eq!(verify(Some(&m), 7, 0, "u", 1), Err(INVALID_TXN_STATE), "no transaction open");
        let prepared = match end_txn(Some(&open), 7, 0, true, 8) {
            Ok(EndStep::Prepare(p)) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert_eq!(add_partitions(Some(&prepared), 7, 0, &[tp("t", 0)], 9), Err(CONCURRENT_TRANSACTIONS));
        assert_eq!(end_txn(Some(&prepared), 7, 0, true, 9), Err(CONCURRENT_TRANSACTIONS));
        assert_eq!(end_txn(Some(&prepared), 7, 0, false, 9), Err(INVALID_TXN_STATE));
        let done = complete(&prepared, 10);
        assert_eq!((done.state, done.partitions.len()), (TxnState::CompleteCommit, 0));
        assert_eq!(end_txn(Some(&done), 7, 0, true, 11), Ok(EndStep::AlreadyDone));
        assert_eq!(end_txn(Some(&done), 7, 0, false, 11), Err(INVALID_TXN_STATE));
        assert_eq!(check_in_transaction(Some(&done), 7, 0), Err(INVALID_TXN_STATE));
        // The next transaction starts afresh.
        let next = add_partitions(Some(&done), 7, 0, &[tp("v", 0)], 12).unwrap().unwrap();
        assert_eq!((next.partitions.len(), next.txn_start_ms), (1, 12));
        // An empty id has nothing to end.
        assert_eq!(end_txn(Some(&m), 7, 0, true, 1), Err(INVALID_TXN_STATE));
    }

    #[test]
    fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
        let m = written(init(None, None));
        let open = add_partitions(Some(&m), 7, 0, &[tp("t", 0)], 1_000).unwrap().unwrap();
        assert_eq!(abort_timed_out(&open, 60_999), None);
        let a = abort_timed_out(&open, 61_000).unwrap();
        assert_eq!((a.state, a.producer_epoch), (TxnState::PrepareAbort, 1));
        assert_eq!(abort_timed_out(&m, 1_000_000), None);
    }

    #[test]
    fn only_idle_ids_expire() {
        let m = written(init(None, None));
        assert!(!is_expired(&m, 1_500, 1_000));
        assert!(is_expired(&m, 2_000, 1_000));
        let open = add_partitions(Some(&m), 7, 0, &[tp("t", 0)], 1_000).unwrap().unwrap();
        assert!(!is_expired(&open, 1_000_000, 1_000));
    }
}
