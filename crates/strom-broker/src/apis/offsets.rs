//! Offset lookups and moves: ListOffsets (earliest -2, latest -1, max timestamp -3, by
//! timestamp), OffsetForLeaderEpoch (KIP-101/279), DeleteRecords.

use strom_protocol::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use strom_protocol::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use strom_protocol::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use strom_protocol::kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use super::access::{Access, TOPIC_AUTHORIZATION_FAILED};
use super::Broker;
use crate::replica::{Partition, ReplicaError};
use strom_metadata::acl::Operation;

const OFFSET_OUT_OF_RANGE: i16 = 1;
const POLICY_VIOLATION: i16 = 44;

const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
const MAX_TIMESTAMP: i64 = -3;
/// KIP-1005's earliest local offset: the log start offset, as there is no tiered storage.
const EARLIEST_LOCAL: i64 = -4;

fn leader_of(b: &Broker, topic: &str, partition: i32, epoch: i32) -> Result<std::sync::Arc<Partition>, i16> {
    let p = b.replicas.get(topic, partition).ok_or_else(|| b.not_hosted(topic, partition))?;
    p.check_epoch(epoch).map_err(|e| e.kafka_code())?;
    if !p.is_leader() {
        return Err(ReplicaError::NotLeader(p.tp.to_string()).kafka_code());
    }
    Ok(p)
}

pub(super) fn list_offsets(b: &Broker, a: &Access<'_>, req: &ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in &req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        let allowed = a.may_topic(Operation::Describe, &t.name.0);
        for p in &t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            pr.leader_epoch = -1;
            let found = if allowed {
                leader_of(b, &t.name.0, p.partition_index, p.current_leader_epoch)
            } else {
                Err(TOPIC_AUTHORIZATION_FAILED)
            };
            match found {
                Ok(part) => {
                    // The field exists from v4 on; below, setting it would make the response
                    // unencodable.
                    if version >= 4 {
                        pr.leader_epoch = part.role().leader_epoch;
                    }
                    // A consumer (replica id -1) never sees past the high watermark, nor at
                    // read_committed (v2+) past the last stable offset.
                    let visible_end = if version >= 2 && req.isolation_level == 1 {
                        part.last_stable_offset()
                    } else {
                        part.high_watermark()
                    };
                    let found = match p.timestamp {
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((part.log_start_offset(), -1))),
                        LATEST => Ok(Some((visible_end, -1))),
                        MAX_TIMESTAMP => Ok(part.with_log(|l| l.max_timestamp())),
                        ts if ts >= 0 => {
                            part.with_log(|l| l.offset_for_timestamp(ts)).map(|r| r.filter(|(o, _)| *o < visible_end))
                        }
                        _ => Ok(None),
                    };
                    match found {
                        Ok(Some((offset, ts))) => {
                            pr.offset = offset;
                            pr.timestamp = ts;
                        }
                        Ok(None) => {}
                        Err(e) => pr.error_code = ReplicaError::Log(e).kafka_code(),
                    }
                }
                Err(code) => pr.error_code = code,
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

pub(super) fn offset_for_leader_epoch(
    b: &Broker,
    a: &Access<'_>,
    req: &OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    // A follower (replica id ≥ 0) needs CLUSTER_ACTION; a client, DESCRIBE on the topic.
    let follower = req.replica_id.0 >= 0;
    let follower_allowed = !follower || a.may_cluster(Operation::ClusterAction);
    for t in &req.topics {
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        let allowed = follower_allowed && (follower || a.may_topic(Operation::Describe, &t.topic.0));
        for p in &t.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            e.leader_epoch = -1;
            e.end_offset = -1;
            let found = if allowed {
                leader_of(b, &t.topic.0, p.partition, p.current_leader_epoch)
            } else {
                Err(TOPIC_AUTHORIZATION_FAILED)
            };
            match found {
                Ok(part) => {
                    if let Some((epoch, end)) = part.with_log(|l| l.end_offset_for_epoch(p.leader_epoch)) {
                        e.leader_epoch = epoch;
                        e.end_offset = end;
                    }
                }
                Err(code) => e.error_code = code,
            }
            tr.partitions.push(e);
        }
        resp.topics.push(tr);
    }
    resp
}

pub(super) fn delete_records(b: &Broker, a: &Access<'_>, req: &DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in &req.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        let allowed = a.may_topic(Operation::Delete, &t.name.0);
        for p in &t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            let found =
                if allowed { leader_of(b, &t.name.0, p.partition_index, -1) } else { Err(TOPIC_AUTHORIZATION_FAILED) };
            match found {
                Ok(part) => {
                    // -1 means "up to the high watermark"; beyond it is out of range.
                    let hw = part.high_watermark();
                    let target = if p.offset == -1 { hw } else { p.offset };
                    if target > hw || target < 0 {
                        pr.error_code = OFFSET_OUT_OF_RANGE;
                    } else if !part.with_log(|l| l.config().delete) {
                        // As Kafka: records are deleted only where cleanup.policy has `delete`.
                        pr.error_code = POLICY_VIOLATION;
                    } else {
                        match part.with_log(|l| l.delete_records_before(target)) {
                            Ok(start) => pr.low_watermark = start,
                            Err(e) => pr.error_code = ReplicaError::Log(e).kafka_code(),
                        }
                    }
                }
                Err(code) => pr.error_code = code,
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
