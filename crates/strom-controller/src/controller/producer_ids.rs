//! Producer-id blocks: each broker hands out producer ids from blocks the controller
//! commits to it, so no id is handed out twice, even across failovers.

use super::{Controller, ControllerError};
use strom_metadata::records::MetadataRecord;

impl Controller {
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
