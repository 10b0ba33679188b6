//! The classic group protocol's rules, as Kafka keeps them, spoken directly to a running node
//! (the exact requests librdkafka and the Java consumer send, with every error code checked):
//! who may commit when, a static member replaced by a newer instance is fenced, and committed
//! offsets are stored as sent, negative ones included.

mod common;

use bytes::Bytes;
use common::{connect, start_with_topic, T};
use strom_client::Connection;
use strom_protocol::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use strom_protocol::kafka_protocol::messages::leave_group_request::MemberIdentity;
use strom_protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use strom_protocol::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use strom_protocol::kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use strom_protocol::kafka_protocol::messages::*;
use strom_protocol::kafka_protocol::protocol::StrBytes;

const NONE: i16 = 0;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;
const TOPIC: &str = "rules";

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// One group member on its own connection.
struct Member {
    conn: Connection,
    group: String,
    instance: Option<String>,
    id: String,
    generation: i32,
}

impl Member {
    async fn new(addr: &str, group: &str, instance: Option<&str>) -> Member {
        let mut conn = connect(addr, "group-rules").await;
        find_coordinator(&mut conn, group).await;
        Member {
            conn,
            group: group.to_string(),
            instance: instance.map(String::from),
            id: String::new(),
            generation: -1,
        }
    }

    fn join_request(&self) -> JoinGroupRequest {
        let mut p = JoinGroupRequestProtocol::default();
        p.name = sb("range");
        p.metadata = Bytes::from_static(b"\x00\x00\x00\x00\x00\x01\x00\x05rules\x00\x00\x00\x00");
        let mut req = JoinGroupRequest::default();
        req.group_id = GroupId(sb(&self.group));
        req.session_timeout_ms = 30_000;
        req.rebalance_timeout_ms = 30_000;
        req.member_id = sb(&self.id);
        req.group_instance_id = self.instance.as_deref().map(sb);
        req.protocol_type = sb("consumer");
        req.protocols = vec![p];
        req
    }

    /// JoinGroup v5 until it is answered with anything but MEMBER_ID_REQUIRED (KIP-394's
    /// first round trip). Returns the error code; on success the member has its generation.
    async fn join(&mut self) -> i16 {
        loop {
            let r = self.conn.send(5, &self.join_request(), T * 4).await.unwrap();
            if r.error_code == MEMBER_ID_REQUIRED {
                self.id = r.member_id.to_string();
                continue;
            }
            if r.error_code == NONE {
                self.id = r.member_id.to_string();
                self.generation = r.generation_id;
            }
            return r.error_code;
        }
    }

    /// SyncGroup v3; a leader assigns the one partition to itself.
    async fn sync(&mut self, leader: bool) -> i16 {
        let mut req = SyncGroupRequest::default();
        req.group_id = GroupId(sb(&self.group));
        req.generation_id = self.generation;
        req.member_id = sb(&self.id);
        req.group_instance_id = self.instance.as_deref().map(sb);
        if leader {
            let mut a = SyncGroupRequestAssignment::default();
            a.member_id = sb(&self.id);
            a.assignment = Bytes::from_static(
                b"\x00\x01\x00\x00\x00\x01\x00\x05rules\x00\x00\x00\x01\x00\x00\x00\x00\xff\xff\xff\xff",
            );
            req.assignments = vec![a];
        }
        self.conn.send(3, &req, T * 4).await.unwrap().error_code
    }

    async fn heartbeat(&mut self) -> i16 {
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(sb(&self.group));
        req.generation_id = self.generation;
        req.member_id = sb(&self.id);
        req.group_instance_id = self.instance.as_deref().map(sb);
        self.conn.send(3, &req, T).await.unwrap().error_code
    }

    /// OffsetCommit v7 of partition 0 with this member's identity and `generation`.
    async fn commit_as(&mut self, generation: i32, offset: i64, metadata: &str) -> i16 {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = offset;
        p.committed_leader_epoch = -1;
        p.committed_metadata = Some(sb(metadata));
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(sb(TOPIC));
        t.partitions = vec![p];
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(sb(&self.group));
        req.generation_id_or_member_epoch = generation;
        req.member_id = sb(&self.id);
        req.group_instance_id = self.instance.as_deref().map(sb);
        req.topics = vec![t];
        self.conn.send(7, &req, T).await.unwrap().topics[0].partitions[0].error_code
    }

    async fn commit(&mut self, offset: i64) -> i16 {
        self.commit_as(self.generation, offset, "").await
    }

    async fn leave(&mut self) -> i16 {
        let mut m = MemberIdentity::default();
        m.member_id = sb(&self.id);
        m.group_instance_id = self.instance.as_deref().map(sb);
        let mut req = LeaveGroupRequest::default();
        req.group_id = GroupId(sb(&self.group));
        req.members = vec![m];
        let r = self.conn.send(3, &req, T).await.unwrap();
        if r.error_code != NONE {
            return r.error_code;
        }
        r.members[0].error_code
    }
}

