//! One group's state machine (Kafka's classic protocol): Empty → PreparingRebalance →
//! CompletingRebalance → Stable, and back to PreparingRebalance when membership changes. Every
//! transition is a method of [`Group`] taking the request it reacts to; the coordinator
//! ([`super::GroupCoordinator`]) only finds the group, locks it and awaits the answer. The
//! group rules are in the parent module's docs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strom_protocol::values::now_ms;
use tokio::sync::oneshot;

use super::{
    GroupDescription, JoinRequest, JoinResult, MemberRef, StoredGroup, StoredMember, SyncRequest, SyncResult,
    FENCED_INSTANCE_ID, GROUP_MAX_SIZE_REACHED, ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, MEMBER_ID_REQUIRED,
    NONE, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};

/// Who is asking, for the logs, and the coordinator's settings a transition needs.
pub(super) struct Cx<'a> {
    pub group_id: &'a str,
    pub node_id: i32,
    pub initial_rebalance_delay: Duration,
    /// `group.max.size`: members and pending members a group may hold.
    pub group_max_size: usize,
}

/// A JoinGroup answered now, or once the join phase ends.
pub(super) enum JoinStep {
    Done(JoinResult),
    Wait(oneshot::Receiver<JoinResult>),
}

/// A SyncGroup answered now, or once the leader's assignment arrives.
pub(super) enum SyncStep {
    Done(SyncResult),
    Wait(oneshot::Receiver<SyncResult>),
}

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

pub(super) struct Member {
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

pub(super) struct Group {
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
    /// Wall-clock ms since which the group has had no members (None while it has, or while
    /// a join is under way): offset retention counts from here.
    empty_since_ms: Option<i64>,
}

impl Group {
    pub(super) fn new() -> Self {
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
            empty_since_ms: Some(now_ms()),
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
        self.empty_since_ms = None;
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

    /// [`Self::check_member`], then ILLEGAL_GENERATION for any generation but the current one:
    /// the first checks of SyncGroup, Heartbeat and OffsetCommit, in Kafka's order.
    fn check_member_generation(&self, member: MemberRef<'_>, generation: i32) -> i16 {
        match self.check_member(member.member_id, member.instance_id) {
            NONE if generation != self.generation => ILLEGAL_GENERATION,
            code => code,
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
            self.empty_since_ms = Some(now_ms());
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

    pub(super) fn state(&self) -> GroupState {
        self.state
    }

    pub(super) fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// JoinGroup: either answered now or, once in the rebalance, answered when the join
    /// phase ends (every member rejoined, or the deadline).
    pub(super) fn join(&mut self, req: &JoinRequest, cx: &Cx) -> JoinStep {
        if self.state != GroupState::Empty
            && (self.protocol_type.as_deref() != Some(&req.protocol_type)
                || !req
                    .protocols
                    .iter()
                    .any(|(n, _)| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == n))))
        {
            return JoinStep::Done(JoinResult::error(INCONSISTENT_GROUP_PROTOCOL, &req.member_id));
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            // group.max.size (Kafka's GROUP_MAX_SIZE_REACHED): a new member, or a pending id
            // handed out by MEMBER_ID_REQUIRED, is refused once the group holds that many; a
            // static member taking over its own entry is not new.
            let takes_over = req
                .group_instance_id
                .as_ref()
                .is_some_and(|i| self.members.values().any(|m| m.instance_id.as_ref() == Some(i)));
            if !takes_over && self.members.len() + self.pending.len() >= cx.group_max_size {
                return JoinStep::Done(JoinResult::error(GROUP_MAX_SIZE_REACHED, ""));
            }
            let fresh = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if let Some(instance) = &req.group_instance_id {
                // A static member rejoining: it takes over its old entry under a new id.
                let old = self
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                    .map(|(id, _)| id.clone());
                if let Some(old) = old {
                    if let Some(mut m) = self.members.remove(&old) {
                        if let Some(w) = m.join_waiter.take() {
                            let _ = w.send(JoinResult::error(FENCED_INSTANCE_ID, &old));
                        }
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult { error_code: FENCED_INSTANCE_ID, ..Default::default() });
                        }
                        let same_protocols = m.protocols == req.protocols;
                        m.protocols = req.protocols.clone();
                        m.last_heard = Instant::now();
                        if self.leader.as_deref() == Some(old.as_str()) {
                            self.leader = Some(fresh.clone());
                        }
                        self.members.insert(fresh.clone(), m);
                        if self.state == GroupState::Stable && same_protocols {
                            tracing::info!(node = cx.node_id, group = cx.group_id, instance = %instance, "static member rejoined without a rebalance");
                            return JoinStep::Done(JoinResult {
                                error_code: NONE,
                                generation_id: self.generation,
                                protocol_type: self.protocol_type.clone(),
                                protocol_name: self.protocol.clone(),
                                leader: self.leader.clone().unwrap_or_default(),
                                member_id: fresh,
                                members: vec![],
                            });
                        }
                    }
                }
                member_id = fresh;
            } else if req.require_known_member_id {
                let expires = Instant::now() + Duration::from_millis(req.session_timeout_ms.max(0) as u64);
                self.pending.insert(fresh.clone(), expires);
                return JoinStep::Done(JoinResult::error(MEMBER_ID_REQUIRED, &fresh));
            } else {
                member_id = fresh;
            }
        } else if self.pending.remove(&member_id).is_none() {
            let code = self.check_member(&member_id, req.group_instance_id.as_deref());
            if code != NONE {
                return JoinStep::Done(JoinResult::error(code, &member_id));
            }
        }
        let (tx, rx) = oneshot::channel();
        let known = self.members.contains_key(&member_id);
        let m = self.members.entry(member_id.clone()).or_insert_with(|| Member {
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
        m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms).max(0) as u64);
        m.protocols = req.protocols.clone();
        m.last_heard = Instant::now();
        if let Some(old) = m.join_waiter.replace(tx) {
            let _ = old.send(JoinResult::error(UNKNOWN_MEMBER_ID, &member_id));
        }
        if self.state == GroupState::Empty {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if !known {
            tracing::debug!(node = cx.node_id, group = cx.group_id, member = %member_id, "member joining");
        }
        self.prepare_rebalance(cx.initial_rebalance_delay);
        self.maybe_complete_join(false, cx.group_id, cx.node_id);
        JoinStep::Wait(rx)
    }

