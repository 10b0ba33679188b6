//! Transactions, the partition side (#22): WriteTxnMarkers, which a transaction coordinator
//! sends a partition's leader to end a producer's transaction there, and DescribeProducers
//! (`kafka-transactions.sh describe-producers`: the producers a partition knows, with each
//! one's open transaction).
//!
//! **WriteTxnMarkers (Kafka's rules):** CLUSTER_ACTION on the cluster or
//! CLUSTER_AUTHORIZATION_FAILED for every partition; each marker is appended by the leader
//! (`Partition::append_txn_marker`: INVALID_PRODUCER_EPOCH for an older producer epoch,
//! TRANSACTION_COORDINATOR_FENCED for an older coordinator epoch, NOT_ENOUGH_REPLICAS below
//! `min.insync.replicas`) and answered once committed, as an acks=all write, or with
//! REQUEST_TIMED_OUT after `MARKER_TIMEOUT`.

use std::time::Duration;

use strom_metadata::acl::Operation;
use strom_protocol::batch::TxnMarker;
use strom_protocol::kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use strom_protocol::kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use strom_protocol::kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use strom_protocol::values::now_ms;

use super::access::{Access, CLUSTER_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED};
use super::Broker;
use crate::replica::CommitWait;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const REQUEST_TIMED_OUT: i16 = 7;
const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
/// How long a marker waits to be committed (Kafka: the coordinator's request timeout).
const MARKER_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn write_txn_markers(
    b: &Broker,
    a: &Access<'_>,
    req: &WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let allowed = a.may_cluster(Operation::ClusterAction);
    let image = b.image();
    let now = now_ms();
    let deadline = tokio::time::Instant::now() + MARKER_TIMEOUT;
    let mut resp = WriteTxnMarkersResponse::default();
    for m in &req.markers {
        let mut mr = WritableTxnMarkerResult::default();
        mr.producer_id = m.producer_id;
        let marker = TxnMarker { commit: m.transaction_result, coordinator_epoch: m.coordinator_epoch };
        for t in &m.topics {
            let mut tr = WritableTxnMarkerTopicResult::default();
            tr.name = t.name.clone();
            let min_isr = b.min_isr(&image, &t.name.0);
            for &p in &t.partition_indexes {
                let mut pr = WritableTxnMarkerPartitionResult::default();
                pr.partition_index = p;
                pr.error_code = match b.replicas.get(&t.name.0, p) {
                    _ if !allowed => CLUSTER_AUTHORIZATION_FAILED,
                    None => b.not_hosted(&t.name.0, p),
                    Some(part) => {
                        // An abort syncs the transaction index; a commit may flush or roll.
                        let may_block = !marker.commit || part.append_may_block(128, now);
                        let appended = b
                            .replicas
                            .disk
                            .run_if(may_block, || {
                                part.append_txn_marker(m.producer_id.0, m.producer_epoch, marker, now, min_isr)
                            })
                            .await;
                        match appended {
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
                        }
                    }
                };
                tr.partitions.push(pr);
            }
            mr.topics.push(tr);
        }
        resp.markers.push(mr);
    }
    resp
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
