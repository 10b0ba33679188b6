//! A `strom` node started as a user starts it (the binary, free ports, its own data dir),
//! and a Kafka connection to it, for the tests that speak Kafka directly.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strom_client::Connection;
use strom_protocol::kafka_protocol::messages::create_topics_request::CreatableTopic;
use strom_protocol::kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use strom_protocol::kafka_protocol::protocol::StrBytes;

pub const STROM: &str = env!("CARGO_BIN_EXE_strom");
/// Bound on every request.
pub const T: Duration = Duration::from_secs(10);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The node's process and its data dir (removed when the test ends).
pub struct Node {
    pub child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a single-node cluster with `overrides` (key=value) on free ports.
pub fn start(overrides: &[&str]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (kafka, ctl) = (free_port(), free_port());
    let mut cmd = Command::new(STROM);
    cmd.args(["server", "--override"])
        .arg(format!("listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{ctl}"))
        .arg("--override")
        .arg(format!("controller.quorum.voters=1@127.0.0.1:{ctl}"))
        .arg("--override")
        .arg("metrics.listener=")
        .arg("--override")
        .arg(format!("log.dirs={}", dir.path().join("data").display()));
    for o in overrides {
        cmd.arg("--override").arg(o);
    }
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    Node { child, addr: format!("127.0.0.1:{kafka}"), _dir: dir }
}

/// Connects to `addr`, retrying until the node accepts (30 s deadline).
pub async fn connect(addr: &str, client_id: &str) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Connection::connect(addr, client_id, T).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "node did not come up: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A node (started with `overrides`), a connection to it, and topic `topic` (RF 1) on it.
pub async fn start_with_topic(overrides: &[&str], topic: &'static str, partitions: i32) -> (Node, Connection) {
    let node = start(overrides);
    let mut c = connect(&node.addr, "strom-test").await;
    create_topic(&mut c, topic, partitions).await;
    (node, c)
}

/// Creates `name` with `partitions` partitions (RF 1), retrying while the node registers.
pub async fn create_topic(c: &mut Connection, name: &'static str, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_static_str(name));
    topic.num_partitions = partitions;
    topic.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![topic];
    create.timeout_ms = 10_000;
    loop {
        let r = c.send(5, &create, T).await.unwrap();
        let code = r.topics[0].error_code;
        if code == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "cannot create topic {name}: {code}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One uncompressed batch of `n` records from producer `pid` at `epoch`, sequences from
/// `first_seq` (values `v<seq>`), stamped now.
pub fn producer_batch(pid: i64, epoch: i16, first_seq: i32, n: i32) -> bytes::Bytes {
    use strom_protocol::kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i,
            timestamp: strom_protocol::values::now_ms(),
            key: None,
            value: Some(bytes::Bytes::from(format!("v{}", first_seq + i))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("a plain batch encodes");
    buf.freeze()
}
