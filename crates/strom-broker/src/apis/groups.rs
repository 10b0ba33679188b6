//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups. They translate Kafka
//! messages to the coordinator ([`crate::coordinator::group`]) and back; the rules live there.

use std::time::Duration;

use strom_protocol::kafka_protocol::messages::create_topics_request::CreatableTopic;
use strom_protocol::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use strom_protocol::kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use strom_protocol::kafka_protocol::messages::find_coordinator_response::Coordinator;
use strom_protocol::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use strom_protocol::kafka_protocol::messages::leave_group_response::MemberResponse;
use strom_protocol::kafka_protocol::messages::list_groups_response::ListedGroup;
use strom_protocol::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use strom_protocol::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use strom_protocol::kafka_protocol::messages::*;
use strom_protocol::kafka_protocol::protocol::StrBytes;

use super::access::{Access, GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED};
use super::Broker;
use crate::coordinator::group::offsets::OFFSETS_TOPIC;
use strom_metadata::acl::{Operation, ResourceType};

use super::transactions::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
use crate::coordinator::txn::TRANSACTION_STATE_TOPIC;
const INVALID_REQUEST: i16 = 42;
use crate::coordinator::group::{
    self, Committed, JoinRequest, MemberRef, SyncRequest, COORDINATOR_NOT_AVAILABLE, NONE,
};
use strom_protocol::values::{str_bytes, topic_name};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

fn s(v: &StrBytes) -> String {
    v.to_string()
}

/// The sender of a group request, borrowed from it.
fn member_ref<'a>(member_id: &'a StrBytes, instance_id: &'a Option<StrBytes>) -> MemberRef<'a> {
    MemberRef { member_id, instance_id: instance_id.as_deref() }
}

fn group_id(v: &str) -> GroupId {
    GroupId(str_bytes(v))
}

/// Creates `__consumer_offsets` on first use (Kafka does the same), through the controller.
async fn ensure_offsets_topic(b: &Broker) -> bool {
    if b.image().topics.contains_key(OFFSETS_TOPIC) {
        return true;
    }
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 5000;
    let mut t = CreatableTopic::default();
    t.name = topic_name(OFFSETS_TOPIC);
    t.num_partitions = b.settings.offsets_topic_num_partitions;
    t.replication_factor = b.settings.offsets_topic_replication_factor;
    t.configs = offsets_topic_creatable_configs(b);
    req.topics = vec![t];
    if let Err(e) = b.forward(ApiKey::CreateTopics, 5, &RequestKind::CreateTopics(req)).await {
        tracing::warn!(node = b.settings.node_id, error = %e, "cannot create {OFFSETS_TOPIC}");
    }
    b.image().topics.contains_key(OFFSETS_TOPIC)
}

/// Creates `__transaction_state` on first use (as Kafka), through the controller: compacted,
/// with `transaction.state.log.*`'s partitions, replication factor, min ISR and segment size.
async fn ensure_transaction_state_topic(b: &Broker) -> bool {
    if b.image().topics.contains_key(TRANSACTION_STATE_TOPIC) {
        return true;
    }
    let s = &b.settings.transactions;
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 5000;
    let mut t = CreatableTopic::default();
    t.name = topic_name(TRANSACTION_STATE_TOPIC);
    t.num_partitions = s.num_partitions;
    t.replication_factor = s.replication_factor;
    t.configs = creatable_configs(s.topic_configs());
    req.topics = vec![t];
    if let Err(e) = b.forward(ApiKey::CreateTopics, 5, &RequestKind::CreateTopics(req)).await {
        tracing::warn!(node = b.settings.node_id, error = %e, "cannot create {TRANSACTION_STATE_TOPIC}");
    }
    b.image().topics.contains_key(TRANSACTION_STATE_TOPIC)
}

