//! The controller: one member of the Raft metadata quorum. When its Raft node is the leader it
//! is the *active* controller: it turns broker and admin requests into metadata records and
//! commits them. Every other member answers NOT_CONTROLLER with the active one's id.
//!
//! **Architecture invariant:** records are computed from the applied image under
//! [`Controller::write_lock`], after `ensure_linearizable`, and committed before the lock is
//! released; so every batch is computed from the image that includes every earlier batch, and
//! two operations never both see "topic does not exist".
//!
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::placement;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, RaftService};
use crate::raft::state_machine::{MetadataState, StateMachineStore};
use crate::raft::{NodeId, Raft};
use crate::service::ControllerService;
use strom_metadata::image::{MetadataImage, PartitionImage};
use strom_metadata::records::{ConfigResource, Endpoint, MetadataRecord, RecordBatch};
use strom_metadata::topic_config;

/// How a controller is set up (from the node configuration).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: i32,
    /// The quorum: (node id, host:port of its controller listener).
    pub voters: Vec<(i32, String)>,
    /// Where the Raft log, vote and state machine live.
    pub metadata_dir: PathBuf,
    pub broker_session_timeout_ms: u64,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub unclean_leader_election_enable: bool,
    pub auto_leader_rebalance_enable: bool,
    /// Raft heartbeat; elections start after 3–6 of these without a leader.
    pub raft_heartbeat_ms: u64,
    /// The cluster id in this node's `meta.properties`, if it has one: the id a new cluster
    /// takes when this controller is active at the first registration.
    pub cluster_id: Option<String>,
}

/// Why a controller operation failed; each maps to a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("this node is not the active controller (active: {0:?})")]
    NotController(Option<i32>),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("broker {0} is not registered with this epoch")]
    StaleBrokerEpoch(i32),
    #[error("stale partition epoch or leader epoch")]
    StaleEpoch,
    #[error("ISR change refused: {0}")]
    InvalidIsr(String),
    #[error("metadata quorum unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    InconsistentClusterId(String),
}

