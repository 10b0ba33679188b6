//! Broker liveness (the election rule of DESIGN.md §3): a broker that has not heartbeaten for
//! `broker.session.timeout.ms` is fenced; fencing removes it from every ISR it is in (unless it
//! is the last member) and moves each leadership it held to the first live ISR member in
//! replica order, bumping the leader epoch; with no live ISR member the partition has no
//! leader (-1), unless the topic allows unclean election.
//!
//! A broker *suspected* dead (its metadata long-poll connection dropped, or it was on the node
//! of the active controller this one replaced) is evacuated at once, before its session ends:
//! its leaderships move to another ISR member and it leaves every ISR, but only where an ISR
//! member remains that is unfenced, unsuspected and in session; it stays registered and
//! unfenced. Clients and followers move to the new leaders while the suspect still appears in
//! metadata (librdkafka reverts a partition that is migrating off a broker at the moment that
//! broker vanishes from metadata, and loses a second re-querying). A suspect that heartbeats
//! stays unfenced and rejoins the ISRs as a follower catching up, as after any ISR shrink; one
//! that stays silent is fenced when its shortened session ends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Controller, ControllerError};
use strom_metadata::image::MetadataImage;
use strom_metadata::records::{Endpoint, MetadataRecord};

/// How long a broker whose connection was cut gets to heartbeat before it is fenced.
pub const SUSPECT_GRACE: Duration = Duration::from_millis(1000);

/// What a heartbeat tells the broker.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatReply {
    pub is_caught_up: bool,
    pub is_fenced: bool,
    pub should_shut_down: bool,
}

/// The active controller's view of broker liveness: the last heartbeat of each broker and the
/// brokers suspected dead since theirs. Kept in memory by the active controller only; a newly
/// active controller starts every session afresh.
#[derive(Default)]
pub(super) struct Sessions {
    last_heartbeat: Mutex<HashMap<i32, Instant>>,
    suspects: Mutex<HashSet<i32>>,
    /// Wakes the liveness loop when a broker becomes a suspect.
    suspicion: tokio::sync::Notify,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    /// A heartbeat (or registration) from `broker_id`: its session restarts, it is no suspect.
    fn touch(&self, broker_id: i32) {
        locked(&self.last_heartbeat).insert(broker_id, Instant::now());
        locked(&self.suspects).remove(&broker_id);
    }

    fn is_suspect(&self, broker_id: i32) -> bool {
        locked(&self.suspects).contains(&broker_id)
    }

    fn suspects(&self) -> Vec<i32> {
        locked(&self.suspects).iter().copied().collect()
    }

    /// Makes `broker_id`'s session end no later than if its last heartbeat had been at
    /// `shortened`, and suspects it. `None` if it has no session (nothing to suspect),
    /// `Some(true)` for a new suspicion (which wakes the liveness loop), `Some(false)` if it
    /// was a suspect already.
    fn suspect(&self, broker_id: i32, shortened: Instant) -> Option<bool> {
        {
            let mut sessions = locked(&self.last_heartbeat);
            let last = sessions.get_mut(&broker_id)?;
            if *last > shortened {
                *last = shortened;
            }
        }
        let new = locked(&self.suspects).insert(broker_id);
        if new {
            self.suspicion.notify_one();
        }
        Some(new)
    }

    /// True when `id` is in session (heard from within `timeout`) and not a suspect.
    fn in_session(&self, timeout: Duration) -> impl Fn(i32) -> bool {
        let sessions = locked(&self.last_heartbeat).clone();
        let suspects = locked(&self.suspects).clone();
        move |id| !suspects.contains(&id) && sessions.get(&id).is_some_and(|t| t.elapsed() <= timeout)
    }

    /// Every broker in `ids` gets a whole session from now; nobody is a suspect.
    fn restart_all(&self, ids: impl Iterator<Item = i32>) {
        let now = Instant::now();
        let mut s = locked(&self.last_heartbeat);
        for id in ids {
            s.insert(id, now);
        }
        drop(s);
        locked(&self.suspects).clear();
    }

