//! Idempotent producer state of one partition (KIP-98): for each producer id, its epoch and
//! the sequence ranges and offsets of its last five batches.
//!
//! **Rules (Kafka's), enforced by [`ProducerStates::check`] before a leader appends:**
//! - A batch whose producer epoch is older than the one known: INVALID_PRODUCER_EPOCH.
//! - A batch equal (epoch, first and last sequence) to one of the last five: a duplicate (a
//!   retry): it is not written again and the producer gets the offsets it was written at.
//! - A new epoch must start at sequence 0; within an epoch a batch must start right after the
//!   last sequence (wrapping at i32::MAX): otherwise OUT_OF_ORDER_SEQUENCE_NUMBER.
//! - A producer id with no state (new, or whose batches are all gone) is accepted at any
//!   sequence.
//! - **Ours, not Kafka's:** a batch whose only fault is a gap left by a batch this leader
//!   refused for lack of in-sync replicas (the next expected sequence, refused with
//!   NOT_ENOUGH_REPLICAS) gets NOT_ENOUGH_REPLICAS too, not OUT_OF_ORDER_SEQUENCE_NUMBER. A
//!   client with several requests in flight sees the first refused for lack of replicas
//!   and, when the ISR grew in between, the next one refused as out of order. librdkafka
//!   answers that by bumping its producer epoch for every partition, and re-sends batches
//!   whose fate it did not know under the new epoch, where no sequence check can tell them
//!   for retries: duplicates (librdkafka issue #4953, seen in our chaos test). The client
//!   retries both requests in order instead.
//!
//! Every replica keeps this state as it appends (leader and follower paths alike) and rebuilds
//! it from its log on open and after truncation, so a new leader knows every batch its
//! predecessor acknowledged and a retried batch is never written twice across a failover.
//!
//! **Transactions (KIP-98), as Kafka's ProducerStateManager:** a producer's first
//! transactional batch after a marker opens its transaction at that batch's first offset;
//! its next transaction marker (a control batch the transaction coordinator has the leader
//! write) ends it, commit or abort. A marker from an older producer epoch is refused with
//! INVALID_PRODUCER_EPOCH, one from an older coordinator epoch with
//! TRANSACTION_COORDINATOR_FENCED; a newer epoch in a marker becomes the producer's epoch.
//! The partition's first unstable offset is the first offset of its earliest transaction
//! that is open, or ended by a marker not yet below the high watermark: the last stable
//! offset (LSO) is the high watermark or that, whichever is lower, and read_committed
//! consumers read only below it. An aborted transaction becomes an entry of the log's
//! transaction index ([`strom_storage::AbortedTxn`]). A producer with an open transaction is
//! never expired.
//!
//! **Expiry (Kafka's `producer.id.expiration.ms`):** a producer whose last batch's timestamp
//! is that old is forgotten ([`ProducerStates::expire`]), so the state stays bounded however
//! many short-lived producers come and go. The batch timestamps come from the log, so every
//! replica, and a replica rebuilding from its log, forgets the same producers.

use std::collections::{BTreeMap, HashMap, VecDeque};

use strom_protocol::batch::{BatchView, TxnMarker};
use strom_storage::AbortedTxn;

pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_TXN_STATE: i16 = 48;
pub const TRANSACTION_COORDINATOR_FENCED: i16 = 52;

/// Batches remembered per producer (Kafka's max.in.flight.requests.per.connection bound).
const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchRecord {
    first_seq: i32,
    last_seq: i32,
    first_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchRecord>,
    /// The max timestamp of the producer's last batch (what expiry measures from).
    last_timestamp: i64,
    /// The epoch of the transaction coordinator that wrote its last marker (-1: none).
    coordinator_epoch: i32,
    /// The first offset of its open transaction.
    txn_first_offset: Option<i64>,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            batches: VecDeque::new(),
            last_timestamp: 0,
            coordinator_epoch: -1,
            txn_first_offset: None,
        }
    }
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    /// Already written at these offsets.
    Duplicate {
        first_offset: i64,
        last_offset: i64,
    },
    Refuse(i16),
}

/// The header fields idempotence needs, from one batch.
#[derive(Debug, Clone, Copy)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    /// The batch's max timestamp.
    pub max_timestamp: i64,
    /// Part of a transaction.
    pub transactional: bool,
}

