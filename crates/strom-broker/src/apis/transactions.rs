//! Transactions (#22): the transaction coordinator's APIs (transactional InitProducerId,
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, ListTransactions, DescribeTransactions),
//! TxnOffsetCommit (the group coordinator's part), the completion driver that writes a
//! transaction's markers, and the partition side: WriteTxnMarkers, which a transaction
//! coordinator sends a partition's leader to end a producer's transaction there, and
//! DescribeProducers (`kafka-transactions.sh describe-producers`). The state rules live in
//! [`crate::coordinator::txn`].
//!
//! **WriteTxnMarkers (Kafka's rules):** CLUSTER_ACTION on the cluster or
//! CLUSTER_AUTHORIZATION_FAILED for every partition; each marker is appended by the leader
//! (`Partition::append_txn_marker`: INVALID_PRODUCER_EPOCH for an older producer epoch,
//! TRANSACTION_COORDINATOR_FENCED for an older coordinator epoch, NOT_ENOUGH_REPLICAS below
//! `min.insync.replicas`) and answered once committed, as an acks=all write, or with
//! REQUEST_TIMED_OUT after `MARKER_TIMEOUT`. A marker on a `__consumer_offsets` partition
//! also ends the producer's pending offset commits there (applied, or dropped).
//!
//! **Completion (Kafka's TransactionMarkerChannelManager):** the markers of a half-ended
//! transaction go to each partition's leader, all leaders at once (this broker's own
//! partitions directly); a partition that did not take its marker is retried with backoff
//! against the leader the metadata names then, until it took it, its topic is gone, or the
//! producer or coordinator epoch there is newer (the transaction was fenced: nothing left to
//! end). Then Complete* is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use strom_metadata::acl::{Operation, ResourceType};
use strom_protocol::batch::TxnMarker;
use strom_protocol::kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use strom_protocol::kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use strom_protocol::kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use strom_protocol::kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use strom_protocol::kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use strom_protocol::kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use strom_protocol::kafka_protocol::messages::{
    describe_transactions_response, list_transactions_response, AddOffsetsToTxnRequest, AddOffsetsToTxnResponse,
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use strom_protocol::kafka_protocol::protocol::Request;
use strom_protocol::values::{now_ms, str_bytes, topic_name};

use super::access::{Access, CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED};
use super::Broker;
use crate::coordinator::group::offsets::OFFSETS_TOPIC;
use crate::coordinator::group::{Committed, MemberRef};
use crate::coordinator::txn::state::{CONCURRENT_TRANSACTIONS, INVALID_PRODUCER_EPOCH, PRODUCER_FENCED};
use crate::coordinator::txn::{InitOutcome, InitRequest, TxnState, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR};
use crate::replica::CommitWait;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const REQUEST_TIMED_OUT: i16 = 7;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const INVALID_REQUEST: i16 = 42;
const INVALID_TXN_STATE: i16 = 48;
const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
pub(super) const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
/// How long a marker waits to be committed (Kafka: the coordinator's request timeout).
const MARKER_TIMEOUT: Duration = Duration::from_secs(30);
/// A partition that did not take its marker is retried after this, doubling up to the max.
const MARKER_RETRY_MIN: Duration = Duration::from_millis(20);
const MARKER_RETRY_MAX: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_IDLE_CONNECTIONS_PER_BROKER: usize = 4;
/// How long a transactional offset commit waits to be committed.
const TXN_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Topics only coordinators write: never part of a client's transaction.
fn is_internal_topic(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == crate::coordinator::txn::TRANSACTION_STATE_TOPIC
}

pub(super) async fn write_txn_markers(
    b: &Broker,
    a: &Access<'_>,
    req: &WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let allowed = a.may_cluster(Operation::ClusterAction);
    let deadline = tokio::time::Instant::now() + MARKER_TIMEOUT;
    let mut resp = WriteTxnMarkersResponse::default();
    for m in &req.markers {
        let mut mr = WritableTxnMarkerResult::default();
        mr.producer_id = m.producer_id;
        let marker = TxnMarker { commit: m.transaction_result, coordinator_epoch: m.coordinator_epoch };
        for t in &m.topics {
            let mut tr = WritableTxnMarkerTopicResult::default();
            tr.name = t.name.clone();
            for &p in &t.partition_indexes {
                let mut pr = WritableTxnMarkerPartitionResult::default();
                pr.partition_index = p;
                pr.error_code = if allowed {
                    write_marker_local(b, &t.name.0, p, m.producer_id.0, m.producer_epoch, marker, deadline).await
                } else {
                    CLUSTER_AUTHORIZATION_FAILED
                };
                tr.partitions.push(pr);
            }
            mr.topics.push(tr);
        }
        resp.markers.push(mr);
    }
    resp
}

/// Writes one marker on a partition this broker leads and waits until it is committed (or
/// `deadline`); a Kafka error code (0: written). The module docs give the rules.
async fn write_marker_local(
    b: &Broker,
    topic: &str,
    p: i32,
    producer_id: i64,
    producer_epoch: i16,
    marker: TxnMarker,
    deadline: tokio::time::Instant,
) -> i16 {
    let Some(part) = b.replicas.get(topic, p) else { return b.not_hosted(topic, p) };
    let now = now_ms();
    let min_isr = b.min_isr(&b.image(), topic);
    // An abort syncs the transaction index; a commit may flush or roll.
    let may_block = !marker.commit || part.append_may_block(128, now);
    let appended = b
        .replicas
        .disk
        .run_if(may_block, || part.append_txn_marker(producer_id, producer_epoch, marker, now, min_isr))
        .await;
    let code = match appended {
        Ok(appended) => {
            let end = appended.info.last_offset + 1;
            match part.wait_committed(end, appended.leader_epoch, 0, false, deadline).await {
                CommitWait::Committed => 0,
                // As Kafka: written, but the ISR shrank below min.insync.replicas.
                CommitWait::CommittedBelowMinIsr => NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                CommitWait::LeadershipLost => NOT_LEADER_OR_FOLLOWER,
                CommitWait::TimedOut => REQUEST_TIMED_OUT,
            }
        }
        Err(e) => {
            tracing::debug!(node = b.settings.node_id, partition = %part.tp, error = %e, "transaction marker refused");
            e.kafka_code()
        }
    };
    if code == 0 && topic == OFFSETS_TOPIC {
        // May wait for a load of the offsets partition: off the async workers.
        b.replicas.disk.run_sync(|| b.offsets.complete_txn(p, producer_id, marker.commit));
    }
    code
}

/// Maps PRODUCER_FENCED to INVALID_PRODUCER_EPOCH for request versions from before it
/// existed (below `since`), as Kafka does.
fn fenced_code(code: i16, version: i16, since: i16) -> i16 {
    if code == PRODUCER_FENCED && version < since {
        INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

/// InitProducerId with a transactional id.
pub(super) async fn init_transactional_producer_id(
    b: &Broker,
    a: &Access<'_>,
    req: &InitProducerIdRequest,
    txn_id: &str,
    version: i16,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    let result = async {
        if txn_id.is_empty() {
            return Err(INVALID_REQUEST);
        }
        if !a.may(Operation::Write, ResourceType::TransactionalId, txn_id) {
            return Err(TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
        }
        let new_producer_id = if b.txns.needs_producer_id(txn_id)? {
            Some(b.next_producer_id().await.map_err(|e| {
                tracing::warn!(node = b.settings.node_id, error = %e, "cannot allocate a producer id");
                COORDINATOR_NOT_AVAILABLE
            })?)
        } else {
            None
        };
        let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
        let ask = InitRequest { timeout_ms: req.transaction_timeout_ms, expected };
        b.txns.init_producer_id(txn_id, ask, new_producer_id).await
    }
    .await;
    match result {
        Ok(InitOutcome::Ready(id, epoch)) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = epoch;
        }
        Ok(InitOutcome::AbortStarted) => resp.error_code = CONCURRENT_TRANSACTIONS,
        Err(code) => resp.error_code = fenced_code(code, version, 4),
    }
    resp
}

/// Partitions of one topic, each with its refusal (None: it may be added).
type PartitionChecks = Vec<(i32, Option<i16>)>;

/// AddPartitionsToTxn: v0–v3 from a client (one transaction); v4 from a leader verifying
/// partitions (KIP-890: `verify_only`, CLUSTER_ACTION), batched by transaction.
pub(super) async fn add_partitions_to_txn(
    b: &Broker,
    a: &Access<'_>,
    req: &AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version >= 4 {
        return verify_partitions(b, a, req);
    }
    let txn_id = req.v3_and_below_transactional_id.0.to_string();
    let image = b.image();
    // Per partition: None while it may be added, else its error.
    let mut checked: Vec<(String, PartitionChecks)> = Vec::new();
    for t in &req.v3_and_below_topics {
        let name = t.name.0.to_string();
        let may_write = a.may_topic(Operation::Write, &name);
        let parts = t
            .partitions
            .iter()
            .map(|&p| {
                let err = if !may_write {
                    Some(TOPIC_AUTHORIZATION_FAILED)
                } else if image.partition(&name, p).is_none() || is_internal_topic(&name) {
                    Some(UNKNOWN_TOPIC_OR_PARTITION)
                } else {
                    None
                };
                (p, err)
            })
            .collect();
        checked.push((name, parts));
    }
    let any_refused = checked.iter().flat_map(|(_, ps)| ps).any(|(_, e)| e.is_some());
    let whole: Option<i16> = if !a.may(Operation::Write, ResourceType::TransactionalId, &txn_id) {
        Some(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    } else if any_refused {
        None
    } else {
        let partitions: Vec<(String, i32)> =
            checked.iter().flat_map(|(t, ps)| ps.iter().map(move |(p, _)| (t.clone(), *p))).collect();
        let r = b
            .txns
            .add_partitions(&txn_id, req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch, &partitions)
            .await;
        Some(r.err().map_or(0, |code| fenced_code(code, version, 2)))
    };
    let mut resp = AddPartitionsToTxnResponse::default();
    for (name, parts) in checked {
        let mut tr = AddPartitionsToTxnTopicResult::default();
        tr.name = topic_name(&name);
        for (p, err) in parts {
            let mut pr = AddPartitionsToTxnPartitionResult::default();
            pr.partition_index = p;
            // Kafka: when some partitions are refused, the others were not attempted.
            pr.partition_error_code = match (whole, err) {
                (Some(code), _) => code,
                (None, Some(e)) => e,
                (None, None) => OPERATION_NOT_ATTEMPTED,
            };
            tr.results_by_partition.push(pr);
        }
        resp.results_by_topic_v3_and_below.push(tr);
    }
    resp
}

/// AddPartitionsToTxn v4 from a leader: is each partition in its transaction? Only
/// `verify_only` transactions are served (adding partitions for a producer is the client's
/// v0–v3 call); the others get INVALID_REQUEST.
fn verify_partitions(b: &Broker, a: &Access<'_>, req: &AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let mut resp = AddPartitionsToTxnResponse::default();
    if !a.may_cluster(Operation::ClusterAction) {
        resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
        return resp;
    }
    for txn in &req.transactions {
        let mut r = AddPartitionsToTxnResult::default();
        r.transactional_id = txn.transactional_id.clone();
        for t in &txn.topics {
            let mut tr = AddPartitionsToTxnTopicResult::default();
            tr.name = t.name.clone();
            for &p in &t.partitions {
                let mut pr = AddPartitionsToTxnPartitionResult::default();
                pr.partition_index = p;
                pr.partition_error_code = if !txn.verify_only {
                    INVALID_REQUEST
                } else {
                    let v = b.txns.verify(&txn.transactional_id.0, txn.producer_id.0, txn.producer_epoch, &t.name.0, p);
                    v.err().unwrap_or(0)
                };
                tr.results_by_partition.push(pr);
            }
            r.topic_results.push(tr);
        }
        resp.results_by_transaction.push(r);
    }
    resp
}

/// Before a leader takes the first transactional batch of a producer's transaction on a
/// partition (one with no transaction of that producer and epoch open there), it asks the
/// transaction coordinator whether the partition is in the transaction (KIP-890 part 1):
/// directly when this broker coordinates it, else AddPartitionsToTxn v4 `verify_only`. Err is
/// the Produce error: INVALID_TXN_STATE when the partition is not in an open transaction of
/// this producer, INVALID_PRODUCER_EPOCH when the producer was fenced, NOT_ENOUGH_REPLICAS
/// (retriable, as Kafka answers) when no coordinator could tell.
pub(super) async fn verify_in_transaction(
    b: &Broker,
    txn_id: Option<&str>,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<(), i16> {
    let Some(txn_id) = txn_id.filter(|t| !t.is_empty()) else { return Err(INVALID_TXN_STATE) };
    let image = b.image();
    let state_topic = image.topics.get(crate::coordinator::txn::TRANSACTION_STATE_TOPIC).ok_or(INVALID_TXN_STATE)?;
    let p = crate::coordinator::partition_for(txn_id, state_topic.partitions.len() as i32);
    let leader = state_topic.partitions.get(&p).map_or(-1, |p| p.leader);
    let answer = if leader == b.settings.node_id {
        b.txns.verify(txn_id, producer_id, epoch, topic, partition).err().unwrap_or(0)
    } else if leader < 0 {
        COORDINATOR_NOT_AVAILABLE
    } else {
        let mut t = AddPartitionsToTxnTopic::default();
        t.name = topic_name(topic);
        t.partitions = vec![partition];
        let mut txn = AddPartitionsToTxnTransaction::default();
        txn.transactional_id = TransactionalId(str_bytes(txn_id));
        txn.producer_id = ProducerId(producer_id);
        txn.producer_epoch = epoch;
        txn.verify_only = true;
        txn.topics = vec![t];
        let mut req = AddPartitionsToTxnRequest::default();
        req.transactions = vec![txn];
        match b.markers.send(b, leader, 4, &req).await {
            Ok(resp) if resp.error_code != 0 => resp.error_code,
            Ok(resp) => resp
                .results_by_transaction
                .iter()
                .flat_map(|r| &r.topic_results)
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .next()
                .unwrap_or(COORDINATOR_NOT_AVAILABLE),
            Err(e) => {
                tracing::debug!(node = b.settings.node_id, leader, error = %e, "transaction verification not sent");
                COORDINATOR_NOT_AVAILABLE
            }
        }
    };
    match answer {
        0 => Ok(()),
        PRODUCER_FENCED | INVALID_PRODUCER_EPOCH => Err(INVALID_PRODUCER_EPOCH),
        CONCURRENT_TRANSACTIONS | NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS => {
            Err(NOT_ENOUGH_REPLICAS)
        }
        _ => Err(INVALID_TXN_STATE),
    }
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction.
pub(super) async fn add_offsets_to_txn(
    b: &Broker,
    a: &Access<'_>,
    req: &AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let txn_id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let mut resp = AddOffsetsToTxnResponse::default();
    resp.error_code = if !a.may(Operation::Write, ResourceType::TransactionalId, &txn_id) {
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else if !a.may_group(Operation::Read, &group) {
        GROUP_AUTHORIZATION_FAILED
    } else {
        let tp = (OFFSETS_TOPIC.to_string(), b.offsets.partition_of(&group));
        match b.txns.add_partitions(&txn_id, req.producer_id.0, req.producer_epoch, &[tp]).await {
            Ok(()) => 0,
            Err(code) => fenced_code(code, version, 2),
        }
    };
    resp
}

/// EndTxn: answered once the commit or abort is decided (Prepare*); the markers follow.
pub(super) async fn end_txn(b: &Broker, a: &Access<'_>, req: &EndTxnRequest, version: i16) -> EndTxnResponse {
    let txn_id = req.transactional_id.0.to_string();
    let mut resp = EndTxnResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    resp.error_code = if !a.may(Operation::Write, ResourceType::TransactionalId, &txn_id) {
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else {
        match b.txns.end_txn(&txn_id, req.producer_id.0, req.producer_epoch, req.committed).await {
            Ok(()) => 0,
            Err(code) => fenced_code(code, version, 2),
        }
    };
    resp
}

/// TxnOffsetCommit: offsets written inside the producer's transaction, pending until its
/// marker ([`crate::coordinator::group::offsets`]'s rule).
pub(super) async fn txn_offset_commit(
    b: &Broker,
    a: &Access<'_>,
    req: &TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let gid = req.group_id.0.to_string();
    let image = b.image();
    let mut code = if !a.may(Operation::Write, ResourceType::TransactionalId, &req.transactional_id.0) {
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else if !a.may_group(Operation::Read, &gid) {
        GROUP_AUTHORIZATION_FAILED
    } else {
        super::groups::coordinate(b, &gid).err().unwrap_or(0)
    };
    // v3+: a member of a group generation is checked as an OffsetCommit is.
    if code == 0 && version >= 3 && req.generation_id >= 0 {
        let member = MemberRef { member_id: &req.member_id, instance_id: req.group_instance_id.as_deref() };
        code = b.groups.check_commit(&gid, req.generation_id, member);
    }
    // KIP-890, as for a produce: the group's offsets partition must be in the producer's open
    // transaction (AddOffsetsToTxn added it), unless a commit of this transaction is there.
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    if code == 0 && b.settings.transactions.verification {
        let p = b.offsets.partition_of(&gid);
        let open = b.replicas.get(OFFSETS_TOPIC, p).is_some_and(|part| part.has_open_txn(pid, epoch));
        if !open {
            let verified = verify_in_transaction(b, Some(&req.transactional_id.0), pid, epoch, OFFSETS_TOPIC, p).await;
            code = match verified {
                Ok(()) => 0,
                // Not answered (no coordinator reachable): retriable for a TxnOffsetCommit.
                Err(NOT_ENOUGH_REPLICAS) => COORDINATOR_NOT_AVAILABLE,
                Err(c) => c,
            };
        }
    }
    let now = now_ms();
    let mut entries = Vec::new();
    let mut resp = TxnOffsetCommitResponse::default();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let may_read = a.may_topic(Operation::Read, &name);
        let mut tr = TxnOffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = TxnOffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = if code != 0 {
                code
            } else if !may_read {
                TOPIC_AUTHORIZATION_FAILED
            } else if image.partition(&name, p.partition_index).is_none() {
                UNKNOWN_TOPIC_OR_PARTITION
            } else if p.committed_metadata.as_ref().is_some_and(|m| m.len() > b.settings.offset_metadata_max_bytes) {
                OFFSET_METADATA_TOO_LARGE
            } else {
                entries.push((
                    name.clone(),
                    p.partition_index,
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                        commit_timestamp_ms: now,
                        expire_timestamp_ms: None,
                    },
                ));
                0
            };
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    if !entries.is_empty() {
        let producer = (req.producer_id.0, req.producer_epoch);
        if let Err(code) = b.offsets.commit_txn(&gid, producer, entries, TXN_COMMIT_TIMEOUT).await {
            for pr in resp.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                if pr.error_code == 0 {
                    pr.error_code = code;
                }
            }
        }
    }
    resp
}

/// ListTransactions: the ids this broker coordinates, filtered by state, producer id and
/// (v1+) how long their transaction has been open.
pub(super) fn list_transactions(b: &Broker, a: &Access<'_>, req: &ListTransactionsRequest) -> ListTransactionsResponse {
    const KNOWN: &[&str] = &[
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let mut resp = ListTransactionsResponse::default();
    let states: Vec<String> = req.state_filters.iter().map(|s| s.to_string()).collect();
    resp.unknown_state_filters = req.state_filters.iter().filter(|s| !KNOWN.contains(&s.as_str())).cloned().collect();
    let now = now_ms();
    let mut listed: Vec<_> = b
        .txns
        .list()
        .into_iter()
        .filter(|l| states.is_empty() || states.iter().any(|s| s == l.meta.state.name()))
        .filter(|l| {
            req.producer_id_filters.is_empty() || req.producer_id_filters.iter().any(|p| p.0 == l.meta.producer_id)
        })
        .filter(|l| {
            req.duration_filter < 0
                || (l.meta.state == TxnState::Ongoing && now.saturating_sub(l.meta.txn_start_ms) >= req.duration_filter)
        })
        .filter(|l| a.may(Operation::Describe, ResourceType::TransactionalId, &l.transactional_id))
        .collect();
    listed.sort_by(|x, y| x.transactional_id.cmp(&y.transactional_id));
    for l in listed {
        let mut s = list_transactions_response::TransactionState::default();
        s.transactional_id = TransactionalId(str_bytes(&l.transactional_id));
        s.producer_id = ProducerId(l.meta.producer_id);
        s.transaction_state = str_bytes(l.meta.state.name());
        resp.transaction_states.push(s);
    }
    resp
}

/// DescribeTransactions: each id's state, producer, timeout and partitions.
pub(super) fn describe_transactions(
    b: &Broker,
    a: &Access<'_>,
    req: &DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut resp = DescribeTransactionsResponse::default();
    for id in &req.transactional_ids {
        let mut s = describe_transactions_response::TransactionState::default();
        s.transactional_id = id.clone();
        s.producer_id = ProducerId(-1);
        s.producer_epoch = -1;
        s.transaction_start_time_ms = -1;
        if !a.may(Operation::Describe, ResourceType::TransactionalId, &id.0) {
            s.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        } else {
            match b.txns.describe(&id.0) {
                Err(code) => s.error_code = code,
                Ok(None) => s.error_code = TRANSACTIONAL_ID_NOT_FOUND,
                Ok(Some(m)) => {
                    s.transaction_state = str_bytes(m.state.name());
                    s.transaction_timeout_ms = m.timeout_ms;
                    s.transaction_start_time_ms = m.txn_start_ms;
                    s.producer_id = ProducerId(m.producer_id);
                    s.producer_epoch = m.producer_epoch;
                    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
                    for (t, p) in &m.partitions {
                        by_topic.entry(t).or_default().push(*p);
                    }
                    for (t, ps) in by_topic {
                        let mut td = describe_transactions_response::TopicData::default();
                        td.topic = topic_name(t);
                        td.partitions = ps;
                        s.topics.push(td);
                    }
                }
            }
        }
        resp.transaction_states.push(s);
    }
    resp
}

/// Writes the markers of `txn_id`'s half-ended transaction on every partition, then its
/// Complete* state (the completion rules in the module docs). Returns when done, or when this
/// broker no longer coordinates the transaction in the epoch it started with.
pub(super) async fn complete_transaction(b: &Broker, txn_id: &str) {
    // Test builds: leave the transaction half-ended here (a coordinator that fails before
    // its markers), for the next coordinator to end.
    fail::fail_point!("txn_markers", |_| ());
    let mut backoff = MARKER_RETRY_MIN;
    let mut done: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut epoch_started = None;
    loop {
        let Some((meta, epoch)) = b.txns.prepared(txn_id) else { return };
        if *epoch_started.get_or_insert(epoch) != epoch {
            // A new load of the partition resumed it in its own completion.
            return;
        }
        let marker = TxnMarker { commit: meta.state == TxnState::PrepareCommit, coordinator_epoch: epoch };
        let image = b.image();
        let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        let left: Vec<&(String, i32)> = meta.partitions.iter().filter(|tp| !done.contains(*tp)).collect();
        for (t, p) in left {
            match image.partition(t, *p) {
                // The topic is gone: nothing there to end.
                None => {
                    done.insert((t.clone(), *p));
                }
                Some(pm) => by_leader.entry(pm.leader).or_default().push((t.clone(), *p)),
            }
        }
        let writes = by_leader
            .into_iter()
            .map(|(leader, parts)| write_markers_at(b, leader, meta.producer_id, meta.producer_epoch, marker, parts));
        let mut fenced = false;
        for (tp, code) in futures_util::future::join_all(writes).await.into_iter().flatten() {
            match code {
                // Written; or the partition has a newer producer epoch (the transaction was
                // fenced there, nothing to end). (A partition is gone only when our own
                // metadata says so, above: a leader behind on metadata may answer
                // UNKNOWN_TOPIC_OR_PARTITION for one it is about to lead.)
                0 | INVALID_PRODUCER_EPOCH => {
                    done.insert(tp);
                }
                TRANSACTION_COORDINATOR_FENCED => fenced = true,
                code => {
                    tracing::debug!(node = b.settings.node_id, transactional_id = txn_id, partition = %format!("{}-{}", tp.0, tp.1), code, "marker not written yet; retrying");
                }
            }
        }
        if fenced {
            tracing::info!(
                node = b.settings.node_id,
                transactional_id = txn_id,
                "a newer transaction coordinator owns this transaction"
            );
            return;
        }
        if meta.partitions.iter().all(|tp| done.contains(tp)) {
            match b.txns.complete(txn_id, &meta, epoch).await {
                Ok(()) => return,
                Err(NOT_COORDINATOR) => return,
                Err(code) => {
                    tracing::debug!(
                        node = b.settings.node_id,
                        transactional_id = txn_id,
                        code,
                        "completion not written yet; retrying"
                    )
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MARKER_RETRY_MAX);
    }
}

/// Writes one marker on each of `parts`, which `leader` leads: locally, or in one
/// WriteTxnMarkers to it. Each partition's error code (0: written).
async fn write_markers_at(
    b: &Broker,
    leader: i32,
    producer_id: i64,
    producer_epoch: i16,
    marker: TxnMarker,
    parts: Vec<(String, i32)>,
) -> Vec<((String, i32), i16)> {
    let deadline = tokio::time::Instant::now() + MARKER_TIMEOUT;
    if leader == b.settings.node_id {
        let writes =
            parts.iter().map(|(t, p)| write_marker_local(b, t, *p, producer_id, producer_epoch, marker, deadline));
        let codes = futures_util::future::join_all(writes).await;
        return parts.into_iter().zip(codes).collect();
    }
    let fail = |parts: Vec<(String, i32)>, code| parts.into_iter().map(|tp| (tp, code)).collect();
    if leader < 0 {
        return fail(parts, NOT_LEADER_OR_FOLLOWER);
    }
    let mut req = WriteTxnMarkersRequest::default();
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(producer_id);
    m.producer_epoch = producer_epoch;
    m.transaction_result = marker.commit;
    m.coordinator_epoch = marker.coordinator_epoch;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &parts {
        by_topic.entry(t).or_default().push(*p);
    }
    for (t, ps) in by_topic {
        let mut mt = WritableTxnMarkerTopic::default();
        mt.name = topic_name(t);
        mt.partition_indexes = ps;
        m.topics.push(mt);
    }
    req.markers.push(m);
    let resp = match b.markers.send(b, leader, 1, &req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(node = b.settings.node_id, leader, error = %e, "WriteTxnMarkers not sent");
            return fail(parts, NOT_LEADER_OR_FOLLOWER);
        }
    };
    let mut codes: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for mr in resp.markers {
        for tr in mr.topics {
            for pr in tr.partitions {
                codes.insert((tr.name.0.to_string(), pr.partition_index), pr.error_code);
            }
        }
    }
    parts
        .into_iter()
        .map(|tp| {
            let code = codes.get(&tp).copied().unwrap_or(NOT_LEADER_OR_FOLLOWER);
            (tp, code)
        })
        .collect()
}

/// Connections to other brokers' inter-broker listeners for the requests a transaction
/// coordinator and a leader send each other (WriteTxnMarkers, AddPartitionsToTxn
/// verification), kept for reuse.
#[derive(Default)]
pub struct MarkerConnections {
    idle: tokio::sync::Mutex<HashMap<i32, Vec<strom_client::Connection>>>,
}

impl MarkerConnections {
    async fn send<R: Request>(&self, b: &Broker, leader: i32, version: i16, req: &R) -> Result<R::Response, String> {
        let pooled = self.idle.lock().await.get_mut(&leader).and_then(|v| v.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let image = b.image();
                let broker = image.brokers.get(&leader).ok_or("unknown broker")?;
                let e = broker.endpoint(&b.settings.inter_broker_listener).ok_or("no inter-broker endpoint")?;
                let addr = format!("{}:{}", e.host, e.port);
                let client_id = format!("strom-txn-markers-{}", b.settings.node_id);
                strom_client::Connection::connect_secure(
                    &addr,
                    &client_id,
                    CONNECT_TIMEOUT,
                    &b.settings.inter_broker_security,
                )
                .await
                .map_err(|e| e.to_string())?
            }
        };
        let resp = conn.send(version, req, MARKER_TIMEOUT).await.map_err(|e| e.to_string())?;
        let mut idle = self.idle.lock().await;
        let list = idle.entry(leader).or_default();
        if list.len() < MAX_IDLE_CONNECTIONS_PER_BROKER {
            list.push(conn);
        }
        Ok(resp)
    }
}

pub(super) fn describe_producers(
    b: &Broker,
    a: &Access<'_>,
    req: &DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut resp = DescribeProducersResponse::default();
    for t in &req.topics {
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        let allowed = a.may_topic(Operation::Read, &t.name.0);
        for &p in &t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = p;
            match b.replicas.get(&t.name.0, p) {
                _ if !allowed => pr.error_code = TOPIC_AUTHORIZATION_FAILED,
                None => pr.error_code = b.not_hosted(&t.name.0, p),
                Some(part) if !part.is_leader() => pr.error_code = NOT_LEADER_OR_FOLLOWER,
                Some(part) => {
                    pr.active_producers = part
                        .describe_producers()
                        .into_iter()
                        .map(|d| {
                            let mut s = ProducerState::default();
                            s.producer_id = d.producer_id.into();
                            s.producer_epoch = d.epoch as i32;
                            s.last_sequence = d.last_sequence;
                            s.last_timestamp = d.last_timestamp;
                            s.coordinator_epoch = d.coordinator_epoch;
                            s.current_txn_start_offset = d.txn_start_offset;
                            s
                        })
                        .collect();
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