    /// The brokers among `live` silent for longer than `timeout`, longest silent first. A
    /// broker with no session yet (registered after this controller became active) gets one
    /// now, never an instant fencing.
    fn expired(&self, live: impl Iterator<Item = i32>, timeout: Duration) -> Vec<i32> {
        let mut s = locked(&self.last_heartbeat);
        let mut expired: Vec<(Instant, i32)> = live
            .map(|id| (*s.entry(id).or_insert_with(Instant::now), id))
            .filter(|(last, _)| last.elapsed() > timeout)
            .collect();
        // The longest silent first: of two expired ISR members, the one more likely dead
        // leaves the ISR first, so the last member left is the likelier live one.
        expired.sort();
        expired.into_iter().map(|(_, id)| id).collect()
    }

    /// True unless a heartbeat from `broker_id` came within `timeout`.
    fn is_expired(&self, broker_id: i32, timeout: Duration) -> bool {
        locked(&self.last_heartbeat).get(&broker_id).is_none_or(|t| t.elapsed() > timeout)
    }
}

impl Controller {
    /// Registers a broker (a new incarnation gets a new epoch); it starts fenced.
    ///
    /// **Cluster id rule:** a broker that names a cluster id (its `meta.properties` has one)
    /// other than the cluster's is refused with INCONSISTENT_CLUSTER_ID: it holds another
    /// cluster's data. The first registration of a cluster without an id writes one first
    /// ([`strom_metadata::cluster_id`] says which).
    pub async fn register_broker(
        &self,
        broker_id: i32,
        incarnation_id: String,
        listeners: Vec<Endpoint>,
        rack: Option<String>,
        cluster_id: Option<String>,
    ) -> Result<i64, ControllerError> {
        self.check_active()?;
        let (epoch, _) = self
            .write(|image| {
                let mut records = Vec::new();
                let cluster = match (&image.cluster_id, &self.config.cluster_id) {
                    (Some(c), _) => c.clone(),
                    (None, Some(mine)) => mine.clone(),
                    (None, None) => cluster_id.clone().unwrap_or_else(strom_metadata::cluster_id::generate),
                };
                if let Some(theirs) = cluster_id.as_ref().filter(|t| **t != cluster) {
                    return Err(ControllerError::InconsistentClusterId(format!(
                        "broker {broker_id} belongs to cluster {theirs}, this is cluster {cluster}"
                    )));
                }
                if image.cluster_id.is_none() {
                    tracing::info!(node = self.config.node_id, cluster_id = %cluster, "cluster id chosen");
                    records.push(MetadataRecord::ClusterId { cluster_id: cluster });
                }
                if let Some(b) = image.brokers.get(&broker_id) {
                    if b.incarnation_id == incarnation_id {
                        // A retried registration of the same process: same epoch.
                        return Ok((records, b.epoch));
                    }
                }
                let epoch = image.offset + 1;
                // The old incarnation is gone: its leaderships move now, not after a timeout.
                // Its fencing comes first in the batch: it names the old epoch, which the
                // registration then replaces.
                records.extend(self.fence_changes(image, broker_id));
                records.push(MetadataRecord::RegisterBroker {
                    broker_id,
                    incarnation_id: incarnation_id.clone(),
                    epoch,
                    listeners: listeners.clone(),
                    rack: rack.clone(),
                });
                Ok((records, epoch))
            })
            .await?;
        self.sessions.touch(broker_id);
        tracing::info!(node = self.config.node_id, broker_id, epoch, "broker registered");
        Ok(epoch)
    }