    /// SyncGroup. Checks, in Kafka's order: the member (FENCED_INSTANCE_ID, UNKNOWN_MEMBER_ID),
    /// the generation (ILLEGAL_GENERATION), the protocol type and name when given (v5+,
    /// INCONSISTENT_GROUP_PROTOCOL), then the state. The leader's sync makes the group Stable
    /// and answers every waiting member; another member waits for it.
    pub(super) fn sync(&mut self, req: SyncRequest<'_>, assignments: Vec<(String, Bytes)>) -> SyncStep {
        let err = |code| SyncStep::Done(SyncResult { error_code: code, ..Default::default() });
        let member_id = req.member.member_id;
        let code = self.check_member_generation(req.member, req.generation);
        if code != NONE {
            return err(code);
        }
        if req.protocol_type.is_some_and(|t| self.protocol_type.as_deref() != Some(t))
            || req.protocol_name.is_some_and(|n| self.protocol.as_deref() != Some(n))
        {
            return err(INCONSISTENT_GROUP_PROTOCOL);
        }
        let ok = |g: &Group, a: Bytes| {
            SyncStep::Done(SyncResult {
                error_code: NONE,
                protocol_type: g.protocol_type.clone(),
                protocol_name: g.protocol.clone(),
                assignment: a,
            })
        };
        match self.state {
            GroupState::Empty => return err(UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => return err(REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let a = self.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                return ok(self, a);
            }
            GroupState::CompletingRebalance => {}
        }
        if self.leader.as_deref() == Some(member_id) {
            let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
            for (id, m) in self.members.iter_mut() {
                m.assignment = given.remove(id).unwrap_or_default();
            }
            self.state = GroupState::Stable;
            let (pt, pn) = (self.protocol_type.clone(), self.protocol.clone());
            for (id, m) in self.members.iter_mut() {
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
            let a = self.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default();
            return ok(self, a);
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(member_id) {
            m.sync_waiter = Some(tx);
            m.last_heard = Instant::now();
        }
        SyncStep::Wait(rx)
    }

    /// Heartbeat. Checks, in Kafka's order: the member, the generation, the state. Only a
    /// heartbeat that passes the member and generation checks keeps the session alive.
    pub(super) fn heartbeat(&mut self, generation: i32, member: MemberRef<'_>) -> i16 {
        let code = self.check_member_generation(member, generation);
        if code != NONE {
            return code;
        }
        if self.state == GroupState::Empty {
            return UNKNOWN_MEMBER_ID;
        }
        if let Some(m) = self.members.get_mut(member.member_id) {
            m.last_heard = Instant::now();
        }
        match self.state {
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            _ => NONE,
        }
    }

    /// LeaveGroup for `members` (member id, instance id); one error code per member.
    pub(super) fn leave(&mut self, members: &[(String, Option<String>)], cx: &Cx) -> Vec<i16> {
        let mut out = Vec::with_capacity(members.len());
        for (id, instance) in members {
            // Kafka's order: an empty member id names a static member by instance (an admin's
            // removal); a pending member just goes; otherwise the member check applies.
            let target = if id.is_empty() {
                instance
                    .as_ref()
                    .and_then(|i| {
                        self.members.iter().find(|(_, m)| m.instance_id.as_ref() == Some(i)).map(|(id, _)| id.clone())
                    })
                    .ok_or(UNKNOWN_MEMBER_ID)
            } else if self.pending.remove(id).is_some() {
                out.push(NONE);
                continue;
            } else {
                match self.check_member(id, instance.as_deref()) {
                    NONE => Ok(id.clone()),
                    code => Err(code),
                }
            };
            match target {
                Ok(t) => {
                    tracing::debug!(node = cx.node_id, group = cx.group_id, member = %t, "member left");
                    self.remove_member(&t, cx.initial_rebalance_delay);
                    out.push(NONE);
                }
                Err(code) => out.push(code),
            }
        }
        self.maybe_complete_join(false, cx.group_id, cx.node_id);
        out
    }

    /// OffsetCommit's member and generation check (the rules at
    /// [`GroupCoordinator::check_commit`](super::GroupCoordinator::check_commit)).
    pub(super) fn check_commit(&self, generation: i32, member: MemberRef<'_>) -> i16 {
        if generation < 0 && member.member_id.is_empty() && member.instance_id.is_none() {
            return if self.members.is_empty() { NONE } else { UNKNOWN_MEMBER_ID };
        }
        let code = self.check_member_generation(member, generation);
        if code != NONE {
            return code;
        }
        if self.state == GroupState::CompletingRebalance {
            return REBALANCE_IN_PROGRESS;
        }
        NONE
    }

    /// The timer: removes members silent past their session timeout (never one waiting in a
    /// JoinGroup), drops expired pending member ids, and ends a join phase at its deadline.
    pub(super) fn expire(&mut self, now: Instant, cx: &Cx) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none() && now.saturating_duration_since(m.last_heard) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for m in expired {
            tracing::info!(node = cx.node_id, group = %cx.group_id, member = %m, "member session expired");
            self.remove_member(&m, cx.initial_rebalance_delay);
        }
        self.pending.retain(|_, expires| *expires > now);
        let due = self.rebalance_deadline.is_some_and(|d| now >= d);
        self.maybe_complete_join(due, cx.group_id, cx.node_id);
    }

    /// Removes every member (this broker no longer coordinates the group): their waiting
    /// requests are answered UNKNOWN_MEMBER_ID.
    pub(super) fn remove_all_members(&mut self, initial_delay: Duration) {
        for m in self.members.keys().cloned().collect::<Vec<_>>() {
            self.remove_member(&m, initial_delay);
        }
    }

    /// The membership to store, once per generation (None: stored, or nothing to store): a
    /// Stable generation's members, or an Empty group's emptiness once a membership of it was
    /// stored (so a new coordinator counts offset retention from the same moment).
    pub(super) fn take_unstored(&mut self) -> Option<StoredGroup> {
        let due = match self.state {
            GroupState::Stable => true,
            GroupState::Empty => self.stored_generation >= 0,
            _ => false,
        };
        if !due || self.stored_generation == self.generation {
            return None;
        }
        self.stored_generation = self.generation;
        Some(StoredGroup {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
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
            empty_since_ms: self.empty_since_ms,
        })
    }

    /// A group resumed from its stored membership: Stable (Empty without members, empty since
    /// the stored moment, or now for a membership stored without one), every member with a
    /// whole session from now.
    pub(super) fn from_stored(stored: StoredGroup) -> Group {
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
        let empty = members.is_empty();
        Group {
            state: if empty { GroupState::Empty } else { GroupState::Stable },
            generation: stored.generation,
            stored_generation: stored.generation,
            protocol_type: stored.protocol_type,
            protocol: stored.protocol,
            leader: stored.leader,
            members,
            pending: HashMap::new(),
            rebalance_deadline: None,
            empty_since_ms: stored.empty_since_ms.or(Some(now_ms())).filter(|_| empty),
        }
    }

    /// Since when (wall-clock ms) the group has had no members; None while it has members.
    pub(super) fn empty_since_ms(&self) -> Option<i64> {
        self.empty_since_ms
    }

    pub(super) fn is_empty_state(&self) -> bool {
        self.state == GroupState::Empty
    }

    pub(super) fn generation(&self) -> i32 {
        self.generation
    }

    pub(super) fn members_len(&self) -> usize {
        self.members.len()
    }

    pub(super) fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or_default()
    }

    pub(super) fn describe(&self) -> GroupDescription {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupDescription {
            state: self.state.name(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: self
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
        }
    }
}

/// One test per transition of the state machine, driven through [`Group`]'s methods alone
/// (no timers, no coordinator): each names the transition it checks.
#[cfg(test)]
mod tests {
    use super::*;

    const NO_DELAY: Cx<'static> =
        Cx { group_id: "g", node_id: 1, initial_rebalance_delay: Duration::ZERO, group_max_size: usize::MAX };

    #[test]
    fn group_max_size_refuses_new_and_pending_members_beyond_it() {
        let cx = Cx { group_max_size: 2, ..NO_DELAY };
        let mut g = Group::new();
        // Two members take an id each (pending until they join with it).
        let first_join = JoinRequest { require_known_member_id: true, ..join_req("") };
        for _ in 0..2 {
            match g.join(&first_join, &cx) {
                JoinStep::Done(r) => assert_eq!(r.error_code, MEMBER_ID_REQUIRED),
                JoinStep::Wait(_) => panic!("a first join waited"),
            }
        }
        match g.join(&first_join, &cx) {
            JoinStep::Done(r) => assert_eq!(r.error_code, GROUP_MAX_SIZE_REACHED),
            JoinStep::Wait(_) => panic!("a third member was let in"),
        }
    }

    fn join_req(member_id: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            // Sessions of 10 s, rebalances of up to 60 s: a test moves the clock past one or both.
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 60_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: false,
        }
    }

    fn waiting<T>(step: Result<oneshot::Receiver<T>, T>) -> oneshot::Receiver<T> {
        match step {
            Ok(rx) => rx,
            Err(_) => panic!("expected the request to wait"),
        }
    }

    fn join(g: &mut Group, member_id: &str) -> oneshot::Receiver<JoinResult> {
        waiting(match g.join(&join_req(member_id), &NO_DELAY) {
            JoinStep::Wait(rx) => Ok(rx),
            JoinStep::Done(r) => Err(r),
        })
    }

    fn answered<T>(rx: &mut oneshot::Receiver<T>) -> T {
        rx.try_recv().unwrap_or_else(|e| panic!("no answer yet: {e}"))
    }

    fn sync(g: &mut Group, member_id: &str, generation: i32, assign: &[(&str, &'static [u8])]) -> SyncStep {
        let req = SyncRequest {
            member: MemberRef { member_id, instance_id: None },
            generation,
            protocol_type: None,
            protocol_name: None,
        };
        g.sync(req, assign.iter().map(|(m, a)| (m.to_string(), Bytes::from_static(a))).collect())
    }

    /// A Stable group of the given members (the first is the leader); returns their ids.
    fn stable(n: usize) -> (Group, Vec<String>) {
        let mut g = Group::new();
        let mut first = join(&mut g, "");
        let leader = answered(&mut first).member_id;
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let mut ids = vec![leader.clone()];
        for _ in 1..n {
            // A new member: the group rebalances, and completes once the others rejoin.
            let _new = join(&mut g, "");
            assert_eq!(g.state(), GroupState::PreparingRebalance);
            for id in ids.clone() {
                drop(join(&mut g, &id));
            }
            let id = g.describe().members.iter().map(|m| m.0.clone()).find(|m| !ids.contains(m)).unwrap();
            ids.push(id);
        }
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let gen = g.generation();
        let assign: Vec<(&str, &'static [u8])> = ids.iter().map(|m| (m.as_str(), &b"a"[..])).collect();
        assert!(matches!(sync(&mut g, &ids[0], gen, &assign), SyncStep::Done(r) if r.error_code == NONE));
        assert_eq!(g.state(), GroupState::Stable);
        (g, ids)
    }

    #[test]
    fn empty_to_preparing_to_completing_on_the_first_join() {
        let mut g = Group::new();
        assert_eq!(g.state(), GroupState::Empty);
        // With an initial delay the first join opens the rebalance and waits.
        let delayed = Cx { initial_rebalance_delay: Duration::from_secs(60), ..NO_DELAY };
        let JoinStep::Wait(mut rx) = g.join(&join_req(""), &delayed) else { panic!("the join must wait") };
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert!(rx.try_recv().is_err(), "no answer before the delay ends");
        // The deadline passes: the join phase ends, generation 1, the joiner leads.
        g.expire(Instant::now() + Duration::from_secs(61), &NO_DELAY);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let r = answered(&mut rx);
        assert_eq!((r.error_code, r.generation_id), (NONE, 1));
        assert_eq!(r.leader, r.member_id);
        assert_eq!(r.members.len(), 1, "the leader gets every member's metadata");
    }

    #[test]
    fn completing_to_stable_on_the_leaders_sync_and_followers_get_their_assignment() {
        let mut g = Group::new();
        let mut a = join(&mut g, "");
        let a = answered(&mut a).member_id;
        let _b = join(&mut g, "");
        let mut a_again = join(&mut g, &a);
        let r = answered(&mut a_again);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let b = r.members.iter().map(|m| m.0.clone()).find(|m| *m != a).unwrap();
        // The follower syncs first and waits for the leader.
        let SyncStep::Wait(mut b_sync) = sync(&mut g, &b, r.generation_id, &[]) else { panic!("follower must wait") };
        assert!(matches!(
            sync(&mut g, &a, r.generation_id, &[(&a, b"for-a"), (&b, b"for-b")]),
            SyncStep::Done(s) if s.assignment == Bytes::from_static(b"for-a")
        ));
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(answered(&mut b_sync).assignment, Bytes::from_static(b"for-b"));
    }

    #[test]
    fn stable_to_preparing_when_a_member_joins_and_back_when_everyone_rejoined() {
        let (mut g, ids) = stable(1);
        let gen = g.generation();
        let mut newcomer = join(&mut g, "");
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat(gen, MemberRef { member_id: &ids[0], instance_id: None }), REBALANCE_IN_PROGRESS);
        assert!(newcomer.try_recv().is_err(), "the join phase waits for the existing member");
        let mut old = join(&mut g, &ids[0]);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert_eq!(answered(&mut old).generation_id, gen + 1);
        assert_eq!(answered(&mut newcomer).generation_id, gen + 1);
    }

    #[test]
    fn stable_to_preparing_when_a_member_leaves_and_to_completing_when_the_rest_rejoin() {
        let (mut g, ids) = stable(2);
        assert_eq!(g.leave(&[(ids[1].clone(), None)], &NO_DELAY), vec![NONE]);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        let mut rejoin = join(&mut g, &ids[0]);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert_eq!(answered(&mut rejoin).members.len(), 1);
    }

    #[test]
    fn stable_to_preparing_when_a_session_expires() {
        let (mut g, _) = stable(2);
        // Both silent past their session: both go, the rebalance ends with nobody: Empty.
        g.expire(Instant::now() + Duration::from_secs(11), &NO_DELAY);
        assert_eq!(g.state(), GroupState::Empty);
        assert!(!g.has_members());
        // One heartbeating member keeps its place; the silent one is removed and the group
        // rebalances.
        let (mut g, ids2) = stable(2);
        let later = Instant::now() + Duration::from_secs(11);
        g.members.get_mut(&ids2[0]).unwrap().last_heard = later;
        g.expire(later, &NO_DELAY);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(g.describe().members.len(), 1);
    }

    #[test]
    fn completing_to_preparing_when_a_member_leaves_before_the_assignment() {
        let mut g = Group::new();
        let mut a = join(&mut g, "");
        let a = answered(&mut a).member_id;
        let _b = join(&mut g, "");
        let mut a_again = join(&mut g, &a);
        let r = answered(&mut a_again);
        let b = r.members.iter().map(|m| m.0.clone()).find(|m| *m != a).unwrap();
        let SyncStep::Wait(mut b_sync) = sync(&mut g, &b, r.generation_id, &[]) else { panic!("follower must wait") };
        assert_eq!(g.leave(&[(a.clone(), None)], &NO_DELAY), vec![NONE]);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(answered(&mut b_sync).error_code, REBALANCE_IN_PROGRESS, "the waiting member must rejoin");
    }

    #[test]
    fn preparing_to_empty_when_no_member_rejoins_by_the_deadline() {
        let (mut g, ids) = stable(1);
        let _newcomer = join(&mut g, "");
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        // The newcomer is waiting in its join (kept), the old member never rejoins: at the
        // rebalance deadline the old member is removed.
        g.expire(Instant::now() + Duration::from_secs(61), &NO_DELAY);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert!(!g.describe().members.iter().any(|m| m.0 == ids[0]));
        // Everyone leaves: the next join phase ends with no members.
        let all: Vec<(String, Option<String>)> = g.describe().members.iter().map(|m| (m.0.clone(), None)).collect();
        g.leave(&all, &NO_DELAY);
        g.expire(Instant::now() + Duration::from_secs(130), &NO_DELAY);
        assert_eq!(g.state(), GroupState::Empty);
    }

    #[test]
    fn a_stored_generation_resumes_stable_and_is_stored_once() {
        let (mut g, ids) = stable(2);
        let stored = g.take_unstored().expect("a new Stable generation is stored");
        assert!(g.take_unstored().is_none(), "once per generation");
        let resumed = Group::from_stored(stored.clone());
        assert_eq!(resumed.state(), GroupState::Stable);
        assert_eq!(resumed.generation(), g.generation());
        assert_eq!(resumed.describe().members.iter().map(|m| m.0.clone()).collect::<Vec<_>>(), {
            let mut s = ids.clone();
            s.sort();
            s
        });
        let empty = Group::from_stored(StoredGroup { members: vec![], ..stored });
        assert_eq!(empty.state(), GroupState::Empty);
    }
}