fn creatable_configs(
    configs: Vec<(String, String)>,
) -> Vec<strom_protocol::kafka_protocol::messages::create_topics_request::CreatableTopicConfig> {
    configs
        .into_iter()
        .map(|(k, v)| {
            let mut c =
                strom_protocol::kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default();
            c.name = str_bytes(&k);
            c.value = Some(str_bytes(&v));
            c
        })
        .collect()
}

/// `__consumer_offsets`'s configs as CreateTopics carries them.
pub(super) fn offsets_topic_creatable_configs(
    b: &Broker,
) -> Vec<strom_protocol::kafka_protocol::messages::create_topics_request::CreatableTopicConfig> {
    creatable_configs(crate::coordinator::group::offsets::offsets_topic_configs(b.settings.offsets_topic_segment_bytes))
}

/// Switches an existing `__consumer_offsets` to compacted if it is not (a cluster from before
/// it was): a config change through the controller, so no group's last commit is ever deleted
/// by retention. Idempotent; any broker may do it.
pub(super) async fn ensure_offsets_topic_compacted(b: &Broker) {
    use strom_protocol::kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use strom_protocol::kafka_protocol::messages::IncrementalAlterConfigsRequest;
    let image = b.image();
    if !image.topics.contains_key(OFFSETS_TOPIC) {
        return;
    }
    let missing =
        crate::coordinator::group::offsets::missing_offsets_topic_configs(image.topic_configs.get(OFFSETS_TOPIC));
    if missing.is_empty() {
        return;
    }
    let mut res = AlterConfigsResource::default();
    res.resource_type = strom_metadata::records::RESOURCE_TOPIC;
    res.resource_name = str_bytes(OFFSETS_TOPIC);
    for (k, v) in missing {
        let mut c = AlterableConfig::default();
        c.name = str_bytes(&k);
        c.config_operation = 0; // SET
        c.value = Some(str_bytes(&v));
        res.configs.push(c);
    }
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources.push(res);
    match b.forward(ApiKey::IncrementalAlterConfigs, 0, &RequestKind::IncrementalAlterConfigs(req)).await {
        Ok(_) => tracing::info!(node = b.settings.node_id, "{OFFSETS_TOPIC} switched to cleanup.policy=compact"),
        Err(e) => tracing::warn!(node = b.settings.node_id, error = %e, "cannot switch {OFFSETS_TOPIC} to compact"),
    }
}

/// (node id, host, port) of the coordinator of `key` (a group, or a transactional id) on
/// `listener`: the leader of the partition of `topic` the key hashes to; or an error code.
fn coordinator_of(b: &Broker, topic: &str, key: &str, listener: &str) -> Result<(i32, String, i32), i16> {
    let image = b.image();
    let t = image.topics.get(topic).ok_or(COORDINATOR_NOT_AVAILABLE)?;
    let p = group::partition_for(key, t.partitions.len() as i32);
    let leader = t.partitions.get(&p).map_or(-1, |p| p.leader);
    let broker = image.brokers.get(&leader).filter(|b| !b.fenced).ok_or(COORDINATOR_NOT_AVAILABLE)?;
    let e = broker.endpoint(listener).ok_or(COORDINATOR_NOT_AVAILABLE)?;
    Ok((leader, e.host.clone(), e.port as i32))
}

