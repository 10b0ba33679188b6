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

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use offsets::{Committed, OffsetStore};

pub const NONE: i16 = 0;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;

/// Kafka's group.min.session.timeout.ms / group.max.session.timeout.ms defaults.
const MIN_SESSION_TIMEOUT_MS: i32 = 6000;
const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

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
    fn error(code: i16, member_id: &str) -> Self {
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

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heard: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

struct Group {
    state: GroupState,
    generation: i32,
    /// The generation last written to `__consumer_offsets` (-1: none).
    stored_generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined, each with the time it
    /// expires (its session timeout from the hand-out, as Kafka's pending members).
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            stored_generation: -1,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
        }
    }

    fn prepare_rebalance(&mut self, initial_delay: Duration) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        // Members waiting for an assignment must rejoin.
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult { error_code: REBALANCE_IN_PROGRESS, ..Default::default() });
            }
        }
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        let delay = if self.state == GroupState::Empty { initial_delay } else { timeout };
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(Instant::now() + delay);
    }

    /// True when `instance` belongs to this group under another member id: the caller is an
    /// old instance that a newer one with the same `group.instance.id` replaced (KIP-345).
    fn static_member_fenced(&self, member_id: &str, instance: Option<&str>) -> bool {
        let Some(instance) = instance else { return false };
        self.members.iter().any(|(id, m)| m.instance_id.as_deref() == Some(instance) && id != member_id)
    }

    /// Kafka's check of a request from a current member: FENCED_INSTANCE_ID before
    /// UNKNOWN_MEMBER_ID (a replaced static member must learn it was fenced, which is fatal
    /// for it, rather than rejoin and fence its replacement in turn).
    fn check_member(&self, member_id: &str, instance: Option<&str>) -> i16 {
        if self.static_member_fenced(member_id, instance) {
            FENCED_INSTANCE_ID
        } else if !self.members.contains_key(member_id) {
            UNKNOWN_MEMBER_ID
        } else {
            NONE
        }
    }

    /// Ends the rebalance if every member has rejoined (or `force`, at the deadline).
    ///
    /// **Join-phase rule (Kafka's):** a rebalance of a group with members waits, up to the
    /// largest rebalance timeout (`max.poll.interval.ms` for Java and librdkafka consumers), for
    /// every existing member and every member handed an id by MEMBER_ID_REQUIRED to join. A busy
    /// member keeps its partitions until it rejoins or that timeout removes it: handing them
    /// out earlier would let two consumers process the same partition at once.
    fn maybe_complete_join(&mut self, force: bool, group_id: &str, node_id: i32) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some()) && self.pending.is_empty();
        let delay_over = self.rebalance_deadline.is_none_or(|d| Instant::now() >= d);
        if !(force || (all_joined && (delay_over || self.generation > 0))) {
            return;
        }
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.protocol = None;
            tracing::info!(node = node_id, group = group_id, generation = self.generation, "group is empty");
            return;
        }
        self.protocol = self.choose_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, b)| b.clone()).unwrap_or_default();
                (id.clone(), m.instance_id.clone(), meta)
            })
            .collect();
        tracing::info!(
            node = node_id,
            group = group_id,
            generation = self.generation,
            members = self.members.len(),
            leader = %leader,
            protocol = %protocol,
            "group rebalanced"
        );
        for (id, m) in self.members.iter_mut() {
            m.assignment = Bytes::new();
            m.last_heard = Instant::now();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult {
                    error_code: NONE,
                    generation_id: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { all.clone() } else { vec![] },
                });
            }
        }
    }

    /// The protocol every member supports with the most votes (each member votes for its
    /// first supported choice), ties broken by the leader's order.
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == *n)))
            .collect();
        let mut votes: HashMap<&String, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        candidates.iter().max_by_key(|c| votes.get(*c).copied().unwrap_or(0)).map(|c| (*c).clone())
    }

    fn remove_member(&mut self, id: &str, initial_delay: Duration) {
        if let Some(m) = self.members.remove(id) {
            if let Some(w) = m.join_waiter {
                let _ = w.send(JoinResult::error(UNKNOWN_MEMBER_ID, id));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(SyncResult { error_code: UNKNOWN_MEMBER_ID, ..Default::default() });
            }
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(initial_delay),
            _ => {}
        }
    }
}

/// A Stable generation's membership, as written to `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<StoredMember>,
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
    groups: Mutex<HashMap<String, Group>>,
}

