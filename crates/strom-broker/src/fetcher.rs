//! The follower fetcher: the follower's side of replication (DESIGN.md §3).
//!
//! For every partition this broker follows, it fetches from the leader with Kafka's own Fetch
//! request carrying our replica id, as Kafka's replicas do. We chose that over a gRPC stream
//! from `proto/` because the leader side is then the ordinary fetch path (long-poll woken by
//! appends, byte limits, epoch checks) and the leader learns the follower's LEO from the fetch
//! offset with no second protocol to keep in step.
//!
//! One fetcher task runs per source broker (the leader), batching all the partitions it leads
//! for us into one request; it never runs on a client request's task, so client requests are
//! never blocked by replication.
//!
//! **Replication rules, follower side:**
//! - Before fetching in a new leader epoch, a follower truncates to the divergence point with
//!   the leader (KIP-101/279): it asks the leader (OffsetForLeaderEpoch) for the end offset of
//!   its own latest epoch and truncates to the smaller of that and its own end offset for the
//!   epoch the leader names. So logs never diverge below the HW. A refused
//!   OffsetForLeaderEpoch (the leader has not applied the new epoch yet) is retried after a
//!   backoff; the partition never fetches before it has truncated in this leader epoch.
//! - It appends only batches that continue its log exactly (offsets come from the leader).
//! - Its HW is the leader's HW from each response, capped at its own LEO.
//! - It follows only the leader the metadata image names, in that leader epoch; a fetch
//!   answered NOT_LEADER_OR_FOLLOWER or FENCED/UNKNOWN_LEADER_EPOCH backs off until the
//!   image moves.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strom_client::Connection;
use strom_metadata::image::MetadataImage;
use strom_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use strom_protocol::kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use strom_protocol::kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::BrokerLifecycle;
use crate::replica::{Partition, ReplicaManager, TopicPartition};
use strom_protocol::values::{now_ms, topic_name};

const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Kafka's replica.fetch.wait.max.ms default.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// Kafka's replica.fetch.max.bytes and replica.fetch.response.max.bytes defaults.
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
const RESPONSE_MAX_BYTES: i32 = 10 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before retrying a partition the leader refused, or a leader we cannot reach.
const BACKOFF: Duration = Duration::from_millis(100);

const OFFSET_OUT_OF_RANGE: i16 = 1;

/// One followed partition.
#[derive(Clone)]
struct Followed {
    part: Arc<Partition>,
    leader_epoch: i32,
    state: FollowState,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FollowState {
    /// Must find the divergence point with the leader before fetching.
    Truncating,
    Fetching,
    /// Refused by the leader; `then` is retried after `until`. **Rule:** a partition that
    /// backed off while truncating truncates again afterwards: it never fetches before it
    /// has found the divergence point (else a stale tail from an older epoch would stay below
    /// the leader's records, and the replicas would differ for good).
    BackingOff {
        until: Instant,
        then: Step,
    },
}

/// What a followed partition does next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Truncate,
    Fetch,
}

impl FollowState {
    /// The partition's step at `now`: none while it backs off, then the step it backed off
    /// from.
    fn step(self, now: Instant) -> Option<Step> {
        match self {
            FollowState::Truncating => Some(Step::Truncate),
            FollowState::Fetching => Some(Step::Fetch),
            FollowState::BackingOff { until, .. } if until > now => None,
            FollowState::BackingOff { then, .. } => Some(then),
        }
    }
}

type FollowedSet = Arc<Mutex<BTreeMap<TopicPartition, Followed>>>;

struct FetcherHandle {
    followed: FollowedSet,
    changed: Arc<Notify>,
    /// Bumped on every change to `followed` (before `changed` is notified).
    generation: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// Every fetcher of this broker, one per leader it follows.
pub struct ReplicaFetchers {
    node_id: i32,
    /// The listener (inter.broker.listener.name) at which leaders are reached.
    listener: String,
    /// How this broker reaches it: TLS and SASL when the listener asks for them.
    security: strom_client::ClientSecurity,
    replicas: Arc<ReplicaManager>,
    lifecycle: Arc<BrokerLifecycle>,
    by_leader: Mutex<HashMap<i32, FetcherHandle>>,
}

impl ReplicaFetchers {
    pub fn new(
        listener: String,
        security: strom_client::ClientSecurity,
        replicas: Arc<ReplicaManager>,
        lifecycle: Arc<BrokerLifecycle>,
    ) -> Arc<Self> {
        Arc::new(ReplicaFetchers {
            node_id: replicas.node_id(),
            listener,
            security,
            replicas,
            lifecycle,
            by_leader: Mutex::new(HashMap::new()),
        })
    }

