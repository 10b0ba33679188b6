//! 1- and 3-voter quorums in one process over loopback: elections, commits, failover, a
//! restart of the whole quorum, and broker fencing on missed heartbeats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_controller::controller::{Controller, ControllerConfig, NewTopic, SUSPECT_GRACE};
use strom_metadata::client::ControllerClient;
use strom_protocol::proto::controller as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Member {
    controller: Arc<Controller>,
    stop: CancellationToken,
}

struct Quorum {
    dir: tempfile::TempDir,
    voters: Vec<(i32, String)>,
    members: Vec<Option<Member>>,
    session_timeout_ms: u64,
}

fn config(dir: &std::path::Path, id: i32, voters: &[(i32, String)], session_timeout_ms: u64) -> ControllerConfig {
    ControllerConfig {
        node_id: id,
        voters: voters.to_vec(),
        metadata_dir: dir.join(format!("node-{id}")),
        broker_session_timeout_ms: session_timeout_ms,
        num_partitions: 1,
        default_replication_factor: 1,
        unclean_leader_election_enable: false,
        auto_leader_rebalance_enable: true,
        raft_heartbeat_ms: 50,
        cluster_id: None,
        tls: None,
        sasl: None,
        peers: Default::default(),
        authorizer: None,
    }
}

impl Quorum {
    async fn start(n: i32) -> Quorum {
        Self::start_with_session(n, 1500).await
    }

    /// `session_timeout_ms`: the broker session; long where a test must not see a broker
    /// fenced by a slow machine (fencing would rightly change the image).
    async fn start_with_session(n: i32, session_timeout_ms: u64) -> Quorum {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let voters: Vec<(i32, String)> =
            listeners.iter().enumerate().map(|(i, l)| (i as i32 + 1, l.local_addr().unwrap().to_string())).collect();
        let mut q = Quorum { dir, voters, members: Vec::new(), session_timeout_ms };
        for (i, l) in listeners.into_iter().enumerate() {
            let m = q.start_member(i as i32 + 1, l).await;
            q.members.push(Some(m));
        }
        q
    }

    async fn start_member(&self, id: i32, listener: TcpListener) -> Member {
        let stop = CancellationToken::new();
        let controller = Controller::start(
            config(self.dir.path(), id, &self.voters, self.session_timeout_ms),
            listener,
            stop.clone(),
        )
        .await
        .unwrap();
        Member { controller, stop }
    }

    async fn stop(&mut self, id: i32) {
        if let Some(m) = self.members[id as usize - 1].take() {
            m.stop.cancel();
            let _ = m.controller.raft.shutdown().await;
        }
    }

