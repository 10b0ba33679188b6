//! The cluster id as the Raft transport checks it: which id this controller knows, and the
//! rule that controllers of different clusters never talk Raft. The id's form and how it is
//! chosen are in [`strom_metadata::cluster_id`].

/// The gRPC metadata key under which a controller sends its cluster id on every Raft RPC.
pub const RAFT_HEADER: &str = "strom-cluster-id";

/// The cluster id a controller knows: the one in its `meta.properties`, else the one its
/// metadata log names (None on a new node of a new cluster). Both sides of the Raft
/// transport read it.
///
/// **Raft rule (Kafka's INCONSISTENT_CLUSTER_ID):** every Raft request carries the sender's
/// id when it knows one; a controller that knows another id refuses the request. So a
/// controller holding another cluster's metadata can neither win votes in this quorum (and
/// depose its leader by a higher term) nor have its own log overwritten by this leader.
#[derive(Clone)]
pub struct ClusterIdentity {
    configured: Option<String>,
    metadata: std::sync::Arc<crate::raft::state_machine::MetadataState>,
}

impl ClusterIdentity {
    pub fn new(
        configured: Option<String>,
        metadata: std::sync::Arc<crate::raft::state_machine::MetadataState>,
    ) -> Self {
        ClusterIdentity { configured, metadata }
    }

    pub fn current(&self) -> Option<String> {
        self.configured.clone().or_else(|| self.metadata.image().cluster_id.clone())
    }

    /// Ok when a peer naming `theirs` may talk Raft with this controller.
    pub fn check_peer(&self, theirs: Option<&str>) -> Result<(), String> {
        match (self.current(), theirs) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(format!(
                "INCONSISTENT_CLUSTER_ID: a controller of cluster {theirs} called this controller of cluster {ours}"
            )),
            _ => Ok(()),
        }
    }
}
