//! Metadata: brokers (their endpoint on the listener the client used), topics and partition
//! leadership from this broker's image, with auto topic creation when allowed.

use std::time::Duration;

use strom_metadata::image::MetadataImage;
use strom_protocol::kafka_protocol::messages::create_topics_request::CreatableTopic;
use strom_protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use strom_protocol::kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, MetadataRequest, MetadataResponse, RequestKind,
};

use super::access::{Access, TOPIC_AUTHORIZATION_FAILED};
use super::Broker;
use strom_metadata::acl::Operation;
use strom_protocol::values::{str_bytes, topic_name};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const UNKNOWN_TOPIC_ID: i16 = 100;

pub(super) async fn handle(
    b: &Broker,
    a: &Access<'_>,
    req: &MetadataRequest,
    version: i16,
    listener: &str,
) -> MetadataResponse {
    let mut image = b.image();
    // Topics asked for by an id this broker does not know are answered UNKNOWN_TOPIC_ID with a
    // null name (v12+), as Kafka does.
    let unknown_ids: Vec<uuid::Uuid> = req.topics.as_ref().map_or_else(Vec::new, |ts| {
        ts.iter().filter(|t| t.name.is_none() && image.topic_by_id(&t.topic_id).is_none()).map(|t| t.topic_id).collect()
    });
    let wanted: Option<Vec<String>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .filter_map(|t| match &t.name {
                Some(n) => Some(n.0.to_string()),
                None => image.topic_by_id(&t.topic_id).map(|t| t.name.clone()),
            })
            .collect()
    });
    // v0 has no allow flag: an empty list means all topics there, and auto-creation is allowed.
    let allow_auto = version < 4 || req.allow_auto_topic_creation;
    // As Kafka: a topic the principal may not describe is TOPIC_AUTHORIZATION_FAILED whether
    // it exists or not; auto-creation needs CREATE on the cluster or the topic.
    let may_describe = |n: &str| a.may_topic(Operation::Describe, n);
    let may_create = |n: &str| a.may_cluster(Operation::Create) || a.may_topic(Operation::Create, n);
    if let Some(names) = &wanted {
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !n.is_empty() && !image.topics.contains_key(*n))
            .filter(|n| strom_metadata::topic_config::validate_topic_name(n).is_ok())
            .filter(|n| may_describe(n) && may_create(n))
            .collect();
        if !missing.is_empty() && allow_auto && b.settings.auto_create_topics_enable {
            auto_create(b, &missing).await;
            image = b.image();
        }
    }
    let mut resp = MetadataResponse::default();
    resp.cluster_id = image.cluster_id.as_deref().map(str_bytes);
    resp.controller_id = BrokerId(b.settings.node_id);
    resp.brokers = image
        .live_brokers()
        .filter_map(|br| {
            let ep = br.endpoint(listener)?;
            let mut m = MetadataResponseBroker::default();
            m.node_id = BrokerId(br.id);
            m.host = str_bytes(&ep.host);
            m.port = ep.port as i32;
            m.rack = br.rack.as_deref().map(str_bytes);
            Some(m)
        })
        .collect();
    let all_described = || image.topics.keys().filter(|n| may_describe(n)).map(|n| topic(&image, n)).collect();
    match wanted {
        None => resp.topics = all_described(),
        Some(names) if names.is_empty() && version == 0 => resp.topics = all_described(),
        Some(names) => {
            resp.topics = names
                .iter()
                .map(|n| {
                    let exists = image.topics.contains_key(n);
                    if !may_describe(n)
                        || (!exists && allow_auto && b.settings.auto_create_topics_enable && !may_create(n))
                    {
                        let mut t = MetadataResponseTopic::default();
                        t.name = Some(topic_name(n));
                        t.error_code = TOPIC_AUTHORIZATION_FAILED;
                        t
                    } else {
                        topic(&image, n)
                    }
                })
                .collect()
        }
    }
    for id in unknown_ids {
        let mut t = MetadataResponseTopic::default();
        // The name is nullable from v12; below, an empty one keeps the response encodable.
        t.name = if version >= 12 { None } else { Some(topic_name("")) };
        t.topic_id = id;
        t.error_code = UNKNOWN_TOPIC_ID;
        resp.topics.push(t);
    }
    resp
}

fn topic(image: &MetadataImage, name: &str) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(topic_name(name));
    let Some(ti) = image.topics.get(name) else {
        t.error_code = if strom_metadata::topic_config::validate_topic_name(name).is_ok() {
            UNKNOWN_TOPIC_OR_PARTITION
        } else {
            INVALID_TOPIC_EXCEPTION
        };
        return t;
    };
    t.topic_id = ti.id;
    t.is_internal = name.starts_with("__");
    t.partitions = ti
        .partitions
        .iter()
        .map(|(idx, p)| {
            let mut m = MetadataResponsePartition::default();
            m.partition_index = *idx;
            m.leader_id = BrokerId(p.leader);
            m.leader_epoch = p.leader_epoch;
            m.error_code = if p.leader == -1 { LEADER_NOT_AVAILABLE } else { 0 };
            m.replica_nodes = p.replicas.iter().map(|r| BrokerId(*r)).collect();
            m.isr_nodes = p.isr.iter().map(|r| BrokerId(*r)).collect();
            m.offline_replicas = p
                .replicas
                .iter()
                .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                .map(|r| BrokerId(*r))
                .collect();
            m
        })
        .collect();
    t
}

/// Creates missing topics with the broker's defaults (through the controller) and waits
/// for them to appear in our image.
async fn auto_create(b: &Broker, names: &[&String]) {
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 5000;
    req.topics = names
        .iter()
        .map(|n| {
            let mut t = CreatableTopic::default();
            t.name = topic_name(n);
            // The offsets topic has its own settings (as Kafka's auto-creation gives it): its
            // partition count decides which broker coordinates each group.
            if n.as_str() == crate::coordinator::group::offsets::OFFSETS_TOPIC {
                t.num_partitions = b.settings.offsets_topic_num_partitions;
                t.replication_factor = b.settings.offsets_topic_replication_factor;
                t.configs = super::groups::offsets_topic_creatable_configs(b);
            } else {
                t.num_partitions = b.settings.num_partitions;
                t.replication_factor = b.settings.default_replication_factor;
            }
            t
        })
        .collect();
    match b.forward(ApiKey::CreateTopics, 5, &RequestKind::CreateTopics(req)).await {
        Ok(_) => {
            let mut rx = b.lifecycle.subscribe();
            let all_there = rx.wait_for(|img| names.iter().all(|n| img.topics.contains_key(*n)));
            let _ = tokio::time::timeout(Duration::from_secs(5), all_there).await;
            tracing::info!(node = b.settings.node_id, topics = ?names, "auto-created topics");
        }
        Err(e) => tracing::warn!(node = b.settings.node_id, error = %e, "auto topic creation failed"),
    }
}