    /// Follows the metadata image until `shutdown`: each new image re-assigns partitions to
    /// fetchers (the replica manager has applied the image's roles before it is published).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut images = self.lifecycle.subscribe();
        loop {
            self.reconcile(&shutdown);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = images.changed() => if r.is_err() { break },
            }
        }
        for (_, h) in self.by_leader.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            h.stop.cancel();
        }
    }

    fn reconcile(self: &Arc<Self>, shutdown: &CancellationToken) {
        let mut wanted: HashMap<i32, Vec<(Arc<Partition>, i32)>> = HashMap::new();
        for p in self.replicas.all() {
            let role = p.role();
            if role.leader >= 0 && role.leader != self.node_id && role.replicas.contains(&self.node_id) {
                wanted.entry(role.leader).or_default().push((p, role.leader_epoch));
            }
        }
        let mut fetchers = self.by_leader.lock().unwrap_or_else(|p| p.into_inner());
        fetchers.retain(|leader, h| {
            let keep = wanted.contains_key(leader);
            if !keep {
                h.stop.cancel();
            }
            keep
        });
        for (leader, parts) in wanted {
            let h = fetchers.entry(leader).or_insert_with(|| {
                let h = FetcherHandle {
                    followed: Arc::new(Mutex::new(BTreeMap::new())),
                    changed: Arc::new(Notify::new()),
                    generation: Arc::new(AtomicU64::new(0)),
                    stop: shutdown.child_token(),
                };
                let task = Fetcher {
                    node_id: self.node_id,
                    leader,
                    owner: self.clone(),
                    followed: h.followed.clone(),
                    changed: h.changed.clone(),
                    generation: h.generation.clone(),
                    stop: h.stop.clone(),
                };
                tracing::info!(node = self.node_id, leader, "replica fetcher started");
                tokio::spawn(task.run());
                h
            });
            let mut followed = h.followed.lock().unwrap_or_else(|p| p.into_inner());
            let before = followed.len();
            followed.retain(|tp, _| parts.iter().any(|(p, _)| &p.tp == tp));
            let mut changed = followed.len() != before;
            for (part, leader_epoch) in parts {
                let same = followed
                    .get(&part.tp)
                    .is_some_and(|f| f.leader_epoch == leader_epoch && Arc::ptr_eq(&f.part, &part));
                if !same {
                    followed.insert(part.tp.clone(), Followed { part, leader_epoch, state: FollowState::Truncating });
                    changed = true;
                }
            }
            if changed {
                h.generation.fetch_add(1, Ordering::AcqRel);
                h.changed.notify_one();
            }
        }
    }

    fn leader_address(&self, image: &MetadataImage, leader: i32) -> Option<String> {
        let b = image.brokers.get(&leader)?;
        let e = b.endpoint(&self.listener)?;
        Some(format!("{}:{}", e.host, e.port))
    }
}

/// How a fetch round ended.
enum FetchEnd {
    /// The leader answered (or refused); the connection is ready for the next request.
    Answered,
    /// Given up while the leader held the request (stop, or the followed set changed).
    Abandoned,
}

