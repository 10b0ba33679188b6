//! Produce: validate and append each partition's batches as leader (no re-encoding), then
//! answer per `acks`: 0 no response, 1 after the local append, -1 (all) once the high
//! watermark has passed the batch (DESIGN.md §3), or REQUEST_TIMED_OUT after `timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use strom_protocol::kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use strom_protocol::kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{now_ms, topic_name, Broker};
use crate::replica::{Commit, Partition, ReplicaError};

const NOT_ENOUGH_REPLICAS: i16 = 19;
const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const REQUEST_TIMED_OUT: i16 = 7;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_RECORD: i16 = 87;

/// One partition's outcome, before acks=all waiting.
struct Outcome {
    index: i32,
    error_code: i16,
    base_offset: i64,
    log_start_offset: i64,
    /// Set when acks=all must wait for the HW to pass this offset, in this leader epoch,
    /// with this `min.insync.replicas`.
    wait_for: Option<(Arc<Partition>, i64, i32, usize)>,
}

pub(super) async fn handle(b: &Broker, req: &ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let image = b.image();
    let now = now_ms();
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in &req.topic_data {
        // v13 names topics by id.
        let name = if version >= 13 {
            image.topic_by_id(&t.topic_id).map(|t| t.name.clone()).unwrap_or_default()
        } else {
            t.name.0.to_string()
        };
        let min_isr: usize = b
            .topic_config(&image, &name)
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .unwrap_or(b.settings.min_insync_replicas as usize);
        let mut outcomes = Vec::with_capacity(t.partition_data.len());
        for p in &t.partition_data {
            let mut o =
                Outcome { index: p.index, error_code: 0, base_offset: -1, log_start_offset: -1, wait_for: None };
            let Some(part) = b.replicas.get(&name, p.index) else {
                o.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                outcomes.push(o);
                continue;
            };
            let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) else {
                o.error_code = INVALID_RECORD;
                outcomes.push(o);
                continue;
            };
            // Leadership before min.insync.replicas, as Kafka: a follower (whose ISR comes
            // from the image) answers NOT_LEADER_OR_FOLLOWER, which makes the client refresh
            // its metadata; NOT_ENOUGH_REPLICAS would have it retry here.
            if !part.is_leader() {
                o.error_code = NOT_LEADER_OR_FOLLOWER;
                outcomes.push(o);
                continue;
            }
            if req.acks == -1 && part.role().isr.len() < min_isr {
                o.error_code = NOT_ENOUGH_REPLICAS;
                outcomes.push(o);
                continue;
            }
            match b.replicas.append_as_leader(&part, records, now) {
                Ok((info, start, leader_epoch)) => {
                    let topic = crate::metrics::TopicLabels { topic: name.clone() };
                    b.metrics.bytes_in.get_or_create(&topic).inc_by(info.bytes);
                    b.metrics.messages_in.get_or_create(&topic).inc_by(info.records.max(0) as u64);
                    o.base_offset = info.first_offset;
                    o.log_start_offset = start;
                    if req.acks == -1 {
                        o.wait_for = Some((part, info.last_offset + 1, leader_epoch, min_isr));
                    }
                }
                Err(e) => {
                    if !matches!(e, ReplicaError::NotLeader(_)) {
                        tracing::debug!(node = b.settings.node_id, partition = %part.tp, error = %e, "produce refused");
                    }
                    o.error_code = e.kafka_code();
                }
            }
            outcomes.push(o);
        }
        topics.push((t, outcomes));
    }
    if req.acks == 0 {
        return None;
    }
    if req.acks == -1 {
        b.metrics.produce_purgatory.inc();
        wait_for_high_watermarks(b, &mut topics, Duration::from_millis(req.timeout_ms.max(0) as u64)).await;
        b.metrics.produce_purgatory.dec();
    }
    let mut resp = ProduceResponse::default();
    for (t, outcomes) in topics {
        let mut tr = TopicProduceResponse::default();
        tr.name = if version >= 13 { Default::default() } else { topic_name(&t.name.0) };
        tr.topic_id = t.topic_id;
        tr.partition_responses = outcomes
            .into_iter()
            .map(|o| {
                let mut r = PartitionProduceResponse::default();
                r.index = o.index;
                r.error_code = o.error_code;
                r.base_offset = o.base_offset;
                r.log_append_time_ms = -1;
                r.log_start_offset = o.log_start_offset;
                r
            })
            .collect();
        resp.responses.push(tr);
    }
    Some(resp)
}

/// Waits (woken by HW moves, never polling) until every acks=all partition's HW has passed
/// its batch; those still short at the deadline get REQUEST_TIMED_OUT, and those whose
/// leadership moved meanwhile get NOT_LEADER_OR_FOLLOWER (the batch may have been truncated
/// away; the client retries on the new leader), never a success. A batch committed while the
/// ISR is below `min.insync.replicas` gets NOT_ENOUGH_REPLICAS_AFTER_APPEND.
async fn wait_for_high_watermarks(
    b: &Broker,
    topics: &mut [(&strom_protocol::kafka_protocol::messages::produce_request::TopicProduceData, Vec<Outcome>)],
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = b.replicas.data_arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut pending = 0;
        for o in topics.iter_mut().flat_map(|(_, os)| os.iter_mut()) {
            let Some((p, end, epoch, min_isr)) = &o.wait_for else { continue };
            match p.commit_state(*end, *epoch) {
                // As Kafka: committed, but by fewer replicas than the topic asks for (the ISR
                // shrank while the batch waited). The client is told, and may retry.
                Commit::Committed if p.role().isr.len() < *min_isr => {
                    o.error_code = NOT_ENOUGH_REPLICAS_AFTER_APPEND;
                    o.wait_for = None;
                }
                Commit::Committed => o.wait_for = None,
                Commit::Pending => pending += 1,
                Commit::LeadershipLost => {
                    o.error_code = NOT_LEADER_OR_FOLLOWER;
                    o.wait_for = None;
                }
            }
        }
        if pending == 0 {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            for o in topics.iter_mut().flat_map(|(_, os)| os.iter_mut()) {
                if o.wait_for.take().is_some() {
                    o.error_code = REQUEST_TIMED_OUT;
                }
            }
            return;
        }
    }
}