/// FindCoordinator v3 until the group has one (the first creates `__consumer_offsets`).
async fn find_coordinator(c: &mut Connection, group: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut req = FindCoordinatorRequest::default();
    req.key = sb(group);
    loop {
        let r = c.send(3, &req, T).await.unwrap();
        if r.error_code == NONE {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no coordinator for {group}: {}", r.error_code);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The committed offset of partition 0 (OffsetFetch v5), -1 when none.
async fn committed(c: &mut Connection, group: &str) -> i64 {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(sb(TOPIC));
    t.partition_indexes = vec![0];
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(sb(group));
    req.topics = Some(vec![t]);
    let r = c.send(5, &req, T).await.unwrap();
    assert_eq!(r.error_code, NONE);
    r.topics[0].partitions[0].committed_offset
}

#[tokio::test]
async fn commits_follow_the_generation_and_the_rebalance_phase() {
    let (node, mut admin) = start_with_topic(&[], TOPIC, 1).await;
    let group = "phases";
    let mut a = Member::new(&node.addr, group, None).await;
    assert_eq!(a.join().await, NONE);
    assert_eq!(a.sync(true).await, NONE);
    assert_eq!(a.commit(5).await, NONE);
    let first_generation = a.generation;

    // A second member joins: the group prepares a rebalance and waits for `a` to rejoin.
    let addr = node.addr.clone();
    let b_join = tokio::spawn(async move {
        let mut b = Member::new(&addr, group, None).await;
        let code = b.join().await;
        (b, code)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let code = a.heartbeat().await;
        if code == REBALANCE_IN_PROGRESS {
            break;
        }
        assert_eq!(code, NONE);
        assert!(std::time::Instant::now() < deadline, "the rebalance never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Until it rejoins, `a`'s generation still owns the partition: the commit it makes before
    // rejoining (of what it processed) is accepted, as Kafka accepts it.
    assert_eq!(a.commit(7).await, NONE);
    assert_eq!(committed(&mut admin, group).await, 7);
    assert!(!b_join.is_finished(), "the rebalance completed before the existing member rejoined");

    assert_eq!(a.join().await, NONE);
    let (mut b, code) = b_join.await.unwrap();
    assert_eq!(code, NONE);
    assert_eq!(a.generation, b.generation);
    assert!(a.generation > first_generation);
    // The new generation's assignment is not out yet: `a`, whose partition was revoked when
    // it rejoined, may not commit it, under either generation.
    assert_eq!(a.commit(9).await, REBALANCE_IN_PROGRESS);
    assert_eq!(a.commit_as(first_generation, 9, "").await, ILLEGAL_GENERATION);
    assert_eq!(committed(&mut admin, group).await, 7);

    // Once synced (Stable), a current member commits; a stale generation never does.
    let (a_leads, b_leads) = (a.sync(true), b.sync(true));
    let (ra, rb) = tokio::join!(a_leads, b_leads);
    assert_eq!((ra, rb), (NONE, NONE));
    assert_eq!(b.commit(11).await, NONE);
    assert_eq!(b.commit_as(first_generation, 3, "").await, ILLEGAL_GENERATION);
    assert_eq!(committed(&mut admin, group).await, 11);

    // Kafka's offset.metadata.max.bytes (4096).
    assert_eq!(b.commit_as(b.generation, 12, &"m".repeat(4097)).await, OFFSET_METADATA_TOO_LARGE);

    // A member that left cannot commit.
    assert_eq!(a.leave().await, NONE);
    assert_eq!(a.commit(13).await, UNKNOWN_MEMBER_ID);
    assert_eq!(committed(&mut admin, group).await, 11);
}

#[tokio::test]
async fn a_static_member_replaced_by_a_new_instance_is_fenced() {
    let (node, mut admin) = start_with_topic(&[], TOPIC, 1).await;
    let group = "static";
    let mut old = Member::new(&node.addr, group, Some("instance-1")).await;
    assert_eq!(old.join().await, NONE);
    assert_eq!(old.sync(true).await, NONE);
    assert_eq!(old.commit(4).await, NONE);

    // A new process with the same group.instance.id takes the member's place.
    let mut new = Member::new(&node.addr, group, Some("instance-1")).await;
    assert_eq!(new.join().await, NONE);
    assert_ne!(new.id, old.id);

    // Every request of the old instance is FENCED_INSTANCE_ID (fatal in librdkafka and the
    // Java consumer), so it cannot rejoin and fence its replacement in turn.
    assert_eq!(old.heartbeat().await, FENCED_INSTANCE_ID);
    assert_eq!(old.commit(99).await, FENCED_INSTANCE_ID);
    assert_eq!(old.sync(false).await, FENCED_INSTANCE_ID);
    assert_eq!(old.join().await, FENCED_INSTANCE_ID);
    assert_eq!(old.leave().await, FENCED_INSTANCE_ID);
    assert_eq!(committed(&mut admin, group).await, 4);

    // The new instance is the member now.
    assert_eq!(new.sync(true).await, NONE);
    assert_eq!(new.heartbeat().await, NONE);
    assert_eq!(new.commit(6).await, NONE);
    assert_eq!(committed(&mut admin, group).await, 6);
}

#[tokio::test]
async fn negative_committed_offsets_are_stored_as_sent() {
    let (node, mut admin) = start_with_topic(&[], TOPIC, 1).await;
    // kafkajs's admin.resetOffsets({ earliest: true }) commits -2 with a simple commit.
    let mut simple = Member::new(&node.addr, "reset", None).await;
    assert_eq!(simple.commit_as(-1, -2, "").await, NONE);
    assert_eq!(committed(&mut admin, "reset").await, -2);
    assert_eq!(simple.commit_as(-1, -1, "").await, NONE);
    assert_eq!(committed(&mut admin, "reset").await, -1);
    assert_eq!(simple.commit_as(-1, 3, "").await, NONE);
    assert_eq!(committed(&mut admin, "reset").await, 3);
}
