//! Fetch: whole stored batches from each partition up to the high watermark (consumers) or
//! the log end (followers, identified by a replica id), bounded by the partition and
//! response byte limits (the client's, capped by the broker's `fetch.max.bytes` /
//! `replica.fetch.response.max.bytes`); a long-poll (`max.wait.ms`, `min.bytes`) woken by appends to the partitions it reads. What a
//! follower's fetch means for replication is the replica layer's ([`ReplicaManager::fetch`]).
//! Consumer responses together stay within the broker's memory budget ([`FetchMemory`]).
//!
//! [`ReplicaManager::fetch`]: crate::replica::ReplicaManager::fetch

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use strom_protocol::kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use strom_protocol::kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::access::{Access, TOPIC_AUTHORIZATION_FAILED};
use super::Broker;
use strom_metadata::acl::Operation;

const UNKNOWN_TOPIC_ID: i16 = 100;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// Room is counted in KiB, so any budget fits the semaphore's `u32` requests.
const KIB: usize = 1024;
/// The shortest a fetch waits for room before it reads one batch without any.
pub const MIN_ROOM_WAIT: Duration = Duration::from_millis(100);

/// The broker's budget for consumer Fetch responses (`fetch.response.memory.max.bytes`).
///
/// **Rule:** a consumer fetch reserves, before each read, room for the most its response may
/// carry (the smaller of its response limit and the sum of its partition limits, and never
/// more than the whole budget), reads at most that, gives back what it did not use, and
/// holds the rest until its response has been written to the socket. So the record bytes
/// that consumer responses hold at once stay within the budget (each byte is in memory
/// once: the response frame is written in pieces around the buffers the log read into,
/// never copied into it, `frame::encode_response_spliced`; a first batch larger than the
/// room is still returned whole, as Kafka does, so no consumer is stuck), however many consumers ask for how much.
/// Fetches wait for room in order, but not past their `max.wait.ms` deadline (at least
/// [`MIN_ROOM_WAIT`]): a client that stops reading its responses holds its room until its
/// connection goes, and must not stall every other consumer meanwhile, so a fetch that found
/// no room in time reads without any, which returns one batch (the first, whole) and nothing
/// more. A long-poll holds no room while it waits for data. Follower
/// fetches are not counted: each is bounded by `replica.fetch.response.max.bytes`, one per
/// follower, and replication must never queue behind consumers.
pub struct FetchMemory {
    room: Arc<Semaphore>,
    max_kib: usize,
}

/// Room held in the fetch memory budget; given back when dropped.
pub struct FetchLease {
    permit: Option<OwnedSemaphorePermit>,
}

impl FetchMemory {
    pub fn new(max_bytes: usize) -> FetchMemory {
        let max_kib = (max_bytes / KIB).clamp(1, Semaphore::MAX_PERMITS);
        FetchMemory { room: Arc::new(Semaphore::new(max_kib)), max_kib }
    }

    /// Waits for room for `want` bytes (at most the whole budget).
    pub async fn reserve(&self, want: usize) -> FetchLease {
        let kib = want.div_ceil(KIB).min(self.max_kib).min(u32::MAX as usize) as u32;
        if kib == 0 {
            return FetchLease { permit: None };
        }
        // The semaphore is never closed: acquiring only waits.
        FetchLease { permit: self.room.clone().acquire_many_owned(kib).await.ok() }
    }

    /// [`Self::reserve`], giving up after `wait`: then the lease holds no room.
    pub async fn reserve_within(&self, want: usize, wait: Duration) -> FetchLease {
        match tokio::time::timeout(wait, self.reserve(want)).await {
            Ok(lease) => lease,
            Err(_) => FetchLease { permit: None },
        }
    }

    /// Bytes of room not held by any response now.
    pub fn available(&self) -> usize {
        self.room.available_permits() * KIB
    }
}

impl FetchLease {
    /// The bytes this lease holds room for.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits() * KIB)
    }

    /// Gives back the room beyond `used` bytes.
    pub fn shrink_to(&mut self, used: usize) {
        let keep = used.div_ceil(KIB);
        if let Some(p) = &mut self.permit {
            let excess = p.num_permits().saturating_sub(keep);
            drop(p.split(excess));
        }
    }
}