/// The fetcher of one leader's partitions.
struct Fetcher {
    node_id: i32,
    leader: i32,
    owner: Arc<ReplicaFetchers>,
    followed: FollowedSet,
    changed: Arc<Notify>,
    generation: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Fetcher {
    async fn run(self) {
        let mut conn: Option<Connection> = None;
        while !self.stop.is_cancelled() {
            let now = Instant::now();
            let generation = self.generation.load(Ordering::Acquire);
            let parts: Vec<(TopicPartition, Followed)> = {
                let f = self.followed.lock().unwrap_or_else(|p| p.into_inner());
                f.iter().filter(|(_, x)| x.state.step(now).is_some()).map(|(tp, x)| (tp.clone(), x.clone())).collect()
            };
            if parts.is_empty() {
                self.pause(BACKOFF).await;
                continue;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self.connect().await {
                    Some(c) => conn.insert(c),
                    None => {
                        self.pause(BACKOFF).await;
                        continue;
                    }
                },
            };
            let (truncating, fetching): (Vec<_>, Vec<_>) =
                parts.into_iter().partition(|(_, x)| x.state.step(now) == Some(Step::Truncate));
            let result = if !truncating.is_empty() {
                self.truncate(c, &truncating).await
            } else {
                match self.fetch(c, &fetching, generation).await {
                    // A request is left in flight on it: start afresh on a new connection.
                    Ok(FetchEnd::Abandoned) => {
                        conn = None;
                        Ok(())
                    }
                    Ok(FetchEnd::Answered) => Ok(()),
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = result {
                tracing::debug!(node = self.node_id, leader = self.leader, error = %e, "replica fetch failed; reconnecting");
                conn = None;
                self.pause(BACKOFF).await;
            }
        }
        tracing::info!(node = self.node_id, leader = self.leader, "replica fetcher stopped");
    }

    /// Returns once the followed set has changed since `generation` (a notification left
    /// over from a change already taken into account is consumed and ignored).
    async fn followed_set_moved_past(&self, generation: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            notified.await;
        }
    }

    /// Waits `d`, or less if the followed set changes or the fetcher stops.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.changed.notified() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    async fn connect(&self) -> Option<Connection> {
        let image = self.owner.lifecycle.image();
        let Some(addr) = self.owner.leader_address(&image, self.leader) else {
            tracing::debug!(node = self.node_id, leader = self.leader, "leader has no inter-broker endpoint yet");
            return None;
        };
        let client_id = format!("strom-replica-fetcher-{}", self.node_id);
        match Connection::connect_secure(&addr, &client_id, CONNECT_TIMEOUT, &self.owner.security).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(node = self.node_id, leader = self.leader, error = %e, "cannot reach leader");
                None
            }
        }
    }

    fn set_state(&self, tp: &TopicPartition, epoch: i32, state: FollowState) {
        let mut f = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        // Only if the entry is still the one this request was about.
        if let Some(x) = f.get_mut(tp).filter(|x| x.leader_epoch == epoch) {
            x.state = state;
        }
    }

    /// Still following `x` from this leader in its epoch? (The image may have moved on while
    /// a request was in flight.)
    fn still_follows(&self, x: &Followed) -> bool {
        let role = x.part.role();
        role.leader == self.leader && role.leader_epoch == x.leader_epoch
    }

    /// Finds the divergence point with the leader for `parts` and truncates there.
    async fn truncate(
        &self,
        c: &mut Connection,
        parts: &[(TopicPartition, Followed)],
    ) -> Result<(), strom_client::ClientError> {
        let mut req = OffsetForLeaderEpochRequest::default();
        req.replica_id = BrokerId(self.node_id);
        let mut by_topic: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
        for (tp, x) in parts {
            let Some(latest) = x.part.with_log(|l| l.latest_epoch()) else {
                // An empty log (or one with no epochs) has nothing to diverge.
                self.set_state(tp, x.leader_epoch, FollowState::Fetching);
                continue;
            };
            let mut p = OffsetForLeaderPartition::default();
            p.partition = tp.partition;
            p.current_leader_epoch = x.leader_epoch;
            p.leader_epoch = latest;
            by_topic.entry(&tp.topic).or_default().push(p);
        }
        if by_topic.is_empty() {
            return Ok(());
        }
        for (topic, partitions) in by_topic {
            let mut t = OffsetForLeaderTopic::default();
            t.topic = topic_name(topic);
            t.partitions = partitions;
            req.topics.push(t);
        }
        let resp = c.send(OFFSET_FOR_LEADER_EPOCH_VERSION, &req, Duration::ZERO).await?;
        for t in resp.topics {
            for r in t.partitions {
                let tp = TopicPartition { topic: t.topic.0.to_string(), partition: r.partition };
                let Some((_, x)) = parts.iter().find(|(p, _)| *p == tp) else { continue };
                if r.error_code != 0 {
                    tracing::debug!(node = self.node_id, partition = %tp, code = r.error_code, "leader refused OffsetForLeaderEpoch");
                    let until = Instant::now() + BACKOFF;
                    self.set_state(&tp, x.leader_epoch, FollowState::BackingOff { until, then: Step::Truncate });
                    continue;
                }
                if !self.still_follows(x) {
                    continue;
                }
                // A truncation syncs and may rebuild from the log: disk work (disk_io's rule).
                let outcome = self
                    .owner
                    .replicas
                    .disk
                    .run(|| {
                        x.part.with_log(|l| {
                            // Checked again under the log lock (role changes take it): a broker that
                            // became leader meanwhile must not truncate its own log.
                            if !self.still_follows(x) {
                                return Ok::<_, strom_storage::LogError>(None);
                            }
                            let leo = l.log_end_offset();
                            let target = if r.leader_epoch < 0 || r.end_offset < 0 {
                                // The leader knows no epoch at or below ours: keep only what is
                                // known committed.
                                x.part.high_watermark()
                            } else {
                                // Our own end of the epoch the leader named (ours may end earlier).
                                let ours = l.end_offset_for_epoch(r.leader_epoch).map_or(leo, |(_, end)| end);
                                r.end_offset.min(ours)
                            };
                            if target < leo {
                                let truncated = l.truncate_to(target);
                                // In the same critical section, and whether or not the truncation
                                // finished (it may have cut the log before failing): no leader append
                                // in between can be checked against batches that are gone, and no
                                // snapshot past the new end survives.
                                x.part.rebuild_producer_state_from(l);
                                let new_leo = truncated.map_err(|e| {
                                    self.owner.replicas.log_dir_health.check(self.node_id, "truncation", e)
                                })?;
                                Ok(Some((leo, new_leo)))
                            } else {
                                Ok(None)
                            }
                        })
                    })
                    .await;
                match outcome {
                    Ok(Some((old, new))) => {
                        x.part.set_follower_high_watermark(x.part.high_watermark());
                        tracing::info!(
                            node = self.node_id,
                            partition = %tp,
                            leader = self.leader,
                            leader_epoch = x.leader_epoch,
                            from = old,
                            to = new,
                            "follower truncated to the divergence point"
                        );
                        self.set_state(&tp, x.leader_epoch, FollowState::Fetching);
                    }
                    Ok(None) => self.set_state(&tp, x.leader_epoch, FollowState::Fetching),
                    Err(e) => {
                        tracing::error!(node = self.node_id, partition = %tp, error = %e, "follower truncation failed");
                        let until = Instant::now() + BACKOFF * 10;
                        self.set_state(&tp, x.leader_epoch, FollowState::BackingOff { until, then: Step::Truncate });
                    }
                }
            }
        }
        Ok(())
    }

    /// One fetch round for `parts`; appends what came back.
    async fn fetch(
        &self,
        c: &mut Connection,
        parts: &[(TopicPartition, Followed)],
        generation: u64,
    ) -> Result<FetchEnd, strom_client::ClientError> {
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(self.node_id);
        req.max_wait_ms = FETCH_MAX_WAIT.as_millis() as i32;
        req.min_bytes = 1;
        req.max_bytes = RESPONSE_MAX_BYTES;
        req.session_epoch = -1;
        let mut by_topic: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, x) in parts {
            let (leo, start) = x.part.with_log(|l| (l.log_end_offset(), l.log_start_offset()));
            let mut p = FetchPartition::default();
            p.partition = tp.partition;
            p.current_leader_epoch = x.leader_epoch;
            p.fetch_offset = leo;
            p.log_start_offset = start;
            p.partition_max_bytes = PARTITION_MAX_BYTES;
            by_topic.entry(&tp.topic).or_default().push(p);
        }
        for (topic, partitions) in by_topic {
            let mut t = FetchTopic::default();
            t.topic = topic_name(topic);
            t.partitions = partitions;
            req.topics.push(t);
        }
        let resp = tokio::select! {
            _ = self.stop.cancelled() => return Ok(FetchEnd::Abandoned),
            // The followed set changed (a new partition, a new leader epoch): do not sit out
            // the leader's long-poll (up to replica.fetch.wait.max.ms) for partitions this
            // request does not name; an acks=all produce to a new partition would wait for it.
            _ = self.followed_set_moved_past(generation) => return Ok(FetchEnd::Abandoned),
            r = c.send(FETCH_VERSION, &req, FETCH_MAX_WAIT) => r?,
        };
        if resp.error_code != 0 {
            tracing::debug!(node = self.node_id, leader = self.leader, code = resp.error_code, "fetch refused");
            return Ok(FetchEnd::Answered);
        }
        // Appends and truncations: off the async workers when they may wait on the disk
        // (replica::disk_io's rule).
        let fetched: Vec<_> = resp
            .responses
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.0.to_string();
                t.partitions
                    .into_iter()
                    .map(move |pd| (TopicPartition { topic: topic.clone(), partition: pd.partition_index }, pd))
            })
            .filter_map(|(tp, pd)| parts.iter().find(|(p, _)| *p == tp).map(|(_, x)| (tp, x, pd)))
            .collect();
        let now = now_ms();
        let may_block = fetched.iter().any(|(_, x, pd)| {
            let bytes = pd.records.as_ref().map_or(0, |r| r.len()) as u64;
            pd.error_code != 0 || x.part.with_log(|l| l.append_may_block(bytes, now, None))
        });
        self.owner
            .replicas
            .disk
            .run_if(may_block, || {
                for (tp, x, pd) in fetched {
                    self.apply_fetched(&tp, x, pd);
                }
            })
            .await;
        Ok(FetchEnd::Answered)
    }

    fn apply_fetched(
        &self,
        tp: &TopicPartition,
        x: &Followed,
        pd: strom_protocol::kafka_protocol::messages::fetch_response::PartitionData,
    ) {
        match pd.error_code {
            0 => {}
            OFFSET_OUT_OF_RANGE => {
                let leo = x.part.log_end_offset();
                if leo < pd.log_start_offset && self.still_follows(x) {
                    // Everything we have is below the leader's log start: start over there.
                    let restarted = x.part.with_log(|l| {
                        let r = l.truncate_fully_and_start_at(pd.log_start_offset);
                        // The old log is gone, and its snapshots describe it, not the
                        // leader's log from its start: every one goes.
                        x.part.restart_producer_state_from(l);
                        r
                    });
                    match restarted {
                        Ok(_) => {
                            tracing::info!(node = self.node_id, partition = %tp, start = pd.log_start_offset, "follower restarted its log at the leader's log start")
                        }
                        Err(e) => {
                            tracing::error!(node = self.node_id, partition = %tp, error = %e, "follower truncation failed")
                        }
                    }
                    x.part.set_follower_high_watermark(pd.high_watermark);
                } else {
                    self.set_state(tp, x.leader_epoch, FollowState::Truncating);
                }
                return;
            }
            code => {
                tracing::debug!(node = self.node_id, partition = %tp, code, "leader refused the fetch; backing off");
                let until = Instant::now() + BACKOFF;
                self.set_state(tp, x.leader_epoch, FollowState::BackingOff { until, then: Step::Fetch });
                return;
            }
        }
        if let Some(records) = pd.records.filter(|r| !r.is_empty()) {
            // Checked under the log lock: becoming leader records the new epoch under the same
            // lock, so nothing from the old leader lands after it.
            let appended = x.part.append_as_follower(&records, now_ms(), || self.still_follows(x));
            match appended {
                Ok(_) => {}
                Err(strom_storage::LogError::NotContiguous { expected, got }) => {
                    tracing::warn!(node = self.node_id, partition = %tp, expected, got, "fetched batches do not continue the log; truncating");
                    self.set_state(tp, x.leader_epoch, FollowState::Truncating);
                    return;
                }
                Err(e) => {
                    tracing::error!(node = self.node_id, partition = %tp, error = %e, "follower append failed");
                    let until = Instant::now() + BACKOFF * 10;
                    self.set_state(tp, x.leader_epoch, FollowState::BackingOff { until, then: Step::Fetch });
                    return;
                }
            }
        }
        x.part.set_follower_high_watermark(pd.high_watermark);
        let start = x.part.log_start_offset();
        if pd.log_start_offset > start {
            let upto = pd.log_start_offset.min(x.part.log_end_offset());
            if let Err(e) = x.part.with_log(|l| l.delete_records_before(upto)) {
                tracing::warn!(node = self.node_id, partition = %tp, error = %e, "cannot follow the leader's log start");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_that_backs_off_while_truncating_truncates_again_before_fetching() {
        let now = Instant::now();
        let later = now + BACKOFF;
        let refused_while_truncating = FollowState::BackingOff { until: later, then: Step::Truncate };
        assert_eq!(refused_while_truncating.step(now), None, "waits out its backoff");
        assert_eq!(refused_while_truncating.step(later), Some(Step::Truncate));
        let refused_while_fetching = FollowState::BackingOff { until: later, then: Step::Fetch };
        assert_eq!(refused_while_fetching.step(later), Some(Step::Fetch));
        assert_eq!(FollowState::Truncating.step(now), Some(Step::Truncate));
        assert_eq!(FollowState::Fetching.step(now), Some(Step::Fetch));
    }
}
