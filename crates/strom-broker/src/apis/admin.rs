//! Admin APIs answered by the broker itself: DescribeConfigs (values, sources, synonyms),
//! DescribeCluster, DescribeLogDirs, InitProducerId, and the error answers for forwarded
//! admin requests whose controller could not be reached.

use strom_protocol::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use strom_protocol::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use strom_protocol::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use strom_protocol::kafka_protocol::messages::*;

use super::access::{Access, CLUSTER_AUTHORIZATION_FAILED, SECURITY_DISABLED, TOPIC_AUTHORIZATION_FAILED};
use super::{Broker, ErasedEncodable};
use strom_metadata::acl::{Operation, ResourceType};
use strom_protocol::values::{str_bytes, topic_name};

const REQUEST_TIMED_OUT: i16 = 7;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUEST: i16 = 42;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// Kafka's config sources (DescribeConfigs).
pub mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

fn entry(name: &str, value: &str, src: i8, synonyms: Vec<DescribeConfigsSynonym>) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(name);
    // A secret is described, never shown (as Kafka's password keys).
    e.is_sensitive = strom_security::is_sensitive(name);
    e.value = (!e.is_sensitive).then(|| str_bytes(value));
    e.config_source = src;
    e.synonyms = synonyms;
    e
}

fn synonym(name: &str, value: &str, src: i8) -> DescribeConfigsSynonym {
    let mut s = DescribeConfigsSynonym::default();
    s.name = str_bytes(name);
    s.value = Some(str_bytes(value));
    s.source = src;
    s
}

pub(super) fn describe_configs(b: &Broker, a: &Access<'_>, req: &DescribeConfigsRequest) -> DescribeConfigsResponse {
    let image = b.image();
    let mut resp = DescribeConfigsResponse::default();
    for r in &req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        // Null or empty: every key (Kafka's rule; kafkajs sends an empty list for "all").
        let wanted = |k: &str| {
            r.configuration_keys.as_ref().is_none_or(|ks| ks.is_empty() || ks.iter().any(|w| w.as_str() == k))
        };
        match r.resource_type {
            strom_metadata::records::RESOURCE_TOPIC => {
                let topic = r.resource_name.as_str();
                if !a.may_topic(Operation::DescribeConfigs, topic) {
                    out.error_code = TOPIC_AUTHORIZATION_FAILED;
                } else if !image.topics.contains_key(topic) {
                    out.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                    out.error_message = Some(str_bytes(&format!("topic {topic} does not exist")));
                } else {
                    let overrides = image.topic_configs.get(topic);
                    for key in strom_metadata::topic_config::TOPIC_KEYS {
                        if !wanted(key.name) {
                            continue;
                        }
                        let Some((default, default_src)) = b.settings.topic_defaults.get(key.name) else { continue };
                        let mut synonyms = Vec::new();
                        let over = overrides.and_then(|o| o.get(key.name));
                        if req.include_synonyms {
                            if let Some(v) = over {
                                synonyms.push(synonym(key.name, v, source::DYNAMIC_TOPIC_CONFIG));
                            }
                            synonyms.push(synonym(key.broker_key, default, *default_src));
                        }
                        out.configs.push(match over {
                            Some(v) => entry(key.name, v, source::DYNAMIC_TOPIC_CONFIG, synonyms),
                            None => entry(key.name, default, *default_src, synonyms),
                        });
                    }
                }
            }
            strom_metadata::records::RESOURCE_BROKER => {
                if !a.may_cluster(Operation::DescribeConfigs) {
                    out.error_code = CLUSTER_AUTHORIZATION_FAILED;
                } else if r.resource_name.as_str() != b.settings.node_id.to_string() && !r.resource_name.is_empty() {
                    out.error_code = INVALID_REQUEST;
                    out.error_message = Some(str_bytes("DescribeConfigs for a broker goes to that broker"));
                } else {
                    let dynamic = image.broker_configs.get(&b.settings.node_id);
                    let in_effect = |k: &str| crate::dynamic_config::in_effect(&b.settings.listener_tls, k);
                    for (k, (v, src)) in &b.settings.broker_configs {
                        if !wanted(k) {
                            continue;
                        }
                        // Only dynamic keys in effect (crate::dynamic_config) are shown.
                        match dynamic.and_then(|d| d.get(k)).filter(|_| in_effect(k)) {
                            Some(dv) => out.configs.push(entry(k, dv, source::DYNAMIC_BROKER_CONFIG, vec![])),
                            None => out.configs.push(entry(k, v, *src, vec![])),
                        }
                    }
                    // Dynamic keys the node's configuration does not have (a listener's new
                    // keystore).
                    for (k, dv) in dynamic.into_iter().flatten() {
                        if wanted(k) && in_effect(k) && !b.settings.broker_configs.contains_key(k) {
                            out.configs.push(entry(k, dv, source::DYNAMIC_BROKER_CONFIG, vec![]));
                        }
                    }
                }
            }
            other => {
                out.error_code = INVALID_REQUEST;
                out.error_message = Some(str_bytes(&format!("unsupported resource type {other}")));
            }
        }
        resp.results.push(out);
    }
    resp
}

