//! The broker's handle on the controller quorum: finds the active controller and follows
//! NOT_CONTROLLER redirects, trying each voter in turn when one is unreachable, until a
//! deadline.

use std::time::Duration;

use strom_protocol::proto::controller::controller_client::ControllerClient as GrpcClient;
use tonic::transport::Channel;

/// NOT_CONTROLLER.
const NOT_CONTROLLER: i32 = 41;

/// Why a call to the quorum failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no active controller answered within {0:?} (last error: {1})")]
    Timeout(Duration, String),
    #[error("bad controller address {0}: {1}")]
    BadAddress(String, String),
}

/// Responses that say which controller is active.
pub trait Redirect {
    fn error_code(&self) -> i32;
    fn active_controller_id(&self) -> i32;
}

macro_rules! redirect {
    ($($t:ty),*) => {$(
        impl Redirect for $t {
            fn error_code(&self) -> i32 { self.error_code }
            fn active_controller_id(&self) -> i32 { self.active_controller_id }
        }
    )*};
}
use strom_protocol::proto::controller as pb;
redirect!(
    pb::RegisterBrokerResponse,
    pb::BrokerHeartbeatResponse,
    pb::FetchMetadataResponse,
    pb::ForwardedKafkaResponse,
    pb::AlterPartitionResponse,
    pb::AllocateProducerIdsResponse
);

/// A client of the controller quorum; clone it freely.
#[derive(Clone)]
pub struct ControllerClient {
    voters: Vec<(i32, GrpcClient<Channel>)>,
    active: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ControllerClient {
    /// `voters`: (node id, host:port) of each controller; `security`: how the controller
    /// listener is reached (TLS, SASL: [`crate::transport`]).
    pub fn new(voters: &[(i32, String)], security: &crate::transport::ControllerSecurity) -> Result<Self, ClientError> {
        let voters = voters
            .iter()
            .map(|(id, addr)| {
                let channel = crate::transport::lazy_channel(addr, security, |e| e)
                    .map_err(|e| ClientError::BadAddress(addr.clone(), e.to_string()))?;
                Ok((*id, GrpcClient::new(channel)))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(ControllerClient { voters, active: Default::default() })
    }

    /// Calls the active controller with `f`, following redirects and retrying other voters
    /// until `deadline` passes. `per_call` bounds each attempt.
    pub async fn call<R, F, Fut>(&self, deadline: Duration, per_call: Duration, f: F) -> Result<R, ClientError>
    where
        R: Redirect,
        F: Fn(GrpcClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        use std::sync::atomic::Ordering;
        let until = tokio::time::Instant::now() + deadline;
        let mut last_error;
        let mut backoff = Duration::from_millis(20);
        loop {
            let i = self.active.load(Ordering::Relaxed) % self.voters.len().max(1);
            let Some((_, client)) = self.voters.get(i) else {
                return Err(ClientError::Timeout(deadline, "no voters configured".into()));
            };
            match tokio::time::timeout(per_call, f(client.clone())).await {
                Ok(Ok(resp)) => {
                    let r = resp.into_inner();
                    if r.error_code() != NOT_CONTROLLER {
                        return Ok(r);
                    }
                    last_error = format!("NOT_CONTROLLER (active: {})", r.active_controller_id());
                    match self.voters.iter().position(|(id, _)| *id == r.active_controller_id()) {
                        Some(j) if j != i => {
                            self.active.store(j, Ordering::Relaxed);
                            continue;
                        }
                        _ => self.active.store(i + 1, Ordering::Relaxed),
                    }
                }
                Ok(Err(status)) => {
                    last_error = status.to_string();
                    self.active.store(i + 1, Ordering::Relaxed);
                }
                Err(_) => {
                    last_error = format!("no answer within {per_call:?}");
                    self.active.store(i + 1, Ordering::Relaxed);
                }
            }
            if tokio::time::Instant::now() + backoff > until {
                return Err(ClientError::Timeout(deadline, last_error));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
    }
}