impl GroupCoordinator {
    pub fn new(node_id: i32, initial_rebalance_delay: Duration) -> Self {
        GroupCoordinator { node_id, initial_rebalance_delay, groups: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the membership of groups this broker no longer coordinates.
    pub fn forget(&self, keep: impl Fn(&str) -> bool) {
        let delay = self.initial_rebalance_delay;
        self.lock().retain(|id, g| {
            let k = keep(id);
            if !k {
                for m in g.members.keys().cloned().collect::<Vec<_>>() {
                    g.remove_member(&m, delay);
                }
            }
            k
        });
    }

    /// The membership to store, once per Stable generation (None: not Stable, or stored).
    pub fn to_store(&self, group_id: &str) -> Option<StoredGroup> {
        let mut groups = self.lock();
        let g = groups.get_mut(group_id)?;
        if g.state != GroupState::Stable || g.stored_generation == g.generation {
            return None;
        }
        g.stored_generation = g.generation;
        Some(StoredGroup {
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            leader: g.leader.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| StoredMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    protocols: m.protocols.iter().map(|(n, b)| (n.clone(), b.to_vec())).collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        })
    }

    /// Resumes a group from its stored membership (this broker just became its coordinator),
    /// replacing whatever memory held. Every member gets a whole session from now.
    pub fn restore(&self, group_id: &str, stored: StoredGroup) {
        let now = Instant::now();
        let members: BTreeMap<String, Member> = stored
            .members
            .into_iter()
            .map(|m| {
                (
                    m.member_id,
                    Member {
                        instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        session_timeout: Duration::from_millis(m.session_timeout_ms),
                        rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                        protocols: m.protocols.into_iter().map(|(n, b)| (n, Bytes::from(b))).collect(),
                        assignment: Bytes::from(m.assignment),
                        last_heard: now,
                        join_waiter: None,
                        sync_waiter: None,
                    },
                )
            })
            .collect();
        let g = Group {
            state: if members.is_empty() { GroupState::Empty } else { GroupState::Stable },
            generation: stored.generation,
            stored_generation: stored.generation,
            protocol_type: stored.protocol_type,
            protocol: stored.protocol,
            leader: stored.leader,
            members,
            pending: HashMap::new(),
            rebalance_deadline: None,
        };
        tracing::info!(
            node = self.node_id,
            group = group_id,
            generation = g.generation,
            members = g.members.len(),
            "group resumed from its stored membership"
        );
        self.lock().insert(group_id.to_string(), g);
    }

    pub async fn join(&self, group_id: &str, req: JoinRequest) -> JoinResult {
        if req.session_timeout_ms < MIN_SESSION_TIMEOUT_MS || req.session_timeout_ms > MAX_SESSION_TIMEOUT_MS {
            return JoinResult::error(INVALID_SESSION_TIMEOUT, &req.member_id);
        }
        let rx = {
            let mut groups = self.lock();
            let g = groups.entry(group_id.to_string()).or_insert_with(Group::new);
            if g.state != GroupState::Empty
                && (g.protocol_type.as_deref() != Some(&req.protocol_type)
                    || !req
                        .protocols
                        .iter()
                        .any(|(n, _)| g.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == n))))
            {
                return JoinResult::error(INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
            }
            let mut member_id = req.member_id.clone();
            if member_id.is_empty() {
                let fresh = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
                if let Some(instance) = &req.group_instance_id {
                    // A static member rejoining: it takes over its old entry under a new id.
                    let old = g
                        .members
                        .iter()
                        .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                        .map(|(id, _)| id.clone());
                    if let Some(old) = old {
                        if let Some(mut m) = g.members.remove(&old) {
                            if let Some(w) = m.join_waiter.take() {
                                let _ = w.send(JoinResult::error(FENCED_INSTANCE_ID, &old));
                            }
                            if let Some(w) = m.sync_waiter.take() {
                                let _ = w.send(SyncResult { error_code: FENCED_INSTANCE_ID, ..Default::default() });
                            }
                            let same_protocols = m.protocols == req.protocols;
                            m.protocols = req.protocols.clone();
                            m.last_heard = Instant::now();
                            if g.leader.as_deref() == Some(old.as_str()) {
                                g.leader = Some(fresh.clone());
                            }
                            g.members.insert(fresh.clone(), m);
                            if g.state == GroupState::Stable && same_protocols {
                                tracing::info!(node = self.node_id, group = group_id, instance = %instance, "static member rejoined without a rebalance");
                                let leader = g.leader.clone().unwrap_or_default();
                                return JoinResult {
                                    error_code: NONE,
                                    generation_id: g.generation,
                                    protocol_type: g.protocol_type.clone(),
                                    protocol_name: g.protocol.clone(),
                                    leader,
                                    member_id: fresh,
                                    members: vec![],
                                };
                            }
                        }
                    }
                    member_id = fresh;
                } else if req.require_known_member_id {
                    let expires = Instant::now() + Duration::from_millis(req.session_timeout_ms.max(0) as u64);
                    g.pending.insert(fresh.clone(), expires);
                    return JoinResult::error(MEMBER_ID_REQUIRED, &fresh);
                } else {
                    member_id = fresh;
                }
            } else if g.pending.remove(&member_id).is_none() {
                let code = g.check_member(&member_id, req.group_instance_id.as_deref());
                if code != NONE {
                    return JoinResult::error(code, &member_id);
                }
            }
            let (tx, rx) = oneshot::channel();
            let known = g.members.contains_key(&member_id);
            let m = g.members.entry(member_id.clone()).or_insert_with(|| Member {
                instance_id: req.group_instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: Duration::ZERO,
                rebalance_timeout: Duration::ZERO,
                protocols: vec![],
                assignment: Bytes::new(),
                last_heard: Instant::now(),
                join_waiter: None,
                sync_waiter: None,
            });
            m.session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
            m.rebalance_timeout =
                Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms).max(0) as u64);
            m.protocols = req.protocols.clone();
            m.last_heard = Instant::now();
            if let Some(old) = m.join_waiter.replace(tx) {
                let _ = old.send(JoinResult::error(UNKNOWN_MEMBER_ID, &member_id));
            }
            if g.state == GroupState::Empty {
                g.protocol_type = Some(req.protocol_type.clone());
            }
            if !known {
                tracing::debug!(node = self.node_id, group = group_id, member = %member_id, "member joining");
            }
            g.prepare_rebalance(self.initial_rebalance_delay);
            g.maybe_complete_join(false, group_id, self.node_id);
            rx
        };
        // The rebalance ends by every member rejoining or by the expiry timer.
        match rx.await {
            Ok(r) => r,
            Err(_) => JoinResult::error(UNKNOWN_MEMBER_ID, &req.member_id),
        }
    }

    /// SyncGroup. Checks, in Kafka's order: the member (FENCED_INSTANCE_ID, UNKNOWN_MEMBER_ID),
    /// the generation (ILLEGAL_GENERATION), the protocol type and name when given (v5+,
    /// INCONSISTENT_GROUP_PROTOCOL), then the state.
    pub async fn sync(&self, group_id: &str, req: SyncRequest<'_>, assignments: Vec<(String, Bytes)>) -> SyncResult {
        let err = |code| SyncResult { error_code: code, ..Default::default() };
        let member_id = req.member.member_id;
        let rx = {
            let mut groups = self.lock();
            let Some(g) = groups.get_mut(group_id) else { return err(UNKNOWN_MEMBER_ID) };
            let code = g.check_member(member_id, req.member.instance_id);
            if code != NONE {
                return err(code);
            }
            if req.generation != g.generation {
                return err(ILLEGAL_GENERATION);
            }
            if req.protocol_type.is_some_and(|t| g.protocol_type.as_deref() != Some(t))
                || req.protocol_name.is_some_and(|n| g.protocol.as_deref() != Some(n))
            {
                return err(INCONSISTENT_GROUP_PROTOCOL);
            }
            let ok = |g: &Group, a: Bytes| SyncResult {
                error_code: NONE,
                protocol_type: g.protocol_type.clone(),
                protocol_name: g.protocol.clone(),
                assignment: a,
            };
            match g.state {
                GroupState::Empty => return err(UNKNOWN_MEMBER_ID),
                GroupState::PreparingRebalance => return err(REBALANCE_IN_PROGRESS),
                GroupState::Stable => {
                    let a = g.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                    return ok(g, a);
                }
                GroupState::CompletingRebalance => {}
            }
            if g.leader.as_deref() == Some(member_id) {
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, m) in g.members.iter_mut() {
                    m.assignment = given.remove(id).unwrap_or_default();
                }
                g.state = GroupState::Stable;
                let (pt, pn) = (g.protocol_type.clone(), g.protocol.clone());
                for (id, m) in g.members.iter_mut() {
                    m.last_heard = Instant::now();
                    if id != member_id {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error_code: NONE,
                                protocol_type: pt.clone(),
                                protocol_name: pn.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                let a = g.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                return ok(g, a);
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = g.members.get_mut(member_id) {
                m.sync_waiter = Some(tx);
                m.last_heard = Instant::now();
            }
            rx
        };
        rx.await.unwrap_or_else(|_| err(REBALANCE_IN_PROGRESS))
    }

    /// Heartbeat. Checks, in Kafka's order: the member, the generation, the state. Only a
    /// heartbeat that passes the member and generation checks keeps the session alive.
    pub fn heartbeat(&self, group_id: &str, generation: i32, member: MemberRef<'_>) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group_id) else { return UNKNOWN_MEMBER_ID };
        let code = g.check_member(member.member_id, member.instance_id);
        if code != NONE {
            return code;
        }
        if generation != g.generation {
            return ILLEGAL_GENERATION;
        }
        let state = g.state;
        if state == GroupState::Empty {
            return UNKNOWN_MEMBER_ID;
        }
        if let Some(m) = g.members.get_mut(member.member_id) {
            m.last_heard = Instant::now();
        }
        match state {
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            _ => NONE,
        }
    }

    /// LeaveGroup for `members` (member id, instance id); one error code per member.
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> Vec<i16> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group_id) else { return vec![UNKNOWN_MEMBER_ID; members.len()] };
        let mut out = Vec::with_capacity(members.len());
        for (id, instance) in members {
            // Kafka's order: an empty member id names a static member by instance (an admin's
            // removal); a pending member just goes; otherwise the member check applies.
            let target = if id.is_empty() {
                instance
                    .as_ref()
                    .and_then(|i| {
                        g.members.iter().find(|(_, m)| m.instance_id.as_ref() == Some(i)).map(|(id, _)| id.clone())
                    })
                    .ok_or(UNKNOWN_MEMBER_ID)
            } else if g.pending.remove(id).is_some() {
                out.push(NONE);
                continue;
            } else {
                match g.check_member(id, instance.as_deref()) {
                    NONE => Ok(id.clone()),
                    code => Err(code),
                }
            };
            match target {
                Ok(t) => {
                    tracing::debug!(node = self.node_id, group = group_id, member = %t, "member left");
                    g.remove_member(&t, self.initial_rebalance_delay);
                    out.push(NONE);
                }
                Err(code) => out.push(code),
            }
        }
        g.maybe_complete_join(false, group_id, self.node_id);
        out
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
        let groups = self.lock();
        let Some(g) = groups.get(group_id) else {
            return if generation < 0 { NONE } else { ILLEGAL_GENERATION };
        };
        if generation < 0 && member.member_id.is_empty() && member.instance_id.is_none() {
            return if g.members.is_empty() { NONE } else { UNKNOWN_MEMBER_ID };
        }
        let code = g.check_member(member.member_id, member.instance_id);
        if code != NONE {
            return code;
        }
        if generation != g.generation {
            return ILLEGAL_GENERATION;
        }
        if g.state == GroupState::CompletingRebalance {
            return REBALANCE_IN_PROGRESS;
        }
        NONE
    }

    /// Expires silent members and ends rebalances at their deadline; run on a timer.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.lock();
        for (id, g) in groups.iter_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none() && now.saturating_duration_since(m.last_heard) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for m in expired {
                tracing::info!(node = self.node_id, group = %id, member = %m, "member session expired");
                g.remove_member(&m, self.initial_rebalance_delay);
            }
            g.pending.retain(|_, expires| *expires > now);
            let due = g.rebalance_deadline.is_some_and(|d| now >= d);
            g.maybe_complete_join(due, id, self.node_id);
        }
    }

    pub fn list(&self) -> Vec<(String, &'static str, String)> {
        let groups = self.lock();
        groups.iter().map(|(id, g)| (id.clone(), g.state.name(), g.protocol_type.clone().unwrap_or_default())).collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.lock();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| {
                    let meta =
                        m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, b)| b.clone()).unwrap_or_default();
                    (
                        id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        meta,
                        m.assignment.clone(),
                    )
                })
                .collect(),
        })
    }

    /// True when the group has no members (it may be deleted).
    pub fn is_empty(&self, group_id: &str) -> bool {
        self.lock().get(group_id).is_none_or(|g| g.members.is_empty())
    }

    pub fn remove(&self, group_id: &str) {
        self.lock().remove(group_id);
    }
}

/// Java's `String.hashCode`, which Kafka uses to map a group to its offsets partition.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of `group` (Kafka's `Utils.abs(hash) % partitions`).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    (java_string_hash(group) & 0x7fff_ffff) % partitions.max(1)
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

    #[test]
    fn group_hash_is_javas_string_hash() {
        // Java: "hello".hashCode() == 99162322, "test".hashCode() == 3556498, and a string
        // long enough to wrap: "consumer-group-1".hashCode() == 147483020.
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("test"), 3_556_498);
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        assert_eq!(java_string_hash("consumer-group-1"), 147_483_020);
        assert_eq!(partition_for("consumer-group-1", 50), 20);
    }
}
