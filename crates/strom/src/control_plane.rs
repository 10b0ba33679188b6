//! The control plane's own runtime.
//!
//! **Rule:** what keeps the node in the cluster runs here, apart from request handling and
//! disk I/O: the controller (its Raft core, elections and heartbeats, its gRPC service and
//! the broker liveness it judges) and the broker's side of liveness (registration,
//! heartbeats, the controller client's connections). The request handlers' runtime may be
//! busy or have a worker stuck on a slow disk; a broker must still heartbeat in time and a
//! controller must still lead or vote, or one slow disk fences a broker or starts an
//! election. Nothing here touches partition data: applying metadata to the replicas (which
//! opens logs) runs on the main runtime.

use tokio::runtime::{Handle, Runtime};

/// Worker threads of the control runtime: its work is small, but two keep a Raft core busy
/// applying a batch from delaying a heartbeat answer.
const CONTROL_WORKER_THREADS: usize = 2;

/// Owns the control runtime; dropping it stops the runtime without waiting for its tasks
/// (the node has stopped them by then).
pub struct ControlPlane {
    runtime: Option<Runtime>,
}

impl ControlPlane {
    pub fn start() -> std::io::Result<ControlPlane> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CONTROL_WORKER_THREADS)
            .thread_name("strom-control")
            .enable_all()
            .build()?;
        Ok(ControlPlane { runtime: Some(runtime) })
    }

    pub fn handle(&self) -> Handle {
        match &self.runtime {
            Some(r) => r.handle().clone(),
            // Only Drop takes the runtime.
            None => Handle::current(),
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}