pub(super) fn describe_cluster(b: &Broker, _req: &DescribeClusterRequest, listener: &str) -> DescribeClusterResponse {
    let image = b.image();
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(image.cluster_id.as_deref().unwrap_or_default());
    resp.controller_id = BrokerId(b.settings.node_id);
    resp.endpoint_type = 1;
    resp.brokers = image
        .live_brokers()
        .filter_map(|br| {
            let ep = br.endpoint(listener)?;
            let mut d = DescribeClusterBroker::default();
            d.broker_id = BrokerId(br.id);
            d.host = str_bytes(&ep.host);
            d.port = ep.port as i32;
            d.rack = br.rack.as_deref().map(str_bytes);
            Some(d)
        })
        .collect();
    resp
}

pub(super) fn describe_log_dirs(b: &Broker, a: &Access<'_>, req: &DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    if !a.may_cluster(Operation::Describe) {
        let mut resp = DescribeLogDirsResponse::default();
        resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
        return resp;
    }
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = str_bytes(&b.replicas.log_dir().display().to_string());
    result.total_bytes = -1;
    result.usable_bytes = -1;
    let mut topics: std::collections::BTreeMap<String, Vec<DescribeLogDirsPartition>> = Default::default();
    for p in b.replicas.all() {
        let wanted = req.topics.as_ref().is_none_or(|ts| {
            ts.iter().any(|t| t.topic.0.as_str() == p.tp.topic && t.partitions.contains(&p.tp.partition))
        });
        if !wanted {
            continue;
        }
        let mut d = DescribeLogDirsPartition::default();
        d.partition_index = p.tp.partition;
        d.partition_size = p.with_log(|l| l.size_bytes()) as i64;
        d.offset_lag = 0;
        topics.entry(p.tp.topic.clone()).or_default().push(d);
    }
    result.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = DescribeLogDirsTopic::default();
            t.name = topic_name(&name);
            t.partitions = partitions;
            t
        })
        .collect();
    let mut resp = DescribeLogDirsResponse::default();
    resp.results = vec![result];
    resp
}

pub(super) async fn init_producer_id(
    b: &Broker,
    a: &Access<'_>,
    req: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    // (With a transactional id: transactions::init_transactional_producer_id.)
    // An idempotent producer: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (KIP-679).
    if !a.may_cluster(Operation::IdempotentWrite) && !a.may_some(Operation::Write, ResourceType::Topic) {
        resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
        return resp;
    }
    match b.next_producer_id().await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
            // A client re-initialising a producer it already had (KIP-360: librdkafka does
            // this to recover from an unknown sequence state) gets a new id; its resends are
            // then a new producer to the broker, so worth a line when chasing duplicates.
            if req.producer_id.0 >= 0 {
                tracing::info!(
                    node = b.settings.node_id,
                    old_producer_id = req.producer_id.0,
                    old_epoch = req.producer_epoch,
                    producer_id = id,
                    "idempotent producer re-initialised: new producer id"
                );
            }
        }
        Err(e) => {
            tracing::warn!(node = b.settings.node_id, error = %e, "cannot allocate a producer id");
            resp.error_code = COORDINATOR_NOT_AVAILABLE;
        }
    }
    resp
}

