//! [`StateLog`]: a coordinator's state kept in an internal topic (`__consumer_offsets` today,
//! `__transaction_state` next). The partition a key hashes to holds that key's records; the
//! broker that leads the partition coordinates the key, replays the partition once per
//! leader epoch before answering, and acknowledges a write only once it is committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strom_protocol::kafka_protocol::records::{Compression, RecordBatchDecoder};
use strom_protocol::values::now_ms;

use super::{partition_for, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR};
use crate::replica::{CommitWait, Partition, ReplicaError, ReplicaManager};

/// Bytes read per step of a replay.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// The partitions of one internal topic, as its coordinator uses them.
pub struct StateLog {
    topic: &'static str,
    node_id: i32,
    replicas: Arc<ReplicaManager>,
    num_partitions: i32,
    /// Partition → the leader epoch it was last loaded in.
    loaded: Mutex<HashMap<i32, i32>>,
}

impl StateLog {
    pub fn new(topic: &'static str, replicas: Arc<ReplicaManager>, num_partitions: i32) -> Self {
        StateLog { topic, node_id: replicas.node_id(), replicas, num_partitions, loaded: Mutex::new(HashMap::new()) }
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn num_partitions(&self) -> i32 {
        self.num_partitions
    }

    /// The partition that holds `key`.
    pub fn partition_of(&self, key: &str) -> i32 {
        partition_for(key, self.num_partitions)
    }

    /// The partition holding `key`, if this broker leads it (else NOT_COORDINATOR). When it
    /// leads it in a leader epoch it has not loaded, `load` runs first (one load at a time);
    /// a failed load is retried by the next request. Err is a Kafka error code.
    pub fn coordinator_partition(
        &self,
        key: &str,
        load: impl FnOnce(i32, &Partition) -> Result<(), i16>,
    ) -> Result<Arc<Partition>, i16> {
        self.load_partition(self.partition_of(key), load)
    }

    /// Partition `p`, if this broker leads it (else NOT_COORDINATOR), loaded in its current
    /// leader epoch by `load` first if it was not ([`Self::coordinator_partition`]'s rule).
    pub fn load_partition(
        &self,
        p: i32,
        load: impl FnOnce(i32, &Partition) -> Result<(), i16>,
    ) -> Result<Arc<Partition>, i16> {
        let part = self.replicas.get(self.topic, p).ok_or(NOT_COORDINATOR)?;
        let role = part.role();
        if role.leader != self.node_id {
            return Err(NOT_COORDINATOR);
        }
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.get(&p) != Some(&role.leader_epoch) {
            // A load reads the whole partition: disk work (replica::disk_io's rule).
            self.replicas.disk.run_sync(|| load(p, &part))?;
            loaded.insert(p, role.leader_epoch);
        }
        Ok(part)
    }

    /// Runs `f` while no load of this log runs: a change to what loads build (applied after a
    /// write to the log, as a marker's effect on pending offsets) either lands before a load
    /// starts (and the load replays the write) or after it installed its state.
    pub fn with_load_lock<T>(&self, f: impl FnOnce() -> T) -> T {
        let _loads = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Partition `p`, if this broker leads it in the leader epoch it last loaded it in.
    pub fn loaded_leader(&self, p: i32) -> Option<Arc<Partition>> {
        let part = self.replicas.get(self.topic, p)?;
        let role = part.role();
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        (role.leader == self.node_id && loaded.get(&p) == Some(&role.leader_epoch)).then_some(part)
    }

    /// Does this broker lead partition `p` in leader epoch `epoch`? (No loading, and none of
    /// this log's locks: a coordinator may ask it under its own lock, which its loads take.)
    pub fn leads_in_epoch(&self, p: i32, epoch: i32) -> bool {
        self.replicas.get(self.topic, p).is_some_and(|part| {
            let role = part.role();
            role.leader == self.node_id && role.leader_epoch == epoch
        })
    }

    /// Does this broker lead partition `p`? (No loading.)
    pub fn leads_partition(&self, p: i32) -> bool {
        self.replicas.get(self.topic, p).is_some_and(|part| part.is_leader())
    }

    /// Does this broker lead `key`'s partition? (No loading.)
    pub fn leads(&self, key: &str) -> bool {
        self.replicas.get(self.topic, self.partition_of(key)).is_some_and(|part| part.is_leader())
    }

    /// Calls `visit` with every record of partition `p` in offset order, with its batch's
    /// producer and whether it is transactional or a control record (a transaction marker):
    /// what a load replays. Returns the number of records.
    pub fn replay(&self, p: i32, part: &Partition, mut visit: impl FnMut(StateRecord)) -> Result<usize, i16> {
        let (mut offset, end) = part.with_log(|l| (l.log_start_offset(), l.log_end_offset()));
        let mut records = 0usize;
        while offset < end {
            let read = part.read(offset, REPLAY_READ_BYTES, None).map_err(|e| {
                tracing::error!(node = self.node_id, topic = self.topic, partition = p, error = %e, "cannot read the state log");
                COORDINATOR_NOT_AVAILABLE
            })?;
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
            let mut buf = read.records.clone();
            let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
                tracing::error!(node = self.node_id, topic = self.topic, partition = p, error = %e, "undecodable state batch");
                COORDINATOR_NOT_AVAILABLE
            })?;
            for r in sets.into_iter().flat_map(|s| s.records) {
                records += 1;
                let marker = r.control.then(|| control_is_commit(r.key.as_deref())).flatten();
                visit(StateRecord {
                    key: if r.control { None } else { r.key },
                    value: if r.control { None } else { r.value },
                    producer_id: r.producer_id,
                    transactional: r.transactional && !r.control,
                    marker,
                });
            }
        }
        Ok(records)
    }

