//! The ISR manager: the leader's side of ISR changes (DESIGN.md §3).
//!
//! A leader proposes, the controller decides. On a timer (every half `replica.lag.time.max.ms`,
//! as Kafka) it looks for ISR members that have not caught up within the lag limit, and when a
//! follower fetch reports a caught-up follower outside the ISR it looks at once. Either way it
//! sends the ISR it wants with the leader epoch and partition epoch it holds (AlterPartition);
//! the controller refuses a stale proposal, so a deposed leader cannot change an ISR. One
//! proposal per partition is in flight at a time, and until its outcome is known the HW
//! counts the members it adds (`IsrProposal`'s rule in the replica module).

use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_protocol::proto::controller as pb;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::BrokerLifecycle;
use crate::metrics::BrokerMetrics;
use crate::replica::{IsrProposal, Partition, ReplicaManager};

/// Wait after a refused proposal before the partition may propose again, and between
/// attempts of a proposal whose outcome is not known.
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
                self.maybe_propose(p, &shutdown);
            }
        }
    }

    fn maybe_propose(self: &Arc<Self>, p: Arc<Partition>, shutdown: &CancellationToken) {
        let image = self.lifecycle.image();
        let eligible = |id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
        let Some(new_isr) = p.desired_isr(self.lag_max, Instant::now(), eligible) else { return };
        let Some(proposal) = p.begin_isr_change(new_isr) else { return };
        let this = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // Ends the change however this task ends (a panic included): a change left
            // pending would hold the HW and block every later ISR change of the partition.
            let _end = EndIsrChange(p.clone());
            // **Rule:** the proposal stays pending (its additions count in the HW, see
            // `IsrProposal`) until its outcome is known here; until then it is sent again.
            // A replica that is no longer this broker's stops it (the partition is gone).
            while p.isr_change_undecided(&proposal) && !shutdown.is_cancelled() && this.still_hosted(&p) {
                match this.propose(&p, &proposal).await {
                    Answer::Committed => {}
                    Answer::NotCommitted => {
                        p.isr_change_decided();
                        tokio::time::sleep(RETRY_BACKOFF).await;
                        return;
                    }
                    Answer::Unknown => tokio::time::sleep(RETRY_BACKOFF).await,
                    // The client waited and retried already.
                    Answer::NoReply => {}
                }
            }
        });
    }

    fn still_hosted(&self, p: &Arc<Partition>) -> bool {
        self.replicas.get(&p.tp.topic, p.tp.partition).is_some_and(|q| Arc::ptr_eq(&q, p))
    }

    /// Sends one AlterPartition and applies what the controller answers.
    async fn propose(&self, p: &Partition, proposal: &IsrProposal) -> Answer {
        let node = self.replicas.node_id();
        let req = pb::AlterPartitionRequest {
            broker_id: node,
            broker_epoch: self.lifecycle.broker_epoch(),
            topic_id: p.topic_id.to_string(),
            partition: p.tp.partition,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            new_isr: proposal.isr.clone(),
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
                // Test builds: the reply is lost on its way back (the change stands).
                fail::fail_point!("alter_partition_reply_lost", |_| Answer::NoReply);
                // The controller logs the change itself; this is the leader's view of it.
                tracing::debug!(
                    node,
                    partition = %p.tp,
                    isr = ?r.isr,
                    leader_epoch = r.leader_epoch,
                    partition_epoch = r.partition_epoch,
                    "ISR change committed"
                );
                if proposal.additions.is_empty() {
                    self.metrics.isr_shrinks.inc();
                } else {
                    self.metrics.isr_expands.inc();
                }
                p.apply_committed_isr(r.leader_epoch, r.partition_epoch, r.isr);
                p.wake();
                Answer::Committed
            }
            Ok(r) if r.has_partition => {
                let unchanged = r.leader == node
                    && r.leader_epoch == proposal.leader_epoch
                    && r.partition_epoch == proposal.partition_epoch;
                tracing::debug!(node, partition = %p.tp, code = r.error_code, wanted = ?proposal.isr, unchanged, "ISR change refused");
                if unchanged {
                    return Answer::NotCommitted;
                }
                // The partition moved on; an earlier attempt of this proposal may be what
                // moved it (its reply was lost). What the controller has now is committed.
                if r.leader == node {
                    p.apply_committed_isr(r.leader_epoch, r.partition_epoch, r.isr);
                    p.wake();
                }
                Answer::Unknown
            }
            Ok(r) => {
                // Refused without saying where the partition is (e.g. the controller could
                // not commit, or our broker epoch is stale): an earlier attempt may be in.
                tracing::debug!(node, partition = %p.tp, code = r.error_code, wanted = ?proposal.isr, "ISR change refused; outcome unknown");
                Answer::Unknown
            }
            Err(e) => {
                tracing::warn!(node, partition = %p.tp, error = %e, "ISR change not answered; sending it again");
                Answer::NoReply
            }
        }
    }
}

/// How the controller answered an ISR proposal.
enum Answer {
    /// Committed, and applied to the partition.
    Committed,
    /// Refused, with the partition still at the epochs the proposal was made from.
    NotCommitted,
    /// Not known: what the controller said is applied where it can be, and the proposal is
    /// sent again (after a backoff) until the partition's role moves past it.
    Unknown,
    /// No reply (the controller client gave up): sent again at once.
    NoReply,
}

/// Ends an ISR change when dropped ([`Partition::end_isr_change`]).
struct EndIsrChange(Arc<Partition>);

impl Drop for EndIsrChange {
    fn drop(&mut self) {
        self.0.end_isr_change();
    }
}