    /// A broker's metadata long-poll was cut off mid-wait (its connection closed): the broker
    /// has most likely died. It is evacuated at once by the liveness loop (module docs), and
    /// its session is shortened to end [`SUSPECT_GRACE`] from now, unless it ends sooner
    /// anyway; a live broker heartbeats well within that and keeps its session (and is no
    /// longer a suspect), so this never fences one that is alive and reachable. This is what
    /// lets a killed broker's partitions move within a fraction of a second instead of a full
    /// session timeout.
    pub fn suspect(&self, broker_id: i32) {
        if !self.is_active() {
            return;
        }
        let timeout = Duration::from_millis(self.config.broker_session_timeout_ms);
        let Some(shortened) = Instant::now().checked_sub(timeout.saturating_sub(SUSPECT_GRACE)) else { return };
        if self.sessions.suspect(broker_id, shortened) == Some(true) {
            tracing::info!(
                node = self.config.node_id,
                broker_id,
                "broker connection lost; evacuating it, fencing it unless it heartbeats"
            );
        }
    }

    /// Moves a suspect's leaderships and ISR places away (module docs), if it is still a
    /// suspect once the write lock is held.
    async fn evacuate(&self, broker_id: i32) {
        let r = self
            .write(|image| {
                let unfenced = |id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
                if !self.sessions.is_suspect(broker_id) || !unfenced(broker_id) {
                    return Ok((vec![], 0));
                }
                let timeout = Duration::from_millis(self.config.broker_session_timeout_ms);
                let in_session = self.sessions.in_session(timeout);
                let usable = |id: i32| id != broker_id && unfenced(id) && in_session(id);
                let records = self.leave_changes(image, broker_id, &usable, true);
                let n = records.len();
                Ok((records, n))
            })
            .await;
        match r {
            Ok((0, _)) => {}
            Ok((changes, offset)) => tracing::info!(
                node = self.config.node_id,
                broker_id,
                changes,
                offset,
                "suspected broker evacuated: its leaderships and ISR places moved"
            ),
            Err(e) => tracing::debug!(broker_id, error = %e, "evacuation deferred"),
        }
    }

    /// A broker's heartbeat: keeps its session, unfences it once it has caught up with the
    /// metadata log, and runs controlled shutdown when it asks.
    pub async fn heartbeat(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        metadata_offset: i64,
        want_shutdown: bool,
    ) -> Result<HeartbeatReply, ControllerError> {
        self.check_active()?;
        let caught_up = metadata_offset >= broker_epoch;
        // Fast path, the common heartbeat: the applied image already knows this registration
        // and nothing needs writing. The session is kept without the write lock and its
        // linearizable read (a Raft round trip), which would otherwise queue every admin
        // change behind every broker's heartbeats. An image that is behind can only report
        // the fencing state one heartbeat late; anything that needs a record, or an epoch the
        // image does not know, takes the write path.
        if !want_shutdown {
            let image = self.metadata.image();
            if let Some(b) = image.brokers.get(&broker_id).filter(|b| b.epoch == broker_epoch) {
                if !(b.fenced && caught_up) {
                    self.sessions.touch(broker_id);
                    return Ok(HeartbeatReply {
                        is_caught_up: caught_up,
                        is_fenced: b.fenced,
                        should_shut_down: false,
                    });
                }
            }
        }
        // The epoch is checked on the up-to-date image inside `write`: a newly active
        // controller may not have applied the whole log yet, and must not call a live broker's
        // registration stale because of that.
        let (fenced, _) = self
            .write(|image| {
                let b = match image.brokers.get(&broker_id) {
                    Some(b) if b.epoch == broker_epoch => b,
                    _ => return Err(ControllerError::StaleBrokerEpoch(broker_id)),
                };
                self.sessions.touch(broker_id);
                if want_shutdown {
                    return Ok((if b.fenced { vec![] } else { self.fence_changes(image, broker_id) }, true));
                }
                if b.fenced && caught_up {
                    let mut records = vec![MetadataRecord::UnfenceBroker { broker_id, epoch: broker_epoch }];
                    records.extend(self.unfence_changes(image, broker_id));
                    return Ok((records, false));
                }
                Ok((vec![], b.fenced))
            })
            .await?;
        if want_shutdown {
            tracing::info!(node = self.config.node_id, broker_id, "broker controlled shutdown: leaderships moved");
        }
        Ok(HeartbeatReply { is_caught_up: caught_up, is_fenced: fenced, should_shut_down: want_shutdown })
    }

