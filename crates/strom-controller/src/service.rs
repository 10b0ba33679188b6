//! The `Controller` gRPC service (`proto/strom/controller.proto`) brokers call: registration,
//! heartbeats, the metadata long-poll, forwarded admin requests, ISR changes and producer-id
//! blocks. Errors travel as Kafka error codes in the response, with the active controller's
//! id for NOT_CONTROLLER, so the broker-side [`strom_metadata::client::ControllerClient`] can redirect.

use std::sync::Arc;
use std::time::Duration;

use strom_protocol::proto::controller::controller_server;
use strom_protocol::proto::controller::*;
use tonic::{Request, Response, Status};

use crate::admin;
use crate::controller::{AlterPartition, Controller, ControllerError};
use crate::raft::state_machine::MetadataDelta;
use strom_metadata::records::Endpoint as RecordEndpoint;

/// Most batches returned by one `FetchMetadata`.
const FETCH_BATCHES_MAX: usize = 1000;
/// Longest long-poll a broker may ask for.
const FETCH_WAIT_MAX_MS: u32 = 5_000;

pub struct ControllerService {
    controller: Arc<Controller>,
}

impl ControllerService {
    pub fn new(controller: Arc<Controller>) -> Self {
        ControllerService { controller }
    }

    fn active_id(&self) -> i32 {
        self.controller.active_controller().unwrap_or(-1)
    }

    /// (error code, message, active controller id) for an error.
    fn error(&self, e: &ControllerError) -> (i32, String, i32) {
        let active = match e {
            ControllerError::NotController(id) => id.unwrap_or(-1),
            _ => self.active_id(),
        };
        (e.kafka_code() as i32, e.to_string(), active)
    }
}

#[tonic::async_trait]
impl controller_server::Controller for ControllerService {
    async fn register_broker(
        &self,
        req: Request<RegisterBrokerRequest>,
    ) -> Result<Response<RegisterBrokerResponse>, Status> {
        let r = req.into_inner();
        let listeners = r
            .listeners
            .into_iter()
            .map(|l| RecordEndpoint {
                listener: l.listener,
                host: l.host,
                port: l.port as u16,
                security_protocol: l.security_protocol,
            })
            .collect();
        let incarnation = String::from_utf8_lossy(&r.incarnation_id).to_string();
        Ok(Response::new(
            match self.controller.register_broker(r.broker_id, incarnation, listeners, r.rack, r.cluster_id).await {
                Ok(epoch) => RegisterBrokerResponse {
                    broker_epoch: epoch,
                    active_controller_id: self.active_id(),
                    ..Default::default()
                },
                Err(e) => {
                    let (error_code, error_message, active_controller_id) = self.error(&e);
                    RegisterBrokerResponse { error_code, error_message, active_controller_id, broker_epoch: -1 }
                }
            },
        ))
    }

    async fn broker_heartbeat(
        &self,
        req: Request<BrokerHeartbeatRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        let r = req.into_inner();
        let reply =
            self.controller.heartbeat(r.broker_id, r.broker_epoch, r.current_metadata_offset, r.want_shutdown).await;
        Ok(Response::new(match reply {
            Ok(h) => BrokerHeartbeatResponse {
                active_controller_id: self.active_id(),
                is_caught_up: h.is_caught_up,
                is_fenced: h.is_fenced,
                should_shut_down: h.should_shut_down,
                ..Default::default()
            },
            Err(e) => {
                let (error_code, error_message, active_controller_id) = self.error(&e);
                BrokerHeartbeatResponse {
                    error_code,
                    error_message,
                    active_controller_id,
                    is_fenced: true,
                    ..Default::default()
                }
            }
        }))
    }

    async fn fetch_metadata(
        &self,
        req: Request<FetchMetadataRequest>,
    ) -> Result<Response<FetchMetadataResponse>, Status> {
        let r = req.into_inner();
        // Dropped before it answers: the broker's connection went away mid-wait.
        let mut cut_off = CutOff { controller: &self.controller, broker_id: r.broker_id, armed: true };
        let answer = self.fetch_metadata_waiting(r).await;
        cut_off.armed = false;
        answer
    }

