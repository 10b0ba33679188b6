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
//! and a deletion is a tombstone (a null value) for each key it removes.
//!
//! **Records from before keys** (a cluster upgraded from a Strom whose records had none) are
//! never compacted away, so once a later tombstone of the same offset is itself compacted
//! away, a keyless record would bring a deleted offset back. The first load that finds keyless
//! records has the state they contribute rewritten with keys, followed in the same batch by
//! a [`OffsetKey::KeylessSuperseded`] marker ([`OffsetStore::rewrite_keyless`]); a replay that
//! meets the marker forgets every entry whose latest record was keyless (if it is still live,
//! its rewritten copy, or a later record, restores it).
//!
//! **Offset retention** (`offsets.retention.minutes`, Kafka's KIP-211 rule): a group with
//! members keeps its offsets however old; an empty group's offsets expire the retention after
//! the later of the moment it became empty and their commit; offsets of a group that never
//! had members (a "simple" consumer) expire the retention after their commit. Expired offsets
//! are written as tombstones; a group left with none is deleted ([`OffsetStore::expire`]).
//!
//! **Transactional commits** (TxnOffsetCommit, KIP-98): written to the group's partition as a
//! transactional batch of the producer (id, epoch), they are pending, invisible to
//! OffsetFetch, until the transaction's marker is written on that partition: a commit marker
//! applies them, an abort marker drops them ([`OffsetStore::complete_txn`]; a load replays
//! the same rule). While one is pending for a partition, an OffsetFetch asking for stable
//! offsets gets UNSTABLE_OFFSET_COMMIT for it, and the client retries.
//!
//! **Write order rule:** a commit counts itself in flight for its group before it appends and
//! until its cache update; an expiry or a rewrite holds that count's lock across its own
//! append and skips a group with commits in flight. So a tombstone or a rewritten copy never
//! lands after a newer commit it did not see.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use strom_protocol::values::now_ms;

use super::{RetentionStart, StoredGroup};
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
    /// Wall-clock ms of the commit (offset retention counts from it).
    pub commit_timestamp_ms: i64,
    /// OffsetCommit v2–v4's `retention_time_ms` added to the commit time: when set, the
    /// offset expires then instead (still never while its group has members), as Kafka.
    pub expire_timestamp_ms: Option<i64>,
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
        /// Absent in records from before retention: those count from their load.
        #[serde(default)]
        commit_timestamp_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expire_timestamp_ms: Option<i64>,
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
    /// The value of the [`OffsetKey::KeylessSuperseded`] marker.
    KeylessSuperseded,
}

impl OffsetRecord {
    /// A commit record as (group, topic, partition, offset); a record from before commit
    /// times counts from `now`. `None` for other records.
    fn into_commit(self, now: i64) -> Option<PendingCommit> {
        match self {
            OffsetRecord::Commit {
                group,
                topic,
                partition,
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
                expire_timestamp_ms,
            } => {
                let commit_timestamp_ms = commit_timestamp_ms.unwrap_or(now);
                let c = Committed { offset, leader_epoch, metadata, commit_timestamp_ms, expire_timestamp_ms };
                Some((group, topic, partition, c))
            }
            _ => None,
        }
    }
}

/// What a record replaces: the key compaction keeps the latest record of.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "key")]
enum OffsetKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    /// Every entry whose latest record before this one had no key is superseded: what was
    /// still live is rewritten, with keys, just before it (see the module docs).
    KeylessSuperseded,
}

type GroupOffsets = BTreeMap<(String, i32), Committed>;

/// A decoded record: its key (`None`: from before keys) and value (`None`: a tombstone).
type KeyedRecord = (Option<OffsetKey>, Option<OffsetRecord>);

/// A transactional offset commit waiting for its marker: (group, topic, partition, offset).
type PendingCommit = (String, String, i32, Committed);

