//! ISR changes proposed by partition leaders (Kafka's AlterPartition).
//!
//! **ISR rule:** a change is accepted only from the partition's current leader, with the
//! broker epoch, leader epoch and partition epoch the controller has now; the new ISR is
//! never empty, holds the leader, lies within the replicas, and holds no fenced broker (one
//! proposed is left out of what is committed). So a deposed leader (or a stale retry) can
//! never shrink or grow an ISR, and an ISR never names a broker that could not take over.
//! A refusal is final for the proposal: it names epochs that moved on, or an ISR without the
//! leader or outside the replicas, which no retry of it can change.

use uuid::Uuid;

use super::{Controller, ControllerError};
use strom_metadata::image::PartitionImage;
use strom_metadata::records::MetadataRecord;

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

impl Controller {
    /// An ISR change from a partition leader, accepted only with the current epochs; the new
    /// ISR is non-empty, within the replicas, contains the leader; fenced brokers are left out.
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
                // A fenced broker the leader would add is left out, and the rest committed, rather
                // than refused: the partition epoch then moves, so no earlier attempt of the same
                // proposal can commit it later (its broker may be unfenced by then), and the
                // leader stops counting it. The leader itself is never fenced here (its broker
                // epoch was just checked against a registered broker; fencing moves leaderships).
                let isr: Vec<i32> = new_isr
                    .iter()
                    .copied()
                    .filter(|r| *r == broker_id || image.brokers.get(r).is_some_and(|b| !b.fenced))
                    .collect();
                if isr.len() < new_isr.len() {
                    tracing::info!(node = self.config.node_id, %topic_id, partition, wanted = ?new_isr, ?isr, "fenced brokers left out of a proposed ISR");
                }
                let mut next = p.clone();
                next.isr = isr.clone();
                next.partition_epoch += 1;
                let records =
                    vec![MetadataRecord::PartitionChange { topic_id, partition, isr: Some(isr), leader: None }];
                Ok((records, next))
            })
            .await?;
        tracing::info!(node = self.config.node_id, %topic_id, partition, isr = ?p.isr, partition_epoch = p.partition_epoch, "ISR changed");
        Ok(PartitionReply { partition: p, offset })
    }

    /// The partition as this controller's image has it now: what a refused AlterPartition
    /// answers with, so the leader learns whether an earlier attempt of its proposal was
    /// committed. Read after the refusal, which was decided on an up-to-date image (see
    /// `write`), so it holds everything committed before the refusal.
    pub fn partition_state(&self, topic_id: &Uuid, partition: i32) -> Option<PartitionImage> {
        self.metadata.image().topic_by_id(topic_id)?.partitions.get(&partition).cloned()
    }
}
