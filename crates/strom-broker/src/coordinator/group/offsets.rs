//! Committed offsets, kept in the replicated `__consumer_offsets` topic.
//!
//! A commit is appended as a record to the group's offsets partition and acknowledged only
//! once the high watermark passes it (acks=all), then cached. A broker that leads an offsets
//! partition in a new leader epoch reloads that partition's groups from the log before it
//! answers for them, so committed offsets survive a coordinator failover (the machinery is
//! [`StateLog`]'s, shared by every coordinator).
//!
//! The same partition holds each group's last Stable membership (`GroupMetadata`), which a
//! load hands to the group coordinator ([`OffsetStore::take_membership`]).
//!
//! Records are JSON (Strom's own format; Kafka's binary schema is internal to Kafka), each
//! with a key saying what it replaces ([`OffsetKey`]: one committed offset, or one group's
//! membership), because the topic is compacted: the cleaner keeps the latest record per key,
//! and a deletion is a tombstone (a null value) for each key it removes. Records written
//! before keys were (no key) are read as before and never compacted away.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StoredGroup;
use crate::coordinator::state_log::StateLog;
use crate::replica::{Partition, ReplicaManager};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The topic configs `__consumer_offsets` is created with, and that a broker restores when it
/// finds them otherwise ([`missing_offsets_topic_configs`]): compacted, so the latest commit
/// of every group is kept however old (never deleted by time), with its own segment size.
pub fn offsets_topic_configs(segment_bytes: u64) -> Vec<(String, String)> {
    vec![("cleanup.policy".into(), "compact".into()), ("segment.bytes".into(), segment_bytes.to_string())]
}

