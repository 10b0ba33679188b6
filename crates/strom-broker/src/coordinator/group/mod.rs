//! The group coordinator: Kafka's classic consumer-group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) and committed offsets.
//!
//! Which broker coordinates a group: the leader of `__consumer_offsets` partition
//! `abs(java_hash(group)) % offsets.topic.num.partitions`, as Kafka computes it (so tools that
//! compute it agree). Offsets live in that partition ([`offsets`]); a broker that becomes its
//! leader reloads them before answering, so a coordinator failover keeps every committed offset.
//! Each Stable generation's membership is stored there too, and a new coordinator resumes it.
//!
//! **Group rules, enforced here:**
//! - A rebalance (PreparingRebalance) ends when every known member has rejoined or at the
//!   largest rebalance timeout; members that did not rejoin are removed. Then the generation
//!   grows by one, one protocol every member supports is chosen, the leader (kept if it is
//!   still a member) gets every member's metadata, and the group waits for the leader's
//!   assignment (CompletingRebalance → Stable on the leader's SyncGroup).
//! - Every request from a member is checked in Kafka's order: a static member replaced by a
//!   newer instance with the same `group.instance.id` gets FENCED_INSTANCE_ID, an unknown
//!   member UNKNOWN_MEMBER_ID, an old generation ILLEGAL_GENERATION. Heartbeats during
//!   PreparingRebalance get REBALANCE_IN_PROGRESS so members rejoin; commits are accepted then
//!   (the generation still owns its partitions) and refused with REBALANCE_IN_PROGRESS in
//!   CompletingRebalance (the new assignment is not out yet).
//! - A member silent for its session timeout is removed (and the group rebalances), except
//!   while it waits in a JoinGroup.
//! - First joins at v4+ get MEMBER_ID_REQUIRED with an id to use (KIP-394). A static member
//!   (`group.instance.id`, KIP-345) that rejoins a stable group gets a new member id and its
//!   old assignment without a rebalance.

pub mod offsets;
mod state;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use super::{partition_for, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR};
pub use offsets::{Committed, OffsetStore};
pub use state::GroupState;
use state::{Cx, Group, JoinStep, SyncStep};

pub const NONE: i16 = 0;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const FENCED_INSTANCE_ID: i16 = 82;

/// Kafka's group.min.session.timeout.ms / group.max.session.timeout.ms defaults.
const MIN_SESSION_TIMEOUT_MS: i32 = 6000;
const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

/// What a JoinGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, group instance id, metadata): only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub(super) fn error(code: i16, member_id: &str) -> Self {
        JoinResult { error_code: code, generation_id: -1, member_id: member_id.to_string(), ..Default::default() }
    }
}

/// What a SyncGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A JoinGroup, as the coordinator needs it.
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: an empty member id first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// Who sends a group request: its member id and, for a static member, its instance id.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
}

/// A SyncGroup, as the coordinator needs it (the assignments apart).
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest<'a> {
    pub member: MemberRef<'a>,
    pub generation: i32,
    /// v5+: checked against the group's when given.
    pub protocol_type: Option<&'a str>,
    pub protocol_name: Option<&'a str>,
}

/// A Stable generation's membership, or an Empty group's, as written to `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<StoredMember>,
    /// Wall-clock ms since which the group has had no members (records from before this
    /// field have none: the group then counts as empty from when it is resumed).
    #[serde(default)]
    pub empty_since_ms: Option<i64>,
}

/// What offset retention counts from, for one group (`offsets.retention.minutes`, KIP-211).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionStart {
    /// The group has members (or a join is under way): its offsets never expire.
    HasMembers,
    /// The group has been empty since this wall-clock ms: each offset expires at the later of
    /// this and its commit, plus the retention.
    EmptySince(i64),
    /// No membership is known (offsets committed by a "simple" consumer, without a group
    /// generation): each offset expires its retention after its commit.
    Standalone,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// A group as DescribeGroups shows it.
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// Every group this broker coordinates (or has coordinated).
pub struct GroupCoordinator {
    node_id: i32,
    initial_rebalance_delay: Duration,
    group_max_size: usize,
    /// `group.min.session.timeout.ms`, `group.max.session.timeout.ms`: a JoinGroup asking for
    /// a session timeout outside gets INVALID_SESSION_TIMEOUT.
    session_timeout_ms: (i32, i32),
    groups: Mutex<HashMap<String, Group>>,
}