pub(super) async fn find_coordinator(
    b: &Broker,
    a: &Access<'_>,
    req: &FindCoordinatorRequest,
    version: i16,
    listener: &str,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 { req.coordinator_keys.iter().map(s).collect() } else { vec![s(&req.key)] };
    let ready = match req.key_type {
        0 => ensure_offsets_topic(b).await,
        1 => ensure_transaction_state_topic(b).await,
        _ => false,
    };
    let mut resp = FindCoordinatorResponse::default();
    for key in keys {
        let mut c = Coordinator::default();
        c.key = str_bytes(&key);
        c.node_id = BrokerId(-1);
        c.port = -1;
        let found = match req.key_type {
            1 if !a.may(Operation::Describe, ResourceType::TransactionalId, &key) => {
                Err(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            }
            1 if !ready => Err(COORDINATOR_NOT_AVAILABLE),
            1 => coordinator_of(b, TRANSACTION_STATE_TOPIC, &key, listener),
            0 if !a.may_group(Operation::Describe, &key) => Err(GROUP_AUTHORIZATION_FAILED),
            0 if !ready => Err(COORDINATOR_NOT_AVAILABLE),
            0 => coordinator_of(b, OFFSETS_TOPIC, &key, listener),
            // Share groups (2) are not served.
            _ => Err(INVALID_REQUEST),
        };
        match found {
            Ok((id, host, port)) => {
                c.node_id = BrokerId(id);
                c.host = str_bytes(&host);
                c.port = port;
            }
            Err(code) => c.error_code = code,
        }
        resp.coordinators.push(c);
    }
    if version < 4 {
        if let Some(c) = resp.coordinators.pop() {
            resp.error_code = c.error_code;
            resp.node_id = c.node_id;
            resp.host = c.host;
            resp.port = c.port;
        }
    }
    resp
}

pub(super) async fn join_group(
    b: &Broker,
    a: &Access<'_>,
    req: &JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> JoinGroupResponse {
    let gid = s(&req.group_id.0);
    let mut resp = JoinGroupResponse::default();
    resp.generation_id = -1;
    resp.member_id = req.member_id.clone();
    if !a.may_group(Operation::Read, &gid) {
        resp.error_code = GROUP_AUTHORIZATION_FAILED;
        return resp;
    }
    if let Err(code) = coordinate(b, &gid) {
        resp.error_code = code;
        return resp;
    }
    let r = b
        .groups
        .join(
            &gid,
            JoinRequest {
                member_id: s(&req.member_id),
                group_instance_id: req.group_instance_id.as_ref().map(s),
                client_id: client_id.to_string(),
                client_host: String::new(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: if version >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms },
                protocol_type: s(&req.protocol_type),
                protocols: req.protocols.iter().map(|p| (s(&p.name), p.metadata.clone())).collect(),
                require_known_member_id: version >= 4,
            },
        )
        .await;
    resp.error_code = r.error_code;
    resp.generation_id = r.generation_id;
    resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
    resp.protocol_name = r.protocol_name.as_deref().map(str_bytes);
    resp.leader = str_bytes(&r.leader);
    resp.member_id = str_bytes(&r.member_id);
    resp.members = r
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(&id);
            m.group_instance_id = instance.as_deref().map(str_bytes);
            m.metadata = metadata;
            m
        })
        .collect();
    if version < 7 && resp.protocol_name.is_none() {
        resp.protocol_name = Some(StrBytes::default());
    }
    resp
}

/// Is this broker `group`'s coordinator? (Loading its offsets partition if need be, and
/// resuming the group from the membership that load found.) Err is a Kafka error code.
pub(super) fn coordinate(b: &Broker, group: &str) -> Result<std::sync::Arc<crate::replica::Partition>, i16> {
    let part = b.offsets.coordinator_partition(group)?;
    if let Some(membership) = b.offsets.take_membership(group) {
        b.groups.restore(group, membership);
    }
    Ok(part)
}

