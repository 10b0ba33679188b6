//! The metadata image: cluster metadata as of one metadata offset, built by applying
//! [`MetadataRecord`]s in log order. The controller's state machine keeps one; every broker
//! keeps its own, fed by `FetchMetadata`. Applying is pure and deterministic, so every node
//! that applied the same records holds the same image (compare [`MetadataImage::digest`]).
//!
//! **Architecture invariant:** for every partition, `isr ⊆ replicas`, `isr` is never empty,
//! and the leader is an ISR member or -1 (no leader). The leader epoch and partition epoch only
//! grow. `apply` checks these and refuses (logs and skips) a record that would break them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::records::{ConfigResource, Endpoint, MetadataRecord};

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    pub id: i32,
    pub epoch: i64,
    pub incarnation_id: String,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
}

impl BrokerImage {
    /// The endpoint of listener `name`, if the broker has it.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.listeners.iter().find(|e| e.listener == name)
    }
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1: no leader (offline).
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
}

/// What the cluster keeps of one SCRAM password (KIP-554).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredentialImage {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl std::fmt::Debug for ScramCredentialImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredentialImage").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

/// Cluster metadata at [`MetadataImage::offset`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// The metadata offset (Raft log index) of the last applied batch; -1 before any.
    pub offset: i64,
    pub brokers: BTreeMap<i32, BrokerImage>,
    pub topics: BTreeMap<String, TopicImage>,
    pub topic_configs: BTreeMap<String, BTreeMap<String, String>>,
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
    /// The cluster id ([`crate::cluster_id`]); `None` until the first broker registers (and in
    /// images written before cluster ids were recorded).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// SCRAM credentials: user → mechanism name → credential.
    #[serde(default)]
    pub scram_credentials: BTreeMap<String, BTreeMap<String, ScramCredentialImage>>,
    /// Every ACL ([`crate::acl`]).
    #[serde(default)]
    pub acls: std::collections::BTreeSet<crate::acl::AclBinding>,
    #[serde(skip)]
    names_by_id: HashMap<Uuid, String>,
}