pub(super) async fn handle(
    b: &Broker,
    a: &Access<'_>,
    req: &FetchRequest,
    version: i16,
) -> (FetchResponse, Option<FetchLease>) {
    let replica_id = if version >= 15 { req.replica_state.replica_id.0 } else { req.replica_id.0 };
    // A follower's fetch moves high watermarks: only a broker may send one (CLUSTER_ACTION);
    // a consumer needs READ on each topic.
    // …and a replica id must be a registered broker other than this one, of the incarnation
    // the request names (v15+ carries its broker epoch, KIP-903): no client can pose as a
    // follower to move a high watermark.
    let image = b.image();
    let known_replica = replica_id < 0
        || (replica_id != b.settings.node_id
            && image.brokers.get(&replica_id).is_some_and(|br| {
                version < 15 || req.replica_state.replica_epoch < 0 || br.epoch == req.replica_state.replica_epoch
            }));
    let follower_allowed = replica_id < 0 || a.may_cluster(Operation::ClusterAction);
    let refusal = |topic: &str| -> Option<i16> {
        if !known_replica {
            Some(NOT_LEADER_OR_FOLLOWER)
        } else if !follower_allowed || (replica_id < 0 && !a.may_topic(Operation::Read, topic)) {
            Some(TOPIC_AUTHORIZATION_FAILED)
        } else {
            None
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    // The broker bounds every response (fetch.max.bytes for consumers,
    // replica.fetch.response.max.bytes for followers), whatever the client asks for.
    let broker_max =
        if replica_id >= 0 { b.settings.replica_fetch_response_max_bytes } else { b.settings.fetch_max_bytes };
    let response_max = if req.max_bytes > 0 { (req.max_bytes as usize).min(broker_max) } else { broker_max };
    let partitions_max: usize =
        req.topics.iter().flat_map(|t| &t.partitions).map(|p| p.partition_max_bytes.max(0) as usize).sum();
    // Woken by the requested partitions only (each registers it on the first pass).
    let waiter = Arc::new(Notify::new());
    let mut watch = Some(&waiter);
    let mut last_pass = false;
    loop {
        // Consumers read within room reserved in the broker's budget (FetchMemory's rule).
        // No longer than the long-poll has left (at least MIN_ROOM_WAIT): the answer is due then.
        let wait_for_room = deadline.saturating_duration_since(tokio::time::Instant::now()).max(MIN_ROOM_WAIT);
        let mut lease = match replica_id < 0 {
            true => Some(b.fetch_memory.reserve_within(response_max.min(partitions_max), wait_for_room).await),
            false => None,
        };
        let room = lease.as_ref().map_or(response_max, |l| l.bytes().min(response_max));
        let first = watch.take();
        let may_block = !all_cached(b, req, version, room);
        let (resp, bytes, errors) =
            b.replicas.disk.run_if(may_block, || read_once(b, req, version, replica_id, room, &refusal, first)).await;
        if let Some(l) = &mut lease {
            l.shrink_to(bytes);
        }
        let done = bytes >= req.min_bytes.max(0) as usize || errors || req.max_wait_ms <= 0;
        if done || last_pass {
            return (resp, lease);
        }
        drop((resp, lease));
        if tokio::time::timeout_at(deadline, waiter.notified()).await.is_err() {
            last_pass = true;
        }
    }
}

/// Whether every requested partition's read finds its pages in the page cache (then the pass
/// runs in place: `replica::disk_io`'s rule).
fn all_cached(b: &Broker, req: &FetchRequest, version: i16, response_max: usize) -> bool {
    let image = b.image();
    req.topics.iter().all(|t| {
        let name = if version >= 13 {
            image.topic_by_id(&t.topic_id).map(|t| t.name.clone())
        } else {
            Some(t.topic.0.to_string())
        };
        t.partitions.iter().all(|p| {
            let part = name.as_deref().and_then(|n| b.replicas.get(n, p.partition));
            let limit = (p.partition_max_bytes.max(0) as usize).min(response_max);
            part.is_none_or(|part| part.read_is_cached(p.fetch_offset, limit))
        })
    })
}

/// One pass over the requested partitions, at most `response_max` record bytes (but a first
/// batch whole): (response, record bytes, any partition error).
fn read_once(
    b: &Broker,
    req: &FetchRequest,
    version: i16,
    replica_id: i32,
    response_max: usize,
    refusal: &dyn Fn(&str) -> Option<i16>,
    watch: Option<&Arc<Notify>>,
) -> (FetchResponse, usize, bool) {
    let image = b.image();
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut errors = false;
    for t in &req.topics {
        let name = if version >= 13 {
            image.topic_by_id(&t.topic_id).map(|t| t.name.clone())
        } else {
            Some(t.topic.0.to_string())
        };
        let mut tr = FetchableTopicResponse::default();
        tr.topic = if version >= 13 { Default::default() } else { t.topic.clone() };
        tr.topic_id = t.topic_id;
        for p in &t.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = p.partition;
            pd.high_watermark = -1;
            pd.last_stable_offset = -1;
            pd.log_start_offset = -1;
            pd.preferred_read_replica = (-1).into();
            if let Some(code) = name.as_deref().and_then(refusal) {
                pd.error_code = code;
                errors = true;
                tr.partitions.push(pd);
                continue;
            }
            let part = name.as_deref().and_then(|n| b.replicas.get(n, p.partition));
            let Some(part) = part else {
                pd.error_code = match name.as_deref() {
                    None => UNKNOWN_TOPIC_ID,
                    Some(n) => b.not_hosted(n, p.partition),
                };
                errors = true;
                tr.partitions.push(pd);
                continue;
            };
            if let Some(w) = watch {
                part.watch(w);
            }
            // The first batch is returned whole even past the limits (so no consumer is stuck);
            // after the response limit is reached, partitions get nothing.
            let room = response_max.saturating_sub(total);
            let limit = (room > 0 || total == 0).then(|| (p.partition_max_bytes.max(0) as usize).min(room.max(1)));
            let read_committed = version >= 4 && req.isolation_level == 1;
            let result =
                b.replicas.fetch(&part, replica_id, p.fetch_offset, p.current_leader_epoch, limit, read_committed);
            match result {
                Ok(read) => {
                    let records = read.records;
                    if replica_id >= 0 {
                        b.metrics.replication_bytes_out.inc_by(records.len() as u64);
                    } else if !records.is_empty() {
                        let topic = crate::metrics::TopicLabels { topic: part.tp.topic.clone() };
                        b.metrics.bytes_out.get_or_create(&topic).inc_by(records.len() as u64);
                    }
                    pd.high_watermark = read.high_watermark;
                    pd.last_stable_offset = read.last_stable_offset;
                    pd.aborted_transactions = read.aborted.map(|txns| {
                        txns.into_iter()
                            .map(|t| {
                                let mut a = AbortedTransaction::default();
                                a.producer_id = t.producer_id.into();
                                a.first_offset = t.first_offset;
                                a
                            })
                            .collect()
                    });
                    pd.log_start_offset = part.log_start_offset();
                    total += records.len();
                    pd.records = Some(records);
                }
                Err(e) => {
                    pd.error_code = e.kafka_code();
                    pd.high_watermark = part.high_watermark();
                    pd.log_start_offset = part.log_start_offset();
                    errors = true;
                }
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    (resp, total, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_is_capped_by_the_budget_shrunk_to_what_was_read_and_given_back_on_drop() {
        let memory = FetchMemory::new(4 << 20);
        // A client asking for 1 GB gets room for the whole budget, no more.
        let mut big = memory.reserve(1 << 30).await;
        assert_eq!(big.bytes(), 4 << 20);
        assert_eq!(memory.available(), 0);
        // It read 100 KB: the rest goes back at once.
        big.shrink_to(100 * 1024);
        assert_eq!(big.bytes(), 100 * 1024);
        assert_eq!(memory.available(), (4 << 20) - 100 * 1024);
        drop(big);
        assert_eq!(memory.available(), 4 << 20);
        assert_eq!(memory.reserve(0).await.bytes(), 0);
    }

    #[tokio::test]
    async fn a_fetch_that_finds_no_room_in_time_goes_on_without_any() {
        let memory = FetchMemory::new(4 << 20);
        let _stuck = memory.reserve(4 << 20).await; // a client that stopped reading
        let lease = memory.reserve_within(1 << 20, MIN_ROOM_WAIT).await;
        assert_eq!(lease.bytes(), 0, "it read one batch, holding no room");
    }

    #[tokio::test]
    async fn a_fetch_waits_for_room_until_an_earlier_response_is_written() {
        let memory = Arc::new(FetchMemory::new(4 << 20));
        let first = memory.reserve(3 << 20).await;
        let waiting = {
            let memory = memory.clone();
            tokio::spawn(async move { memory.reserve(2 << 20).await.bytes() })
        };
        // Only 1 MiB is free: the second fetch cannot read yet.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first); // its response was written
        assert_eq!(waiting.await.unwrap(), 2 << 20);
    }
}
