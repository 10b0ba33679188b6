//! Transactions, the partition side (#22), against a running node over Kafka's protocol:
//! WriteTxnMarkers writes commit and abort markers (control batches a consumer never sees as
//! records), refuses markers of an older producer or coordinator epoch with Kafka's errors,
//! and DescribeProducers reports each producer's epoch, last sequence and coordinator epoch.

use bytes::Bytes;
use strom_client::Connection;
use strom_protocol::kafka_protocol::messages::describe_producers_request::TopicRequest;
use strom_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use strom_protocol::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use strom_protocol::kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use strom_protocol::kafka_protocol::messages::*;
use strom_protocol::kafka_protocol::protocol::StrBytes;
use strom_protocol::kafka_protocol::records::RecordBatchDecoder;

mod common;

use common::{producer_batch as batch, start_with_topic, T};

const TOPIC: &str = "markers";

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

async fn produce(c: &mut Connection, records: Bytes) -> i16 {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = topic();
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![t];
    c.send(9, &req, T).await.unwrap().responses[0].partition_responses[0].error_code
}

/// Writes one marker to partition 0; returns its error code.
async fn marker(c: &mut Connection, pid: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> i16 {
    let mut t = WritableTxnMarkerTopic::default();
    t.name = topic();
    t.partition_indexes = vec![0];
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(pid);
    m.producer_epoch = epoch;
    m.transaction_result = commit;
    m.coordinator_epoch = coordinator_epoch;
    m.topics = vec![t];
    let mut req = WriteTxnMarkersRequest::default();
    req.markers = vec![m];
    let resp = c.send(1, &req, T).await.unwrap();
    resp.markers[0].topics[0].partitions[0].error_code
}

/// Fetches partition 0 from offset 0 at `isolation_level`: (high watermark, last stable
/// offset, the data records' values, whether control batches came back).
async fn fetch(c: &mut Connection, isolation_level: i8) -> (i64, i64, Vec<Bytes>, usize) {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = 0;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = topic();
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.max_bytes = 1 << 20;
    req.isolation_level = isolation_level;
    req.topics = vec![t];
    let resp = c.send(12, &req, T).await.unwrap();
    let pd = &resp.responses[0].partitions[0];
    assert_eq!(pd.error_code, 0);
    assert_eq!(pd.aborted_transactions.is_some(), isolation_level == 1, "aborted transactions only at read_committed");
    let mut records = pd.records.clone().unwrap_or_default();
    let sets = RecordBatchDecoder::decode_all(&mut records).unwrap();
    let mut values = Vec::new();
    let mut control = 0;
    for r in sets.iter().flat_map(|s| s.records.iter()) {
        if r.control {
            control += 1;
        } else {
            values.push(r.value.clone().unwrap());
        }
    }
    (pd.high_watermark, pd.last_stable_offset, values, control)
}

async fn producers(c: &mut Connection) -> Vec<(i64, i32, i32, i32, i64)> {
    let mut t = TopicRequest::default();
    t.name = topic();
    t.partition_indexes = vec![0];
    let mut req = DescribeProducersRequest::default();
    req.topics = vec![t];
    let resp = c.send(0, &req, T).await.unwrap();
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.active_producers
        .iter()
        .map(|s| (s.producer_id.0, s.producer_epoch, s.last_sequence, s.coordinator_epoch, s.current_txn_start_offset))
        .collect()
}

#[tokio::test]
async fn markers_are_stored_as_control_batches_and_epochs_are_checked() {
    let (_node, mut c) = start_with_topic(&[], TOPIC, 1).await;
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = None;
    init.transaction_timeout_ms = 60_000;
    init.producer_id = ProducerId(-1);
    init.producer_epoch = -1;
    let ids = c.send(4, &init, T).await.unwrap();
    assert_eq!(ids.error_code, 0);
    let (pid, epoch) = (ids.producer_id.0, ids.producer_epoch);

    assert_eq!(produce(&mut c, batch(pid, epoch, 0, 3)).await, 0); // 0..=2
    assert_eq!(producers(&mut c).await, vec![(pid, epoch as i32, 2, -1, -1)]);
    assert_eq!(marker(&mut c, pid, epoch, true, 5).await, 0); // 3: commit
    assert_eq!(marker(&mut c, pid, epoch, false, 5).await, 0); // 4: abort (nothing open)
    assert_eq!(produce(&mut c, batch(pid, epoch, 3, 1)).await, 0); // 5
    assert_eq!(producers(&mut c).await, vec![(pid, epoch as i32, 3, 5, -1)]);

    // Both isolation levels see the four records and skip the two control batches; nothing
    // is open, so the last stable offset is the high watermark.
    for isolation in [0, 1] {
        let (hw, lso, values, control) = fetch(&mut c, isolation).await;
        assert_eq!((hw, lso), (6, 6));
        assert_eq!(values, [&b"v0"[..], b"v1", b"v2", b"v3"].map(Bytes::from_static));
        assert_eq!(control, 2);
    }

    // An older coordinator epoch, then an older producer epoch, are refused.
    assert_eq!(marker(&mut c, pid, epoch, true, 4).await, 52, "TRANSACTION_COORDINATOR_FENCED");
    assert_eq!(marker(&mut c, pid, epoch - 1, true, 5).await, 47, "INVALID_PRODUCER_EPOCH");
    // A marker with a newer producer epoch moves the producer there: the old epoch is fenced.
    assert_eq!(marker(&mut c, pid, epoch + 1, false, 5).await, 0);
    assert_eq!(produce(&mut c, batch(pid, epoch, 4, 1)).await, 47);
    assert_eq!(fetch(&mut c, 1).await.0, 7);
}