pub struct OffsetStore {
    log: StateLog,
    cache: Mutex<HashMap<String, GroupOffsets>>,
    /// Memberships found by the last load, not yet taken by the group coordinator.
    memberships: Mutex<HashMap<String, StoredGroup>>,
    /// Commits in flight per group (the write order rule in the module docs).
    in_flight: Mutex<HashMap<String, usize>>,
    /// Partitions whose last load found keyless records and no marker after them.
    keyless: Mutex<HashSet<i32>>,
    /// Transactional commits waiting for their marker: (offsets partition, producer id) → commits.
    pending_txn: Mutex<HashMap<(i32, i64), Vec<PendingCommit>>>,
}

/// Counts one commit in flight for its group while it lives.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<String, usize>>,
    group: String,
}

impl<'a> InFlight<'a> {
    fn new(map: &'a Mutex<HashMap<String, usize>>, group: &str) -> Self {
        *map.lock().unwrap_or_else(|p| p.into_inner()).entry(group.to_string()).or_default() += 1;
        InFlight { map, group: group.to_string() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.group);
            }
        }
    }
}

/// Whether an entry's latest record had no key.
type Keyless = bool;
type ReplayedOffsets = BTreeMap<(String, i32), (Committed, Keyless)>;

/// One group's entries while a partition is replayed, each marked with whether its latest
/// record had no key.
#[derive(Default)]
struct Replayed {
    offsets: HashMap<String, ReplayedOffsets>,
    memberships: HashMap<String, (StoredGroup, bool)>,
    keyless_since_marker: bool,
    /// Transactional records per producer, until its marker.
    pending_txn: HashMap<i64, Vec<KeyedRecord>>,
}

impl Replayed {
    /// One replayed record: a transactional one waits for its producer's marker.
    fn replay(&mut self, r: ReplayedRecord, now: i64) {
        match r {
            ReplayedRecord::Plain(key, value) => self.record(key, value, now),
            ReplayedRecord::Transactional(pid, key, value) => {
                self.pending_txn.entry(pid).or_default().push((key, value))
            }
            ReplayedRecord::Marker(pid, commit) => {
                for (key, value) in self.pending_txn.remove(&pid).unwrap_or_default() {
                    if commit {
                        self.record(key, value, now);
                    }
                }
            }
        }
    }

    fn record(&mut self, key: Option<OffsetKey>, value: Option<OffsetRecord>, now: i64) {
        let keyless = key.is_none();
        if matches!(key, Some(OffsetKey::KeylessSuperseded)) {
            for g in self.offsets.values_mut() {
                g.retain(|_, (_, keyless)| !*keyless);
            }
            self.offsets.retain(|_, g| !g.is_empty());
            self.memberships.retain(|_, (_, keyless)| !*keyless);
            self.keyless_since_marker = false;
            return;
        }
        self.keyless_since_marker |= keyless;
        let Some(value) = value else {
            // A tombstone: what its key names is gone.
            match key {
                Some(OffsetKey::Offset { group, topic, partition }) => {
                    if let Some(g) = self.offsets.get_mut(&group) {
                        g.remove(&(topic, partition));
                    }
                }
                Some(OffsetKey::Group { group }) => {
                    self.memberships.remove(&group);
                    self.offsets.remove(&group);
                }
                Some(OffsetKey::KeylessSuperseded) | None => {}
            }
            return;
        };
        match value {
            commit @ OffsetRecord::Commit { .. } => {
                if let Some((group, topic, partition, c)) = commit.into_commit(now) {
                    self.offsets.entry(group).or_default().insert((topic, partition), (c, keyless));
                }
            }
            OffsetRecord::GroupDeleted { group } => {
                self.memberships.remove(&group);
                self.offsets.remove(&group);
            }
            OffsetRecord::OffsetsDeleted { group, partitions } => {
                if let Some(g) = self.offsets.get_mut(&group) {
                    for tp in &partitions {
                        g.remove(tp);
                    }
                }
            }
            OffsetRecord::GroupMetadata { group, membership } => {
                self.memberships.insert(group, (membership, keyless));
            }
            OffsetRecord::KeylessSuperseded => {}
        }
    }
}