    /// Records that fence `broker_id` and move its leaderships and ISR memberships away.
    fn fence_changes(&self, image: &MetadataImage, broker_id: i32) -> Vec<MetadataRecord> {
        let Some(b) = image.brokers.get(&broker_id) else { return vec![] };
        let mut out = Vec::new();
        if !b.fenced {
            out.push(MetadataRecord::FenceBroker { broker_id, epoch: b.epoch });
        }
        let live = |id: i32| id != broker_id && image.brokers.get(&id).is_some_and(|b| !b.fenced);
        out.extend(self.leave_changes(image, broker_id, &live, false));
        out
    }

    /// Partition changes that take `broker_id` out of every ISR and leadership, electing the
    /// first ISR member in replica order for which `usable` holds.
    ///
    /// Fencing (`evacuating == false`): the last ISR member stays in the ISR (it holds every
    /// committed record) and a partition with no usable ISR member is left leaderless, or
    /// elected uncleanly where the topic allows it.
    /// Evacuating a suspect: a partition is changed only if a usable member remains in its
    /// ISR; otherwise it is left alone for the fence to decide.
    fn leave_changes(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        usable: &dyn Fn(i32) -> bool,
        evacuating: bool,
    ) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        for t in image.topics.values() {
            let unclean = image
                .topic_configs
                .get(&t.name)
                .and_then(|c| c.get("unclean.leader.election.enable"))
                .map_or(self.config.unclean_leader_election_enable, |v| v == "true");
            for (p, part) in &t.partitions {
                if !part.isr.contains(&broker_id) && part.leader != broker_id {
                    continue;
                }
                let mut isr: Vec<i32> = part.isr.iter().copied().filter(|r| *r != broker_id).collect();
                if evacuating && !isr.iter().any(|r| usable(*r)) {
                    continue;
                }
                let mut leader = part.leader;
                if leader == broker_id || leader == -1 {
                    leader = part.replicas.iter().copied().find(|r| isr.contains(r) && usable(*r)).unwrap_or(-1);
                    if leader == -1 && unclean && !evacuating {
                        if let Some(r) = part.replicas.iter().copied().find(|r| usable(*r)) {
                            tracing::warn!(topic = %t.name, partition = p, new_leader = r, "unclean leader election");
                            leader = r;
                            isr = vec![r];
                        }
                    }
                }
                if isr.is_empty() {
                    // The last ISR member stays in the ISR: it holds every committed record.
                    isr = vec![broker_id];
                }
                debug_assert!(
                    isr.iter().all(|r| part.replicas.contains(r)),
                    "ISR {isr:?} ⊄ replicas {:?}",
                    part.replicas
                );
                let isr_change = (isr != part.isr).then_some(isr);
                let leader_change = (leader != part.leader).then_some(leader);
                if isr_change.is_some() || leader_change.is_some() {
                    out.push(MetadataRecord::PartitionChange {
                        topic_id: t.id,
                        partition: *p,
                        isr: isr_change,
                        leader: leader_change,
                    });
                }
            }
        }
        out
    }

    /// Records that give leaderless partitions back to an unfenced ISR member, and (with
    /// `auto.leader.rebalance.enable`) preferred leadership back to it.
    fn unfence_changes(&self, image: &MetadataImage, broker_id: i32) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        for t in image.topics.values() {
            for (p, part) in &t.partitions {
                if !part.isr.contains(&broker_id) {
                    continue;
                }
                let preferred = part.replicas.first() == Some(&broker_id);
                if part.leader == -1
                    || (preferred && self.config.auto_leader_rebalance_enable && part.leader != broker_id)
                {
                    out.push(MetadataRecord::PartitionChange {
                        topic_id: t.id,
                        partition: *p,
                        isr: None,
                        leader: Some(broker_id),
                    });
                }
            }
        }
        out
    }

    /// Evacuates suspects and fences brokers whose session expired. Runs on every member;
    /// acts only when active. Wakes on a tick, on a new suspect, and at once when this node
    /// becomes the active controller (the Raft metrics change).
    pub(super) async fn liveness_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let timeout = Duration::from_millis(self.config.broker_session_timeout_ms);
        let mut tick =
            tokio::time::interval(Duration::from_millis((self.config.broker_session_timeout_ms / 8).max(50)));
        let mut raft_metrics = self.raft.metrics();
        let mut was_active = false;
        // Suspects already evacuated (once per suspicion).
        let mut evacuated: HashSet<i32> = HashSet::new();
        // The active controller this node last followed: when it becomes active itself, that
        // one has most likely died (a quorum stopped hearing from it).
        let mut last_followed: Option<i32> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.sessions.suspicion.notified() => {}
                changed = raft_metrics.changed() => {
                    if changed.is_err() {
                        return; // Raft has shut down
                    }
                    // Metrics change often; only a change of leadership is news here.
                    if self.is_active() == was_active {
                        continue;
                    }
                }
            }
            let active = self.is_active();
            if !active {
                if let Some(id) = self.active_controller() {
                    last_followed = Some(id);
                }
            }
            if active != was_active {
                let term = self.raft.metrics().borrow().current_term;
                if active {
                    tracing::info!(node = self.config.node_id, term, previous = ?last_followed, "this node is now the active controller");
                } else {
                    tracing::info!(node = self.config.node_id, term, active = ?self.active_controller(), "this node is no longer the active controller");
                }
            }
            if active && !was_active {
                // A new active controller knows no heartbeat yet: every broker gets a whole
                // session to find it. (A shorter grace was tried: a live broker still
                // retrying the dead controller could be fenced before a dead one, leaving the
                // dead one as the last ISR member and the partition offline.)
                self.sessions.restart_all(self.metadata.image().brokers.keys().copied());
                evacuated.clear();
                // The broker on the node of the controller we replaced (same id in combined
                // mode) is suspected like a broker whose connection dropped: it keeps its
                // session only if it heartbeats within SUSPECT_GRACE. A live, reachable one
                // does; a dead one leaves its ISRs a session-length sooner.
                if let Some(previous) = last_followed.filter(|id| *id != self.config.node_id) {
                    self.suspect(previous);
                }
            }
            was_active = active;
            if !active {
                continue;
            }
            let suspects = self.sessions.suspects();
            evacuated.retain(|id| suspects.contains(id));
            for id in suspects {
                if evacuated.insert(id) {
                    self.evacuate(id).await;
                }
            }
            let image = self.metadata.image();
            let expired = self.sessions.expired(image.live_brokers().map(|b| b.id), timeout);
            for broker_id in expired {
                let r = self
                    .write(|image| {
                        // A heartbeat may have come in while this write waited for the lock.
                        let still_expired = self.sessions.is_expired(broker_id, timeout);
                        Ok(if still_expired { (self.fence_changes(image, broker_id), true) } else { (vec![], false) })
                    })
                    .await;
                match r {
                    Ok((false, _)) => {}
                    Ok((true, offset)) => tracing::warn!(
                        node = self.config.node_id,
                        broker_id,
                        offset,
                        session_timeout_ms = self.config.broker_session_timeout_ms,
                        "broker fenced: missed heartbeats"
                    ),
                    Err(e) => tracing::debug!(broker_id, error = %e, "fencing deferred"),
                }
            }
        }
    }
}