impl ProducerBatch {
    /// `None` for batches without a producer id (not idempotent) or without sequences.
    pub fn of(v: &BatchView<'_>) -> Option<Self> {
        if v.producer_id() < 0 || v.base_sequence() < 0 {
            return None;
        }
        let last_seq = v.base_sequence().wrapping_add(v.last_offset_delta()) & i32::MAX;
        Some(ProducerBatch {
            producer_id: v.producer_id(),
            epoch: v.producer_epoch(),
            first_seq: v.base_sequence(),
            last_seq,
            max_timestamp: v.max_timestamp(),
            transactional: v.is_transactional(),
        })
    }
}

/// One producer's state as DescribeProducers reports it (-1: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerDescription {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    pub txn_start_offset: i64,
}

/// A transaction marker with the producer it is for (from a control batch, or about to be
/// written in one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub marker: TxnMarker,
    pub timestamp: i64,
}

impl MarkerBatch {
    pub fn of(v: &BatchView<'_>) -> Option<Self> {
        let marker = TxnMarker::of(v)?;
        Some(MarkerBatch {
            producer_id: v.producer_id(),
            epoch: v.producer_epoch(),
            marker,
            timestamp: v.max_timestamp(),
        })
    }
}

#[derive(Debug, Default)]
pub struct ProducerStates {
    by_id: HashMap<i64, ProducerEntry>,
    /// Per producer id: (epoch, first sequence) of the last batch refused for lack of
    /// in-sync replicas, until the producer's next append.
    refused_for_isr: HashMap<i64, (i16, i32)>,
    /// Open transactions: first offset → producer id.
    open_txns: BTreeMap<i64, i64>,
    /// Transactions ended by a marker that may not be below the high watermark yet: first
    /// offset → the marker's offset. They hold the LSO back until the marker is committed.
    ended_txns: BTreeMap<i64, i64>,
    /// Transaction verifications under way (KIP-890's verification guard): producer id →
    /// (epoch, token). A marker of the producer removes its entry, so a batch verified before
    /// the transaction ended cannot open a transaction after it.
    verifying: HashMap<i64, (i16, u64)>,
    next_token: u64,
}

/// A transactional data batch without sequences (a coordinator's): its producer id and epoch.
pub fn coordinator_txn(v: &BatchView<'_>) -> Option<(i64, i16)> {
    (v.is_transactional() && !v.is_control() && v.producer_id() >= 0 && v.base_sequence() < 0)
        .then(|| (v.producer_id(), v.producer_epoch()))
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (next == 0 && last == i32::MAX)
}

impl ProducerStates {
    pub fn check(&self, b: &ProducerBatch) -> SequenceCheck {
        let Some(e) = self.by_id.get(&b.producer_id) else { return SequenceCheck::Append };
        if b.epoch < e.epoch {
            return SequenceCheck::Refuse(INVALID_PRODUCER_EPOCH);
        }
        if b.epoch == e.epoch {
            if let Some(d) = e.batches.iter().find(|r| r.first_seq == b.first_seq && r.last_seq == b.last_seq) {
                return SequenceCheck::Duplicate { first_offset: d.first_offset, last_offset: d.last_offset };
            }
            match e.batches.back() {
                Some(last) if !in_sequence(last.last_seq, b.first_seq) => {
                    return self.out_of_order(b, last.last_seq.wrapping_add(1) & i32::MAX)
                }
                _ => {}
            }
        } else if b.first_seq != 0 {
            return self.out_of_order(b, 0);
        }
        SequenceCheck::Append
    }

    /// The refusal of `b`, which does not start at `expected`: NOT_ENOUGH_REPLICAS when the
    /// batch at `expected` was just refused for lack of in-sync replicas (see the module's
    /// rules), OUT_OF_ORDER_SEQUENCE_NUMBER otherwise.
    fn out_of_order(&self, b: &ProducerBatch, expected: i32) -> SequenceCheck {
        let gap_left_by_isr_refusal = self.refused_for_isr.get(&b.producer_id) == Some(&(b.epoch, expected))
            && b.first_seq.wrapping_sub(expected) > 0;
        SequenceCheck::Refuse(if gap_left_by_isr_refusal { NOT_ENOUGH_REPLICAS } else { OUT_OF_ORDER_SEQUENCE_NUMBER })
    }

