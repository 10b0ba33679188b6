//! Produce: validate and append each partition's batches as leader (no re-encoding), then
//! answer per `acks`: 0 no response, 1 after the local append, -1 (all) once the high
//! watermark has passed the batch (DESIGN.md §3), or REQUEST_TIMED_OUT after `timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use strom_protocol::kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use strom_protocol::kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::access::{Access, TOPIC_AUTHORIZATION_FAILED};
use super::Broker;
use crate::replica::{CommitWait, Partition, ReplicaError};
use strom_metadata::acl::Operation;
use strom_protocol::values::{now_ms, topic_name};

const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const REQUEST_TIMED_OUT: i16 = 7;
const INVALID_RECORD: i16 = 87;

/// What a client may not write: a control batch is the transaction coordinator's to write
/// (Kafka refuses one from a client with INVALID_RECORD). Only headers are read.
fn refused_batches(mut records: &[u8]) -> Option<i16> {
    while let Ok(v) = strom_protocol::batch::BatchView::parse(records) {
        if v.is_control() {
            return Some(INVALID_RECORD);
        }
        records = &records[v.size()..];
    }
    None
}

/// The producer (id, epoch) of the first transactional batch in `records`, if any.
fn transactional_producer(mut records: &[u8]) -> Option<(i64, i16)> {
    while let Ok(v) = strom_protocol::batch::BatchView::parse(records) {
        if v.is_transactional() && !v.is_control() {
            return Some((v.producer_id(), v.producer_epoch()));
        }
        records = &records[v.size()..];
    }
    None
}

/// One partition's outcome, before acks=all waiting.
struct Outcome {
    index: i32,
    error_code: i16,
    base_offset: i64,
    /// The broker's timestamp of the batches (LogAppendTime topics), else -1.
    log_append_time_ms: i64,
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
    /// `min_isr` replicas again rather than being refused (see [`Partition::append_as_leader`]).
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

/// Kafka's `__admin_client` id: the one client allowed to write to internal topics.
const ADMIN_CLIENT_ID: &str = "__admin_client";
const INVALID_TOPIC_EXCEPTION: i16 = 17;

/// Topics only the broker writes (its coordinators' state); a client produce to one is
/// INVALID_TOPIC_EXCEPTION unless its client id is Kafka's `__admin_client`.
fn is_internal(topic: &str) -> bool {
    topic == crate::coordinator::group::offsets::OFFSETS_TOPIC
        || topic == crate::coordinator::txn::TRANSACTION_STATE_TOPIC
}

pub(super) async fn handle(
    b: &Broker,
    a: &Access<'_>,
    req: &ProduceRequest,
    version: i16,
    client_id: &str,
) -> ProduceAnswer {
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
        let min_isr = b.min_isr(&image, &name);
        let may_write = a.may_topic(Operation::Write, &name);
        let mut outcomes = Vec::with_capacity(t.partition_data.len());
        for p in &t.partition_data {
            let mut o = Outcome {
                index: p.index,
                error_code: 0,
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
                wait_for: None,
            };
            if !may_write {
                o.error_code = TOPIC_AUTHORIZATION_FAILED;
                outcomes.push(o);
                continue;
            }
            if is_internal(&name) && client_id != ADMIN_CLIENT_ID {
                o.error_code = INVALID_TOPIC_EXCEPTION;
                outcomes.push(o);
                continue;
            }
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
            if let Some(code) = refused_batches(records) {
                o.error_code = code;
                outcomes.push(o);
                continue;
            }
            // Leadership before min.insync.replicas (checked inside the append, after the
            // duplicate check), as Kafka: a follower (whose ISR comes from the image) answers
            // NOT_LEADER_OR_FOLLOWER, which makes the client refresh its metadata;
            // NOT_ENOUGH_REPLICAS would have it retry here.
            if !part.is_leader() {
                o.error_code = NOT_LEADER_OR_FOLLOWER;
                outcomes.push(o);
                continue;
            }
            // KIP-890: the first batch of a producer's transaction here is verified with its
            // coordinator (apis/transactions.rs, verify_in_transaction), under a guard that a
            // marker written meanwhile voids (Partition::append_as_leader_verified).
            let mut verified = None;
            if let Some((pid, epoch)) = transactional_producer(records) {
                let txn_id = req.transactional_id.as_ref().map(|t| t.0.as_str());
                // A transactional write needs WRITE on its transactional id, as Kafka.
                if !txn_id
                    .is_some_and(|id| a.may(Operation::Write, strom_metadata::acl::ResourceType::TransactionalId, id))
                {
                    o.error_code = super::transactions::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
                    outcomes.push(o);
                    continue;
                }
                if b.settings.transactions.verification && !part.has_open_txn(pid, epoch) {
                    let token = part.start_verification(pid, epoch);
                    let answer =
                        super::transactions::verify_in_transaction(b, txn_id, pid, epoch, &name, p.index).await;
                    if let Err(code) = answer {
                        o.error_code = code;
                        outcomes.push(o);
                        continue;
                    }
                    verified = Some((pid, epoch, token));
                }
            }
            let may_block = part.append_may_block(records.len(), now);
            let appended = b
                .replicas
                .disk
                .run_if(may_block, || {
                    part.append_as_leader_verified(records, now, (req.acks == -1).then_some(min_isr), verified)
                })
                .await;
            match appended {
                Ok(appended) => {
                    let info = appended.info;
                    let topic = crate::metrics::TopicLabels { topic: name.clone() };
                    b.metrics.bytes_in.get_or_create(&topic).inc_by(info.bytes);
                    b.metrics.messages_in.get_or_create(&topic).inc_by(info.records.max(0) as u64);
                    o.base_offset = info.first_offset;
                    o.log_append_time_ms = info.log_append_time_ms;
                    if info.recompressed_batches > 0 {
                        b.metrics.recompressed_batches.inc_by(info.recompressed_batches);
                    }
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
        wait_for_high_watermarks(&mut topics, Duration::from_millis(req.timeout_ms.max(0) as u64)).await;
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
                r.log_append_time_ms = o.log_append_time_ms;
                r.log_start_offset = o.log_start_offset;
                r
            })
            .collect();
        resp.responses.push(tr);
    }
    ProduceAnswer::Response(resp)
}

/// Waits until every acks=all partition's batch is committed ([`Partition::wait_committed`],
/// all partitions at once): those still short at the deadline get REQUEST_TIMED_OUT, those
/// whose leadership moved meanwhile NOT_LEADER_OR_FOLLOWER (the batch may have been truncated
/// away; the client retries on the new leader), never a success. A batch committed while the
/// ISR is below `min.insync.replicas` gets NOT_ENOUGH_REPLICAS_AFTER_APPEND.
async fn wait_for_high_watermarks(
    topics: &mut [(&strom_protocol::kafka_protocol::messages::produce_request::TopicProduceData, Vec<Outcome>)],
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let waits = topics.iter_mut().flat_map(|(_, os)| os.iter_mut()).filter_map(|o| {
        let w = o.wait_for.take()?;
        Some(async move {
            o.error_code = match w.part.wait_committed(w.end, w.leader_epoch, w.min_isr, w.duplicate, deadline).await {
                CommitWait::Committed => 0,
                // As Kafka: committed, but by fewer replicas than the topic asks for (the ISR
                // shrank while the batch waited). The client is told, and may retry.
                CommitWait::CommittedBelowMinIsr => NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                CommitWait::LeadershipLost => NOT_LEADER_OR_FOLLOWER,
                CommitWait::TimedOut => REQUEST_TIMED_OUT,
            };
        })
    });
    futures_util::future::join_all(waits).await;
}