    /// Starts member `id` again on its old address. The stopped instance lets go of its
    /// port and its state directory asynchronously, so both are retried until a deadline.
    async fn restart(&mut self, id: i32) {
        let addr = self.voters[id as usize - 1].1.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let attempt = match TcpListener::bind(&addr).await {
                Ok(listener) => {
                    let stop = CancellationToken::new();
                    Controller::start(
                        config(self.dir.path(), id, &self.voters, self.session_timeout_ms),
                        listener,
                        stop.clone(),
                    )
                    .await
                    .map(|controller| Member { controller, stop })
                    .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match attempt {
                Ok(m) => {
                    self.members[id as usize - 1] = Some(m);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("restart {id}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot restart member {id}: {e}"),
            }
        }
    }

    fn running(&self) -> impl Iterator<Item = &Arc<Controller>> {
        self.members.iter().flatten().map(|m| &m.controller)
    }

    /// Waits until a running member is active and every running member agrees on it.
    async fn wait_for_leader(&self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<Option<i32>> = self.running().map(|c| c.active_controller()).collect();
            if let Some(Some(id)) = views.first() {
                let alive = self.members[*id as usize - 1].is_some();
                if alive && views.iter().all(|v| *v == Some(*id)) && self.running().any(|c| c.is_active()) {
                    return *id;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader within {within:?}: {views:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_digest_agreement(&self, within: Duration) -> u32 {
        let deadline = Instant::now() + within;
        loop {
            let digests: Vec<(i64, u32)> =
                self.running().map(|c| (c.metadata.image().offset, c.metadata.image().digest())).collect();
            if digests.windows(2).all(|w| w[0] == w[1]) {
                return digests[0].1;
            }
            assert!(Instant::now() < deadline, "images never agreed: {digests:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn client(&self) -> ControllerClient {
        ControllerClient::new(&self.voters, &Default::default()).unwrap()
    }
}

fn topic(name: &str, partitions: i32) -> NewTopic {
    NewTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: 1,
        assignments: vec![],
        configs: Default::default(),
    }
}

async fn register(client: &ControllerClient, broker_id: i32) -> i64 {
    let r = register_in(client, broker_id, None).await;
    assert_eq!(r.error_code, 0, "{}", r.error_message);
    r.broker_epoch
}

/// A registration naming the cluster id the broker's meta.properties holds.
async fn register_in(
    client: &ControllerClient,
    broker_id: i32,
    cluster_id: Option<&str>,
) -> pb::RegisterBrokerResponse {
    let cluster_id = cluster_id.map(String::from);
    client
        .call(Duration::from_secs(10), Duration::from_secs(2), |mut c| {
            let cluster_id = cluster_id.clone();
            async move {
                c.register_broker(pb::RegisterBrokerRequest {
                    broker_id,
                    incarnation_id: format!("inc-{broker_id}").into_bytes(),
                    listeners: vec![],
                    rack: None,
                    cluster_id,
                })
                .await
            }
        })
        .await
        .unwrap()
}

async fn heartbeat(client: &ControllerClient, broker_id: i32, epoch: i64, offset: i64) -> pb::BrokerHeartbeatResponse {
    client
        .call(Duration::from_secs(10), Duration::from_secs(2), |mut c| async move {
            c.broker_heartbeat(pb::BrokerHeartbeatRequest {
                broker_id,
                broker_epoch: epoch,
                current_metadata_offset: offset,
                want_fence: false,
                want_shutdown: false,
            })
            .await
        })
        .await
        .unwrap()
}

/// Creates a topic through whichever member is active, retrying across a failover.
async fn create_topic(q: &Quorum, name: &str) -> Result<(), String> {
    for c in q.running() {
        if c.is_active() {
            let (r, _) = c.create_topics(vec![topic(name, 1)], false).await;
            return r.into_iter().next().unwrap().map(|_| ()).map_err(|e| e.to_string());
        }
    }
    Err("no active controller".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_elects_itself_and_commits() {
    let q = Quorum::start(1).await;
    assert_eq!(q.wait_for_leader(Duration::from_secs(10)).await, 1);
    let client = q.client();
    let epoch = register(&client, 1).await;
    let hb = heartbeat(&client, 1, epoch, epoch).await;
    assert!(hb.is_caught_up && !hb.is_fenced, "{hb:?}");
    create_topic(&q, "orders").await.unwrap();
    let image = q.members[0].as_ref().unwrap().controller.metadata.image();
    let p = image.partition("orders", 0).unwrap();
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (1, vec![1], 0));
    assert_eq!(create_topic(&q, "orders").await.unwrap_err(), "topic orders already exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_registration_fixes_the_cluster_id_and_brokers_of_another_cluster_are_refused() {
    let q = Quorum::start(1).await;
    q.wait_for_leader(Duration::from_secs(10)).await;
    let client = q.client();
    let image = || q.members[0].as_ref().unwrap().controller.metadata.image();
    assert_eq!(image().cluster_id, None);
    // A broker formatted for a cluster id brings it to a cluster that has none yet.
    let formatted = strom_metadata::cluster_id::generate();
    assert_eq!(register_in(&client, 1, Some(&formatted)).await.error_code, 0);
    assert_eq!(image().cluster_id.as_deref(), Some(formatted.as_str()));
    // A broker with another cluster's data is refused, with Kafka's INCONSISTENT_CLUSTER_ID.
    let other = strom_metadata::cluster_id::generate();
    let r = register_in(&client, 2, Some(&other)).await;
    assert_eq!(r.error_code, 104, "{r:?}");
    assert!(r.error_message.contains(&other), "{}", r.error_message);
    assert!(!image().brokers.contains_key(&2));
    // A new broker (no id yet) and one of this cluster join.
    assert_eq!(register_in(&client, 2, None).await.error_code, 0);
    assert_eq!(register_in(&client, 3, Some(&formatted)).await.error_code, 0);
    assert_eq!(image().cluster_id.as_deref(), Some(formatted.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_survive_the_loss_of_the_active_controller_and_a_full_restart() {
    let mut q = Quorum::start_with_session(3, 60_000).await;
    let leader = q.wait_for_leader(Duration::from_secs(10)).await;
    let client = q.client();
    let epoch = register(&client, 1).await;
    heartbeat(&client, 1, epoch, epoch).await;
    // The broker keeps its session through failover and restart (else fencing it would
    // rightly change the image).
    let beating = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                let _ = client
                    .call(Duration::from_secs(1), Duration::from_millis(500), |mut c| async move {
                        c.broker_heartbeat(pb::BrokerHeartbeatRequest {
                            broker_id: 1,
                            broker_epoch: epoch,
                            current_metadata_offset: i64::MAX,
                            ..Default::default()
                        })
                        .await
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    for i in 0..20 {
        create_topic(&q, &format!("t{i}")).await.unwrap();
    }
    q.wait_for_digest_agreement(Duration::from_secs(10)).await;

    tracing::info!("phase: kill the active controller; a new one takes over with every change");
    let killed_at = Instant::now();
    q.stop(leader).await;
    let new_leader = q.wait_for_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    // Commit through the new leader (retry while it settles).
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = create_topic(&q, "after-failover").await {
        assert!(Instant::now() < deadline, "no commit after failover: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failover = killed_at.elapsed();
    eprintln!("controller failover (kill to next committed change): {failover:?}");
    for c in q.running() {
        let img = c.metadata.image();
        assert!((0..20).all(|i| img.topics.contains_key(&format!("t{i}"))), "lost an acknowledged topic");
    }

    tracing::info!("phase: the killed member comes back and catches up");
    q.restart(leader).await;
    let before = q.wait_for_digest_agreement(Duration::from_secs(20)).await;

    tracing::info!("phase: restart the whole quorum; the image is identical");
    for id in 1..=3 {
        q.stop(id).await;
    }
    for id in 1..=3 {
        q.restart(id).await;
    }
    q.wait_for_leader(Duration::from_secs(20)).await;
    // Nothing new is written: the committed log is re-applied from disk on every member.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let digests: Vec<u32> = q.running().map(|c| c.metadata.image().digest()).collect();
        if digests.iter().all(|d| *d == before) {
            break;
        }
        assert!(Instant::now() < deadline, "image after restart differs: {digests:x?} vs {before:x}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(q.running().next().unwrap().metadata.image().topics.len(), 21);
    beating.abort();
}

/// Partitions of topic `t` led by broker 2.
fn led_by_2(img: &strom_metadata::image::MetadataImage) -> usize {
    img.topics["t"].partitions.values().filter(|p| p.leader == 2).count()
}

/// A one-voter quorum with brokers 1 and 2 registered and unfenced, and topic `t` (4
/// partitions, RF=2) created, some of it led by broker 2. Returns the quorum (kept alive),
/// a client, the controller and the two broker epochs.
async fn two_brokers_sharing_topic_t() -> (Quorum, ControllerClient, Arc<Controller>, i64, i64) {
    two_brokers_sharing_topic_t_with_session(1500).await
}

/// [`two_brokers_sharing_topic_t`] with a broker session of `session_timeout_ms`.
async fn two_brokers_sharing_topic_t_with_session(
    session_timeout_ms: u64,
) -> (Quorum, ControllerClient, Arc<Controller>, i64, i64) {
    let q = Quorum::start_with_session(1, session_timeout_ms).await;
    q.wait_for_leader(Duration::from_secs(10)).await;
    let client = q.client();
    let c = q.members[0].as_ref().unwrap().controller.clone();
    let e1 = register(&client, 1).await;
    let e2 = register(&client, 2).await;
    heartbeat(&client, 1, e1, i64::MAX).await;
    heartbeat(&client, 2, e2, i64::MAX).await;
    let t = NewTopic { num_partitions: 4, replication_factor: 2, ..topic("t", 4) };
    let (r, _) = c.create_topics(vec![t], false).await;
    r[0].as_ref().unwrap();
    assert!(led_by_2(&c.metadata.image()) > 0);
    (q, client, c, e1, e2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_heartbeating_is_fenced_and_loses_its_leaderships() {
    let (_q, client, c, e1, _e2) = two_brokers_sharing_topic_t().await;

    // Broker 1 keeps heartbeating; broker 2 goes silent.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        heartbeat(&client, 1, e1, i64::MAX).await;
        let img = c.metadata.image();
        if img.brokers[&2].fenced {
            assert_eq!(led_by_2(&img), 0, "a fenced broker leads nothing");
            for p in img.topics["t"].partitions.values() {
                assert_eq!(p.isr, vec![1], "the fenced broker left every ISR");
                assert_eq!(p.leader, 1);
            }
            break;
        }
        assert!(Instant::now() < deadline, "broker 2 was never fenced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!c.metadata.image().brokers[&1].fenced, "the live broker stays unfenced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspected_broker_is_evacuated_at_once_and_kept_if_it_heartbeats() {
    let (_q, client, c, e1, e2) = two_brokers_sharing_topic_t().await;

    // Broker 2's connection drops: it is evacuated well before its grace ends, and stays
    // registered and unfenced meanwhile.
    let suspected = Instant::now();
    c.suspect(2);
    loop {
        let img = c.metadata.image();
        if led_by_2(&img) == 0 && img.topics["t"].partitions.values().all(|p| p.isr == vec![1]) {
            assert!(!img.brokers[&2].fenced, "evacuated, not fenced");
            assert!(suspected.elapsed() < SUSPECT_GRACE, "evacuated only after {:?}", suspected.elapsed());
            for p in img.topics["t"].partitions.values() {
                assert_eq!(p.leader, 1);
            }
            break;
        }
        assert!(suspected.elapsed() < SUSPECT_GRACE, "broker 2 was not evacuated within the grace");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // It heartbeats (it was alive after all): it is no longer a suspect and is never fenced.
    let until = Instant::now() + SUSPECT_GRACE * 3;
    while Instant::now() < until {
        heartbeat(&client, 1, e1, i64::MAX).await;
        heartbeat(&client, 2, e2, i64::MAX).await;
        assert!(!c.metadata.image().brokers[&2].fenced, "a suspect that heartbeats keeps its session");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two voters, each formatted (`meta.properties`) with the cluster id given.
async fn two_formatted_voters(ids: [String; 2]) -> (tempfile::TempDir, Vec<Member>) {
    let dir = tempfile::tempdir().unwrap();
    let listeners = [TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap()];
    let voters: Vec<(i32, String)> =
        listeners.iter().enumerate().map(|(i, l)| (i as i32 + 1, l.local_addr().unwrap().to_string())).collect();
    let mut members = Vec::new();
    for (i, (l, id)) in listeners.into_iter().zip(ids).enumerate() {
        let mut c = config(dir.path(), i as i32 + 1, &voters, 1500);
        c.cluster_id = Some(id);
        let stop = CancellationToken::new();
        members.push(Member { controller: Controller::start(c, l, stop.clone()).await.unwrap(), stop });
    }
    (dir, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_of_different_clusters_never_form_a_quorum() {
    use strom_metadata::cluster_id::generate;
    let term = |m: &Member| m.controller.raft.metrics().borrow().current_term;

    // Formatted for the same cluster: an ordinary quorum.
    let same = generate();
    let (_d, members) = two_formatted_voters([same.clone(), same]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !members.iter().any(|m| m.controller.is_active()) {
        assert!(Instant::now() < deadline, "two controllers of one cluster elected no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in members {
        m.stop.cancel();
        let _ = m.controller.raft.shutdown().await;
    }

    // Formatted for two clusters: every Raft request between them is refused
    // (INCONSISTENT_CLUSTER_ID), so they campaign on and on and never elect a leader; neither
    // can depose the other's leader or overwrite its log.
    let (_d, members) = two_formatted_voters([generate(), generate()]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !members.iter().all(|m| term(m) >= 4) {
        assert!(
            members.iter().all(|m| m.controller.active_controller().is_none()),
            "controllers of two clusters elected a leader"
        );
        assert!(Instant::now() < deadline, "the controllers stopped campaigning without a leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(members.iter().all(|m| m.controller.active_controller().is_none()));
    for m in members {
        m.stop.cancel();
        let _ = m.controller.raft.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_configs_other_than_listener_keystores_are_refused_not_stored() {
    use strom_controller::controller::ControllerError;
    use strom_metadata::records::ConfigResource;
    let q = Quorum::start(1).await;
    q.wait_for_leader(Duration::from_secs(10)).await;
    let c = &q.members[0].as_ref().unwrap().controller;
    let set = |k: &str, v: &str| vec![(k.to_string(), Some(v.to_string()))];
    let e = c
        .alter_configs(ConfigResource::Broker(1), set("log.retention.ms", "1000"), false, false)
        .await
        .expect_err("a broker key Strom does not apply while it runs");
    assert!(matches!(&e, ControllerError::InvalidRequest(m) if m.contains("log.retention.ms")), "{e:?}");
    let key = "listener.name.external.ssl.keystore.location";
    c.alter_configs(ConfigResource::Broker(1), set(key, "/etc/new.pem"), false, false).await.expect("a keystore");
    let image = c.metadata.image();
    let stored = image.broker_configs.get(&1).cloned().unwrap_or_default();
    assert_eq!(stored.get(key).map(String::as_str), Some("/etc/new.pem"));
    assert!(!stored.contains_key("log.retention.ms"), "{stored:?}");
}

/// A leader whose AlterPartition reply was lost sends the same proposal again: the refusal
/// must say where the partition now is, so the leader learns its change was committed (the
/// controller may already elect a follower it added). A refusal of a proposal that was never
/// committed names the epochs the proposal was made from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_isr_change_is_answered_with_the_partition_as_the_controller_has_it() {
    // A long session: fencing on a slow machine would rightly change the ISR under the test.
    let (_q, client, c, e1, _e2) = two_brokers_sharing_topic_t_with_session(60_000).await;
    let img = c.metadata.image();
    let topic_id = img.topics["t"].id;
    let (&partition, before) = img.topics["t"].partitions.iter().find(|(_, p)| p.leader == 1).unwrap();
    assert_eq!(before.isr.len(), 2);
    let alter = |new_isr: Vec<i32>| {
        let req = pb::AlterPartitionRequest {
            broker_id: 1,
            broker_epoch: e1,
            topic_id: topic_id.to_string(),
            partition,
            leader_epoch: before.leader_epoch,
            partition_epoch: before.partition_epoch,
            new_isr,
        };
        let client = &client;
        async move {
            client
                .call(Duration::from_secs(10), Duration::from_secs(2), |mut c| {
                    let req = req.clone();
                    async move { c.alter_partition(req).await }
                })
                .await
                .unwrap()
        }
    };

    // Never committed: refused, and the partition is still at the proposal's epochs.
    let refused = alter(vec![2]).await;
    assert_ne!(refused.error_code, 0, "an ISR without its leader was accepted");
    assert!(refused.has_partition);
    assert_eq!(
        (refused.leader, refused.leader_epoch, refused.partition_epoch, refused.isr.clone()),
        (1, before.leader_epoch, before.partition_epoch, before.isr.clone())
    );

    // Committed; then the same proposal again, as after a lost reply.
    let committed = alter(vec![1]).await;
    assert_eq!(committed.error_code, 0);
    assert_eq!((committed.isr.clone(), committed.partition_epoch), (vec![1], before.partition_epoch + 1));
    let again = alter(vec![1]).await;
    assert_ne!(again.error_code, 0, "a proposal from a stale partition epoch was accepted");
    assert!(again.has_partition);
    assert_eq!(
        (again.leader, again.leader_epoch, again.partition_epoch, again.isr),
        (1, before.leader_epoch, before.partition_epoch + 1, vec![1]),
        "the refusal does not show the change the lost reply was for"
    );

    // Broker 2 restarts (a new incarnation: fenced until it catches up). A proposal adding it
    // is committed without it: the partition epoch moves, so no earlier attempt of that
    // proposal can add it later, once it is unfenced.
    let r = client
        .call(Duration::from_secs(10), Duration::from_secs(2), |mut c| async move {
            c.register_broker(pb::RegisterBrokerRequest {
                broker_id: 2,
                incarnation_id: b"inc-2-restarted".to_vec(),
                listeners: vec![],
                rack: None,
                cluster_id: None,
            })
            .await
        })
        .await
        .unwrap();
    assert_eq!(r.error_code, 0, "{}", r.error_message);
    let now = c.metadata.image().topics["t"].partitions[&partition].clone();
    assert!(c.metadata.image().brokers[&2].fenced);
    let req = pb::AlterPartitionRequest {
        broker_id: 1,
        broker_epoch: e1,
        topic_id: topic_id.to_string(),
        partition,
        leader_epoch: now.leader_epoch,
        partition_epoch: now.partition_epoch,
        new_isr: vec![1, 2],
    };
    let fenced_left_out = client
        .call(Duration::from_secs(10), Duration::from_secs(2), |mut c| {
            let req = req.clone();
            async move { c.alter_partition(req).await }
        })
        .await
        .unwrap();
    assert_eq!(fenced_left_out.error_code, 0);
    assert_eq!((fenced_left_out.isr, fenced_left_out.partition_epoch), (vec![1], now.partition_epoch + 1));
}
