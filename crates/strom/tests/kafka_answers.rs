//! Requests Kafka 3.9 accepts (or answers with a particular code) that Strom once refused or
//! answered differently, spoken directly to a running node.

mod common;

use common::{start_with_topic, T};
use strom_protocol::kafka_protocol::messages::create_topics_request::CreatableTopic;
use strom_protocol::kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use strom_protocol::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use strom_protocol::kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use strom_protocol::kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use strom_protocol::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use strom_protocol::kafka_protocol::messages::*;
use strom_protocol::kafka_protocol::protocol::StrBytes;

const INVALID_REQUEST: i16 = 42;
const UNKNOWN_TOPIC_ID: i16 = 100;

fn name(s: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(s))
}

#[tokio::test]
async fn requests_kafka_accepts_are_answered_as_kafka_answers_them() {
    let (_node, mut c) = start_with_topic(&["offsets.topic.num.partitions=5", "num.partitions=1"], "answers", 1).await;

    // DescribeConfigs with an empty key list (what kafkajs sends for "all"): every key.
    let mut r = DescribeConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = StrBytes::from_static_str("answers");
    r.configuration_keys = Some(vec![]);
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![r];
    let resp = c.send(4, &req, T).await.unwrap();
    let keys: Vec<String> = resp.results[0].configs.iter().map(|e| e.name.to_string()).collect();
    assert!(keys.contains(&"retention.ms".to_string()) && keys.len() > 5, "{keys:?}");

    // ListOffsets -4 (KIP-1005 earliest local; no tiered storage): the log start offset.
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -4;
    let mut t = ListOffsetsTopic::default();
    t.name = name("answers");
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let resp = c.send(8, &req, T).await.unwrap();
    assert_eq!((resp.topics[0].partitions[0].error_code, resp.topics[0].partitions[0].offset), (0, 0));

    // CreateTopics naming one topic twice: INVALID_REQUEST for both, nothing created.
    let mut twice = CreatableTopic::default();
    twice.name = name("twice");
    twice.num_partitions = 1;
    twice.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![twice.clone(), twice];
    req.timeout_ms = 10_000;
    let resp = c.send(5, &req, T).await.unwrap();
    assert_eq!(resp.topics.iter().map(|t| t.error_code).collect::<Vec<_>>(), vec![INVALID_REQUEST, INVALID_REQUEST]);

    // Metadata v12 and DeleteTopics v6 by an id no topic has: UNKNOWN_TOPIC_ID, null name.
    let unknown = uuid::Uuid::from_u128(0x5707);
    let mut mt = MetadataRequestTopic::default();
    mt.topic_id = unknown;
    mt.name = None;
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![mt]);
    let resp = c.send(12, &req, T).await.unwrap();
    assert_eq!(resp.topics.len(), 1);
    assert_eq!((resp.topics[0].error_code, resp.topics[0].name.is_none()), (UNKNOWN_TOPIC_ID, true));
    assert!(!resp.topics.iter().any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "twice")));
    let mut dt = DeleteTopicState::default();
    dt.topic_id = unknown;
    dt.name = None;
    let mut req = DeleteTopicsRequest::default();
    req.topics = vec![dt];
    req.timeout_ms = 10_000;
    let resp = c.send(6, &req, T).await.unwrap();
    assert_eq!(resp.responses[0].error_code, UNKNOWN_TOPIC_ID);

    // Metadata naming __consumer_offsets before it exists auto-creates it with the offsets
    // topic's partition count (which decides each group's coordinator), not num.partitions.
    let mut mt = MetadataRequestTopic::default();
    mt.name = Some(name("__consumer_offsets"));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![mt]);
    req.allow_auto_topic_creation = true;
    let resp = c.send(9, &req, T).await.unwrap();
    assert_eq!(resp.topics[0].partitions.len(), 5, "{:?}", resp.topics[0].error_code);

    // IncrementalAlterConfigs APPEND to a list key adds what is missing (the default
    // "delete" stays one item); APPEND to a key that is not a list is INVALID_CONFIG.
    let alter = |key: &'static str, value: &'static str| {
        let mut cfg = AlterableConfig::default();
        cfg.name = StrBytes::from_static_str(key);
        cfg.config_operation = 2;
        cfg.value = Some(StrBytes::from_static_str(value));
        let mut r = AlterConfigsResource::default();
        r.resource_type = 2;
        r.resource_name = StrBytes::from_static_str("answers");
        r.configs = vec![cfg];
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources = vec![r];
        req
    };
    let resp = c.send(1, &alter("cleanup.policy", "delete"), T).await.unwrap();
    assert_eq!(resp.responses[0].error_code, 0, "{:?}", resp.responses[0].error_message);
    let resp = c.send(1, &alter("retention.ms", "5"), T).await.unwrap();
    assert_eq!(resp.responses[0].error_code, 40);
    let mut r = DescribeConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = StrBytes::from_static_str("answers");
    r.configuration_keys = Some(vec![StrBytes::from_static_str("cleanup.policy")]);
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![r];
    let resp = c.send(4, &req, T).await.unwrap();
    let value = resp.results[0].configs[0].value.as_ref().map(|v| v.to_string());
    assert_eq!(value.as_deref(), Some("delete"));
}