    /// Appends `records` (key, value; value `None`: a tombstone) to `part` as one batch, as
    /// its leader, and waits until it is committed (acks=all): [`Self::start_append`] then
    /// [`Self::wait_committed`].
    pub async fn append(
        &self,
        part: &Partition,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
        timeout: Duration,
    ) -> Result<(), i16> {
        let appended = self.start_append(part, records)?;
        self.wait_committed(part, appended, timeout).await
    }

    /// Appends `records` to `part` as one batch, as its leader, without waiting: the batch's
    /// place in the log is fixed when this returns (a caller that must order its write
    /// against others holds its lock across this call only). Every record has a key: the
    /// topic is compacted, so the key says what a record replaces. NOT_COORDINATOR if the
    /// leadership moved; COORDINATOR_NOT_AVAILABLE on a failed append.
    pub fn start_append(&self, part: &Partition, records: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<Appended, i16> {
        self.start_append_as(part, records, None)
    }

    /// [`Self::start_append`], the batch written as part of `producer`'s transaction
    /// (producer id, epoch) when given: a transactional offset commit, which its producer's
    /// commit marker makes visible and its abort marker discards.
    pub fn start_append_as(
        &self,
        part: &Partition,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
        producer: Option<(i64, i16)>,
    ) -> Result<Appended, i16> {
        let now = now_ms();
        let keyed =
            records.iter().map(|(k, v)| (Some(Bytes::copy_from_slice(k)), v.as_deref().map(Bytes::copy_from_slice)));
        let batch = match producer {
            None => strom_protocol::batch::encode_records(keyed, now, Compression::None),
            Some((id, epoch)) => strom_protocol::batch::encode_transactional_records(keyed, now, id, epoch),
        };
        let batch = batch.map_err(|e| {
            tracing::error!(node = self.node_id, topic = self.topic, error = %e, "cannot encode a state batch");
            COORDINATOR_NOT_AVAILABLE
        })?;
        let may_block = part.append_may_block(batch.len(), now);
        let appended = self.replicas.disk.run_sync_if(may_block, || part.append_as_leader(&batch, now, None));
        let appended = appended.map_err(|e| match e {
            ReplicaError::NotLeader(_) => NOT_COORDINATOR,
            e => {
                tracing::warn!(node = self.node_id, topic = self.topic, error = %e, "state append failed");
                COORDINATOR_NOT_AVAILABLE
            }
        })?;
        Ok(Appended { end_offset: appended.info.last_offset + 1, leader_epoch: appended.leader_epoch })
    }

    /// Waits until a [`Self::start_append`] batch is committed. NOT_COORDINATOR if the
    /// leadership moved; COORDINATOR_NOT_AVAILABLE at `timeout`.
    pub async fn wait_committed(&self, part: &Partition, appended: Appended, timeout: Duration) -> Result<(), i16> {
        let deadline = tokio::time::Instant::now() + timeout;
        match part.wait_committed(appended.end_offset, appended.leader_epoch, 0, false, deadline).await {
            CommitWait::Committed | CommitWait::CommittedBelowMinIsr => Ok(()),
            CommitWait::LeadershipLost => Err(NOT_COORDINATOR),
            CommitWait::TimedOut => Err(COORDINATOR_NOT_AVAILABLE),
        }
    }
}

/// One record of a state partition, as a load replays it.
#[derive(Debug, Clone)]
pub struct StateRecord {
    /// `None` for a marker.
    pub key: Option<Bytes>,
    /// `None`: a tombstone (or a marker).
    pub value: Option<Bytes>,
    /// The batch's producer (-1: none).
    pub producer_id: i64,
    /// Part of `producer_id`'s transaction (a transactional offset commit).
    pub transactional: bool,
    /// A transaction marker of `producer_id`: `Some(true)` commit, `Some(false)` abort.
    pub marker: Option<bool>,
}

/// A control record's key: version (i16) then type (i16: 0 abort, 1 commit).
fn control_is_commit(key: Option<&[u8]>) -> Option<bool> {
    match key? {
        [_, _, 0, 0, ..] => Some(false),
        [_, _, 0, 1, ..] => Some(true),
        _ => None,
    }
}

/// A state batch appended by its leader, not yet known to be committed.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    end_offset: i64,
    leader_epoch: i32,
}