impl OffsetStore {
    pub fn new(replicas: Arc<ReplicaManager>, num_partitions: i32) -> Self {
        OffsetStore {
            log: StateLog::new(OFFSETS_TOPIC, replicas, num_partitions),
            cache: Mutex::new(HashMap::new()),
            memberships: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            keyless: Mutex::new(HashSet::new()),
            pending_txn: Mutex::new(HashMap::new()),
        }
    }

    pub fn num_partitions(&self) -> i32 {
        self.log.num_partitions()
    }

    /// The `__consumer_offsets` partition of `group`.
    pub fn partition_of(&self, group: &str) -> i32 {
        self.log.partition_of(group)
    }

    /// Is this broker the coordinator of `group`? Loads the group's offsets partition first if
    /// it leads it in a leader epoch it has not loaded. Err is a Kafka error code.
    pub fn coordinator_partition(&self, group: &str) -> Result<Arc<Partition>, i16> {
        self.log.coordinator_partition(group, |p, part| self.load(p, part))
    }

    /// Rebuilds the cached offsets of every group in offsets partition `p` from its log.
    fn load(&self, p: i32, part: &Partition) -> Result<(), i16> {
        let node_id = self.log.node_id();
        let now = now_ms();
        let mut replayed = Replayed::default();
        let records = self.log.replay(p, part, |r| {
            if let Some(commit) = r.marker {
                return replayed.replay(ReplayedRecord::Marker(r.producer_id, commit), now);
            }
            let key = r.key.map(|k| serde_json::from_slice::<OffsetKey>(&k)).transpose();
            let value = r.value.map(|v| serde_json::from_slice::<OffsetRecord>(&v)).transpose();
            match key.and_then(|k| Ok((k, value?))) {
                Ok((key, value)) if r.transactional => {
                    replayed.replay(ReplayedRecord::Transactional(r.producer_id, key, value), now)
                }
                Ok((key, value)) => replayed.replay(ReplayedRecord::Plain(key, value), now),
                Err(e) => {
                    tracing::warn!(node = node_id, partition = p, error = %e, "unreadable offsets record skipped")
                }
            }
        })?;
        let mut pending: HashMap<(i32, i64), Vec<PendingCommit>> = HashMap::new();
        for (pid, recs) in std::mem::take(&mut replayed.pending_txn) {
            for (_, value) in recs {
                if let Some((group, topic, partition, c)) = value.and_then(|v| v.into_commit(now)) {
                    pending.entry((p, pid)).or_default().push((group, topic, partition, c));
                }
            }
        }
        let mut pending_txn = self.pending_txn.lock().unwrap_or_else(|p| p.into_inner());
        pending_txn.retain(|(q, _), _| *q != p);
        pending_txn.extend(pending);
        drop(pending_txn);
        let groups: HashMap<String, GroupOffsets> = replayed
            .offsets
            .into_iter()
            .map(|(g, offsets)| (g, offsets.into_iter().map(|(tp, (c, _))| (tp, c)).collect()))
            .collect();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|g, _| self.log.partition_of(g) != p);
        let count = groups.len();
        cache.extend(groups);
        drop(cache);
        let mut m = self.memberships.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|g, _| self.log.partition_of(g) != p);
        m.extend(replayed.memberships.into_iter().map(|(g, (s, _))| (g, s)));
        drop(m);
        let mut keyless = self.keyless.lock().unwrap_or_else(|p| p.into_inner());
        if replayed.keyless_since_marker {
            keyless.insert(p);
        } else {
            keyless.remove(&p);
        }
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
        let recs = entries.iter().map(|(t, p, c)| commit_record(group, t, *p, c)).collect();
        let _in_flight = InFlight::new(&self.in_flight, group);
        self.append(&part, recs, timeout).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let g = cache.entry(group.to_string()).or_default();
        for (t, p, c) in entries {
            g.insert((t, p), c);
        }
        Ok(())
    }

    /// Writes `entries` for `group` inside the transaction of `producer` (id, epoch), acks=all:
    /// pending until the transaction's marker on this partition ([`Self::complete_txn`]).
    pub async fn commit_txn(
        &self,
        group: &str,
        producer: (i64, i16),
        entries: Vec<(String, i32, Committed)>,
        timeout: Duration,
    ) -> Result<(), i16> {
        let part = self.coordinator_partition(group)?;
        let p = self.log.partition_of(group);
        let recs = encode(entries.iter().map(|(t, q, c)| commit_record(group, t, *q, c)).collect())?;
        // Pending from the moment it is in the log (the pending lock held across the append):
        // a marker written right after it, even before it is committed (an abort the
        // coordinator decided meanwhile), finds it. If it is never committed, the leadership
        // moved, and the next load rebuilds the partition's pending commits from the log.
        let appended = {
            let mut pending = self.pending_txn.lock().unwrap_or_else(|p| p.into_inner());
            let appended = self.log.start_append_as(&part, &recs, Some(producer))?;
            let list = pending.entry((p, producer.0)).or_default();
            for (t, q, c) in entries {
                list.retain(|(g, t2, q2, _)| !(g == group && *t2 == t && *q2 == q));
                list.push((group.to_string(), t, q, c));
            }
            appended
        };
        self.log.wait_committed(&part, appended, timeout).await
    }

    /// A transaction marker of `producer_id` was written on offsets partition `p`: its pending
    /// commits there become committed offsets (`commit`) or are dropped.
    /// Never during a load of the partition: a marker written while a load replays, past the
    /// end it replays to, is applied to what the load installs (StateLog::with_load_lock).
    /// May wait for a load: call it off the async workers.
    pub fn complete_txn(&self, p: i32, producer_id: i64, commit: bool) {
        self.log.with_load_lock(|| {
            let Some(commits) = self.pending_txn.lock().unwrap_or_else(|p| p.into_inner()).remove(&(p, producer_id))
            else {
                return;
            };
            if !commit {
                return;
            }
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for (group, topic, partition, c) in commits {
                cache.entry(group).or_default().insert((topic, partition), c);
            }
        })
    }

    /// Does a transaction hold a commit of `group`'s offset of (`topic`, `partition`) not yet
    /// ended? (OffsetFetch's UNSTABLE_OFFSET_COMMIT.)
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        let p = self.log.partition_of(group);
        self.pending_txn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((q, _), _)| *q == p)
            .any(|(_, list)| list.iter().any(|(g, t, q, _)| g == group && t == topic && *q == partition))
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
        let _in_flight = InFlight::new(&self.in_flight, group);
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
        let _in_flight = InFlight::new(&self.in_flight, group);
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
        let _in_flight = InFlight::new(&self.in_flight, group);
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
        self.log.append(part, &encode(recs)?, timeout).await
    }

    /// Restores the memberships every load found and no request took yet, so their groups'
    /// sessions (and so their emptiness, which offset retention counts from) run.
    pub fn take_memberships(&self) -> Vec<(String, StoredGroup)> {
        self.memberships.lock().unwrap_or_else(|p| p.into_inner()).drain().collect()
    }

    /// Writes tombstones for the offsets of every group this broker coordinates that are past
    /// `retention_ms` (the rule in the module docs); a group left with none is deleted, and
    /// `deleted` is called with it. Returns how many offsets expired.
    pub async fn expire(
        &self,
        retention_ms: i64,
        start: impl Fn(&str) -> RetentionStart,
        deleted: impl Fn(&str),
        timeout: Duration,
    ) -> usize {
        let now = now_ms();
        let groups: Vec<(String, GroupOffsets)> = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.iter().filter(|(g, _)| self.log.leads(g)).map(|(g, o)| (g.clone(), o.clone())).collect()
        };
        let mut expired_total = 0;
        for (group, offsets) in groups {
            let from = match start(&group) {
                RetentionStart::HasMembers => continue,
                RetentionStart::EmptySince(t) => Some(t),
                RetentionStart::Standalone => None,
            };
            let expired = expired_entries(&offsets, from, now, retention_ms);
            if expired.is_empty() {
                continue;
            }
            let whole_group = expired.len() == offsets.len();
            match self.expire_group(&group, &expired, whole_group, timeout).await {
                Ok(true) => {
                    expired_total += expired.len();
                    tracing::info!(
                        node = self.log.node_id(),
                        group = %group,
                        offsets = expired.len(),
                        group_deleted = whole_group,
                        "committed offsets expired (offsets.retention.minutes)"
                    );
                    if whole_group {
                        deleted(&group);
                    }
                }
                Ok(false) => {}
                Err(code) => {
                    tracing::warn!(node = self.log.node_id(), group = %group, code, "offset expiry not written")
                }
            }
        }
        expired_total
    }

    /// Tombstones for `expired` (each with the commit time it was found with) and, if
    /// `whole_group`, the group's membership. Ok(false): skipped, a commit is in flight.
    async fn expire_group(
        &self,
        group: &str,
        expired: &[((String, i32), i64)],
        whole_group: bool,
        timeout: Duration,
    ) -> Result<bool, i16> {
        let part = self.coordinator_partition(group)?;
        let mut tombstones: Vec<(OffsetKey, Option<OffsetRecord>)> = expired
            .iter()
            .map(|((topic, partition), _)| {
                (OffsetKey::Offset { group: group.to_string(), topic: topic.clone(), partition: *partition }, None)
            })
            .collect();
        if whole_group {
            tombstones.push((OffsetKey::Group { group: group.to_string() }, None));
        }
        let records = encode(tombstones)?;
        let appended = {
            let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if in_flight.contains_key(group) {
                return Ok(false);
            }
            self.log.start_append(&part, &records)?
        };
        self.log.wait_committed(&part, appended, timeout).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = cache.get_mut(group) {
            for (tp, at) in expired {
                // A commit that landed after the tombstone stays.
                if g.get(tp).is_some_and(|c| c.commit_timestamp_ms == *at) {
                    g.remove(tp);
                }
            }
            if g.is_empty() {
                cache.remove(group);
            }
        }
        Ok(true)
    }

    /// Partitions whose last load found records without keys and no marker after them.
    pub fn keyless_partitions(&self) -> Vec<i32> {
        self.keyless.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    /// Rewrites, with keys, every offset and membership of offsets partition `p` (which this
    /// broker leads and has loaded), followed by the [`OffsetKey::KeylessSuperseded`] marker,
    /// in one batch (the module docs say why). Ok(false): not done now (not the leader any
    /// more, or a commit of one of its groups is in flight); it is retried.
    pub async fn rewrite_keyless(&self, p: i32, timeout: Duration) -> Result<bool, i16> {
        let in_partition = |g: &String| self.log.partition_of(g) == p;
        let Some(part) = self.log.loaded_leader(p) else { return Ok(false) };
        let (records, groups) = {
            let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if in_flight.keys().any(in_partition) {
                return Ok(false);
            }
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let mut recs: Vec<(OffsetKey, Option<OffsetRecord>)> = Vec::new();
            for (g, offsets) in cache.iter().filter(|(g, _)| in_partition(g)) {
                recs.extend(offsets.iter().map(|((t, tp), c)| commit_record(g, t, *tp, c)));
            }
            let memberships = self.memberships.lock().unwrap_or_else(|p| p.into_inner());
            for (g, m) in memberships.iter().filter(|(g, _)| in_partition(g)) {
                let rec = OffsetRecord::GroupMetadata { group: g.clone(), membership: m.clone() };
                recs.push((OffsetKey::Group { group: g.clone() }, Some(rec)));
            }
            let groups = recs.len();
            recs.push((OffsetKey::KeylessSuperseded, Some(OffsetRecord::KeylessSuperseded)));
            let appended = self.log.start_append(&part, &encode(recs)?)?;
            (appended, groups)
        };
        self.log.wait_committed(&part, records, timeout).await?;
        self.keyless.lock().unwrap_or_else(|p| p.into_inner()).remove(&p);
        tracing::info!(
            node = self.log.node_id(),
            partition = p,
            records = groups,
            "records from before keys superseded by keyed copies"
        );
        Ok(true)
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

/// The offsets of one group past retention at `now` (each with its commit time): those whose
/// later of `empty_since` (None: a group without membership) and commit is `retention_ms` ago,
/// or, for a commit that asked for its own retention, whose expiry time has come.
fn expired_entries(
    offsets: &GroupOffsets,
    empty_since: Option<i64>,
    now: i64,
    retention_ms: i64,
) -> Vec<((String, i32), i64)> {
    offsets
        .iter()
        .filter(|(_, c)| match c.expire_timestamp_ms {
            Some(at) => now >= at,
            None => now.saturating_sub(empty_since.unwrap_or(i64::MIN).max(c.commit_timestamp_ms)) >= retention_ms,
        })
        .map(|(tp, c)| (tp.clone(), c.commit_timestamp_ms))
        .collect()
}

/// The record of one committed offset.
fn commit_record(group: &str, topic: &str, partition: i32, c: &Committed) -> (OffsetKey, Option<OffsetRecord>) {
    let key = OffsetKey::Offset { group: group.to_string(), topic: topic.to_string(), partition };
    let rec = OffsetRecord::Commit {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
        offset: c.offset,
        leader_epoch: c.leader_epoch,
        metadata: c.metadata.clone(),
        commit_timestamp_ms: Some(c.commit_timestamp_ms),
        expire_timestamp_ms: c.expire_timestamp_ms,
    };
    (key, Some(rec))
}

/// A record of the offsets log, decoded, as a load meets it.
enum ReplayedRecord {
    Plain(Option<OffsetKey>, Option<OffsetRecord>),
    /// Part of this producer's transaction.
    Transactional(i64, Option<OffsetKey>, Option<OffsetRecord>),
    /// This producer's transaction marker: commit (true) or abort.
    Marker(i64, bool),
}

/// A record as [`StateLog`] appends it: key, value (`None`: a tombstone).
type EncodedRecord = (Vec<u8>, Option<Vec<u8>>);

fn encode(recs: Vec<(OffsetKey, Option<OffsetRecord>)>) -> Result<Vec<EncodedRecord>, i16> {
    let mut records = Vec::with_capacity(recs.len());
    for (key, rec) in recs {
        let key = serde_json::to_vec(&key).map_err(|_| super::COORDINATOR_NOT_AVAILABLE)?;
        let value = rec.map(|r| serde_json::to_vec(&r)).transpose().map_err(|_| super::COORDINATOR_NOT_AVAILABLE)?;
        records.push((key, value));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(group: &str, partition: i32, offset: i64, at: i64) -> OffsetRecord {
        OffsetRecord::Commit {
            group: group.into(),
            topic: "t".into(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: Some(at),
            expire_timestamp_ms: None,
        }
    }

    fn key(group: &str, partition: i32) -> Option<OffsetKey> {
        Some(OffsetKey::Offset { group: group.into(), topic: "t".into(), partition })
    }

    #[test]
    fn a_replay_applies_transactional_commits_at_their_commit_marker_only() {
        use ReplayedRecord::*;
        let mut r = Replayed::default();
        r.replay(Plain(key("g", 0), Some(commit("g", 0, 5, 1))), 0);
        // Producer 7 commits offset 9 in a transaction that commits; producer 8 offset 20 in
        // one that aborts; producer 9's is still open at the end of the log.
        r.replay(Transactional(7, key("g", 0), Some(commit("g", 0, 9, 2))), 0);
        r.replay(Transactional(8, key("g", 1), Some(commit("g", 1, 20, 2))), 0);
        r.replay(Transactional(9, key("g", 2), Some(commit("g", 2, 30, 2))), 0);
        assert_eq!(offsets_of(&r, "g"), vec![(0, 5)], "nothing transactional is visible before its marker");
        r.replay(Marker(7, true), 0);
        r.replay(Marker(8, false), 0);
        assert_eq!(offsets_of(&r, "g"), vec![(0, 9)]);
        assert_eq!(r.pending_txn.keys().copied().collect::<Vec<_>>(), vec![9]);
        // A marker of a producer with nothing pending changes nothing.
        r.replay(Marker(8, true), 0);
        assert_eq!(offsets_of(&r, "g"), vec![(0, 9)]);
    }

    fn offsets_of(r: &Replayed, group: &str) -> Vec<(i32, i64)> {
        r.offsets.get(group).map_or(vec![], |g| g.iter().map(|((_, p), (c, _))| (*p, c.offset)).collect())
    }

    #[test]
    fn the_marker_forgets_what_only_keyless_records_said() {
        // What a compacted log from an upgraded cluster can hold: keyless records from before
        // keys (never compacted), the keyed rewrite with the marker, later keyed records. The
        // rewritten copy of g/0 was superseded by a tombstone and both were compacted away.
        let mut r = Replayed::default();
        r.record(None, Some(commit("g", 0, 5, 1)), 0);
        r.record(None, Some(commit("g", 1, 6, 1)), 0);
        r.record(None, Some(commit("gone", 0, 7, 1)), 0);
        r.record(None, Some(OffsetRecord::GroupDeleted { group: "gone".into() }), 0);
        assert!(r.keyless_since_marker);
        assert_eq!(offsets_of(&r, "g"), vec![(0, 5), (1, 6)]);
        // The rewrite of g/1 survived compaction; g/0's copy did not.
        r.record(key("g", 1), Some(commit("g", 1, 6, 1)), 0);
        r.record(Some(OffsetKey::KeylessSuperseded), Some(OffsetRecord::KeylessSuperseded), 0);
        assert!(!r.keyless_since_marker);
        assert_eq!(offsets_of(&r, "g"), vec![(1, 6)], "the deleted g/0 does not come back");
        assert_eq!(offsets_of(&r, "gone"), vec![]);
        r.record(key("g", 2), Some(commit("g", 2, 9, 1)), 0);
        r.record(key("g", 1), None, 0);
        assert_eq!(offsets_of(&r, "g"), vec![(2, 9)]);
    }

    #[test]
    fn keyed_records_need_no_rewrite_and_tombstones_delete() {
        let mut r = Replayed::default();
        r.record(key("g", 0), Some(commit("g", 0, 5, 1)), 0);
        r.record(key("g", 1), Some(commit("g", 1, 6, 1)), 0);
        r.record(key("g", 0), None, 0);
        assert!(!r.keyless_since_marker);
        assert_eq!(offsets_of(&r, "g"), vec![(1, 6)]);
        r.record(Some(OffsetKey::Group { group: "g".into() }), None, 0);
        assert_eq!(offsets_of(&r, "g"), vec![]);
        // A commit from before commit times were stored counts from the load.
        let old = OffsetRecord::Commit {
            group: "h".into(),
            topic: "t".into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: None,
            expire_timestamp_ms: None,
        };
        r.record(key("h", 0), Some(old), 42);
        assert_eq!(r.offsets["h"][&("t".to_string(), 0)].0.commit_timestamp_ms, 42);
    }

    #[test]
    fn retention_counts_from_the_later_of_emptiness_and_the_commit() {
        let c = |offset, at| Committed {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: at,
            expire_timestamp_ms: None,
        };
        let mut offsets: GroupOffsets = [(("t".to_string(), 0), c(1, 100)), (("t".to_string(), 1), c(2, 500))].into();
        let expired = |since, now| -> Vec<i32> {
            expired_entries(&offsets, since, now, 1000).into_iter().map(|((_, p), _)| p).collect()
        };
        // Empty since 300: the old commit expires at 1300, the one made after at 1500.
        assert_eq!(expired(Some(300), 1299), Vec::<i32>::new());
        assert_eq!(expired(Some(300), 1300), vec![0]);
        assert_eq!(expired(Some(300), 1500), vec![0, 1]);
        // Empty only since 2000: nothing expires before 3000, however old the commits.
        assert_eq!(expired(Some(2000), 2999), Vec::<i32>::new());
        assert_eq!(expired(Some(2000), 3000), vec![0, 1]);
        // No membership: each from its commit.
        assert_eq!(expired(None, 1100), vec![0]);
        // A commit with its own retention (OffsetCommit v2-v4) expires at its time.
        offsets.insert(("t".to_string(), 2), Committed { expire_timestamp_ms: Some(250), ..c(3, 200) });
        let expired = |since, now| -> Vec<i32> {
            expired_entries(&offsets, since, now, 1000).into_iter().map(|((_, p), _)| p).collect()
        };
        assert_eq!(expired(Some(2000), 2001), vec![2]);
        assert_eq!(expired(None, 249), Vec::<i32>::new());
    }

    /// A broker leading the one partition of `__consumer_offsets` in `dir`, in leader epoch
    /// `epoch` (a new epoch is a new coordinator: it loads the partition again).
    fn store_in(dir: &std::path::Path, epoch: i32) -> (Arc<ReplicaManager>, OffsetStore) {
        use strom_metadata::image::{MetadataImage, PartitionImage, TopicImage};
        let replicas = Arc::new(ReplicaManager::new(1, dir.to_path_buf(), strom_storage::LogConfig::default()));
        let mut image = MetadataImage::default();
        let part =
            PartitionImage { replicas: vec![1], isr: vec![1], leader: 1, leader_epoch: epoch, partition_epoch: 0 };
        let id = uuid::Uuid::from_u128(7);
        image.topics.insert(
            OFFSETS_TOPIC.into(),
            TopicImage { name: OFFSETS_TOPIC.into(), id, partitions: [(0, part)].into() },
        );
        replicas.apply_image(&image);
        let store = OffsetStore::new(replicas.clone(), 1);
        (replicas, store)
    }

    fn offset_of(store: &OffsetStore, group: &str) -> Option<i64> {
        store.coordinator_partition(group).expect("coordinator");
        store.fetch(group).get(&("t".to_string(), 0)).map(|c| c.offset)
    }

    #[tokio::test]
    async fn an_upgraded_offsets_log_keeps_its_offsets_and_never_resurrects_a_deleted_one() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_secs(5);
        {
            // What a Strom from before keys wrote: keyless commits.
            let (replicas, _) = store_in(dir.path(), 0);
            let part = replicas.get(OFFSETS_TOPIC, 0).unwrap();
            let old = |group: &str, offset: i64| {
                let json = format!(
                    r#"{{"type":"Commit","group":"{group}","topic":"t","partition":0,"offset":{offset},"leader_epoch":-1,"metadata":""}}"#
                );
                (None, Some(bytes::Bytes::from(json)))
            };
            let batch = strom_protocol::batch::encode_records(
                [old("kept", 7), old("deleted", 9)],
                now_ms(),
                strom_protocol::kafka_protocol::records::Compression::None,
            )
            .unwrap();
            part.append_as_leader(&batch, now_ms(), None).unwrap();
        }
        let (replicas, store) = store_in(dir.path(), 1);
        assert_eq!((offset_of(&store, "kept"), offset_of(&store, "deleted")), (Some(7), Some(9)));
        assert_eq!(store.keyless_partitions(), vec![0]);
        assert!(store.rewrite_keyless(0, timeout).await.unwrap());
        assert!(store.keyless_partitions().is_empty());
        store.delete_offsets("deleted", vec![("t".into(), 0)], timeout).await.unwrap();
        // Compaction with tombstones expiring at once: the keyed copy of "deleted" and its
        // tombstone go; the keyless records stay (a cleaner never drops them).
        let part = replicas.get(OFFSETS_TOPIC, 0).unwrap();
        part.with_log(|l| {
            let mut config = l.config().clone();
            config.compact = true;
            config.delete_retention_ms = 0;
            l.set_config(config.clone());
            l.roll().unwrap();
            let stats = l.clean(strom_storage::CleanOptions::for_config(&config, now_ms() + 1, None)).unwrap();
            assert_eq!(stats.records_removed, 2, "the keyed copy of the deleted offset and its tombstone");
        });
        drop((store, part, replicas));
        // A new coordinator reads: "kept" is kept, "deleted" stays deleted, no rewrite is due.
        let (_replicas, store) = store_in(dir.path(), 2);
        assert_eq!((offset_of(&store, "kept"), offset_of(&store, "deleted")), (Some(7), None));
        assert!(store.keyless_partitions().is_empty());
    }
}
