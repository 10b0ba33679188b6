//! A consumer-group member for `strom console-consumer --group`: Kafka's classic protocol as
//! a client (FindCoordinator, JoinGroup with the "consumer" protocol and the range assignor,
//! SyncGroup, Heartbeat, OffsetFetch, OffsetCommit, LeaveGroup).
//!
//! The member heartbeats between fetches, rejoins when the coordinator says a rebalance is in
//! progress, starts each assigned partition at the group's committed offset (or per
//! `auto.offset.reset`), and commits what it has printed after every fetch, so a restarted
//! console consumer continues where the group left off.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use strom_protocol::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use strom_protocol::kafka_protocol::messages::leave_group_request::MemberIdentity;
use strom_protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use strom_protocol::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use strom_protocol::kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use strom_protocol::kafka_protocol::messages::*;

use super::cluster::{error_name, Cluster};
use strom_protocol::values::{str_bytes, topic_name};

const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

pub struct GroupMember {
    group: String,
    topic: String,
    coordinator: i32,
    member_id: String,
    generation: i32,
    pub assignment: Vec<i32>,
}

/// ConsumerProtocolSubscription v0: the topics this member wants.
fn subscription(topic: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(-1); // no user data
    b.freeze()
}

/// ConsumerProtocolAssignment v0 of `partitions` of `topic`.
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(partitions.len() as i32);
    for p in partitions {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

/// Kafka's range assignor for one topic: members in id order, partitions in contiguous ranges.
pub fn range_assign(members: &[String], partitions: i32) -> BTreeMap<String, Vec<i32>> {
    let mut sorted = members.to_vec();
    sorted.sort();
    let n = sorted.len().max(1) as i32;
    let (per, extra) = (partitions / n, partitions % n);
    let mut out = BTreeMap::new();
    let mut next = 0;
    for (i, m) in sorted.into_iter().enumerate() {
        let count = per + i32::from((i as i32) < extra);
        out.insert(m, (next..next + count).collect());
        next += count;
    }
    out
}

impl GroupMember {
    /// Joins `group` for `topic` and gets this member's partitions.
    pub async fn join(cluster: &mut Cluster, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Self> {
        let mut req = FindCoordinatorRequest::default();
        req.key = str_bytes(group);
        let mut coordinator = None;
        for _ in 0..50 {
            let r = cluster.send(3, &req).await?;
            if r.error_code == 0 {
                coordinator = Some(r.node_id.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let coordinator = coordinator.context("no coordinator for the group")?;
        cluster.metadata(Some(vec![])).await?;
        let mut m = GroupMember {
            group: group.to_string(),
            topic: topic.to_string(),
            coordinator,
            member_id: String::new(),
            generation: -1,
            assignment: vec![],
        };
        m.rejoin(cluster, partitions).await?;
        Ok(m)
    }

    /// JoinGroup + SyncGroup until this member has a generation and an assignment.
    pub async fn rejoin(&mut self, cluster: &mut Cluster, partitions: i32) -> anyhow::Result<()> {
        for _ in 0..20 {
            let mut proto = JoinGroupRequestProtocol::default();
            proto.name = str_bytes("range");
            proto.metadata = subscription(&self.topic);
            let mut req = JoinGroupRequest::default();
            req.group_id = GroupId(str_bytes(&self.group));
            req.session_timeout_ms = SESSION_TIMEOUT_MS;
            req.rebalance_timeout_ms = SESSION_TIMEOUT_MS;
            req.member_id = str_bytes(&self.member_id);
            req.protocol_type = str_bytes("consumer");
            req.protocols = vec![proto];
            let wait = Duration::from_millis(SESSION_TIMEOUT_MS as u64);
            let r = cluster.send_to(self.coordinator, 5, &req, wait).await?;
            match r.error_code {
                0 => {}
                MEMBER_ID_REQUIRED => {
                    self.member_id = r.member_id.to_string();
                    continue;
                }
                REBALANCE_IN_PROGRESS => continue,
                code => bail!("join group {}: {}", self.group, error_name(code)),
            }
            self.member_id = r.member_id.to_string();
            self.generation = r.generation_id;
            let mut sync = SyncGroupRequest::default();
            sync.group_id = GroupId(str_bytes(&self.group));
            sync.generation_id = self.generation;
            sync.member_id = str_bytes(&self.member_id);
            if r.leader == r.member_id {
                let members: Vec<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
                sync.assignments = range_assign(&members, partitions)
                    .into_iter()
                    .map(|(id, ps)| {
                        let mut a = SyncGroupRequestAssignment::default();
                        a.member_id = str_bytes(&id);
                        a.assignment = assignment(&self.topic, &ps);
                        a
                    })
                    .collect();
            }
            let s = cluster.send_to(self.coordinator, 3, &sync, wait).await?;
            match s.error_code {
                0 => {
                    self.assignment = decode_partitions(&s.assignment);
                    return Ok(());
                }
                REBALANCE_IN_PROGRESS => continue,
                code => bail!("sync group {}: {}", self.group, error_name(code)),
            }
        }
        bail!("could not join group {} (rebalancing for too long)", self.group)
    }

    /// One heartbeat; true when the member must rejoin.
    pub async fn heartbeat(&mut self, cluster: &mut Cluster) -> anyhow::Result<bool> {
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(str_bytes(&self.group));
        req.generation_id = self.generation;
        req.member_id = str_bytes(&self.member_id);
        let r = cluster.send_to(self.coordinator, 3, &req, Duration::ZERO).await?;
        match r.error_code {
            0 => Ok(false),
            // Rejoin: a rebalance, or our generation/membership is gone.
            22 | 25 | REBALANCE_IN_PROGRESS => {
                if r.error_code != REBALANCE_IN_PROGRESS {
                    self.member_id.clear();
                }
                Ok(true)
            }
            code => bail!("heartbeat: {}", error_name(code)),
        }
    }

    /// The group's committed offsets of this member's partitions (-1: none).
    pub async fn committed(&self, cluster: &mut Cluster) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut t = OffsetFetchRequestTopic::default();
        t.name = topic_name(&self.topic);
        t.partition_indexes = self.assignment.clone();
        let mut req = OffsetFetchRequest::default();
        req.group_id = GroupId(str_bytes(&self.group));
        req.topics = Some(vec![t]);
        let r = cluster.send_to(self.coordinator, 7, &req, Duration::ZERO).await?;
        if r.error_code != 0 {
            bail!("offset fetch: {}", error_name(r.error_code));
        }
        Ok(r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.committed_offset))).collect())
    }

    /// Commits `positions` (next offsets to read). Errors from a rebalance are not fatal: the
    /// records will be read again after the rejoin.
    pub async fn commit(&self, cluster: &mut Cluster, positions: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        let mut t = OffsetCommitRequestTopic::default();
        t.name = topic_name(&self.topic);
        t.partitions = positions
            .iter()
            .filter(|(p, _)| self.assignment.contains(p))
            .map(|(p, o)| {
                let mut cp = OffsetCommitRequestPartition::default();
                cp.partition_index = *p;
                cp.committed_offset = *o;
                cp.committed_leader_epoch = -1;
                cp.committed_metadata = Some(str_bytes(""));
                cp
            })
            .collect();
        if t.partitions.is_empty() {
            return Ok(());
        }
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(str_bytes(&self.group));
        req.generation_id_or_member_epoch = self.generation;
        req.member_id = str_bytes(&self.member_id);
        req.topics = vec![t];
        cluster.send_to(self.coordinator, 8, &req, Duration::ZERO).await?;
        Ok(())
    }

    pub async fn leave(&self, cluster: &mut Cluster) -> anyhow::Result<()> {
        let mut m = MemberIdentity::default();
        m.member_id = str_bytes(&self.member_id);
        let mut req = LeaveGroupRequest::default();
        req.group_id = GroupId(str_bytes(&self.group));
        req.members = vec![m];
        cluster.send_to(self.coordinator, 3, &req, Duration::ZERO).await?;
        Ok(())
    }
}

/// The partitions of a ConsumerProtocolAssignment (one topic: ours).
fn decode_partitions(b: &[u8]) -> Vec<i32> {
    fn i16_at(b: &[u8], at: usize) -> Option<i16> {
        Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }
    fn i32_at(b: &[u8], at: usize) -> Option<i32> {
        Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }
    let parse = || -> Option<Vec<i32>> {
        let mut at = 2;
        let topics = i32_at(b, at)?;
        at += 4;
        let mut out = Vec::new();
        for _ in 0..topics.max(0) {
            let len = i16_at(b, at)?.max(0) as usize;
            at += 2 + len;
            let n = i32_at(b, at)?;
            at += 4;
            for _ in 0..n.max(0) {
                out.push(i32_at(b, at)?);
                at += 4;
            }
        }
        Some(out)
    };
    let mut ps = parse().unwrap_or_default();
    ps.sort_unstable();
    ps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_is_contiguous_and_balanced() {
        let members = vec!["b".to_string(), "a".to_string()];
        let a = range_assign(&members, 5);
        assert_eq!(a["a"], vec![0, 1, 2]);
        assert_eq!(a["b"], vec![3, 4]);
    }

    #[test]
    fn assignments_round_trip() {
        assert_eq!(decode_partitions(&assignment("t", &[4, 1])), vec![1, 4]);
        assert!(decode_partitions(&[0, 0, 0]).is_empty());
    }
}
