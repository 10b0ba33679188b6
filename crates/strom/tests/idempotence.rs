//! The idempotent producer against a running node, speaking Kafka directly: a retried batch
//! is written once and answered with its original offset; a gap in sequences, a new epoch not
//! starting at 0 and an old epoch are refused with Kafka's errors.

use bytes::Bytes;
use strom_client::Connection;
use strom_protocol::kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use strom_protocol::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use strom_protocol::kafka_protocol::messages::*;
use strom_protocol::kafka_protocol::protocol::StrBytes;

mod common;

use common::{producer_batch as batch, start_with_topic, T};

/// Produces one batch; returns (error code, base offset).
async fn produce(c: &mut Connection, records: Bytes) -> (i16, i64) {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("idem"));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![t];
    let resp = c.send(9, &req, T).await.unwrap();
    let r = &resp.responses[0].partition_responses[0];
    (r.error_code, r.base_offset)
}

async fn latest_offset(c: &mut Connection) -> i64 {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_static_str("idem"));
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let resp = c.send(7, &req, T).await.unwrap();
    resp.topics[0].partitions[0].offset
}

#[tokio::test]
async fn retried_batches_are_written_once_and_gaps_are_refused() {
    let (_node, mut c) = start_with_topic(&[], "idem", 1).await;
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = None;
    init.transaction_timeout_ms = 60_000;
    init.producer_id = ProducerId(-1);
    init.producer_epoch = -1;
    let ids = c.send(4, &init, T).await.unwrap();
    assert_eq!(ids.error_code, 0);
    let (pid, epoch) = (ids.producer_id.0, ids.producer_epoch);
    assert!(pid >= 0);

    assert_eq!(produce(&mut c, batch(pid, epoch, 0, 5)).await, (0, 0));
    // The same batch again (a retry after a lost response): same offset, nothing written.
    assert_eq!(produce(&mut c, batch(pid, epoch, 0, 5)).await, (0, 0));
    assert_eq!(latest_offset(&mut c).await, 5);
    // A gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER.
    assert_eq!(produce(&mut c, batch(pid, epoch, 7, 1)).await.0, 45);
    // The next batch in order goes on.
    assert_eq!(produce(&mut c, batch(pid, epoch, 5, 3)).await, (0, 5));
    // A newer epoch must start at 0; an older epoch is fenced.
    assert_eq!(produce(&mut c, batch(pid, epoch + 1, 8, 1)).await.0, 45);
    assert_eq!(produce(&mut c, batch(pid, epoch + 1, 0, 2)).await, (0, 8));
    assert_eq!(produce(&mut c, batch(pid, epoch, 8, 1)).await.0, 47);
    assert_eq!(latest_offset(&mut c).await, 10);
}