pub(super) async fn sync_group(b: &Broker, a: &Access<'_>, req: &SyncGroupRequest) -> SyncGroupResponse {
    let gid = s(&req.group_id.0);
    let mut resp = SyncGroupResponse::default();
    if !a.may_group(Operation::Read, &gid) {
        resp.error_code = GROUP_AUTHORIZATION_FAILED;
        return resp;
    }
    if let Err(code) = coordinate(b, &gid) {
        resp.error_code = code;
        return resp;
    }
    let assignments = req.assignments.iter().map(|a| (s(&a.member_id), a.assignment.clone())).collect();
    let sync = SyncRequest {
        member: member_ref(&req.member_id, &req.group_instance_id),
        generation: req.generation_id,
        protocol_type: req.protocol_type.as_deref(),
        protocol_name: req.protocol_name.as_deref(),
    };
    let r = b.groups.sync(&gid, sync, assignments).await;
    if r.error_code == NONE {
        // The generation this sync completed is stored before it is answered, as Kafka does,
        // so a coordinator failover resumes it (a failed write only costs a rebalance then).
        if let Some(membership) = b.groups.to_store(&gid) {
            if let Err(code) = b.offsets.store_membership(&gid, membership, Duration::from_secs(5)).await {
                tracing::warn!(node = b.settings.node_id, group = %gid, code, "group membership not stored");
            }
        }
    }
    resp.error_code = r.error_code;
    resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
    resp.protocol_name = r.protocol_name.as_deref().map(str_bytes);
    resp.assignment = r.assignment;
    resp
}

pub(super) fn heartbeat(b: &Broker, a: &Access<'_>, req: &HeartbeatRequest) -> HeartbeatResponse {
    let gid = s(&req.group_id.0);
    let mut resp = HeartbeatResponse::default();
    if !a.may_group(Operation::Read, &gid) {
        resp.error_code = GROUP_AUTHORIZATION_FAILED;
        return resp;
    }
    resp.error_code = match coordinate(b, &gid) {
        Err(code) => code,
        Ok(_) => b.groups.heartbeat(&gid, req.generation_id, member_ref(&req.member_id, &req.group_instance_id)),
    };
    resp
}

pub(super) fn leave_group(b: &Broker, a: &Access<'_>, req: &LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let gid = s(&req.group_id.0);
    let mut resp = LeaveGroupResponse::default();
    if !a.may_group(Operation::Read, &gid) {
        resp.error_code = GROUP_AUTHORIZATION_FAILED;
        return resp;
    }
    if let Err(code) = coordinate(b, &gid) {
        resp.error_code = code;
        return resp;
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members.iter().map(|m| (s(&m.member_id), m.group_instance_id.as_ref().map(s))).collect()
    } else {
        vec![(s(&req.member_id), None)]
    };
    let codes = b.groups.leave(&gid, &members);
    if version >= 3 {
        resp.members = members
            .iter()
            .zip(&codes)
            .map(|((id, instance), code)| {
                let mut r = MemberResponse::default();
                r.member_id = str_bytes(id);
                r.group_instance_id = instance.as_deref().map(str_bytes);
                r.error_code = *code;
                r
            })
            .collect();
    } else {
        resp.error_code = codes.first().copied().unwrap_or(NONE);
    }
    resp
}

pub(super) async fn offset_commit(b: &Broker, a: &Access<'_>, req: &OffsetCommitRequest) -> OffsetCommitResponse {
    let gid = s(&req.group_id.0);
    let image = b.image();
    let mut code = if a.may_group(Operation::Read, &gid) {
        coordinate(b, &gid).err().unwrap_or(NONE)
    } else {
        GROUP_AUTHORIZATION_FAILED
    };
    if code == NONE {
        let member = member_ref(&req.member_id, &req.group_instance_id);
        code = b.groups.check_commit(&gid, req.generation_id_or_member_epoch, member);
    }
    let mut entries = Vec::new();
    let mut resp = OffsetCommitResponse::default();
    let now = strom_protocol::values::now_ms();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let known = image.topics.get(&name);
        let may_read = a.may_topic(Operation::Read, &name);
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = if code != NONE {
                code
            } else if !may_read {
                TOPIC_AUTHORIZATION_FAILED
            } else if !known.is_some_and(|t| t.partitions.contains_key(&p.partition_index)) {
                UNKNOWN_TOPIC_OR_PARTITION
            } else if p.committed_metadata.as_ref().is_some_and(|m| m.len() > b.settings.offset_metadata_max_bytes) {
                OFFSET_METADATA_TOO_LARGE
            } else {
                // Any offset is stored as sent, negative ones included (Kafka 3.9 does the
                // same; kafkajs's admin resetOffsets commits -2, "earliest", and reads it back).
                entries.push((
                    name.clone(),
                    p.partition_index,
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(s).unwrap_or_default(),
                        commit_timestamp_ms: now,
                        // v2-v4's own retention (-1: the broker's), as Kafka.
                        expire_timestamp_ms: (req.retention_time_ms >= 0)
                            .then(|| now.saturating_add(req.retention_time_ms)),
                    },
                ));
                NONE
            };
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    if !entries.is_empty() {
        if let Err(code) = b.offsets.commit(&gid, entries, COMMIT_TIMEOUT).await {
            for pr in resp.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                if pr.error_code == NONE {
                    pr.error_code = code;
                }
            }
        }
    }
    resp
}