/// A record that would break an image invariant; it is skipped (and logged by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata record refused: {0}")]
pub struct ApplyError(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, ApplyError> {
    Err(ApplyError(why.into()))
}

impl MetadataImage {
    pub fn new() -> Self {
        MetadataImage { offset: -1, ..Default::default() }
    }

    /// Rebuilds the derived lookup tables (after deserialising a snapshot).
    pub fn reindex(&mut self) {
        self.names_by_id = self.topics.values().map(|t| (t.id, t.name.clone())).collect();
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.names_by_id.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        self.topics.get(topic).and_then(|t| t.partitions.get(&partition))
    }

    /// Unfenced brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// A stable digest of the image (used by tests to compare nodes).
    pub fn digest(&self) -> u32 {
        crc32c::crc32c(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// Applies the records of one log entry at `offset`. A record that would break an
    /// invariant is skipped and reported in the returned list; the rest still apply.
    pub fn apply_batch(&mut self, offset: i64, records: &[MetadataRecord]) -> Vec<ApplyError> {
        debug_assert!(offset > self.offset, "metadata offsets go forward: {offset} after {}", self.offset);
        let errors = records.iter().filter_map(|r| self.apply(r).err()).collect();
        self.offset = offset;
        errors
    }

    fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::ClusterId { cluster_id } => match &self.cluster_id {
                Some(c) if c != cluster_id => {
                    return refuse(format!("cluster id {cluster_id} after {c}: a cluster id never changes"))
                }
                _ => self.cluster_id = Some(cluster_id.clone()),
            },
            MetadataRecord::RegisterBroker { broker_id, incarnation_id, epoch, listeners, rack } => {
                self.brokers.insert(
                    *broker_id,
                    BrokerImage {
                        id: *broker_id,
                        epoch: *epoch,
                        incarnation_id: incarnation_id.clone(),
                        listeners: listeners.clone(),
                        rack: rack.clone(),
                        fenced: true,
                    },
                );
            }
            MetadataRecord::FenceBroker { broker_id, epoch } | MetadataRecord::UnfenceBroker { broker_id, epoch } => {
                let Some(b) = self.brokers.get_mut(broker_id) else {
                    return refuse(format!("fence/unfence of unknown broker {broker_id}"));
                };
                if b.epoch != *epoch {
                    return refuse(format!("broker {broker_id} epoch {epoch} is not the current {}", b.epoch));
                }
                b.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
            }
            MetadataRecord::Topic { name, topic_id } => {
                if self.topics.contains_key(name) || self.names_by_id.contains_key(topic_id) {
                    return refuse(format!("topic {name} ({topic_id}) exists"));
                }
                self.topics.insert(
                    name.clone(),
                    TopicImage { name: name.clone(), id: *topic_id, partitions: BTreeMap::new() },
                );
                self.names_by_id.insert(*topic_id, name.clone());
            }
            MetadataRecord::Partition { topic_id, partition, replicas, isr, leader, leader_epoch, partition_epoch } => {
                let p = PartitionImage {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                };
                check_partition(&p)?;
                let Some(name) = self.names_by_id.get(topic_id) else {
                    return refuse(format!("partition of unknown topic {topic_id}"));
                };
                let Some(t) = self.topics.get_mut(name) else { return refuse("topic index out of date") };
                if t.partitions.contains_key(partition) {
                    return refuse(format!("partition {}-{partition} exists", t.name));
                }
                t.partitions.insert(*partition, p);
            }
            MetadataRecord::PartitionChange { topic_id, partition, isr, leader } => {
                let Some(name) = self.names_by_id.get(topic_id) else {
                    return refuse(format!("change to unknown topic {topic_id}"));
                };
                let Some(p) = self.topics.get_mut(name).and_then(|t| t.partitions.get_mut(partition)) else {
                    return refuse(format!("change to unknown partition {name}-{partition}"));
                };
                let mut next = p.clone();
                if let Some(isr) = isr {
                    next.isr = isr.clone();
                }
                if let Some(leader) = leader {
                    next.leader = *leader;
                    next.leader_epoch += 1;
                }
                next.partition_epoch += 1;
                check_partition(&next)?;
                *p = next;
            }
            MetadataRecord::Config { resource, key, value } => {
                let map = match resource {
                    ConfigResource::Topic(t) => self.topic_configs.entry(t.clone()).or_default(),
                    ConfigResource::Broker(b) => self.broker_configs.entry(*b).or_default(),
                };
                match value {
                    Some(v) => map.insert(key.clone(), v.clone()),
                    None => map.remove(key),
                };
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let Some(name) = self.names_by_id.remove(topic_id) else {
                    return refuse(format!("removal of unknown topic {topic_id}"));
                };
                self.topics.remove(&name);
                self.topic_configs.remove(&name);
            }
            MetadataRecord::ProducerIds { first, count, .. } => {
                if *first < self.next_producer_id || *count <= 0 {
                    return refuse(format!("producer id block {first}+{count} overlaps {}", self.next_producer_id));
                }
                self.next_producer_id = first + count;
            }
            MetadataRecord::ScramCredential { user, mechanism, salt, stored_key, server_key, iterations } => {
                let c = ScramCredentialImage {
                    salt: salt.clone(),
                    stored_key: stored_key.clone(),
                    server_key: server_key.clone(),
                    iterations: *iterations,
                };
                self.scram_credentials.entry(user.clone()).or_default().insert(mechanism.clone(), c);
            }
            MetadataRecord::Acl { binding } => {
                self.acls.insert(binding.clone());
            }
            MetadataRecord::RemoveAcl { binding } => {
                if !self.acls.remove(binding) {
                    return refuse(format!("removal of an ACL that does not exist: {binding:?}"));
                }
            }
            MetadataRecord::RemoveScramCredential { user, mechanism } => {
                let Some(m) = self.scram_credentials.get_mut(user) else {
                    return refuse(format!("removal of {user}'s {mechanism} credential, which does not exist"));
                };
                m.remove(mechanism);
                if m.is_empty() {
                    self.scram_credentials.remove(user);
                }
            }
        }
        Ok(())
    }
}

/// The partition invariants: ISR non-empty and within the replicas, leader in the ISR or -1.
fn check_partition(p: &PartitionImage) -> Result<(), ApplyError> {
    if p.isr.is_empty() {
        return refuse("empty ISR");
    }
    if let Some(r) = p.isr.iter().find(|r| !p.replicas.contains(r)) {
        return refuse(format!("ISR member {r} is not a replica"));
    }
    if p.leader != -1 && !p.isr.contains(&p.leader) {
        return refuse(format!("leader {} is not in the ISR {:?}", p.leader, p.isr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(id: u128) -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::Topic { name: "t".into(), topic_id: Uuid::from_u128(id) },
            MetadataRecord::Partition {
                topic_id: Uuid::from_u128(id),
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
        ]
    }

    #[test]
    fn a_leader_change_bumps_both_epochs_and_an_isr_change_only_the_partition_epoch() {
        let mut img = MetadataImage::new();
        assert!(img.apply_batch(1, &topic(1)).is_empty());
        let id = Uuid::from_u128(1);
        img.apply_batch(
            2,
            &[MetadataRecord::PartitionChange { topic_id: id, partition: 0, isr: Some(vec![1, 2]), leader: None }],
        );
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 0, 1));
        img.apply_batch(
            3,
            &[MetadataRecord::PartitionChange { topic_id: id, partition: 0, isr: Some(vec![2]), leader: Some(2) }],
        );
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch, p.isr.clone()), (2, 1, 2, vec![2]));
    }

    #[test]
    fn records_that_break_invariants_are_refused_and_change_nothing() {
        let mut img = MetadataImage::new();
        img.apply_batch(1, &topic(1));
        let before = img.clone();
        let id = Uuid::from_u128(1);
        let bad = [
            MetadataRecord::PartitionChange { topic_id: id, partition: 0, isr: Some(vec![]), leader: None },
            MetadataRecord::PartitionChange { topic_id: id, partition: 0, isr: Some(vec![1, 9]), leader: None },
            MetadataRecord::PartitionChange { topic_id: id, partition: 0, isr: Some(vec![2]), leader: Some(1) },
            MetadataRecord::Topic { name: "t".into(), topic_id: Uuid::from_u128(2) },
        ];
        assert_eq!(img.apply_batch(2, &bad).len(), 4);
        img.offset = before.offset;
        assert_eq!(img, before);
    }

    #[test]
    fn removing_a_topic_removes_its_partitions_and_configs() {
        let mut img = MetadataImage::new();
        img.apply_batch(1, &topic(1));
        img.apply_batch(
            2,
            &[MetadataRecord::Config {
                resource: ConfigResource::Topic("t".into()),
                key: "retention.ms".into(),
                value: Some("1".into()),
            }],
        );
        img.apply_batch(3, &[MetadataRecord::RemoveTopic { topic_id: Uuid::from_u128(1) }]);
        assert!(img.topics.is_empty() && img.topic_configs.is_empty());
        assert!(img.topic_by_id(&Uuid::from_u128(1)).is_none());
    }
}