    /// The leader refused `b` for lack of in-sync replicas (NOT_ENOUGH_REPLICAS).
    pub fn refused_for_isr(&mut self, b: &ProducerBatch) {
        self.refused_for_isr.insert(b.producer_id, (b.epoch, b.first_seq));
    }

    /// Records a batch written at `first_offset..=last_offset`.
    pub fn record(&mut self, b: &ProducerBatch, first_offset: i64, last_offset: i64) {
        // Every append of every replica passes here: touch the map only when it holds
        // something (it does only between a refusal and the retry).
        if !self.refused_for_isr.is_empty() {
            self.refused_for_isr.remove(&b.producer_id);
        }
        let e = self.by_id.entry(b.producer_id).or_default();
        if b.epoch > e.epoch {
            e.epoch = b.epoch;
            e.batches.clear();
        }
        e.last_timestamp = b.max_timestamp;
        if b.transactional && e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(first_offset);
            self.open_txns.insert(first_offset, b.producer_id);
        }
        e.batches.push_back(BatchRecord { first_seq: b.first_seq, last_seq: b.last_seq, first_offset, last_offset });
        while e.batches.len() > REMEMBERED_BATCHES {
            e.batches.pop_front();
        }
    }

    /// Starts a verification of `producer_id`'s transaction at `epoch`: the token the append
    /// must show ([`Self::verification_holds`]).
    pub fn start_verification(&mut self, producer_id: i64, epoch: i16) -> u64 {
        self.next_token = self.next_token.wrapping_add(1);
        self.verifying.insert(producer_id, (epoch, self.next_token));
        self.next_token
    }

    /// Is the verification that gave `token` still current: no marker of the producer, and
    /// no other verification, since it started?
    pub fn verification_holds(&self, producer_id: i64, epoch: i16, token: u64) -> bool {
        self.verifying.get(&producer_id) == Some(&(epoch, token))
    }

    /// May a coordinator write `producer_id`'s transactional batch at `epoch` (a transactional
    /// offset commit)? Not from an epoch older than the one known (INVALID_PRODUCER_EPOCH).
    pub fn check_coordinator_txn(&self, producer_id: i64, epoch: i16) -> Result<(), i16> {
        match self.by_id.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(INVALID_PRODUCER_EPOCH),
            _ => Ok(()),
        }
    }

    /// A transactional batch a coordinator wrote for `producer_id` (a transactional offset
    /// commit: no sequence numbers, so none checked or remembered) at `first_offset`: it opens
    /// the producer's transaction here if none is open, so the last stable offset, and with it
    /// the cleaner, waits for its marker as for a client's transaction (Kafka's coordinator
    /// appends update producer state the same way).
    pub fn record_coordinator_txn(&mut self, producer_id: i64, epoch: i16, first_offset: i64) {
        let e = self.by_id.entry(producer_id).or_default();
        if epoch < e.epoch {
            // Refused at the leader (check_coordinator_txn); a replica never opens a
            // transaction for an epoch already fenced.
            return;
        }
        if epoch > e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        if e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(first_offset);
            self.open_txns.insert(first_offset, producer_id);
        }
    }

    /// Records every producer batch and transaction marker in `bytes` (stored batches,
    /// offsets assigned); returns the transactions the markers aborted, for the log's index.
    pub fn record_stored(&mut self, mut bytes: &[u8]) -> Vec<AbortedTxn> {
        let mut aborted = Vec::new();
        while let Ok(v) = BatchView::parse(bytes) {
            if let Some(b) = ProducerBatch::of(&v) {
                self.record(&b, v.base_offset(), v.last_offset());
            } else if let Some(m) = MarkerBatch::of(&v) {
                aborted.extend(self.record_marker(&m, v.base_offset()));
            } else if let Some((pid, epoch)) = coordinator_txn(&v) {
                self.record_coordinator_txn(pid, epoch, v.base_offset());
            }
            bytes = &bytes[v.size()..];
        }
        aborted
    }

    /// Kafka's checks of a marker the coordinator asks the leader to write (module docs).
    pub fn check_marker(&self, m: &MarkerBatch) -> Result<(), i16> {
        let Some(e) = self.by_id.get(&m.producer_id) else { return Ok(()) };
        if m.epoch < e.epoch {
            return Err(INVALID_PRODUCER_EPOCH);
        }
        if m.marker.coordinator_epoch < e.coordinator_epoch {
            return Err(TRANSACTION_COORDINATOR_FENCED);
        }
        Ok(())
    }

    /// Records a marker written at `offset`: ends the producer's open transaction, if any.
    /// Returns the transaction if the marker aborted one.
    pub fn record_marker(&mut self, m: &MarkerBatch, offset: i64) -> Option<AbortedTxn> {
        if !self.verifying.is_empty() {
            self.verifying.remove(&m.producer_id);
        }
        let e = self.by_id.entry(m.producer_id).or_default();
        if m.epoch > e.epoch {
            e.epoch = m.epoch;
            e.batches.clear();
        }
        e.coordinator_epoch = m.marker.coordinator_epoch;
        e.last_timestamp = e.last_timestamp.max(m.timestamp);
        let first = e.txn_first_offset.take()?;
        self.open_txns.remove(&first);
        self.ended_txns.insert(first, offset);
        // Every transaction aborted later starts at or after this (txn_index's docs).
        let last_stable_offset = self.open_txns.keys().next().copied().unwrap_or(offset + 1);
        (!m.marker.commit).then_some(AbortedTxn {
            producer_id: m.producer_id,
            first_offset: first,
            last_offset: offset,
            last_stable_offset,
        })
    }

    /// The last stable offset under high watermark `hw` (module docs); forgets ended
    /// transactions whose markers are below it.
    pub fn last_stable_offset(&mut self, hw: i64) -> i64 {
        self.forget_ended_below(hw);
        let first_unstable = self.open_txns.keys().chain(self.ended_txns.keys()).min().copied();
        first_unstable.map_or(hw, |f| f.min(hw))
    }

    /// Every producer known, as DescribeProducers reports them (by producer id).
    /// Has `producer_id`, at `epoch`, a transaction open on this partition? (Then a batch of
    /// its belongs to a transaction the coordinator already verified here.)
    pub fn has_open_txn(&self, producer_id: i64, epoch: i16) -> bool {
        self.by_id.get(&producer_id).is_some_and(|e| e.epoch == epoch && e.txn_first_offset.is_some())
    }

    pub fn describe(&self) -> Vec<ProducerDescription> {
        let mut out: Vec<ProducerDescription> = self
            .by_id
            .iter()
            .map(|(pid, e)| ProducerDescription {
                producer_id: *pid,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|d| d.producer_id);
        out
    }

    /// Forgets ended transactions whose markers are below high watermark `hw` (a follower
    /// calls it as its HW moves, so they do not pile up where no LSO is asked for).
    pub fn forget_ended_below(&mut self, hw: i64) {
        if !self.ended_txns.is_empty() {
            self.ended_txns.retain(|_, marker| *marker >= hw);
        }
    }

    /// The first offset of `producer_id`'s open transaction.
    pub fn open_txn(&self, producer_id: i64) -> Option<i64> {
        self.by_id.get(&producer_id)?.txn_first_offset
    }

    /// The epoch and last sequence known for `producer_id` (for logs and tests).
    pub fn last_sequence(&self, producer_id: i64) -> Option<(i16, i32)> {
        let e = self.by_id.get(&producer_id)?;
        Some((e.epoch, e.batches.back()?.last_seq))
    }

    /// Forgets producers whose last batch is `max_age_ms` or more older than `now_ms`; returns
    /// how many.
    pub fn expire(&mut self, now_ms: i64, max_age_ms: i64) -> usize {
        let before = self.by_id.len();
        self.by_id.retain(|_, e| e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < max_age_ms);
        let by_id = &self.by_id;
        self.refused_for_isr.retain(|pid, _| by_id.contains_key(pid));
        before - self.by_id.len()
    }

    pub fn clear(&mut self) {
        self.by_id.clear();
        self.refused_for_isr.clear();
        self.open_txns.clear();
        self.ended_txns.clear();
    }

    pub fn producers(&self) -> usize {
        self.by_id.len()
    }

    /// The state as a snapshot's bytes: `SNAPSHOT_MAGIC`, a CRC-32C of the rest, the number
    /// of producers, then per producer its id, epoch, last timestamp, coordinator epoch, open
    /// transaction's first offset (-1: none) and batches (at most five: sequences and
    /// offsets). Big-endian, as Kafka's own formats. Version 1 (`SPS1`, before
    /// transactions) had no coordinator epoch and first offset; it is still read.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        use bytes::BufMut;
        let mut body = Vec::with_capacity(4 + self.by_id.len() * (31 + REMEMBERED_BATCHES * 24));
        body.put_u32(self.by_id.len() as u32);
        for (pid, e) in &self.by_id {
            body.put_i64(*pid);
            body.put_i16(e.epoch);
            body.put_i64(e.last_timestamp);
            body.put_i32(e.coordinator_epoch);
            body.put_i64(e.txn_first_offset.unwrap_or(-1));
            body.put_u8(e.batches.len() as u8);
            for b in &e.batches {
                body.put_i32(b.first_seq);
                body.put_i32(b.last_seq);
                body.put_i64(b.first_offset);
                body.put_i64(b.last_offset);
            }
        }
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.put_u32(crc32c::crc32c(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Reads [`Self::encode_snapshot`]'s bytes; anything else is an error, never a panic.
    pub fn decode_snapshot(data: &[u8]) -> Result<ProducerStates, SnapshotError> {
        use bytes::Buf;
        let (rest, v2) = match (data.strip_prefix(SNAPSHOT_MAGIC.as_slice()), data.strip_prefix(b"SPS1".as_slice())) {
            (Some(rest), _) => (rest, true),
            (None, Some(rest)) => (rest, false),
            (None, None) => return Err(SnapshotError::NotASnapshot),
        };
        let (mut crc, mut body) = (rest.get(..4).ok_or(SnapshotError::Truncated)?, &rest[4..]);
        if crc.get_u32() != crc32c::crc32c(body) {
            return Err(SnapshotError::Checksum);
        }
        let need = |body: &&[u8], n: usize| if body.remaining() < n { Err(SnapshotError::Truncated) } else { Ok(()) };
        need(&body, 4)?;
        let count = body.get_u32() as usize;
        let mut states = ProducerStates::default();
        for _ in 0..count {
            need(&body, if v2 { 31 } else { 19 })?;
            let pid = body.get_i64();
            let mut e = ProducerEntry { epoch: body.get_i16(), last_timestamp: body.get_i64(), ..Default::default() };
            if v2 {
                e.coordinator_epoch = body.get_i32();
                let first = body.get_i64();
                if first >= 0 {
                    e.txn_first_offset = Some(first);
                    states.open_txns.insert(first, pid);
                }
            }
            let batches = body.get_u8() as usize;
            if batches > REMEMBERED_BATCHES {
                return Err(SnapshotError::Truncated);
            }
            need(&body, batches * 24)?;
            for _ in 0..batches {
                e.batches.push_back(BatchRecord {
                    first_seq: body.get_i32(),
                    last_seq: body.get_i32(),
                    first_offset: body.get_i64(),
                    last_offset: body.get_i64(),
                });
            }
            states.by_id.insert(pid, e);
        }
        if body.has_remaining() {
            return Err(SnapshotError::Truncated);
        }
        Ok(states)
    }
}

/// The first bytes of a producer state snapshot (Strom's format, version 2).
const SNAPSHOT_MAGIC: &[u8; 4] = b"SPS2";

/// Why a snapshot's bytes were not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a producer state snapshot")]
    NotASnapshot,
    #[error("checksum mismatch")]
    Checksum,
    #[error("truncated or malformed")]
    Truncated,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, first: i32, last: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq: first,
            last_seq: last,
            max_timestamp: 1_000,
            transactional: false,
        }
    }

    #[test]
    fn sequences_duplicates_and_epochs_follow_kafkas_rules() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&batch(7, 0, 0, 4)), SequenceCheck::Append);
        s.record(&batch(7, 0, 0, 4), 100, 104);
        // A retry of the same batch is a duplicate with its original offsets.
        assert_eq!(s.check(&batch(7, 0, 0, 4)), SequenceCheck::Duplicate { first_offset: 100, last_offset: 104 });
        // The next batch must follow on.
        assert_eq!(s.check(&batch(7, 0, 6, 9)), SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(&batch(7, 0, 5, 9)), SequenceCheck::Append);
        s.record(&batch(7, 0, 5, 9), 105, 109);
        // An older epoch is fenced; a newer one starts at 0.
        assert_eq!(s.check(&batch(7, -1, 10, 10)), SequenceCheck::Refuse(INVALID_PRODUCER_EPOCH));
        assert_eq!(s.check(&batch(7, 1, 10, 10)), SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(&batch(7, 1, 0, 0)), SequenceCheck::Append);
        // Unknown producers are accepted at any sequence.
        assert_eq!(s.check(&batch(8, 3, 42, 50)), SequenceCheck::Append);
    }

    #[test]
    fn a_gap_left_by_a_batch_refused_for_replicas_is_refused_for_replicas() {
        let mut s = ProducerStates::default();
        s.record(&batch(7, 0, 0, 4), 100, 104);
        // Pipelined: 5..=9 refused for lack of replicas, then 10..=14 arrives after the ISR
        // grew back; it is refused for the same reason, so the client retries both in order.
        s.refused_for_isr(&batch(7, 0, 5, 9));
        assert_eq!(s.check(&batch(7, 0, 10, 14)), SequenceCheck::Refuse(NOT_ENOUGH_REPLICAS));
        // A gap that the refused batch does not explain stays out of order.
        assert_eq!(s.check(&batch(7, 1, 3, 3)), SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER));
        s.refused_for_isr(&batch(7, 0, 6, 9));
        assert_eq!(s.check(&batch(7, 0, 10, 14)), SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER));
        // The retry of the refused batch goes in; after it, gaps are plain gaps again.
        s.refused_for_isr(&batch(7, 0, 5, 9));
        assert_eq!(s.check(&batch(7, 0, 5, 9)), SequenceCheck::Append);
        s.record(&batch(7, 0, 5, 9), 105, 109);
        assert_eq!(s.check(&batch(7, 0, 15, 15)), SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER));
        // The first batch of a new epoch must be 0: a refused 0 explains a later gap there too.
        s.refused_for_isr(&batch(7, 1, 0, 3));
        assert_eq!(s.check(&batch(7, 1, 4, 8)), SequenceCheck::Refuse(NOT_ENOUGH_REPLICAS));
    }

    #[test]
    fn producers_silent_for_the_expiration_time_are_forgotten() {
        let mut s = ProducerStates::default();
        s.record(&batch(1, 0, 0, 0), 0, 0); // last batch at 1_000
        s.record(&ProducerBatch { max_timestamp: 5_000, ..batch(2, 0, 0, 0) }, 1, 1);
        assert_eq!(s.expire(5_999, 5_000), 0);
        assert_eq!(s.expire(6_000, 5_000), 1, "producer 1's last batch is 5 s old");
        assert_eq!(s.last_sequence(1), None);
        assert_eq!(s.last_sequence(2), Some((0, 0)));
        // Forgotten: its next batch is taken at any sequence (as a new producer's).
        assert_eq!(s.check(&batch(1, 0, 7, 7)), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&batch(1, 0, i, i), 10 + i as i64, 10 + i as i64);
        }
        assert_eq!(s.check(&batch(1, 0, 6, 6)), SequenceCheck::Duplicate { first_offset: 16, last_offset: 16 });
        assert_eq!(s.check(&batch(1, 0, 2, 2)), SequenceCheck::Duplicate { first_offset: 12, last_offset: 12 });
        // Older than the five: out of order, as Kafka answers.
        assert_eq!(s.check(&batch(1, 0, 1, 1)), SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER));
    }

    #[test]
    fn a_snapshot_round_trips_and_damage_is_an_error() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&batch(1, 0, i * 10, i * 10 + 9), i as i64 * 100, i as i64 * 100 + 9);
        }
        s.record(&batch(2, 3, 0, 4), 700, 704);
        let bytes = s.encode_snapshot();
        let back = ProducerStates::decode_snapshot(&bytes).unwrap();
        assert_eq!(back.producers(), 2);
        assert_eq!(back.last_sequence(1), Some((0, 69)));
        assert_eq!(back.last_sequence(2), Some((3, 4)));
        // The retry of a remembered batch is still a duplicate after the round trip.
        assert_eq!(back.check(&batch(1, 0, 60, 69)), SequenceCheck::Duplicate { first_offset: 600, last_offset: 609 });
        for cut in [0, 3, 7, bytes.len() - 1] {
            assert!(ProducerStates::decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(ProducerStates::decode_snapshot(&flipped), Err(SnapshotError::Checksum)));
    }

    fn txn_batch(pid: i64, epoch: i16, first: i32, last: i32) -> ProducerBatch {
        ProducerBatch { transactional: true, ..batch(pid, epoch, first, last) }
    }

    fn marker(pid: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> MarkerBatch {
        MarkerBatch { producer_id: pid, epoch, marker: TxnMarker { commit, coordinator_epoch }, timestamp: 2_000 }
    }

    #[test]
    fn open_transactions_hold_the_last_stable_offset_until_their_markers_are_committed() {
        let mut s = ProducerStates::default();
        s.record(&batch(9, 0, 0, 4), 0, 4); // idempotent, not transactional
        s.record(&txn_batch(1, 0, 0, 4), 5, 9);
        s.record(&txn_batch(2, 0, 0, 4), 10, 14);
        s.record(&txn_batch(1, 0, 5, 9), 15, 19);
        assert_eq!(s.open_txn(1), Some(5));
        assert_eq!(s.last_stable_offset(20), 5, "producer 1's transaction is open");
        assert_eq!(s.last_stable_offset(3), 3, "never above the high watermark");

        // Producer 1 aborts (marker at 20): its transaction leaves the open ones, but holds
        // the LSO until the marker is below the HW. The entry's LSO is producer 2's start.
        let aborted = s.record_marker(&marker(1, 0, false, 4), 20).unwrap();
        assert_eq!(aborted, AbortedTxn { producer_id: 1, first_offset: 5, last_offset: 20, last_stable_offset: 10 });
        assert_eq!(s.open_txn(1), None);
        assert_eq!(s.last_stable_offset(20), 5, "the abort marker is not committed yet");
        assert_eq!(s.last_stable_offset(21), 10, "now producer 2's open transaction holds it");
        // Producer 2 commits: nothing aborted; once its marker is committed the LSO is the HW.
        assert_eq!(s.record_marker(&marker(2, 0, true, 4), 21), None);
        assert_eq!(s.last_stable_offset(21), 10);
        assert_eq!(s.last_stable_offset(22), 22);
        // A marker without an open transaction (a retry) ends nothing.
        assert_eq!(s.record_marker(&marker(2, 0, false, 4), 22), None);
    }

    #[test]
    fn a_coordinators_transactional_batch_holds_the_last_stable_offset_until_its_marker() {
        // A transactional offset commit: producer 6's batch without sequences, at offset 3.
        let mut b = strom_protocol::batch::encode_transactional_records(
            [(Some(bytes::Bytes::from_static(b"k")), Some(bytes::Bytes::from_static(b"v")))],
            1_000,
            6,
            2,
        )
        .unwrap()
        .to_vec();
        b[0..8].copy_from_slice(&3i64.to_be_bytes());
        let mut s = ProducerStates::default();
        assert!(s.record_stored(&b).is_empty());
        assert_eq!(s.open_txn(6), Some(3));
        assert!(s.has_open_txn(6, 2) && !s.has_open_txn(6, 1));
        assert_eq!(s.last_stable_offset(10), 3);
        assert_eq!(s.record_marker(&marker(6, 2, true, 0), 4), None);
        assert_eq!(s.last_stable_offset(10), 10);
    }

    #[test]
    fn a_verification_is_void_once_a_marker_of_its_producer_came_between() {
        let mut s = ProducerStates::default();
        let t = s.start_verification(4, 1);
        assert!(s.verification_holds(4, 1, t));
        assert!(!s.verification_holds(4, 2, t) && !s.verification_holds(4, 1, t + 1));
        // The transaction was aborted by its coordinator while the leader asked about it.
        let _ = s.record_marker(&marker(4, 1, false, 0), 10);
        assert!(!s.verification_holds(4, 1, t));
        // A coordinator's batch from a fenced epoch opens nothing.
        assert_eq!(s.check_coordinator_txn(4, 0), Err(INVALID_PRODUCER_EPOCH));
        s.record_coordinator_txn(4, 0, 11);
        assert_eq!(s.open_txn(4), None);
        assert_eq!(s.check_coordinator_txn(4, 1), Ok(()));
    }

    #[test]
    fn markers_from_older_producer_or_coordinator_epochs_are_refused() {
        let mut s = ProducerStates::default();
        s.record(&txn_batch(1, 3, 0, 0), 0, 0);
        assert_eq!(s.check_marker(&marker(1, 2, true, 0)), Err(INVALID_PRODUCER_EPOCH));
        assert_eq!(s.check_marker(&marker(1, 3, true, 0)), Ok(()));
        s.record_marker(&marker(1, 3, true, 5), 1);
        assert_eq!(s.check_marker(&marker(1, 3, false, 4)), Err(TRANSACTION_COORDINATOR_FENCED));
        // A marker with a newer producer epoch (an abort when the producer re-initialized)
        // fences the older epoch's batches.
        s.record_marker(&marker(1, 4, false, 5), 2);
        assert_eq!(s.check(&txn_batch(1, 3, 1, 1)), SequenceCheck::Refuse(INVALID_PRODUCER_EPOCH));
        assert_eq!(s.check(&txn_batch(1, 4, 0, 0)), SequenceCheck::Append);
    }

    #[test]
    fn a_producer_with_an_open_transaction_is_not_expired_and_snapshots_keep_it() {
        let mut s = ProducerStates::default();
        s.record(&txn_batch(1, 0, 0, 0), 7, 7);
        s.record_marker(&marker(2, 1, true, 3), 8);
        assert_eq!(s.expire(1_000_000, 5_000), 1, "producer 2 expires, producer 1 is in a transaction");
        assert_eq!(s.open_txn(1), Some(7));
        let mut back = ProducerStates::decode_snapshot(&s.encode_snapshot()).unwrap();
        assert_eq!(back.open_txn(1), Some(7));
        assert_eq!(back.last_stable_offset(100), 7);
        // The open transaction's marker after a reload still ends it.
        let aborted = back.record_marker(&marker(1, 0, false, 3), 9).unwrap();
        assert_eq!((aborted.first_offset, aborted.last_offset), (7, 9));
        // A version 1 snapshot (before transactions) still loads.
        let mut v1 = b"SPS1".to_vec();
        let mut body = Vec::new();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&5i64.to_be_bytes());
        body.extend_from_slice(&2i16.to_be_bytes());
        body.extend_from_slice(&1_000i64.to_be_bytes());
        body.push(0);
        v1.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        v1.extend_from_slice(&body);
        let old = ProducerStates::decode_snapshot(&v1).unwrap();
        assert_eq!((old.producers(), old.open_txn(5)), (1, None));
    }

    #[test]
    fn stored_markers_are_replayed_and_report_what_they_aborted() {
        let mut s = ProducerStates::default();
        let data = strom_protocol::batch::build_batch(0, 0, &[b"a"]);
        // A transactional data batch from producer 4 at offset 0, then its abort marker at 1.
        let mut txn = data.clone();
        txn[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // transactional
        txn[43..51].copy_from_slice(&4i64.to_be_bytes());
        txn[51..53].copy_from_slice(&0i16.to_be_bytes());
        txn[53..57].copy_from_slice(&0i32.to_be_bytes());
        let crc = crc32c::crc32c(&txn[21..]);
        txn[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut m = TxnMarker { commit: false, coordinator_epoch: 1 }.encode(4, 0, 5).unwrap().to_vec();
        m[..8].copy_from_slice(&1i64.to_be_bytes());
        let mut stored = txn;
        stored.extend_from_slice(&m);
        let aborted = s.record_stored(&stored);
        assert_eq!(
            aborted,
            vec![AbortedTxn { producer_id: 4, first_offset: 0, last_offset: 1, last_stable_offset: 2 }]
        );
        assert_eq!(s.open_txn(4), None);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::default();
        s.record(&batch(1, 0, i32::MAX - 1, i32::MAX), 0, 1);
        assert_eq!(s.check(&batch(1, 0, 0, 3)), SequenceCheck::Append);
    }
}