/// One group's committed offsets for the asked topics (None: all), or an error code.
#[allow(clippy::type_complexity)]
fn fetch_offsets(
    b: &Broker,
    a: &Access<'_>,
    gid: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<(i32, Result<Option<Committed>, i16>)>)>, i16> {
    if !a.may_group(Operation::Describe, gid) {
        return Err(GROUP_AUTHORIZATION_FAILED);
    }
    coordinate(b, gid)?;
    let committed = b.offsets.fetch(gid);
    Ok(match topics {
        // Asked for by name: a topic the principal may not describe is TOPIC_AUTHORIZATION_FAILED.
        Some(ts) => ts
            .into_iter()
            .map(|(t, ps)| {
                let allowed = a.may_topic(Operation::Describe, &t);
                let parts = ps
                    .into_iter()
                    .map(|p| {
                        let c = if !allowed {
                            Err(TOPIC_AUTHORIZATION_FAILED)
                        } else if require_stable && b.offsets.has_pending(gid, &t, p) {
                            // A transaction's commit of it is not ended yet (v7+, KIP-447).
                            Err(UNSTABLE_OFFSET_COMMIT)
                        } else {
                            Ok(committed.get(&(t.clone(), p)).cloned())
                        };
                        (p, c)
                    })
                    .collect();
                (t, parts)
            })
            .collect(),
        // All of them: only those it may describe.
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Result<Option<Committed>, i16>)>> =
                Default::default();
            for ((t, p), c) in committed {
                if a.may_topic(Operation::Describe, &t) {
                    by_topic.entry(t).or_default().push((p, Ok(Some(c))));
                }
            }
            by_topic.into_iter().collect()
        }
    })
}

pub(super) fn offset_fetch(b: &Broker, a: &Access<'_>, req: &OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= 8 {
        for g in &req.groups {
            let gid = s(&g.group_id.0);
            let topics = g
                .topics
                .as_ref()
                .map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
            let mut gr = OffsetFetchResponseGroup::default();
            gr.group_id = g.group_id.clone();
            match fetch_offsets(b, a, &gid, topics, req.require_stable) {
                Ok(ts) => {
                    gr.topics = ts
                        .into_iter()
                        .map(|(t, ps)| {
                            let mut tr = OffsetFetchResponseTopics::default();
                            tr.name = topic_name(&t);
                            tr.partitions = ps
                                .into_iter()
                                .map(|(p, c)| {
                                    let mut pr = OffsetFetchResponsePartitions::default();
                                    pr.partition_index = p;
                                    let c = c.unwrap_or_else(|code| {
                                        pr.error_code = code;
                                        None
                                    });
                                    pr.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                                    pr.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
                                    pr.metadata = Some(str_bytes(c.as_ref().map_or("", |c| &c.metadata)));
                                    pr
                                })
                                .collect();
                            tr
                        })
                        .collect()
                }
                Err(code) => gr.error_code = code,
            }
            resp.groups.push(gr);
        }
        return resp;
    }
    let gid = s(&req.group_id.0);
    let topics =
        req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    match fetch_offsets(b, a, &gid, topics, req.require_stable) {
        Ok(ts) => {
            resp.topics = ts
                .into_iter()
                .map(|(t, ps)| {
                    let mut tr = OffsetFetchResponseTopic::default();
                    tr.name = topic_name(&t);
                    tr.partitions = ps
                        .into_iter()
                        .map(|(p, c)| {
                            let mut pr = OffsetFetchResponsePartition::default();
                            pr.partition_index = p;
                            let c = c.unwrap_or_else(|code| {
                                pr.error_code = code;
                                None
                            });
                            pr.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                            pr.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
                            pr.metadata = Some(str_bytes(c.as_ref().map_or("", |c| &c.metadata)));
                            pr
                        })
                        .collect();
                    tr
                })
                .collect();
        }
        Err(code) => resp.error_code = code,
    }
    resp
}

