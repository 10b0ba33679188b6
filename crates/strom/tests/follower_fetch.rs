//! A Fetch that claims a replica id moves a partition's high watermark, so only a broker may
//! send one: the replica id must be a registered broker other than the leader (of the broker
//! epoch it names, v15+), and with an authorizer the sender needs CLUSTER_ACTION (that part
//! needs a second registered broker: not tested here yet).

mod common;

use common::{start_with_topic, T};
use strom_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use strom_protocol::kafka_protocol::messages::*;
use strom_protocol::kafka_protocol::protocol::StrBytes;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;

fn fetch(replica_id: i32) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = 0;
    p.partition_max_bytes = 1 << 20;
    p.current_leader_epoch = -1;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("followed"));
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(replica_id);
    req.max_wait_ms = 0;
    req.max_bytes = 1 << 20;
    req.topics = vec![t];
    req
}

#[tokio::test]
async fn a_client_cannot_pose_as_a_follower() {
    let (_node, mut c) = start_with_topic(&[], "followed", 1).await;
    // A consumer's fetch is answered.
    let r = c.send(12, &fetch(-1), T).await.unwrap();
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    // Replica 7 is no broker of this cluster; 1 is the leader itself.
    for fake in [7, 1] {
        let r = c.send(12, &fetch(fake), T).await.unwrap();
        assert_eq!(r.responses[0].partitions[0].error_code, NOT_LEADER_OR_FOLLOWER, "replica id {fake}");
    }
}
