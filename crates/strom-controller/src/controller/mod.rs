//! The controller: one member of the Raft metadata quorum. When its Raft node is the leader it
//! is the *active* controller: it turns broker and admin requests into metadata records and
//! commits them. Every other member answers NOT_CONTROLLER with the active one's id.
//!
//! **Architecture invariant:** records are computed from the applied image under
//! [`Controller::write_lock`], after `ensure_linearizable`, and committed (or failed) before the
//! lock is released, even when the caller has gone away; so every batch is computed from the
//! image that includes every earlier batch, and two operations never both see "topic does not
//! exist". A refusal computed there is final: no earlier batch can still commit after it.
//!
//!
//! # Layout
//! - this file: [`Controller`], its start (Raft, the gRPC services, the liveness loop) and the
//!   one write path every change takes ([`Controller::write`]).
//! - [`liveness`]: broker registration, heartbeats, sessions, suspects, evacuation and
//!   fencing: the election rule.
//! - [`topics`]: topic creation and deletion, partition counts, configs.
//! - [`isr`]: ISR changes proposed by partition leaders (AlterPartition).
//! - [`producer_ids`]: producer-id blocks handed to brokers.
//! - [`scram`]: SCRAM credentials (AlterUserScramCredentials).
//! - [`acls`]: ACLs (CreateAcls, DeleteAcls).

mod acls;
mod isr;
mod liveness;
mod producer_ids;
pub mod scram;
mod topics;

pub use isr::{AlterPartition, PartitionReply};
pub use liveness::{HeartbeatReply, SUSPECT_GRACE};
pub use topics::{CreatedTopic, NewTopic};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, RaftService};
use crate::raft::state_machine::{MetadataState, StateMachineStore};
use crate::raft::{NodeId, Raft};
use crate::service::ControllerService;
use strom_metadata::image::MetadataImage;
use strom_metadata::records::{MetadataRecord, RecordBatch};

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
    /// The controller listener's TLS when it is `SSL` (served to brokers and peers, and used
    /// to reach peers); `None`: plain TCP.
    pub tls: Option<Arc<strom_security::reload::ListenerTls>>,
    /// The controller listener's SASL when it is `SASL_PLAINTEXT` or `SASL_SSL`: the users
    /// it admits ([`strom_metadata::controller_sasl`]; PLAIN only) and the largest frame
    /// before authentication (`sasl.server.max.receive.size`).
    pub sasl: Option<(strom_security::sasl::SaslConfig, usize)>,
    /// How this controller reaches its Raft peers' controller listeners (TLS, SASL login).
    pub peers: strom_metadata::transport::ControllerSecurity,
    /// The authorizer (`authorizer.class.name`): callers need CLUSTER_ACTION.
    pub authorizer: Option<strom_metadata::acl::AuthorizerSettings>,
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

/// One quorum member.
pub struct Controller {
    pub config: ControllerConfig,
    pub raft: Raft,
    pub metadata: Arc<MetadataState>,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Broker sessions and suspects ([`liveness`]), kept by the active controller only.
    sessions: liveness::Sessions,
    /// Time from a change being asked for to its commit (Kafka's controller event latency).
    pub write_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Connections to the controller listener refused for a failed TLS handshake or SASL login.
    pub failed_authentications: prometheus_client::metrics::counter::Counter,
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
        let raft = Raft::new(
            config.node_id as NodeId,
            Arc::new(raft_config),
            Network::new(identity.clone(), config.peers.clone()),
            log_store,
            sm,
        )
        .await
        .map_err(|e| unavailable(&e))?;

        let controller = Arc::new(Controller {
            config,
            raft: raft.clone(),
            metadata,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            sessions: liveness::Sessions::default(),
            write_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14),
            ),
            failed_authentications: Default::default(),
        });

        let node_id = controller.config.node_id;
        let incoming = crate::listener::incoming(
            node_id,
            listener,
            controller.config.tls.clone(),
            controller.config.sasl.clone(),
            controller.failed_authentications.clone(),
            shutdown.clone(),
        );
        let check = crate::listener::authorize_cluster_action(
            node_id,
            controller.config.authorizer.clone(),
            controller.metadata.clone(),
        );
        let mut server = tonic::transport::Server::builder();
        if let Some(ms) = controller.config.sasl.as_ref().and_then(|(s, _)| s.max_reauth_ms) {
            // `connections.max.reauth.ms` (KIP-368) on the controller listener: a connection
            // ends (gracefully, HTTP/2 GOAWAY) once its login is that old; the node logs in
            // again on a new one, with the credentials configured then.
            server = server.max_connection_age(std::time::Duration::from_millis(ms));
        }
        let server = server
            .add_service(strom_protocol::proto::raft::raft_server::RaftServer::with_interceptor(
                RaftService::new(raft.clone(), identity),
                check.clone(),
            ))
            .add_service(strom_protocol::proto::controller::controller_server::ControllerServer::with_interceptor(
                ControllerService::new(controller.clone()),
                check,
            ))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
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

    /// This member's Raft term (Kafka's `current-epoch` raft metric): it grows with every
    /// election.
    pub fn raft_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The active controller's id, if one is known.
    pub fn active_controller(&self) -> Option<i32> {
        self.raft.metrics().borrow().current_leader.map(|id| id as i32)
    }

    /// Waits until this member's Raft stops on a fatal error (its log or state machine failed
    /// to write, as on a failing disk); returns the error. A node whose quorum member died must
    /// not go on as if it were a voter.
    pub async fn failed(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft core stopped".to_string();
            }
        }
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
        let guard = self.write_lock.clone().lock_owned().await;
        if let Err(e) = self.raft.ensure_linearizable().await {
            return Err(self.not_active(e.to_string()));
        }
        let image = self.metadata.image();
        let (records, value) = compute(&image)?;
        if records.is_empty() {
            return Ok((value, image.offset));
        }
        fail::fail_point!("controller_write", |_| Err(ControllerError::Unavailable(
            "failpoint controller_write".into()
        )));
        // Committed in a task of its own that holds the lock until Raft has decided, or this
        // node is seen to stop leading: a caller that goes away (its client timed out) must
        // not release the lock while the batch may still commit here, or the next batch would
        // be computed from an image without it. Once this node has stopped leading, its next
        // write needs `ensure_linearizable` as leader of a later term, which settles the batch
        // either way (openraft 0.9 answers a deposed leader's pending write only if the entry
        // is applied or truncated: not when a snapshot replaces it, so it is not awaited).
        let raft = self.raft.clone();
        let me = self.config.node_id as NodeId;
        let mut metrics = self.raft.metrics();
        let written = tokio::spawn(async move {
            let write = raft.client_write(RecordBatch::new(records));
            tokio::pin!(write);
            let written = loop {
                tokio::select! {
                    biased;
                    written = &mut write => break Some(written),
                    changed = metrics.changed() => {
                        if changed.is_err() || metrics.borrow().current_leader != Some(me) {
                            break None;
                        }
                    }
                }
            };
            drop(guard);
            written
        })
        .await
        .map_err(|e| ControllerError::Unavailable(format!("metadata write task: {e}")))?;
        let Some(written) = written else {
            return Err(self.not_active("leadership lost before the write was decided".into()));
        };
        match written {
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
}