pub(super) fn list_groups(b: &Broker, a: &Access<'_>, req: &ListGroupsRequest) -> ListGroupsResponse {
    let mut resp = ListGroupsResponse::default();
    // DESCRIBE on the cluster lists every group; otherwise only those the principal may describe.
    let all = a.may_cluster(Operation::Describe);
    let mut seen = std::collections::BTreeMap::new();
    for (id, state, protocol_type) in b.groups.list() {
        if b.offsets.leads(&id) {
            seen.insert(id, (state, protocol_type));
        }
    }
    for id in b.offsets.groups() {
        if b.offsets.leads(&id) {
            seen.entry(id).or_insert(("Empty", "consumer".to_string()));
        }
    }
    for (id, (state, protocol_type)) in seen {
        if !req.states_filter.is_empty() && !req.states_filter.iter().any(|f| f.eq_ignore_ascii_case(state)) {
            continue;
        }
        if !all && !a.may_group(Operation::Describe, &id) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = group_id(&id);
        g.protocol_type = str_bytes(&protocol_type);
        g.group_state = str_bytes(state);
        g.group_type = str_bytes("classic");
        resp.groups.push(g);
    }
    resp
}

pub(super) fn describe_groups(b: &Broker, a: &Access<'_>, req: &DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for gid in &req.groups {
        let id = s(&gid.0);
        let mut g = DescribedGroup::default();
        g.group_id = gid.clone();
        g.authorized_operations = i32::MIN;
        let allowed = if a.may_group(Operation::Describe, &id) { Ok(()) } else { Err(GROUP_AUTHORIZATION_FAILED) };
        match allowed.and_then(|_| coordinate(b, &id)) {
            Err(code) => g.error_code = code,
            Ok(_) => match b.groups.describe(&id) {
                Some(d) => {
                    g.group_state = str_bytes(d.state);
                    g.protocol_type = str_bytes(&d.protocol_type);
                    g.protocol_data = str_bytes(&d.protocol);
                    g.members = d
                        .members
                        .into_iter()
                        .map(|(mid, instance, client_id, host, meta, assignment)| {
                            let mut m = DescribedGroupMember::default();
                            m.member_id = str_bytes(&mid);
                            m.group_instance_id = instance.as_deref().map(str_bytes);
                            m.client_id = str_bytes(&client_id);
                            m.client_host = str_bytes(&host);
                            m.member_metadata = meta;
                            m.member_assignment = assignment;
                            m
                        })
                        .collect();
                }
                None => {
                    let has_offsets = !b.offsets.fetch(&id).is_empty();
                    g.group_state = str_bytes(if has_offsets { "Empty" } else { "Dead" });
                    g.protocol_type = str_bytes(if has_offsets { "consumer" } else { "" });
                }
            },
        }
        resp.groups.push(g);
    }
    resp
}