impl GroupCoordinator {
    pub fn new(node_id: i32, initial_rebalance_delay: Duration) -> Self {
        GroupCoordinator {
            node_id,
            initial_rebalance_delay,
            group_max_size: usize::MAX,
            session_timeout_ms: (MIN_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS),
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// `group.max.size`: the most members (pending ones included) a group may hold.
    pub fn with_group_max_size(mut self, n: usize) -> Self {
        self.group_max_size = n;
        self
    }

    /// The session timeouts a member may ask for (`group.min|max.session.timeout.ms`).
    pub fn with_session_timeout_bounds(mut self, min_ms: i32, max_ms: i32) -> Self {
        self.session_timeout_ms = (min_ms, max_ms);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cx<'a>(&self, group_id: &'a str) -> Cx<'a> {
        Cx {
            group_id,
            node_id: self.node_id,
            initial_rebalance_delay: self.initial_rebalance_delay,
            group_max_size: self.group_max_size,
        }
    }

    /// Forgets the membership of groups this broker no longer coordinates.
    pub fn forget(&self, keep: impl Fn(&str) -> bool) {
        let delay = self.initial_rebalance_delay;
        self.lock().retain(|id, g| {
            let k = keep(id);
            if !k {
                g.remove_all_members(delay);
            }
            k
        });
    }

    /// The emptied groups whose emptiness is not stored yet (a membership of theirs was):
    /// (group, what to store). The group timer writes them.
    pub fn unstored_empty(&self) -> Vec<(String, StoredGroup)> {
        let mut groups = self.lock();
        groups
            .iter_mut()
            .filter(|(_, g)| g.is_empty_state())
            .filter_map(|(id, g)| g.take_unstored().map(|s| (id.clone(), s)))
            .collect()
    }

    /// What `group_id`'s offset retention counts from.
    pub fn retention_start(&self, group_id: &str) -> RetentionStart {
        match self.lock().get(group_id) {
            None => RetentionStart::Standalone,
            Some(g) => g.empty_since_ms().map_or(RetentionStart::HasMembers, RetentionStart::EmptySince),
        }
    }

    /// Removes `group_id` if it still has no members (its last offsets expired: Kafka's Dead).
    pub fn remove_if_empty(&self, group_id: &str) {
        let mut groups = self.lock();
        if groups.get(group_id).is_some_and(|g| g.empty_since_ms().is_some()) {
            groups.remove(group_id);
        }
    }

    /// The membership to store, once per Stable generation (None: not Stable, or stored).
    pub fn to_store(&self, group_id: &str) -> Option<StoredGroup> {
        self.lock().get_mut(group_id)?.take_unstored()
    }

    /// Resumes a group from its stored membership (this broker just became its coordinator),
    /// replacing whatever memory held. Every member gets a whole session from now.
    pub fn restore(&self, group_id: &str, stored: StoredGroup) {
        let g = Group::from_stored(stored);
        tracing::info!(
            node = self.node_id,
            group = group_id,
            generation = g.generation(),
            members = g.members_len(),
            "group resumed from its stored membership"
        );
        self.lock().insert(group_id.to_string(), g);
    }

    pub async fn join(&self, group_id: &str, req: JoinRequest) -> JoinResult {
        let (min, max) = self.session_timeout_ms;
        if req.session_timeout_ms < min || req.session_timeout_ms > max {
            return JoinResult::error(INVALID_SESSION_TIMEOUT, &req.member_id);
        }
        let step = self.lock().entry(group_id.to_string()).or_insert_with(Group::new).join(&req, &self.cx(group_id));
        match step {
            JoinStep::Done(r) => r,
            // The rebalance ends by every member rejoining or by the expiry timer.
            JoinStep::Wait(rx) => rx.await.unwrap_or_else(|_| JoinResult::error(UNKNOWN_MEMBER_ID, &req.member_id)),
        }
    }

    /// SyncGroup ([`Group::sync`] has the checks).
    pub async fn sync(&self, group_id: &str, req: SyncRequest<'_>, assignments: Vec<(String, Bytes)>) -> SyncResult {
        let err = |code| SyncResult { error_code: code, ..Default::default() };
        let step = match self.lock().get_mut(group_id) {
            None => return err(UNKNOWN_MEMBER_ID),
            Some(g) => g.sync(req, assignments),
        };
        match step {
            SyncStep::Done(r) => r,
            SyncStep::Wait(rx) => rx.await.unwrap_or_else(|_| err(REBALANCE_IN_PROGRESS)),
        }
    }

    /// Heartbeat ([`Group::heartbeat`] has the checks).
    pub fn heartbeat(&self, group_id: &str, generation: i32, member: MemberRef<'_>) -> i16 {
        self.lock().get_mut(group_id).map_or(UNKNOWN_MEMBER_ID, |g| g.heartbeat(generation, member))
    }

    /// LeaveGroup for `members` (member id, instance id); one error code per member.
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> Vec<i16> {
        match self.lock().get_mut(group_id) {
            None => vec![UNKNOWN_MEMBER_ID; members.len()],
            Some(g) => g.leave(members, &self.cx(group_id)),
        }
    }

    /// Checks an OffsetCommit's member and generation, as Kafka does:
    /// - a simple commit (generation -1, no member id, no instance id) is allowed to a group
    ///   with no members; to one with members it is UNKNOWN_MEMBER_ID;
    /// - otherwise the member check (FENCED_INSTANCE_ID, UNKNOWN_MEMBER_ID), then
    ///   ILLEGAL_GENERATION for any generation but the current one;
    /// - a current member's commit while the group is CompletingRebalance is
    ///   REBALANCE_IN_PROGRESS: the new generation's assignment is not given out yet, so the
    ///   member may be committing partitions that are no longer its own;
    /// - during PreparingRebalance the current generation still owns its partitions, so its
    ///   commits (a consumer commits what it processed before it rejoins) are accepted.
    pub fn check_commit(&self, group_id: &str, generation: i32, member: MemberRef<'_>) -> i16 {
        match self.lock().get(group_id) {
            None if generation < 0 => NONE,
            None => ILLEGAL_GENERATION,
            Some(g) => g.check_commit(generation, member),
        }
    }

    /// Expires silent members and ends rebalances at their deadline; run on a timer.
    pub fn tick(&self) {
        let now = Instant::now();
        for (id, g) in self.lock().iter_mut() {
            g.expire(now, &self.cx(id));
        }
    }

    pub fn list(&self) -> Vec<(String, &'static str, String)> {
        let groups = self.lock();
        groups.iter().map(|(id, g)| (id.clone(), g.state().name(), g.protocol_type().to_string())).collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        self.lock().get(group_id).map(Group::describe)
    }

    /// True when the group has no members (it may be deleted).
    pub fn is_empty(&self, group_id: &str) -> bool {
        self.lock().get(group_id).is_none_or(|g| !g.has_members())
    }

    pub fn remove(&self, group_id: &str) {
        self.lock().remove(group_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const G: &str = "g";

    fn join_req(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: instance.map(String::from),
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout_ms: 30_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    fn me(member_id: &str) -> MemberRef<'_> {
        MemberRef { member_id, instance_id: None }
    }

    fn state(c: &GroupCoordinator) -> &'static str {
        c.describe(G).map_or("Dead", |d| d.state)
    }

    /// Joins until past MEMBER_ID_REQUIRED; the join may wait for the rebalance to end.
    async fn join(c: &Arc<GroupCoordinator>, instance: Option<&str>) -> JoinResult {
        let first = c.join(G, join_req("", instance)).await;
        if first.error_code != MEMBER_ID_REQUIRED {
            return first;
        }
        c.join(G, join_req(&first.member_id, instance)).await
    }

    async fn sync(c: &GroupCoordinator, member: &str, generation: i32, assign: bool) -> SyncResult {
        let req = SyncRequest { member: me(member), generation, protocol_type: None, protocol_name: None };
        let assignments = if assign { vec![(member.to_string(), Bytes::from_static(b"a"))] } else { vec![] };
        c.sync(G, req, assignments).await
    }

    /// A group with one Stable member; returns (coordinator, member id, generation).
    async fn stable_one() -> (Arc<GroupCoordinator>, String, i32) {
        let c = Arc::new(GroupCoordinator::new(1, Duration::ZERO));
        let j = join(&c, None).await;
        assert_eq!((j.error_code, j.generation_id), (NONE, 1));
        assert_eq!(state(&c), "CompletingRebalance");
        assert_eq!(sync(&c, &j.member_id, 1, true).await.error_code, NONE);
        assert_eq!(state(&c), "Stable");
        (c, j.member_id, 1)
    }

    /// Waits (bounded) until the group reaches `want`.
    async fn reach(c: &GroupCoordinator, want: &str) {
        for _ in 0..500 {
            if state(c) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("group never reached {want}; it is {}", state(c));
    }

    #[tokio::test]
    async fn a_join_waits_for_every_existing_member_and_completes_when_it_rejoins() {
        let (c, a, generation) = stable_one().await;
        let c2 = c.clone();
        let b = tokio::spawn(async move { join(&c2, None).await });
        reach(&c, "PreparingRebalance").await;
        // The existing member has not rejoined: the rebalance waits (up to its rebalance timeout).
        c.tick();
        assert_eq!(state(&c), "PreparingRebalance");
        assert!(!b.is_finished());
        // Heartbeats tell it to rejoin; its commits of the old generation still land.
        assert_eq!(c.heartbeat(G, generation, me(&a)), REBALANCE_IN_PROGRESS);
        assert_eq!(c.check_commit(G, generation, me(&a)), NONE);
        let ra = c.join(G, join_req(&a, None)).await;
        let rb = b.await.unwrap();
        assert_eq!((ra.error_code, rb.error_code), (NONE, NONE));
        assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
        assert_eq!(ra.leader, a, "the leader stays while it is a member");
        assert_eq!(ra.members.len(), 2, "the leader gets every member's metadata");
        assert!(rb.members.is_empty());
        assert_eq!(state(&c), "CompletingRebalance");
        // Before the assignment is out: commits are REBALANCE_IN_PROGRESS, old generation
        // ILLEGAL_GENERATION, heartbeats of the new generation fine.
        assert_eq!(c.check_commit(G, 2, me(&a)), REBALANCE_IN_PROGRESS);
        assert_eq!(c.check_commit(G, 1, me(&a)), ILLEGAL_GENERATION);
        assert_eq!(c.heartbeat(G, 2, me(&rb.member_id)), NONE);
        // The follower's sync waits for the leader's; both get their assignments.
        let c3 = c.clone();
        let follower = rb.member_id.clone();
        let fsync = tokio::spawn(async move { sync(&c3, &follower, 2, false).await });
        tokio::task::yield_now().await;
        assert_eq!(sync(&c, &a, 2, true).await.error_code, NONE);
        assert_eq!(fsync.await.unwrap().error_code, NONE);
        assert_eq!(state(&c), "Stable");
        assert_eq!(c.check_commit(G, 2, me(&a)), NONE);
    }

    #[tokio::test]
    async fn a_pending_member_holds_the_join_phase() {
        let (c, a, _) = stable_one().await;
        // B gets its id (MEMBER_ID_REQUIRED) but has not joined with it yet.
        let pending = c.join(G, join_req("", None)).await;
        assert_eq!(pending.error_code, MEMBER_ID_REQUIRED);
        // A rejoins (a new subscription, say): the rebalance waits for B too.
        let c2 = c.clone();
        let a2 = a.clone();
        let ra = tokio::spawn(async move { c2.join(G, join_req(&a2, None)).await });
        reach(&c, "PreparingRebalance").await;
        c.tick();
        assert!(!ra.is_finished(), "the rebalance ended without the pending member");
        let rb = c.join(G, join_req(&pending.member_id, None)).await;
        assert_eq!((rb.error_code, rb.generation_id), (NONE, 2));
        assert_eq!(ra.await.unwrap().generation_id, 2);
    }

    #[tokio::test]
    async fn member_checks_follow_kafkas_order() {
        let (c, a, generation) = stable_one().await;
        assert_eq!(c.heartbeat(G, generation, me(&a)), NONE);
        assert_eq!(c.heartbeat(G, generation + 1, me(&a)), ILLEGAL_GENERATION);
        assert_eq!(c.heartbeat(G, generation, me("stranger")), UNKNOWN_MEMBER_ID);
        assert_eq!(c.heartbeat("no-such-group", generation, me(&a)), UNKNOWN_MEMBER_ID);
        assert_eq!(sync(&c, "stranger", generation, false).await.error_code, UNKNOWN_MEMBER_ID);
        assert_eq!(sync(&c, &a, generation + 1, false).await.error_code, ILLEGAL_GENERATION);
        let wrong = SyncRequest { member: me(&a), generation, protocol_type: Some("connect"), protocol_name: None };
        assert_eq!(c.sync(G, wrong, vec![]).await.error_code, INCONSISTENT_GROUP_PROTOCOL);
        // A simple commit (no member, generation -1) only to a group without members.
        assert_eq!(c.check_commit(G, -1, me("")), UNKNOWN_MEMBER_ID);
        assert_eq!(c.check_commit("offsets-only", -1, me("")), NONE);
        assert_eq!(c.check_commit("offsets-only", 3, me("x")), ILLEGAL_GENERATION);
        // Leaving: unknown members are refused, the member goes, the group empties.
        assert_eq!(c.leave(G, &[("stranger".into(), None)]), vec![UNKNOWN_MEMBER_ID]);
        assert_eq!(c.leave(G, &[(a.clone(), None)]), vec![NONE]);
        reach(&c, "Empty").await;
        assert_eq!(c.check_commit(G, -1, me("")), NONE);
        assert_eq!(c.heartbeat(G, generation, me(&a)), UNKNOWN_MEMBER_ID);
    }

    #[tokio::test]
    async fn a_static_member_replaced_by_a_new_instance_is_fenced() {
        let c = Arc::new(GroupCoordinator::new(1, Duration::ZERO));
        let old = join(&c, Some("i-1")).await;
        assert_eq!(old.error_code, NONE);
        assert_eq!(sync(&c, &old.member_id, old.generation_id, true).await.error_code, NONE);
        // The same instance id from a new process: it takes the place without a rebalance.
        let new = c.join(G, join_req("", Some("i-1"))).await;
        assert_eq!((new.error_code, new.generation_id), (NONE, old.generation_id));
        assert_ne!(new.member_id, old.member_id);
        assert_eq!(state(&c), "Stable");
        let old_ref = MemberRef { member_id: &old.member_id, instance_id: Some("i-1") };
        let new_ref = MemberRef { member_id: &new.member_id, instance_id: Some("i-1") };
        assert_eq!(c.heartbeat(G, old.generation_id, old_ref), FENCED_INSTANCE_ID);
        assert_eq!(c.check_commit(G, old.generation_id, old_ref), FENCED_INSTANCE_ID);
        assert_eq!(c.join(G, join_req(&old.member_id, Some("i-1"))).await.error_code, FENCED_INSTANCE_ID);
        assert_eq!(c.leave(G, &[(old.member_id.clone(), Some("i-1".into()))]), vec![FENCED_INSTANCE_ID]);
        assert_eq!(c.heartbeat(G, new.generation_id, new_ref), NONE);
        // An admin may remove the static member by instance id alone.
        assert_eq!(c.leave(G, &[(String::new(), Some("i-1".into()))]), vec![NONE]);
        reach(&c, "Empty").await;
    }

    #[tokio::test]
    async fn retention_never_counts_while_a_group_has_members_and_counts_from_its_emptiness() {
        assert_eq!(GroupCoordinator::new(1, Duration::ZERO).retention_start(G), RetentionStart::Standalone);
        let (c, a, _) = stable_one().await;
        assert_eq!(c.retention_start(G), RetentionStart::HasMembers);
        // The Stable generation is stored; nothing else is due yet.
        assert!(c.to_store(G).is_some_and(|s| s.members.len() == 1 && s.empty_since_ms.is_none()));
        assert!(c.unstored_empty().is_empty());
        let before = strom_protocol::values::now_ms();
        assert_eq!(c.leave(G, &[(a.clone(), None)]), vec![NONE]);
        reach(&c, "Empty").await;
        let RetentionStart::EmptySince(since) = c.retention_start(G) else { panic!("not empty") };
        assert!(since >= before);
        // The emptiness is stored once, with the moment, so a new coordinator counts from it.
        let stored = c.unstored_empty();
        assert_eq!(stored.len(), 1);
        assert_eq!((stored[0].1.members.len(), stored[0].1.empty_since_ms), (0, Some(since)));
        assert!(c.unstored_empty().is_empty());
        let resumed = GroupCoordinator::new(2, Duration::ZERO);
        resumed.restore(G, stored[0].1.clone());
        assert_eq!(resumed.retention_start(G), RetentionStart::EmptySince(since));
        // A join stops the count; a group whose offsets expired goes only while still empty.
        assert_eq!(join(&c, None).await.error_code, NONE);
        assert_eq!(state(&c), "CompletingRebalance");
        assert_eq!(c.retention_start(G), RetentionStart::HasMembers);
        c.remove_if_empty(G);
        assert_eq!(state(&c), "CompletingRebalance");
        resumed.remove_if_empty(G);
        assert_eq!(resumed.describe(G).map(|d| d.state), None);
    }
}
