//! Raft transport between controllers: openraft's requests and responses, JSON-encoded, in
//! the opaque `RaftPayload` of `proto/strom/raft.proto`, over tonic.
//!
//! The server side answers with the JSON of `Result<Response, RaftError>`, so a remote Raft
//! error reaches the caller as openraft's `RemoteError`; transport failures are
//! `Unreachable` (openraft backs off) rather than `Network`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use strom_protocol::proto::raft::raft_client::RaftClient;
use strom_protocol::proto::raft::raft_server;
use strom_protocol::proto::raft::RaftPayload;
use tonic::transport::Channel;

use super::{NodeId, Raft, TypeConfig};
use crate::cluster_identity::{ClusterIdentity, RAFT_HEADER};

/// Makes clients for peer controllers, sharing one tonic channel (one HTTP/2 connection,
/// reconnected by tonic when it breaks) per peer address. openraft asks for a new client for
/// every leadership check (`ensure_linearizable`, which every controller write does) and every
/// election: without the cache each of those paid a TCP connect and an HTTP/2 handshake per
/// peer.
#[derive(Clone)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    identity: ClusterIdentity,
    /// How peers' controller listeners are reached (TLS, SASL).
    security: strom_metadata::transport::ControllerSecurity,
}

impl Network {
    pub fn new(identity: ClusterIdentity, security: strom_metadata::transport::ControllerSecurity) -> Self {
        Network { channels: Arc::default(), identity, security }
    }
}

/// A connection to one peer (connected lazily, reconnected by tonic).
pub struct PeerClient {
    target: NodeId,
    client: Option<RaftClient<Channel>>,
    identity: ClusterIdentity,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(&node.addr) {
            Some(c) => Some(c.clone()),
            // A connection that went silent (a cut network) is dropped within ~3 s and dialled
            // again, instead of waiting out TCP retransmission backoff.
            None => strom_metadata::transport::lazy_channel(&node.addr, &self.security, |e| {
                e.http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(2))
                    .keep_alive_while_idle(true)
            })
            .map_err(|e| tracing::error!(target, addr = %node.addr, error = %e, "raft: bad peer address"))
            .ok()
            .inspect(|c| {
                channels.insert(node.addr.clone(), c.clone());
            }),
        };
        PeerClient { target, client: channel.map(RaftClient::new), identity: self.identity.clone() }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

fn encode<T: Serialize>(v: &T) -> RaftPayload {
    RaftPayload { data: serde_json::to_vec(v).unwrap_or_default() }
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        which: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&TransportError("bad peer address".into()))));
        };
        let mut request = tonic::Request::new(encode(req));
        request.set_timeout(timeout);
        if let Some(id) = self.identity.current().and_then(|id| id.parse().ok()) {
            request.metadata_mut().insert(RAFT_HEADER, id);
        }
        let reply = match which {
            "append_entries" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let payload = reply.map_err(|s| RPCError::Unreachable(Unreachable::new(&TransportError(s.to_string()))))?;
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&payload.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append_entries", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call("install_snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }
}

/// The gRPC server side: hands each payload to the local Raft node, once the caller's
/// cluster id passes [`ClusterIdentity::check_peer`].
pub struct RaftService {
    raft: Raft,
    identity: ClusterIdentity,
    /// When a refused caller was last logged (refusals repeat every heartbeat).
    last_refusal_logged: Mutex<Option<Instant>>,
}

impl RaftService {
    pub fn new(raft: Raft, identity: ClusterIdentity) -> Self {
        RaftService { raft, identity, last_refusal_logged: Mutex::new(None) }
    }

    fn check_caller<T>(&self, req: &tonic::Request<T>) -> Result<(), tonic::Status> {
        let theirs = req.metadata().get(RAFT_HEADER).and_then(|v| v.to_str().ok());
        self.identity.check_peer(theirs).map_err(|why| {
            let mut last = self.last_refusal_logged.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                *last = Some(Instant::now());
                tracing::error!(peer = ?req.remote_addr(), "raft request refused: {why}");
            }
            tonic::Status::failed_precondition(why)
        })
    }
}

/// At most one log line per this long for a peer of another cluster.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

fn decode<T: DeserializeOwned>(req: tonic::Request<RaftPayload>) -> Result<T, tonic::Status> {
    serde_json::from_slice(&req.into_inner().data)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        self.check_caller(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        Ok(tonic::Response::new(encode(&self.raft.append_entries(rpc).await)))
    }

    async fn vote(&self, req: tonic::Request<RaftPayload>) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        self.check_caller(&req)?;
        let rpc: VoteRequest<NodeId> = decode(req)?;
        Ok(tonic::Response::new(encode(&self.raft.vote(rpc).await)))
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        self.check_caller(&req)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        Ok(tonic::Response::new(encode(&self.raft.install_snapshot(rpc).await)))
    }
}