/// Of [`offsets_topic_configs`], the ones an existing `__consumer_offsets` lacks (a cluster
/// made before the offsets topic was compacted): only `cleanup.policy`, the one that decides
/// whether commits can be deleted by retention.
pub fn missing_offsets_topic_configs(current: Option<&BTreeMap<String, String>>) -> Vec<(String, String)> {
    match current.and_then(|c| c.get("cleanup.policy")) {
        Some(p) if p.split(',').any(|x| x.trim() == "compact") => vec![],
        _ => vec![("cleanup.policy".into(), "compact".into())],
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum OffsetRecord {
    Commit {
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
        leader_epoch: i32,
        metadata: String,
    },
    GroupDeleted {
        group: String,
    },
    /// OffsetDelete: the group's committed offsets of these partitions are gone.
    OffsetsDeleted {
        group: String,
        partitions: Vec<(String, i32)>,
    },
    /// A Stable generation's membership (the group coordinator's [`StoredGroup`]).
    GroupMetadata {
        group: String,
        membership: StoredGroup,
    },
}

/// What a record replaces: the key compaction keeps the latest record of.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "key")]
enum OffsetKey {
    Offset { group: String, topic: String, partition: i32 },
    Group { group: String },
}

type GroupOffsets = BTreeMap<(String, i32), Committed>;

pub struct OffsetStore {
    log: StateLog,
    cache: Mutex<HashMap<String, GroupOffsets>>,
    /// Memberships found by the last load, not yet taken by the group coordinator.
    memberships: Mutex<HashMap<String, StoredGroup>>,
}

impl OffsetStore {
    pub fn new(replicas: Arc<ReplicaManager>, num_partitions: i32) -> Self {
        OffsetStore {
            log: StateLog::new(OFFSETS_TOPIC, replicas, num_partitions),
            cache: Mutex::new(HashMap::new()),
            memberships: Mutex::new(HashMap::new()),
        }
    }

    pub fn num_partitions(&self) -> i32 {
        self.log.num_partitions()
    }

    /// Is this broker the coordinator of `group`? Loads the group's offsets partition first if
    /// it leads it in a leader epoch it has not loaded. Err is a Kafka error code.
    pub fn coordinator_partition(&self, group: &str) -> Result<Arc<Partition>, i16> {
        self.log.coordinator_partition(group, |p, part| self.load(p, part))
    }

    /// Rebuilds the cached offsets of every group in offsets partition `p` from its log.
    fn load(&self, p: i32, part: &Partition) -> Result<(), i16> {
        let node_id = self.log.node_id();
        let mut groups: HashMap<String, GroupOffsets> = HashMap::new();
        let mut memberships: HashMap<String, StoredGroup> = HashMap::new();
        let records = self.log.replay(p, part, |key, value| {
            let Some(value) = value else {
                // A tombstone: what its key names is gone.
                match key.and_then(|k| serde_json::from_slice::<OffsetKey>(&k).ok()) {
                    Some(OffsetKey::Offset { group, topic, partition }) => {
                        if let Some(g) = groups.get_mut(&group) {
                            g.remove(&(topic, partition));
                        }
                    }
                    Some(OffsetKey::Group { group }) => {
                        memberships.remove(&group);
                        groups.remove(&group);
                    }
                    None => tracing::warn!(node = node_id, partition = p, "tombstone without a readable key skipped"),
                }
                return;
            };
            match serde_json::from_slice::<OffsetRecord>(&value) {
                Ok(OffsetRecord::GroupMetadata { group, membership }) => {
                    memberships.insert(group, membership);
                }
                Ok(rec) => {
                    if let OffsetRecord::GroupDeleted { group } = &rec {
                        memberships.remove(group);
                    }
                    apply(&mut groups, rec);
                }
                Err(e) => {
                    tracing::warn!(node = node_id, partition = p, error = %e, "unreadable offsets record skipped")
                }
            }
        })?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|g, _| self.log.partition_of(g) != p);
        let count = groups.len();
        cache.extend(groups);
        drop(cache);
        let mut m = self.memberships.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|g, _| self.log.partition_of(g) != p);
        m.extend(memberships);
        tracing::info!(node = node_id, partition = p, groups = count, records, "loaded committed offsets");
        Ok(())
    }

    /// Writes `entries` for `group` (acks=all) and caches them. Err is a Kafka error code.
    pub async fn commit(
        &self,
        group: &str,
        entries: Vec<(String, i32, Committed)>,
        timeout: Duration,
    ) -> Result<(), i16> {
        let part = self.coordinator_partition(group)?;
        let recs: Vec<(OffsetKey, Option<OffsetRecord>)> = entries
            .iter()
            .map(|(t, p, c)| {
                let key = OffsetKey::Offset { group: group.to_string(), topic: t.clone(), partition: *p };
                let rec = OffsetRecord::Commit {
                    group: group.to_string(),
                    topic: t.clone(),
                    partition: *p,
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: c.metadata.clone(),
                };
                (key, Some(rec))
            })
            .collect();
        self.append(&part, recs, timeout).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let g = cache.entry(group.to_string()).or_default();
        for (t, p, c) in entries {
            g.insert((t, p), c);
        }
        Ok(())
    }

    /// The membership the last load of `group`'s partition found, once (the coordinator
    /// resumes the group from it).
    pub fn take_membership(&self, group: &str) -> Option<StoredGroup> {
        self.memberships.lock().unwrap_or_else(|p| p.into_inner()).remove(group)
    }

    /// Writes a Stable generation's membership (acks=all).
    pub async fn store_membership(&self, group: &str, membership: StoredGroup, timeout: Duration) -> Result<(), i16> {
        let part = self.coordinator_partition(group)?;
        let rec = OffsetRecord::GroupMetadata { group: group.to_string(), membership };
        self.append(&part, vec![(OffsetKey::Group { group: group.to_string() }, Some(rec))], timeout).await
    }

    /// Deletes the committed offsets of `partitions` for `group` (OffsetDelete).
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
        timeout: Duration,
    ) -> Result<(), i16> {
        let part = self.coordinator_partition(group)?;
        let tombstones = partitions
            .iter()
            .map(|(t, p)| (OffsetKey::Offset { group: group.to_string(), topic: t.clone(), partition: *p }, None))
            .collect();
        self.append(&part, tombstones, timeout).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = cache.get_mut(group) {
            for tp in &partitions {
                g.remove(tp);
            }
        }
        Ok(())
    }

    /// Deletes every offset of `group` (DeleteGroups).
    pub async fn delete_group(&self, group: &str, timeout: Duration) -> Result<(), i16> {
        let part = self.coordinator_partition(group)?;
        // A tombstone for each offset, and for the group: compaction may drop the group's
        // tombstone while offsets older than it would otherwise stay.
        let mut tombstones: Vec<(OffsetKey, Option<OffsetRecord>)> = self
            .fetch(group)
            .into_keys()
            .map(|(topic, partition)| (OffsetKey::Offset { group: group.to_string(), topic, partition }, None))
            .collect();
        tombstones.push((OffsetKey::Group { group: group.to_string() }, None));
        self.append(&part, tombstones, timeout).await?;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(group);
        Ok(())
    }

    async fn append(
        &self,
        part: &Partition,
        recs: Vec<(OffsetKey, Option<OffsetRecord>)>,
        timeout: Duration,
    ) -> Result<(), i16> {
        let mut records = Vec::with_capacity(recs.len());
        for (key, rec) in recs {
            let key = serde_json::to_vec(&key).map_err(|_| super::COORDINATOR_NOT_AVAILABLE)?;
            let value =
                rec.map(|r| serde_json::to_vec(&r)).transpose().map_err(|_| super::COORDINATOR_NOT_AVAILABLE)?;
            records.push((key, value));
        }
        self.log.append(part, &records, timeout).await
    }

    /// The committed offsets of `group`.
    pub fn fetch(&self, group: &str) -> GroupOffsets {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(group).cloned().unwrap_or_default()
    }

    /// Groups with committed offsets in partitions this broker has loaded.
    pub fn groups(&self) -> Vec<String> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Does this broker still coordinate `group`? (No loading.)
    pub fn leads(&self, group: &str) -> bool {
        self.log.leads(group)
    }
}

fn apply(groups: &mut HashMap<String, GroupOffsets>, rec: OffsetRecord) {
    match rec {
        OffsetRecord::Commit { group, topic, partition, offset, leader_epoch, metadata } => {
            groups.entry(group).or_default().insert((topic, partition), Committed { offset, leader_epoch, metadata });
        }
        OffsetRecord::GroupDeleted { group } => {
            groups.remove(&group);
        }
        OffsetRecord::OffsetsDeleted { group, partitions } => {
            if let Some(g) = groups.get_mut(&group) {
                for tp in &partitions {
                    g.remove(tp);
                }
            }
        }
        OffsetRecord::GroupMetadata { .. } => {}
    }
}