/// The answer to a forwarded admin request when no controller could be reached: every
/// topic or resource gets REQUEST_TIMED_OUT (retriable), as Kafka answers a timed-out
/// controller call.
pub(super) fn forward_failed(body: &RequestKind) -> Box<dyn ErasedEncodable + Send> {
    match body {
        RequestKind::CreateTopics(r) => {
            let mut resp = CreateTopicsResponse::default();
            resp.topics = r
                .topics
                .iter()
                .map(|t| {
                    let mut o = create_topics_response::CreatableTopicResult::default();
                    o.name = t.name.clone();
                    o.error_code = REQUEST_TIMED_OUT;
                    o
                })
                .collect();
            Box::new(resp)
        }
        RequestKind::DeleteTopics(r) => {
            let mut resp = DeleteTopicsResponse::default();
            let names = r.topic_names.iter().cloned().map(Some).chain(r.topics.iter().map(|t| t.name.clone()));
            resp.responses = names
                .map(|n| {
                    let mut o = delete_topics_response::DeletableTopicResult::default();
                    o.name = n;
                    o.error_code = REQUEST_TIMED_OUT;
                    o
                })
                .collect();
            Box::new(resp)
        }
        RequestKind::CreatePartitions(r) => {
            let mut resp = CreatePartitionsResponse::default();
            resp.results = r
                .topics
                .iter()
                .map(|t| {
                    let mut o = create_partitions_response::CreatePartitionsTopicResult::default();
                    o.name = t.name.clone();
                    o.error_code = REQUEST_TIMED_OUT;
                    o
                })
                .collect();
            Box::new(resp)
        }
        RequestKind::AlterConfigs(r) => {
            let mut resp = AlterConfigsResponse::default();
            resp.responses = r
                .resources
                .iter()
                .map(|x| {
                    let mut o = alter_configs_response::AlterConfigsResourceResponse::default();
                    o.resource_type = x.resource_type;
                    o.resource_name = x.resource_name.clone();
                    o.error_code = REQUEST_TIMED_OUT;
                    o
                })
                .collect();
            Box::new(resp)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            let mut resp = IncrementalAlterConfigsResponse::default();
            resp.responses = r
                .resources
                .iter()
                .map(|x| {
                    let mut o = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                    o.resource_type = x.resource_type;
                    o.resource_name = x.resource_name.clone();
                    o.error_code = REQUEST_TIMED_OUT;
                    o
                })
                .collect();
            Box::new(resp)
        }
        RequestKind::CreateAcls(r) => {
            let mut resp = CreateAclsResponse::default();
            for _ in &r.creations {
                let mut o = create_acls_response::AclCreationResult::default();
                o.error_code = REQUEST_TIMED_OUT;
                resp.results.push(o);
            }
            Box::new(resp)
        }
        RequestKind::DeleteAcls(r) => {
            let mut resp = DeleteAclsResponse::default();
            for _ in &r.filters {
                let mut o = delete_acls_response::DeleteAclsFilterResult::default();
                o.error_code = REQUEST_TIMED_OUT;
                resp.filter_results.push(o);
            }
            Box::new(resp)
        }
        RequestKind::AlterUserScramCredentials(r) => {
            let mut resp = AlterUserScramCredentialsResponse::default();
            let users = r.deletions.iter().map(|d| &d.name).chain(r.upsertions.iter().map(|u| &u.name));
            for user in users {
                if resp.results.iter().any(|x| x.user == *user) {
                    continue;
                }
                let mut o = alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default();
                o.user = user.clone();
                o.error_code = REQUEST_TIMED_OUT;
                resp.results.push(o);
            }
            Box::new(resp)
        }
        _ => Box::new(ApiVersionsResponse::default()),
    }
}

