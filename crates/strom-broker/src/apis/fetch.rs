//! Fetch: whole stored batches from each partition up to the high watermark (consumers) or
//! the log end (followers, identified by a replica id), bounded by the partition and
//! response byte limits (the client's, capped by the broker's `fetch.max.bytes` /
//! `replica.fetch.response.max.bytes`); a long-poll (`max.wait.ms`, `min.bytes`) woken by appends to the partitions it reads. What a
//! follower's fetch means for replication is the replica layer's ([`ReplicaManager::fetch`]).
//!
//! [`ReplicaManager::fetch`]: crate::replica::ReplicaManager::fetch

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use strom_protocol::kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use strom_protocol::kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::access::{Access, TOPIC_AUTHORIZATION_FAILED};
use super::Broker;
use strom_metadata::acl::Operation;

const UNKNOWN_TOPIC_ID: i16 = 100;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

pub(super) async fn handle(b: &Broker, a: &Access<'_>, req: &FetchRequest, version: i16) -> FetchResponse {
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
    // Woken by the requested partitions only (each registers it on the first pass).
    let waiter = Arc::new(Notify::new());
    let mut watch = Some(&waiter);
    loop {
        let (resp, bytes, errors) = read_once(b, req, version, replica_id, &refusal, watch.take());
        let done = bytes >= req.min_bytes.max(0) as usize || errors || req.max_wait_ms <= 0;
        if done || tokio::time::timeout_at(deadline, waiter.notified()).await.is_err() {
            return if done { resp } else { read_once(b, req, version, replica_id, &refusal, None).0 };
        }
    }
}

/// One pass over the requested partitions: (response, record bytes, any partition error).
fn read_once(
    b: &Broker,
    req: &FetchRequest,
    version: i16,
    replica_id: i32,
    refusal: &dyn Fn(&str) -> Option<i16>,
    watch: Option<&Arc<Notify>>,
) -> (FetchResponse, usize, bool) {
    let image = b.image();
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut errors = false;
    // The broker bounds every response (fetch.max.bytes for consumers,
    // replica.fetch.response.max.bytes for followers), whatever the client asks for.
    let broker_max =
        if replica_id >= 0 { b.settings.replica_fetch_response_max_bytes } else { b.settings.fetch_max_bytes };
    let response_max = if req.max_bytes > 0 { (req.max_bytes as usize).min(broker_max) } else { broker_max };
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
            let result = b.replicas.fetch(&part, replica_id, p.fetch_offset, p.current_leader_epoch, limit);
            match result {
                Ok((records, hw)) => {
                    if replica_id >= 0 {
                        b.metrics.replication_bytes_out.inc_by(records.len() as u64);
                    } else if !records.is_empty() {
                        let topic = crate::metrics::TopicLabels { topic: part.tp.topic.clone() };
                        b.metrics.bytes_out.get_or_create(&topic).inc_by(records.len() as u64);
                    }
                    pd.high_watermark = hw;
                    pd.last_stable_offset = hw;
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
