//! Produce: validate and append each partition's batches as leader (no re-encoding), then
//! answer per `acks`: 0 no response, 1 after the local append, -1 (all) once the high
//! watermark has passed the batch (DESIGN.md §3), or REQUEST_TIMED_OUT after `timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use strom_protocol::kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use strom_protocol::kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{now_ms, topic_name, Broker};
use crate::replica::{Commit, Partition, ReplicaError};

const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const REQUEST_TIMED_OUT: i16 = 7;
const INVALID_RECORD: i16 = 87;

/// One partition's outcome, before acks=all waiting.
struct Outcome {
    index: i32,
    error_code: i16,
    base_offset: i64,
    log_start_offset: i64,
    /// Set when acks=all must wait for the HW to pass this offset.
    wait_for: Option<AckWait>,
}

/// An acks=all partition waiting for its batch to commit.
struct AckWait {
    part: Arc<Partition>,
    /// The offset after the batch: committed once the HW reaches it.
    end: i64,
    /// The leader epoch the commit must happen in.
    leader_epoch: i32,
    min_isr: usize,
    /// A retried batch found in the log (nothing written now): it waits until the ISR has
    /// `min_isr` replicas again rather than being refused (see [`ReplicaManager::append_as_leader`]).
    ///
    /// [`ReplicaManager::append_as_leader`]: crate::replica::ReplicaManager::append_as_leader
    duplicate: bool,
}

/// What a produce gets back.
pub(super) enum ProduceAnswer {
    Response(ProduceResponse),
    /// acks=0, all written: Kafka sends nothing.
    Nothing,
    /// acks=0 and some partition failed: Kafka sends nothing and closes the connection, so the
    /// producer refreshes its metadata (else it keeps sending to a broker that drops them).
    Close(String),
}

pub(super) async fn handle(b: &Broker, req: &ProduceRequest, version: i16) -> ProduceAnswer {
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
                o.error_code = b.not_hosted(&name, p.index);
                outcomes.push(o);
                continue;
            };
            let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) else {
                o.error_code = INVALID_RECORD;
                outcomes.push(o);
                continue;
            };
            // Leadership before min.insync.replicas (checked inside the append, after the
            // duplicate check), as Kafka: a follower (whose ISR comes from the image) answers
            // NOT_LEADER_OR_FOLLOWER, which makes the client refresh its metadata;
            // NOT_ENOUGH_REPLICAS would have it retry here.
            if !part.is_leader() {
                o.error_code = NOT_LEADER_OR_FOLLOWER;
                outcomes.push(o);
                continue;
            }
            match b.replicas.append_as_leader(&part, records, now, (req.acks == -1).then_some(min_isr)) {
                Ok(appended) => {
                    let info = appended.info;
                    let topic = crate::metrics::TopicLabels { topic: name.clone() };
                    b.metrics.bytes_in.get_or_create(&topic).inc_by(info.bytes);
                    b.metrics.messages_in.get_or_create(&topic).inc_by(info.records.max(0) as u64);
                    o.base_offset = info.first_offset;
                    o.log_start_offset = appended.log_start_offset;
                    if req.acks == -1 {
                        o.wait_for = Some(AckWait {
                            part,
                            end: info.last_offset + 1,
                            leader_epoch: appended.leader_epoch,
                            min_isr,
                            duplicate: appended.duplicate,
                        });
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
        let failed: Vec<String> = topics
            .iter()
            .flat_map(|(t, outcomes)| {
                outcomes
                    .iter()
                    .filter(|o| o.error_code != 0)
                    .map(move |o| format!("{}-{}: {}", t.name.0, o.index, o.error_code))
            })
            .collect();
        return if failed.is_empty() { ProduceAnswer::Nothing } else { ProduceAnswer::Close(failed.join(", ")) };
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
    ProduceAnswer::Response(resp)
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
            let Some(w) = &o.wait_for else { continue };
            match w.part.commit_state(w.end, w.leader_epoch) {
                // A retry waits for the ISR to grow back (the client would otherwise take the
                // batch for not written; see `AckWait::duplicate`).
                Commit::Committed if w.duplicate && w.part.role().isr.len() < w.min_isr => pending += 1,
                // As Kafka: committed, but by fewer replicas than the topic asks for (the ISR
                // shrank while the batch waited). The client is told, and may retry.
                Commit::Committed if w.part.role().isr.len() < w.min_isr => {
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
                if let Some(w) = o.wait_for.take() {
                    o.error_code = match w.part.commit_state(w.end, w.leader_epoch) {
                        Commit::Committed => NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                        _ => REQUEST_TIMED_OUT,
                    };
                }
            }
            return;
        }
    }
}
