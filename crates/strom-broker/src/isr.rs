//! The ISR manager: the leader's side of ISR changes (DESIGN.md §3).
//!
//! A leader proposes, the controller decides. On a timer (every half `replica.lag.time.max.ms`,
//! as Kafka) it looks for ISR members that have not caught up within the lag limit, and when a
//! follower fetch reports a caught-up follower outside the ISR it looks at once. Either way it
//! sends the ISR it wants with the leader epoch and partition epoch it holds (AlterPartition);
//! the controller refuses a stale proposal, so a deposed leader cannot change an ISR. One
//! proposal per partition is in flight at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_protocol::proto::controller as pb;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::BrokerLifecycle;
use crate::metrics::BrokerMetrics;
use crate::replica::{Partition, ReplicaManager};

/// Wait after a refused proposal before the partition may propose again.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

pub struct IsrManager {
    lifecycle: Arc<BrokerLifecycle>,
    replicas: Arc<ReplicaManager>,
    lag_max: Duration,
    metrics: Arc<BrokerMetrics>,
}

impl IsrManager {
    pub fn new(
        lifecycle: Arc<BrokerLifecycle>,
        replicas: Arc<ReplicaManager>,
        lag_max: Duration,
        metrics: Arc<BrokerMetrics>,
    ) -> Arc<Self> {
        Arc::new(IsrManager { lifecycle, replicas, lag_max, metrics })
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval((self.lag_max / 2).max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.replicas.all(),
                _ = self.replicas.isr_check_wanted.notified() => self.replicas.take_isr_checks(),
            };
            for p in asked {
                self.maybe_propose(p);
            }
        }
    }

    fn maybe_propose(self: &Arc<Self>, p: Arc<Partition>) {
        let image = self.lifecycle.image();
        let eligible = |id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
        let Some(new_isr) = p.desired_isr(self.lag_max, Instant::now(), eligible) else { return };
        if !p.begin_isr_change() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let ok = this.propose(&p, new_isr).await;
            if !ok {
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
            p.end_isr_change();
        });
    }

    /// Sends one AlterPartition; true when the controller committed it.
    async fn propose(&self, p: &Partition, new_isr: Vec<i32>) -> bool {
        let role = p.role();
        let node = self.replicas.node_id();
        let req = pb::AlterPartitionRequest {
            broker_id: node,
            broker_epoch: self.lifecycle.broker_epoch(),
            topic_id: p.topic_id.to_string(),
            partition: p.tp.partition,
            leader_epoch: role.leader_epoch,
            partition_epoch: role.partition_epoch,
            new_isr: new_isr.clone(),
        };
        let r = self
            .lifecycle
            .controller()
            .call(Duration::from_secs(5), Duration::from_secs(3), |mut c| {
                let req = req.clone();
                async move { c.alter_partition(req).await }
            })
            .await;
        match r {
            Ok(r) if r.error_code == 0 => {
                // The controller logs the change itself; this is the leader's view of it.
                tracing::debug!(
                    node,
                    partition = %p.tp,
                    old_isr = ?role.isr,
                    isr = ?r.isr,
                    leader_epoch = r.leader_epoch,
                    partition_epoch = r.partition_epoch,
                    "ISR change committed"
                );
                if r.isr.len() < role.isr.len() {
                    self.metrics.isr_shrinks.inc();
                } else {
                    self.metrics.isr_expands.inc();
                }
                p.apply_committed_isr(r.leader_epoch, r.partition_epoch, r.isr);
                p.wake();
                true
            }
            Ok(r) => {
                tracing::debug!(node, partition = %p.tp, code = r.error_code, wanted = ?new_isr, "ISR change refused");
                false
            }
            Err(e) => {
                tracing::warn!(node, partition = %p.tp, error = %e, "ISR change not sent");
                false
            }
        }
    }
}