impl ControllerError {
    /// Kafka's error code.
    pub fn kafka_code(&self) -> i16 {
        match self {
            ControllerError::NotController(_) => 41,
            ControllerError::TopicExists(_) => 36,
            ControllerError::UnknownTopic(_) => 3,
            ControllerError::InvalidTopic(_) => 17,
            ControllerError::InvalidPartitions(_) => 37,
            ControllerError::InvalidReplicationFactor(_) => 38,
            ControllerError::InvalidConfig(_) => 40,
            ControllerError::InvalidRequest(_) => 42,
            ControllerError::StaleBrokerEpoch(_) => 77,
            ControllerError::StaleEpoch => 89,     // FENCED_LEADER_EPOCH
            ControllerError::InvalidIsr(_) => 102, // INELIGIBLE_REPLICA
            ControllerError::Unavailable(_) => 15, // COORDINATOR_NOT_AVAILABLE-like: retriable
            ControllerError::InconsistentClusterId(_) => 104,
        }
    }
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions`.
    pub num_partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    /// Explicit replica lists per partition (instead of the two counts).
    pub assignments: Vec<Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

/// A created (or validated) topic.
#[derive(Debug, Clone)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// What a heartbeat tells the broker.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatReply {
    pub is_caught_up: bool,
    pub is_fenced: bool,
    pub should_shut_down: bool,
}

/// An ISR change proposed by a partition leader, with the epochs it saw.
#[derive(Debug, Clone)]
pub struct AlterPartition {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// The result of an accepted ISR change.
#[derive(Debug, Clone)]
pub struct PartitionReply {
    pub partition: PartitionImage,
    pub offset: i64,
}

/// How long a broker whose connection was cut gets to heartbeat before it is fenced.
pub const SUSPECT_GRACE: Duration = Duration::from_millis(1000);

/// One quorum member.
pub struct Controller {
    pub config: ControllerConfig,
    pub raft: Raft,
    pub metadata: Arc<MetadataState>,
    write_lock: tokio::sync::Mutex<()>,
    /// Last heartbeat per broker, kept by the active controller only.
    sessions: std::sync::Mutex<HashMap<i32, Instant>>,
    /// Brokers suspected dead since their last heartbeat (see the module docs).
    suspects: std::sync::Mutex<HashSet<i32>>,
    /// Wakes the liveness loop when a broker becomes a suspect.
    suspicion: tokio::sync::Notify,
    /// Time from a change being asked for to its commit (Kafka's controller event latency).
    pub write_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Controller {
    /// Opens the metadata store, starts Raft and the gRPC services on `listener`, and joins
    /// (or forms) the quorum. Returns at once; elections happen in the background.
    pub async fn start(
        config: ControllerConfig,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<Arc<Controller>, ControllerError> {
        let unavailable = |e: &dyn std::fmt::Display| ControllerError::Unavailable(e.to_string());
        let log_store = LogStore::open(&config.metadata_dir.join("raft")).map_err(|e| unavailable(&e))?;
        let (sm, metadata) =
            StateMachineStore::open(&config.metadata_dir.join("state")).map_err(|e| unavailable(&e))?;
        let hb = config.raft_heartbeat_ms;
        let raft_config = openraft::Config {
            cluster_name: "strom".into(),
            heartbeat_interval: hb,
            // openraft adds a leader lease of election_timeout_max before a follower's own
            // timeout: a dead leader is replaced after 700–800 ms (plus a 150 ms tick).
            election_timeout_min: hb * 3,
            election_timeout_max: hb * 4,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(2000),
            max_in_snapshot_log_to_keep: 500,
            ..Default::default()
        }
        .validate()
        .map_err(|e| unavailable(&e))?;
        let identity = crate::cluster_identity::ClusterIdentity::new(config.cluster_id.clone(), metadata.clone());
        let raft =
            Raft::new(config.node_id as NodeId, Arc::new(raft_config), Network::new(identity.clone()), log_store, sm)
                .await
                .map_err(|e| unavailable(&e))?;

        let controller = Arc::new(Controller {
            config,
            raft: raft.clone(),
            metadata,
            write_lock: tokio::sync::Mutex::new(()),
            sessions: std::sync::Mutex::new(HashMap::new()),
            suspects: std::sync::Mutex::new(HashSet::new()),
            suspicion: tokio::sync::Notify::new(),
            write_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14),
            ),
        });

        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .add_service(strom_protocol::proto::raft::raft_server::RaftServer::new(RaftService::new(
                raft.clone(),
                identity,
            )))
            .add_service(strom_protocol::proto::controller::controller_server::ControllerServer::new(
                ControllerService::new(controller.clone()),
            ))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
        let node_id = controller.config.node_id;
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(node = node_id, error = %e, "controller gRPC server failed");
            }
        });

        // Every voter proposes the same initial membership; openraft accepts this from any
        // number of them (the same config), and ignores it once the log is not empty.
        let members: BTreeMap<NodeId, BasicNode> = controller
            .config
            .voters
            .iter()
            .map(|(id, addr)| (*id as NodeId, BasicNode { addr: addr.clone() }))
            .collect();
        if !raft.is_initialized().await.map_err(|e| unavailable(&e))? {
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "raft initialize (another voter may have formed the quorum)");
            }
        }
        tokio::spawn(controller.clone().liveness_loop(shutdown.clone()));
        tokio::spawn({
            let raft = raft.clone();
            async move {
                shutdown.cancelled().await;
                let _ = raft.shutdown().await;
            }
        });
        Ok(controller)
    }

    /// The active controller's id, if one is known.
    pub fn active_controller(&self) -> Option<i32> {
        self.raft.metrics().borrow().current_leader.map(|id| id as i32)
    }

    /// True when this node is the active controller.
    pub fn is_active(&self) -> bool {
        self.active_controller() == Some(self.config.node_id)
    }

    /// Runs `compute` on the up-to-date image and commits the records it returns, as one
    /// batch. Returns the value and the metadata offset of the batch (-1 if no records).
    async fn write<T>(
        &self,
        compute: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), ControllerError>,
    ) -> Result<(T, i64), ControllerError> {
        let started = Instant::now();
        let _guard = self.write_lock.lock().await;
        if let Err(e) = self.raft.ensure_linearizable().await {
            return Err(self.not_active(e.to_string()));
        }
        let image = self.metadata.image();
        let (records, value) = compute(&image)?;
        if records.is_empty() {
            return Ok((value, image.offset));
        }
        match self.raft.client_write(RecordBatch::new(records)).await {
            Ok(r) => {
                self.write_seconds.observe(started.elapsed().as_secs_f64());
                if !r.data.refused.is_empty() {
                    return Err(ControllerError::InvalidRequest(r.data.refused.join("; ")));
                }
                Ok((value, r.data.offset))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ControllerError::NotController(f.leader_id.map(|i| i as i32)))
            }
            Err(e) => Err(self.not_active(e.to_string())),
        }
    }

    fn not_active(&self, why: String) -> ControllerError {
        match self.active_controller() {
            Some(id) if id != self.config.node_id => ControllerError::NotController(Some(id)),
            Some(_) => ControllerError::Unavailable(why),
            None => ControllerError::NotController(None),
        }
    }

    /// Fails with NOT_CONTROLLER unless this node is active.
    fn check_active(&self) -> Result<(), ControllerError> {
        match self.active_controller() {
            Some(id) if id == self.config.node_id => Ok(()),
            other => Err(ControllerError::NotController(other)),
        }
    }

    // ---- brokers -------------------------------------------------------------------------

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
        self.touch(broker_id);
        tracing::info!(node = self.config.node_id, broker_id, epoch, "broker registered");
        Ok(epoch)
    }

    fn touch(&self, broker_id: i32) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(broker_id, Instant::now());
        self.suspects.lock().unwrap_or_else(|p| p.into_inner()).remove(&broker_id);
    }

    fn is_suspect(&self, broker_id: i32) -> bool {
        self.suspects.lock().unwrap_or_else(|p| p.into_inner()).contains(&broker_id)
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
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let Some(last) = sessions.get_mut(&broker_id) else { return };
            if *last > shortened {
                *last = shortened;
            }
        }
        if self.suspects.lock().unwrap_or_else(|p| p.into_inner()).insert(broker_id) {
            tracing::info!(
                node = self.config.node_id,
                broker_id,
                "broker connection lost; evacuating it, fencing it unless it heartbeats"
            );
            self.suspicion.notify_one();
        }
    }

    /// Moves a suspect's leaderships and ISR places away (module docs), if it is still a
    /// suspect once the write lock is held.
    async fn evacuate(&self, broker_id: i32) {
        let r = self
            .write(|image| {
                let unfenced = |id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
                if !self.is_suspect(broker_id) || !unfenced(broker_id) {
                    return Ok((vec![], 0));
                }
                let timeout = Duration::from_millis(self.config.broker_session_timeout_ms);
                let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let usable = |id: i32| {
                    id != broker_id
                        && unfenced(id)
                        && !suspects.contains(&id)
                        && sessions.get(&id).is_some_and(|t| t.elapsed() <= timeout)
                };
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
                    self.touch(broker_id);
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
                self.touch(broker_id);
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
    async fn liveness_loop(self: Arc<Self>, shutdown: CancellationToken) {
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
                _ = self.suspicion.notified() => {}
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
                let start = Instant::now();
                let image = self.metadata.image();
                let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                for id in image.brokers.keys() {
                    s.insert(*id, start);
                }
                drop(s);
                self.suspects.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
            let suspects: Vec<i32> = self.suspects.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
            evacuated.retain(|id| suspects.contains(id));
            for id in suspects {
                if evacuated.insert(id) {
                    self.evacuate(id).await;
                }
            }
            let image = self.metadata.image();
            let expired: Vec<i32> = {
                let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                // A broker this controller has no session for yet (its registration was
                // applied after the controller became active) gets a whole session too,
                // never an instant fencing.
                let mut expired: Vec<(Instant, i32)> = image
                    .live_brokers()
                    .map(|b| (*s.entry(b.id).or_insert_with(Instant::now), b.id))
                    .filter(|(last, _)| last.elapsed() > timeout)
                    .collect();
                // The longest silent first: of two expired ISR members, the one more likely
                // dead leaves the ISR first, so the last member left is the likelier live one.
                expired.sort();
                expired.into_iter().map(|(_, id)| id).collect()
            };
            for broker_id in expired {
                let r = self
                    .write(|image| {
                        // A heartbeat may have come in while this write waited for the lock.
                        let still_expired = self
                            .sessions
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&broker_id)
                            .is_none_or(|t| t.elapsed() > timeout);
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

    // ---- topics --------------------------------------------------------------------------

    /// Creates topics (or, with `validate_only`, only checks them). One result per topic.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> (Vec<Result<CreatedTopic, ControllerError>>, i64) {
        if let Err(e) = self.check_active() {
            return (topics.iter().map(|_| Err(e.clone())).collect(), -1);
        }
        let r = self
            .write(|image| {
                let mut records = Vec::new();
                let mut results = Vec::new();
                let mut planned = image.clone();
                for t in &topics {
                    // Kafka: a name given twice in one request is refused for every copy.
                    if topics.iter().filter(|o| o.name == t.name).count() > 1 {
                        results.push(Err(ControllerError::InvalidRequest("Duplicate topic name.".into())));
                        continue;
                    }
                    let r = self.plan_topic(&planned, t);
                    if let Ok((recs, _)) = &r {
                        // Later topics of the same request see the earlier ones.
                        planned.apply_batch(planned.offset + 1, recs);
                        if !validate_only {
                            records.extend(recs.iter().cloned());
                        }
                    }
                    results.push(r.map(|(_, c)| c));
                }
                Ok((records, results))
            })
            .await;
        match r {
            Ok((results, offset)) => (results, offset),
            Err(e) => (topics.iter().map(|_| Err(e.clone())).collect(), -1),
        }
    }

    fn plan_topic(
        &self,
        image: &MetadataImage,
        t: &NewTopic,
    ) -> Result<(Vec<MetadataRecord>, CreatedTopic), ControllerError> {
        topic_config::validate_topic_name(&t.name).map_err(ControllerError::InvalidTopic)?;
        if image.topics.contains_key(&t.name) {
            return Err(ControllerError::TopicExists(t.name.clone()));
        }
        let key = topic_config::collision_key(&t.name);
        if let Some(other) = image.topics.keys().find(|n| topic_config::collision_key(n) == key) {
            return Err(ControllerError::InvalidTopic(format!(
                "topic {} collides with existing topic {other} ('.' and '_' are the same in metric names)",
                t.name
            )));
        }
        for (k, v) in &t.configs {
            topic_config::validate(k, v).map_err(ControllerError::InvalidConfig)?;
        }
        let live: Vec<_> = image.live_brokers().collect();
        let assignments = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err(ControllerError::InvalidRequest(
                    "both replica assignments and partition count or replication factor were given".into(),
                ));
            }
            let rf = t.assignments[0].len();
            for a in &t.assignments {
                if a.len() != rf || a.is_empty() {
                    return Err(ControllerError::InvalidReplicationFactor(
                        "every partition needs the same, non-zero number of replicas".into(),
                    ));
                }
                if let Some(b) = a.iter().find(|b| !image.brokers.contains_key(b)) {
                    return Err(ControllerError::InvalidReplicationFactor(format!("unknown broker {b} in assignment")));
                }
            }
            t.assignments.clone()
        } else {
            let n = if t.num_partitions == -1 { self.config.num_partitions } else { t.num_partitions };
            let rf =
                if t.replication_factor == -1 { self.config.default_replication_factor } else { t.replication_factor };
            if n < 1 {
                return Err(ControllerError::InvalidPartitions(format!(
                    "number of partitions must be at least 1, got {n}"
                )));
            }
            let start = image.topics.values().map(|t| t.partitions.len()).sum::<usize>();
            placement::assign(&live, 0, n, rf, start)
                .map_err(|e| ControllerError::InvalidReplicationFactor(e.to_string()))?
        };
        let topic_id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic { name: t.name.clone(), topic_id }];
        for (k, v) in &t.configs {
            records.push(MetadataRecord::Config {
                resource: ConfigResource::Topic(t.name.clone()),
                key: k.clone(),
                value: Some(v.clone()),
            });
        }
        for (p, replicas) in assignments.iter().enumerate() {
            let isr: Vec<i32> =
                replicas.iter().copied().filter(|r| image.brokers.get(r).is_some_and(|b| !b.fenced)).collect();
            let isr = if isr.is_empty() { replicas.clone() } else { isr };
            let leader = if image.brokers.get(&isr[0]).is_some_and(|b| !b.fenced) { isr[0] } else { -1 };
            records.push(MetadataRecord::Partition {
                topic_id,
                partition: p as i32,
                replicas: replicas.clone(),
                isr,
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        let created = CreatedTopic {
            topic_id,
            num_partitions: assignments.len() as i32,
            replication_factor: assignments.first().map_or(0, |a| a.len() as i16),
        };
        Ok((records, created))
    }

    /// Deletes topics by name. One result per topic.
    pub async fn delete_topics(&self, names: Vec<String>) -> (Vec<Result<Uuid, ControllerError>>, i64) {
        if let Err(e) = self.check_active() {
            return (names.iter().map(|_| Err(e.clone())).collect(), -1);
        }
        let r = self
            .write(|image| {
                let mut records = Vec::new();
                let results = names
                    .iter()
                    .map(|n| match image.topics.get(n) {
                        Some(t) => {
                            if !records
                                .iter()
                                .any(|r| matches!(r, MetadataRecord::RemoveTopic { topic_id } if *topic_id == t.id))
                            {
                                records.push(MetadataRecord::RemoveTopic { topic_id: t.id });
                            }
                            Ok(t.id)
                        }
                        None => Err(ControllerError::UnknownTopic(n.clone())),
                    })
                    .collect();
                Ok((records, results))
            })
            .await;
        match r {
            Ok((results, offset)) => (results, offset),
            Err(e) => (names.iter().map(|_| Err(e.clone())).collect(), -1),
        }
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(
        &self,
        topic: String,
        count: i32,
        validate_only: bool,
    ) -> Result<i64, ControllerError> {
        self.check_active()?;
        let ((), offset) = self
            .write(|image| {
                let Some(t) = image.topics.get(&topic) else {
                    return Err(ControllerError::UnknownTopic(topic.clone()));
                };
                let current = t.partitions.len() as i32;
                if count <= current {
                    return Err(ControllerError::InvalidPartitions(format!(
                        "topic {topic} has {current} partitions; the new count must be larger, got {count}"
                    )));
                }
                let rf = t.partitions.values().next().map_or(1, |p| p.replicas.len() as i16);
                let live: Vec<_> = image.live_brokers().collect();
                let assignments = placement::assign(&live, current, count - current, rf, 0)
                    .map_err(|e| ControllerError::InvalidReplicationFactor(e.to_string()))?;
                if validate_only {
                    return Ok((vec![], ()));
                }
                let records = assignments
                    .into_iter()
                    .enumerate()
                    .map(|(i, replicas)| MetadataRecord::Partition {
                        topic_id: t.id,
                        partition: current + i as i32,
                        isr: replicas.clone(),
                        leader: replicas[0],
                        replicas,
                        leader_epoch: 0,
                        partition_epoch: 0,
                    })
                    .collect();
                Ok((records, ()))
            })
            .await?;
        Ok(offset)
    }

    /// Sets (`Some`) or removes (`None`) config keys of a topic or broker. With `replace`,
    /// every key not named is removed (the legacy AlterConfigs semantics).
    pub async fn alter_configs(
        &self,
        resource: ConfigResource,
        changes: Vec<(String, Option<String>)>,
        replace: bool,
        validate_only: bool,
    ) -> Result<i64, ControllerError> {
        self.check_active()?;
        let ((), offset) = self
            .write(|image| {
                let current = match &resource {
                    ConfigResource::Topic(t) => {
                        if !image.topics.contains_key(t) {
                            return Err(ControllerError::UnknownTopic(t.clone()));
                        }
                        image.topic_configs.get(t)
                    }
                    ConfigResource::Broker(b) => image.broker_configs.get(b),
                };
                let mut records = Vec::new();
                for (k, v) in &changes {
                    if let (ConfigResource::Topic(_), Some(v)) = (&resource, v) {
                        topic_config::validate(k, v).map_err(ControllerError::InvalidConfig)?;
                    }
                    records.push(MetadataRecord::Config {
                        resource: resource.clone(),
                        key: k.clone(),
                        value: v.clone(),
                    });
                }
                if replace {
                    for k in current.into_iter().flat_map(|c| c.keys()) {
                        if !changes.iter().any(|(c, _)| c == k) {
                            records.push(MetadataRecord::Config {
                                resource: resource.clone(),
                                key: k.clone(),
                                value: None,
                            });
                        }
                    }
                }
                Ok((if validate_only { vec![] } else { records }, ()))
            })
            .await?;
        Ok(offset)
    }

    /// An ISR change from a partition leader, accepted only with the current epochs; the new
    /// ISR is non-empty, within the replicas, contains the leader, and has no fenced broker.
    pub async fn alter_partition(&self, req: AlterPartition) -> Result<PartitionReply, ControllerError> {
        let AlterPartition { broker_id, broker_epoch, topic_id, partition, leader_epoch, partition_epoch, new_isr } =
            req;
        self.check_active()?;
        let (p, offset) = self
            .write(|image| {
                match image.brokers.get(&broker_id) {
                    Some(b) if b.epoch == broker_epoch => {}
                    _ => return Err(ControllerError::StaleBrokerEpoch(broker_id)),
                }
                let t =
                    image.topic_by_id(&topic_id).ok_or_else(|| ControllerError::UnknownTopic(topic_id.to_string()))?;
                let p = t.partitions.get(&partition).ok_or_else(|| ControllerError::UnknownTopic(t.name.clone()))?;
                if p.leader != broker_id || p.leader_epoch != leader_epoch || p.partition_epoch != partition_epoch {
                    return Err(ControllerError::StaleEpoch);
                }
                if new_isr.is_empty() || !new_isr.contains(&broker_id) {
                    return Err(ControllerError::InvalidIsr("the ISR must contain the leader".into()));
                }
                if let Some(r) = new_isr.iter().find(|r| !p.replicas.contains(r)) {
                    return Err(ControllerError::InvalidIsr(format!("{r} is not a replica")));
                }
                if let Some(r) = new_isr.iter().find(|r| image.brokers.get(r).is_none_or(|b| b.fenced)) {
                    return Err(ControllerError::InvalidIsr(format!("broker {r} is fenced")));
                }
                let mut next = p.clone();
                next.isr = new_isr.clone();
                next.partition_epoch += 1;
                let records = vec![MetadataRecord::PartitionChange {
                    topic_id,
                    partition,
                    isr: Some(new_isr.clone()),
                    leader: None,
                }];
                Ok((records, next))
            })
            .await?;
        tracing::info!(node = self.config.node_id, %topic_id, partition, isr = ?p.isr, partition_epoch = p.partition_epoch, "ISR changed");
        Ok(PartitionReply { partition: p, offset })
    }

    /// Hands out a block of producer ids, never handed out before (the block is committed
    /// before it is returned, so a failover cannot hand it out again).
    pub async fn allocate_producer_ids(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<(i64, i32), ControllerError> {
        const BLOCK: i64 = 1000;
        self.check_active()?;
        let (first, _) = self
            .write(|image| {
                match image.brokers.get(&broker_id) {
                    Some(b) if b.epoch == broker_epoch => {}
                    _ => return Err(ControllerError::StaleBrokerEpoch(broker_id)),
                }
                let first = image.next_producer_id;
                Ok((vec![MetadataRecord::ProducerIds { broker_id, first, count: BLOCK }], first))
            })
            .await?;
        Ok((first, BLOCK as i32))
    }
}