    async fn forward(&self, req: Request<ForwardedKafkaRequest>) -> Result<Response<ForwardedKafkaResponse>, Status> {
        let r = req.into_inner();
        if !self.controller.is_active() {
            let (error_code, _, active_controller_id) =
                self.error(&ControllerError::NotController(self.controller.active_controller()));
            return Ok(Response::new(ForwardedKafkaResponse {
                error_code,
                active_controller_id,
                ..Default::default()
            }));
        }
        let (body, offset) = admin::handle(&self.controller, r.api_key as i16, r.api_version as i16, r.body.into())
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(ForwardedKafkaResponse {
            active_controller_id: self.active_id(),
            body: body.to_vec(),
            metadata_offset: offset,
            ..Default::default()
        }))
    }

    async fn alter_partition(
        &self,
        req: Request<AlterPartitionRequest>,
    ) -> Result<Response<AlterPartitionResponse>, Status> {
        let r = req.into_inner();
        let topic_id = uuid::Uuid::parse_str(&r.topic_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reply = self
            .controller
            .alter_partition(AlterPartition {
                broker_id: r.broker_id,
                broker_epoch: r.broker_epoch,
                topic_id,
                partition: r.partition,
                leader_epoch: r.leader_epoch,
                partition_epoch: r.partition_epoch,
                new_isr: r.new_isr,
            })
            .await;
        Ok(Response::new(match reply {
            Ok(p) => AlterPartitionResponse {
                active_controller_id: self.active_id(),
                leader: p.partition.leader,
                leader_epoch: p.partition.leader_epoch,
                partition_epoch: p.partition.partition_epoch,
                isr: p.partition.isr,
                metadata_offset: p.offset,
                ..Default::default()
            },
            Err(e) => {
                let (error_code, _, active_controller_id) = self.error(&e);
                let refused = AlterPartitionResponse { error_code, active_controller_id, ..Default::default() };
                // Decided on an up-to-date image (refusals on the partition's epochs or ISR):
                // say what the partition is now.
                let decided = matches!(e, ControllerError::StaleEpoch | ControllerError::InvalidIsr(_));
                match self.controller.partition_state(&topic_id, r.partition).filter(|_| decided) {
                    Some(p) => AlterPartitionResponse {
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        isr: p.isr,
                        has_partition: true,
                        ..refused
                    },
                    None => refused,
                }
            }
        }))
    }

    async fn allocate_producer_ids(
        &self,
        req: Request<AllocateProducerIdsRequest>,
    ) -> Result<Response<AllocateProducerIdsResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(match self.controller.allocate_producer_ids(r.broker_id, r.broker_epoch).await {
            Ok((first, count)) => AllocateProducerIdsResponse {
                active_controller_id: self.active_id(),
                first_producer_id: first,
                count,
                ..Default::default()
            },
            Err(e) => {
                let (error_code, _, active_controller_id) = self.error(&e);
                AllocateProducerIdsResponse { error_code, active_controller_id, ..Default::default() }
            }
        }))
    }
}

/// Marks a broker suspect when its metadata long-poll is dropped before answering.
struct CutOff<'a> {
    controller: &'a Controller,
    broker_id: i32,
    armed: bool,
}

impl Drop for CutOff<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.controller.suspect(self.broker_id);
        }
    }
}

impl ControllerService {
    /// FetchMetadata proper: committed records after the broker's offset (or a snapshot),
    /// waiting up to `max_wait_ms` for some.
    async fn fetch_metadata_waiting(&self, r: FetchMetadataRequest) -> Result<Response<FetchMetadataResponse>, Status> {
        if !self.controller.is_active() {
            let (error_code, error_message, active_controller_id) =
                self.error(&ControllerError::NotController(self.controller.active_controller()));
            return Ok(Response::new(FetchMetadataResponse {
                error_code,
                error_message,
                active_controller_id,
                ..Default::default()
            }));
        }
        let metadata = &self.controller.metadata;
        let mut applied = metadata.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(r.max_wait_ms.min(FETCH_WAIT_MAX_MS) as u64);
        loop {
            match metadata.delta_after(r.after_offset, FETCH_BATCHES_MAX) {
                MetadataDelta::Image(image) => {
                    return Ok(Response::new(FetchMetadataResponse {
                        active_controller_id: self.active_id(),
                        snapshot: Some(serde_json::to_vec(&*image).map_err(|e| Status::internal(e.to_string()))?),
                        snapshot_offset: image.offset,
                        ..Default::default()
                    }));
                }
                MetadataDelta::Batches(batches) if !batches.is_empty() => {
                    return Ok(Response::new(FetchMetadataResponse {
                        active_controller_id: self.active_id(),
                        records: batches
                            .into_iter()
                            .map(|(offset, data)| MetadataRecordEnvelope { offset, data: data.to_vec() })
                            .collect(),
                        ..Default::default()
                    }));
                }
                MetadataDelta::Batches(_) => {}
            }
            // Nothing new: wait for the next applied batch, or the deadline.
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok(Response::new(FetchMetadataResponse { active_controller_id: self.active_id(), ..Default::default() }))
    }
}
