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
        // Lets another change be proposed however the task ends (a panic, or a runtime that
        // drops it before it ran, included). A proposal left undecided stays pending: the HW
        // goes on counting its additions until the role moves past it.
        let release = ReleaseIsrChange(p.clone());
        let this = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _release = release;
            // **Rule:** the proposal stays pending (its additions count in the HW, see
            // `IsrProposal`) until its outcome is known here; until then it is sent again.
            // A replica that is no longer this broker's stops it (the partition is gone).
            while p.isr_change_undecided(&proposal) && this.still_hosted(&p) {
                let answer = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    answer = this.propose(&p, &proposal) => answer,
                };
                let pause = match answer {
                    Answer::Committed => continue,
                    // Fenced followers were left out: they rejoin on fetches made from now
                    // on, and not before the backoff (the leader's image may still show them
                    // unfenced, and each proposal is a metadata commit).
                    Answer::CommittedWithout(ref left_out) => {
                        p.forget_followers(left_out);
                        RETRY_BACKOFF
                    }
                    Answer::NotCommitted => {
                        p.isr_change_decided(&proposal);
                        RETRY_BACKOFF
                    }
                    Answer::Unknown => RETRY_BACKOFF,
                    // The client waited and retried already.
                    Answer::NoReply => continue,
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                if answer == Answer::NotCommitted {
                    return;
                }
            }
            // The role moved past it: what it committed, if anything, is in the role.
            p.isr_change_decided(&proposal);
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
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(node, partition = %p.tp, error = %e, "ISR change not answered; sending it again");
                return Answer::NoReply;
            }
        };
        // Test builds: the reply is lost on its way back (the change stands).
        fail::fail_point!("alter_partition_reply_lost", r.error_code == 0, |_| Answer::NoReply);
        let (answer, apply) = classify(node, proposal, &r);
        tracing::debug!(node, partition = %p.tp, code = r.error_code, wanted = ?proposal.isr, isr = ?r.isr, partition_epoch = r.partition_epoch, ?answer, "ISR change answered");
        if answer == Answer::Committed {
            let counter =
                if proposal.additions.is_empty() { &self.metrics.isr_shrinks } else { &self.metrics.isr_expands };
            counter.inc();
        }
        if apply {
            p.apply_committed_isr(r.leader_epoch, r.partition_epoch, r.isr);
            p.wake();
        }
        answer
    }
}

/// What the controller's answer `r` to `proposal` means, and whether the partition it names
/// (leader epoch, partition epoch, ISR) is committed state for this leader to apply.
fn classify(node: i32, proposal: &IsrProposal, r: &pb::AlterPartitionResponse) -> (Answer, bool) {
    if r.error_code == 0 {
        let left_out: Vec<i32> = proposal.additions.iter().copied().filter(|a| !r.isr.contains(a)).collect();
        let answer = if left_out.is_empty() { Answer::Committed } else { Answer::CommittedWithout(left_out) };
        return (answer, true);
    }
    if !r.has_partition {
        // Refused without saying where the partition is (e.g. the controller could not
        // commit, or our broker epoch is stale): an earlier attempt may be in.
        return (Answer::Unknown, false);
    }
    let unchanged =
        r.leader == node && r.leader_epoch == proposal.leader_epoch && r.partition_epoch == proposal.partition_epoch;
    if unchanged {
        // Refused on the epochs it was made from: a refusal is final (the controller's ISR
        // rule), and nothing of it was committed.
        return (Answer::NotCommitted, false);
    }
    // The partition moved on; an earlier attempt of this proposal may be what moved it (its
    // reply was lost). What the controller has now is committed.
    (Answer::Unknown, r.leader == node)
}

/// How the controller answered an ISR proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Committed (and applied to the partition).
    Committed,
    /// Committed without these additions: the controller has them fenced.
    CommittedWithout(Vec<i32>),
    /// Refused, with the partition still at the epochs the proposal was made from.
    NotCommitted,
    /// Not known: what the controller said is applied where it can be, and the proposal is
    /// sent again (after a backoff) until the partition's role moves past it.
    Unknown,
    /// No reply (the controller client gave up): sent again at once.
    NoReply,
}

/// Lets another ISR change of the partition be proposed when dropped
/// ([`Partition::release_isr_change`]).
struct ReleaseIsrChange(Arc<Partition>);

impl Drop for ReleaseIsrChange {
    fn drop(&mut self) {
        self.0.release_isr_change();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal() -> IsrProposal {
        IsrProposal { leader_epoch: 3, partition_epoch: 7, isr: vec![1, 2, 3], additions: vec![3] }
    }

    fn answer(
        error_code: i32,
        has_partition: bool,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    ) -> pb::AlterPartitionResponse {
        pb::AlterPartitionResponse {
            error_code,
            has_partition,
            leader,
            leader_epoch,
            partition_epoch,
            isr: vec![1, 2],
            ..Default::default()
        }
    }

    #[test]
    fn only_a_refusal_at_the_proposals_own_epochs_ends_it_uncommitted() {
        let p = proposal();
        assert_eq!(classify(1, &p, &answer(0, false, 1, 3, 8)), (Answer::CommittedWithout(vec![3]), true));
        let with_3 = pb::AlterPartitionResponse { isr: vec![1, 2, 3], ..answer(0, false, 1, 3, 8) };
        assert_eq!(classify(1, &p, &with_3), (Answer::Committed, true));
        // Refused where the partition still is: nothing of it was committed.
        assert_eq!(classify(1, &p, &answer(89, true, 1, 3, 7)), (Answer::NotCommitted, false));
        // Moved on (maybe by an earlier attempt whose reply was lost): applied, still unknown.
        assert_eq!(classify(1, &p, &answer(89, true, 1, 3, 8)), (Answer::Unknown, true));
        // Another leader now: nothing this broker may apply; it waits for its metadata.
        assert_eq!(classify(1, &p, &answer(89, true, 2, 4, 8)), (Answer::Unknown, false));
        // A refusal that does not say where the partition is (unavailable, stale broker epoch).
        assert_eq!(classify(1, &p, &answer(15, false, 0, 0, 0)), (Answer::Unknown, false));
        assert_eq!(classify(1, &p, &answer(77, false, 0, 0, 0)), (Answer::Unknown, false));
    }
}