/// DescribeUserScramCredentials (KIP-554): each user's mechanisms and iterations (never the
/// keys), from this broker's image; every user when none is named. A named user without
/// credentials is RESOURCE_NOT_FOUND; one named twice, DUPLICATE_RESOURCE.
pub(super) fn describe_user_scram_credentials(
    b: &Broker,
    a: &Access<'_>,
    req: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !a.may_cluster(Operation::Describe) {
        let mut resp = DescribeUserScramCredentialsResponse::default();
        resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
        resp.error_message = Some(str_bytes("DESCRIBE on the cluster is needed"));
        return resp;
    }
    use describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
    const RESOURCE_NOT_FOUND: i16 = 91;
    const DUPLICATE_RESOURCE: i16 = 92;
    let image = b.image();
    let mut resp = DescribeUserScramCredentialsResponse::default();
    let names: Vec<String> = match &req.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        _ => image.scram_credentials.keys().cloned().collect(),
    };
    for (i, name) in names.iter().enumerate() {
        let mut r = DescribeUserScramCredentialsResult::default();
        r.user = str_bytes(name);
        if names[..i].contains(name) || names[i + 1..].contains(name) {
            if names[..i].contains(name) {
                continue;
            }
            r.error_code = DUPLICATE_RESOURCE;
            r.error_message =
                Some(str_bytes(&format!("Cannot describe SCRAM credentials for the same user twice: {name}")));
        } else if let Some(creds) = image.scram_credentials.get(name) {
            for (mechanism, c) in creds {
                let mut info = CredentialInfo::default();
                info.mechanism =
                    strom_security::sasl::ScramMechanism::from_name(mechanism).map_or(0, |m| m.kafka_type());
                info.iterations = c.iterations as i32;
                r.credential_infos.push(info);
            }
        } else {
            r.error_code = RESOURCE_NOT_FOUND;
            r.error_message =
                Some(str_bytes(&format!("Attempt to describe a user credential that does not exist: {name}")));
        }
        resp.results.push(r);
    }
    resp
}

/// SaslHandshake on a listener without SASL: ILLEGAL_SASL_STATE, as Kafka's KafkaApis.
pub(super) fn sasl_handshake_without_sasl() -> SaslHandshakeResponse {
    let mut resp = SaslHandshakeResponse::default();
    resp.error_code = crate::authenticator::ILLEGAL_SASL_STATE;
    resp
}

/// SaslAuthenticate on a listener without SASL: ILLEGAL_SASL_STATE, as Kafka's KafkaApis.
pub(super) fn sasl_authenticate_without_sasl() -> SaslAuthenticateResponse {
    let mut resp = SaslAuthenticateResponse::default();
    resp.error_code = crate::authenticator::ILLEGAL_SASL_STATE;
    resp.error_message = Some(str_bytes("SaslAuthenticate request received on a listener without SASL"));
    resp
}

/// DescribeAcls: the ACLs of this broker's image that the filter matches, grouped by resource.
/// SECURITY_DISABLED without an authorizer; DESCRIBE on the cluster is needed.
pub(super) fn describe_acls(a: &Access<'_>, b: &Broker, req: &DescribeAclsRequest) -> DescribeAclsResponse {
    use describe_acls_response::{AclDescription, DescribeAclsResource};
    let mut resp = DescribeAclsResponse::default();
    if !a.enabled() {
        resp.error_code = SECURITY_DISABLED;
        resp.error_message = Some(str_bytes("No Authorizer is configured on the broker"));
        return resp;
    }
    if !a.may_cluster(Operation::Describe) {
        resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
        return resp;
    }
    let filter = match strom_metadata::acl::AclFilter::from_codes(
        req.resource_type_filter,
        req.resource_name_filter.as_ref().map(|s| s.to_string()),
        req.pattern_type_filter,
        req.principal_filter.as_ref().map(|s| s.to_string()),
        req.host_filter.as_ref().map(|s| s.to_string()),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(e) => {
            resp.error_code = INVALID_REQUEST;
            resp.error_message = Some(str_bytes(&e));
            return resp;
        }
    };
    let image = b.image();
    let mut by_resource: std::collections::BTreeMap<(i8, String, i8), Vec<AclDescription>> = Default::default();
    for acl in image.acls.iter().filter(|x| filter.matches(x)) {
        let mut d = AclDescription::default();
        d.principal = str_bytes(&acl.principal);
        d.host = str_bytes(&acl.host);
        d.operation = acl.operation.code();
        d.permission_type = acl.permission.code();
        by_resource
            .entry((acl.resource_type.code(), acl.resource_name.clone(), acl.pattern_type.code()))
            .or_default()
            .push(d);
    }
    resp.resources = by_resource
        .into_iter()
        .map(|((rt, name, pt), acls)| {
            let mut r = DescribeAclsResource::default();
            r.resource_type = rt;
            r.resource_name = str_bytes(&name);
            r.pattern_type = pt;
            r.acls = acls;
            r
        })
        .collect();
    resp
}