pub(super) async fn delete_groups(b: &Broker, a: &Access<'_>, req: &DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for gid in &req.groups_names {
        let id = s(&gid.0);
        let mut r = DeletableGroupResult::default();
        r.group_id = gid.clone();
        let allowed = if a.may_group(Operation::Delete, &id) { Ok(()) } else { Err(GROUP_AUTHORIZATION_FAILED) };
        r.error_code = match allowed.and_then(|_| coordinate(b, &id)) {
            Err(code) => code,
            Ok(_) if !b.groups.is_empty(&id) => group::NON_EMPTY_GROUP,
            Ok(_) if b.groups.describe(&id).is_none() && b.offsets.fetch(&id).is_empty() => group::GROUP_ID_NOT_FOUND,
            Ok(_) => match b.offsets.delete_group(&id, COMMIT_TIMEOUT).await {
                Ok(()) => {
                    b.groups.remove(&id);
                    NONE
                }
                Err(code) => code,
            },
        };
        resp.results.push(r);
    }
    resp
}

/// GROUP_SUBSCRIBED_TO_TOPIC.
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

/// The topics a group's members subscribe to, from their JoinGroup metadata (the consumer
/// protocol's subscription). `None` when it cannot be told (another protocol type, or metadata
/// that does not decode): then, as Kafka does, every topic counts as subscribed.
fn subscribed_topics(d: &group::GroupDescription) -> Option<std::collections::HashSet<String>> {
    use strom_protocol::kafka_protocol::protocol::Decodable;
    if d.protocol_type != "consumer" {
        return None;
    }
    let mut topics = std::collections::HashSet::new();
    for (_, _, _, _, metadata, _) in &d.members {
        let mut buf = metadata.clone();
        if buf.len() < 2 {
            return None;
        }
        let version = i16::from_be_bytes([buf[0], buf[1]]);
        let _ = bytes::Buf::get_i16(&mut buf);
        let sub = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
        topics.extend(sub.topics.iter().map(|t| t.to_string()));
    }
    Some(topics)
}

/// OffsetDelete: drops a group's committed offsets for some partitions. Refused per partition
/// with GROUP_SUBSCRIBED_TO_TOPIC while the group has members subscribed to that topic.
pub(super) async fn offset_delete(b: &Broker, a: &Access<'_>, req: &OffsetDeleteRequest) -> OffsetDeleteResponse {
    let gid = s(&req.group_id.0);
    let mut resp = OffsetDeleteResponse::default();
    if !a.may_group(Operation::Delete, &gid) {
        resp.error_code = GROUP_AUTHORIZATION_FAILED;
        return resp;
    }
    let group_error = match coordinate(b, &gid) {
        Err(code) => code,
        Ok(_) if b.groups.describe(&gid).is_none() && b.offsets.fetch(&gid).is_empty() => group::GROUP_ID_NOT_FOUND,
        Ok(_) => NONE,
    };
    if group_error != NONE {
        resp.error_code = group_error;
        return resp;
    }
    let active = !b.groups.is_empty(&gid);
    let subscribed =
        if active { b.groups.describe(&gid).map(|d| subscribed_topics(&d)) } else { Some(Some(Default::default())) };
    let image = b.image();
    let mut delete = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let known = image.topics.get(&name);
        let blocked = match &subscribed {
            Some(Some(topics)) => topics.contains(&name),
            _ => true,
        };
        let may_read = a.may_topic(Operation::Read, &name);
        let mut tr = offset_delete_response::OffsetDeleteResponseTopic::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = offset_delete_response::OffsetDeleteResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = if !may_read {
                TOPIC_AUTHORIZATION_FAILED
            } else if !known.is_some_and(|t| t.partitions.contains_key(&p.partition_index)) {
                UNKNOWN_TOPIC_OR_PARTITION
            } else if blocked {
                GROUP_SUBSCRIBED_TO_TOPIC
            } else {
                delete.push((name.clone(), p.partition_index));
                NONE
            };
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    if !delete.is_empty() {
        if let Err(code) = b.offsets.delete_offsets(&gid, delete, COMMIT_TIMEOUT).await {
            for pr in resp.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                if pr.error_code == NONE {
                    pr.error_code = code;
                }
            }
        }
    }
    resp
}
