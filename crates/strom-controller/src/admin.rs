//! Kafka admin requests forwarded by brokers (KIP-590 style): decoded with the same
//! `kafka-protocol` codecs the broker uses, executed by the [`Controller`], and answered in
//! Kafka's encoding with Kafka's error codes.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use strom_protocol::kafka_protocol::messages::{
    alter_user_scram_credentials_response::AlterUserScramCredentialsResult,
    create_partitions_response::CreatePartitionsTopicResult, create_topics_response::CreatableTopicResult,
    delete_topics_response::DeletableTopicResult, incremental_alter_configs_response::AlterConfigsResourceResponse,
    AlterConfigsRequest, AlterConfigsResponse, AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    TopicName,
};
use strom_protocol::kafka_protocol::messages::{
    create_acls_response, delete_acls_response, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest,
    DeleteAclsResponse,
};
use strom_protocol::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::controller::{Controller, ControllerError, NewTopic};
use strom_metadata::records::{ConfigResource, RESOURCE_BROKER, RESOURCE_TOPIC};

const UNKNOWN_TOPIC_ID: i16 = 100;

/// A forwarded request that could not be handled at all.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("API {0} is not handled by the controller")]
    Unsupported(i16),
    #[error("malformed forwarded request: {0}")]
    Malformed(String),
}

fn name_of(t: &TopicName) -> String {
    t.0.to_string()
}

fn msg(e: &ControllerError) -> Option<StrBytes> {
    Some(StrBytes::from_string(e.to_string()))
}

fn encode<M: Encodable>(m: &M, version: i16) -> Result<Bytes, ForwardError> {
    let mut out = BytesMut::new();
    m.encode(&mut out, version).map_err(|e| ForwardError::Malformed(e.to_string()))?;
    Ok(out.freeze())
}

fn decode<M: Decodable>(mut body: Bytes, version: i16) -> Result<M, ForwardError> {
    M::decode(&mut body, version).map_err(|e| ForwardError::Malformed(e.to_string()))
}

/// Handles one forwarded request; returns the encoded response body and the metadata offset
/// of the change (-1 when nothing was written).
pub async fn handle(
    controller: &Controller,
    api_key: i16,
    version: i16,
    body: Bytes,
) -> Result<(Bytes, i64), ForwardError> {
    match ApiKey::try_from(api_key) {
        Ok(ApiKey::CreateTopics) => create_topics(controller, decode(body, version)?, version).await,
        Ok(ApiKey::DeleteTopics) => delete_topics(controller, decode(body, version)?, version).await,
        Ok(ApiKey::CreatePartitions) => create_partitions(controller, decode(body, version)?, version).await,
        Ok(ApiKey::IncrementalAlterConfigs) => {
            incremental_alter_configs(controller, decode(body, version)?, version).await
        }
        Ok(ApiKey::AlterConfigs) => alter_configs(controller, decode(body, version)?, version).await,
        Ok(ApiKey::AlterUserScramCredentials) => alter_scram(controller, decode(body, version)?, version).await,
        Ok(ApiKey::CreateAcls) => create_acls(controller, decode(body, version)?, version).await,
        Ok(ApiKey::DeleteAcls) => delete_acls(controller, decode(body, version)?, version).await,
        _ => Err(ForwardError::Unsupported(api_key)),
    }
}

/// Kafka's INVALID_REQUEST for a binding or filter that does not parse.
const INVALID_REQUEST: i16 = 42;

async fn create_acls(c: &Controller, req: CreateAclsRequest, version: i16) -> Result<(Bytes, i64), ForwardError> {
    use strom_metadata::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
    let bindings: Vec<Result<AclBinding, String>> = req
        .creations
        .iter()
        .map(|a| {
            Ok(AclBinding {
                resource_type: ResourceType::from_code(a.resource_type)
                    .ok_or(format!("invalid resource type {}", a.resource_type))?,
                resource_name: a.resource_name.to_string(),
                pattern_type: PatternType::from_code(a.resource_pattern_type)
                    .ok_or(format!("invalid pattern type {}", a.resource_pattern_type))?,
                principal: a.principal.to_string(),
                host: a.host.to_string(),
                operation: Operation::from_code(a.operation).ok_or(format!("invalid operation {}", a.operation))?,
                permission: Permission::from_code(a.permission_type)
                    .ok_or(format!("invalid permission type {}", a.permission_type))?,
            })
        })
        .collect();
    let n = bindings.len();
    let (results, offset) = match c.create_acls(bindings).await {
        Ok(r) => r,
        Err(e) => {
            let mut resp = CreateAclsResponse::default();
            for _ in 0..n {
                let mut r = create_acls_response::AclCreationResult::default();
                r.error_code = e.kafka_code();
                r.error_message = msg(&e);
                resp.results.push(r);
            }
            return Ok((encode(&resp, version)?, -1));
        }
    };
    let mut resp = CreateAclsResponse::default();
    for r in results {
        let mut out = create_acls_response::AclCreationResult::default();
        if let Err(e) = r {
            out.error_code = INVALID_REQUEST;
            out.error_message = Some(StrBytes::from_string(e));
        }
        resp.results.push(out);
    }
    Ok((encode(&resp, version)?, offset))
}

async fn delete_acls(c: &Controller, req: DeleteAclsRequest, version: i16) -> Result<(Bytes, i64), ForwardError> {
    use strom_metadata::acl::AclFilter;
    let filters: Vec<Result<AclFilter, String>> = req
        .filters
        .iter()
        .map(|f| {
            AclFilter::from_codes(
                f.resource_type_filter,
                f.resource_name_filter.as_ref().map(|s| s.to_string()),
                f.pattern_type_filter,
                f.principal_filter.as_ref().map(|s| s.to_string()),
                f.host_filter.as_ref().map(|s| s.to_string()),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let n = filters.len();
    let mut resp = DeleteAclsResponse::default();
    let (results, offset) = match c.delete_acls(filters).await {
        Ok(r) => r,
        Err(e) => {
            for _ in 0..n {
                let mut r = delete_acls_response::DeleteAclsFilterResult::default();
                r.error_code = e.kafka_code();
                r.error_message = msg(&e);
                resp.filter_results.push(r);
            }
            return Ok((encode(&resp, version)?, -1));
        }
    };
    for r in results {
        let mut out = delete_acls_response::DeleteAclsFilterResult::default();
        match r {
            Ok(bindings) => {
                for b in bindings {
                    let mut m = delete_acls_response::DeleteAclsMatchingAcl::default();
                    m.resource_type = b.resource_type.code();
                    m.resource_name = StrBytes::from_string(b.resource_name);
                    m.pattern_type = b.pattern_type.code();
                    m.principal = StrBytes::from_string(b.principal);
                    m.host = StrBytes::from_string(b.host);
                    m.operation = b.operation.code();
                    m.permission_type = b.permission.code();
                    out.matching_acls.push(m);
                }
            }
            Err(e) => {
                out.error_code = INVALID_REQUEST;
                out.error_message = Some(StrBytes::from_string(e));
            }
        }
        resp.filter_results.push(out);
    }
    Ok((encode(&resp, version)?, offset))
}

async fn alter_scram(
    c: &Controller,
    req: AlterUserScramCredentialsRequest,
    version: i16,
) -> Result<(Bytes, i64), ForwardError> {
    use crate::controller::scram::ScramChange;
    let mut changes: Vec<ScramChange> = req
        .deletions
        .iter()
        .map(|d| ScramChange::Delete { user: d.name.to_string(), mechanism: d.mechanism })
        .collect();
    changes.extend(req.upsertions.iter().map(|u| ScramChange::Upsert {
        user: u.name.to_string(),
        mechanism: u.mechanism,
        iterations: u.iterations,
        salt: u.salt.to_vec(),
        salted_password: u.salted_password.to_vec(),
    }));
    let users: Vec<String> = {
        let mut seen = Vec::new();
        for c in &changes {
            let u = match c {
                ScramChange::Upsert { user, .. } | ScramChange::Delete { user, .. } => user,
            };
            if !seen.contains(u) {
                seen.push(u.clone());
            }
        }
        seen
    };
    let mut resp = AlterUserScramCredentialsResponse::default();
    let (results, offset) = match c.alter_scram_credentials(changes).await {
        Ok((results, offset)) => (results, offset),
        Err(e) => (users.into_iter().map(|u| (u, e.kafka_code(), Some(e.to_string()))).collect(), -1),
    };
    for (user, code, message) in results {
        let mut r = AlterUserScramCredentialsResult::default();
        r.user = StrBytes::from_string(user);
        r.error_code = code;
        r.error_message = message.map(StrBytes::from_string);
        resp.results.push(r);
    }
    Ok((encode(&resp, version)?, offset))
}

async fn create_topics(c: &Controller, req: CreateTopicsRequest, version: i16) -> Result<(Bytes, i64), ForwardError> {
    let topics: Vec<NewTopic> = req
        .topics
        .iter()
        .map(|t| NewTopic {
            name: name_of(&t.name),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t.assignments.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect(),
            configs: t
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                .collect::<BTreeMap<_, _>>(),
        })
        .collect();
    let (results, offset) = c.create_topics(topics, req.validate_only).await;
    let mut resp = CreateTopicsResponse::default();
    for (t, r) in req.topics.iter().zip(results) {
        let mut out = CreatableTopicResult::default();
        out.name = t.name.clone();
        match r {
            Ok(created) => {
                out.topic_id = created.topic_id;
                out.num_partitions = created.num_partitions;
                out.replication_factor = created.replication_factor;
                out.configs = Some(vec![]);
            }
            Err(e) => {
                out.error_code = e.kafka_code();
                out.error_message = msg(&e);
                out.num_partitions = -1;
                out.replication_factor = -1;
            }
        }
        resp.topics.push(out);
    }
    Ok((encode(&resp, version)?, offset))
}

async fn delete_topics(c: &Controller, req: DeleteTopicsRequest, version: i16) -> Result<(Bytes, i64), ForwardError> {
    // v6+ names topics in `topics` (by name or id); older versions in `topic_names`.
    let image = c.metadata.image();
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => (Some(name_of(n)), image.topics.get(&name_of(n)).map_or(uuid::Uuid::nil(), |t| t.id)),
                None => (image.topic_by_id(&t.topic_id).map(|t| t.name.clone()), t.topic_id),
            })
            .collect()
    } else {
        req.topic_names.iter().map(|n| (Some(name_of(n)), uuid::Uuid::nil())).collect()
    };
    let names: Vec<String> = wanted.iter().map(|(n, id)| n.clone().unwrap_or_else(|| id.to_string())).collect();
    let (results, offset) = c.delete_topics(names.clone()).await;
    let mut resp = DeleteTopicsResponse::default();
    for ((name, id), r) in wanted.iter().zip(results) {
        let mut out = DeletableTopicResult::default();
        out.name = name.clone().map(|n| TopicName(StrBytes::from_string(n)));
        match r {
            Ok(id) => out.topic_id = id,
            // By an id no topic has (v6+): UNKNOWN_TOPIC_ID, as Kafka answers.
            Err(ControllerError::UnknownTopic(_)) if name.is_none() => {
                out.topic_id = *id;
                out.error_code = UNKNOWN_TOPIC_ID;
                out.error_message = Some(StrBytes::from_string(format!("no topic has id {id}")));
            }
            Err(e) => {
                out.error_code = e.kafka_code();
                out.error_message = msg(&e);
            }
        }
        resp.responses.push(out);
    }
    Ok((encode(&resp, version)?, offset))
}

async fn create_partitions(
    c: &Controller,
    req: CreatePartitionsRequest,
    version: i16,
) -> Result<(Bytes, i64), ForwardError> {
    let mut resp = CreatePartitionsResponse::default();
    let mut last_offset = -1;
    for t in &req.topics {
        let mut out = CreatePartitionsTopicResult::default();
        out.name = t.name.clone();
        match c.create_partitions(name_of(&t.name), t.count, req.validate_only).await {
            Ok(o) => last_offset = last_offset.max(o),
            Err(e) => {
                out.error_code = e.kafka_code();
                out.error_message = msg(&e);
            }
        }
        resp.results.push(out);
    }
    Ok((encode(&resp, version)?, last_offset))
}

fn resource(resource_type: i8, name: &str) -> Result<ConfigResource, ControllerError> {
    match resource_type {
        RESOURCE_TOPIC => Ok(ConfigResource::Topic(name.to_string())),
        RESOURCE_BROKER => name
            .parse()
            .map(ConfigResource::Broker)
            .map_err(|_| ControllerError::InvalidRequest(format!("bad broker id {name:?}"))),
        other => Err(ControllerError::InvalidRequest(format!("unsupported resource type {other}"))),
    }
}

async fn incremental_alter_configs(
    c: &Controller,
    req: IncrementalAlterConfigsRequest,
    version: i16,
) -> Result<(Bytes, i64), ForwardError> {
    let mut resp = IncrementalAlterConfigsResponse::default();
    let mut last_offset = -1;
    for r in &req.resources {
        let mut out = AlterConfigsResourceResponse::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        let result = async {
            let res = resource(r.resource_type, &r.resource_name)?;
            let mut changes = Vec::new();
            for cfg in &r.configs {
                let name = cfg.name.to_string();
                let value = cfg.value.as_ref().map(|v| v.to_string());
                match cfg.config_operation {
                    0 => changes.push((name, value)), // SET
                    1 => changes.push((name, None)),  // DELETE
                    op @ (2 | 3) => {
                        let current = list_value(c, &res, &name)?;
                        changes.push((name, Some(append_or_subtract(current, value.as_deref(), op == 2))));
                    }
                    op => return Err(ControllerError::InvalidRequest(format!("unknown config operation {op}"))),
                }
            }
            c.alter_configs(res, changes, false, req.validate_only).await
        }
        .await;
        match result {
            Ok(o) => last_offset = last_offset.max(o),
            Err(e) => {
                out.error_code = e.kafka_code();
                out.error_message = msg(&e);
            }
        }
        resp.responses.push(out);
    }
    Ok((encode(&resp, version)?, last_offset))
}

/// Topic config keys whose values are lists (Kafka's LIST type): APPEND and SUBTRACT apply
/// to them only.
const LIST_KEYS: &[(&str, &str)] = &[("cleanup.policy", "delete")];

/// The current items of list key `name` of `res` (its override, else its default); Kafka's
/// INVALID_CONFIG for APPEND/SUBTRACT on a key that is not a list.
fn list_value(c: &Controller, res: &ConfigResource, name: &str) -> Result<Vec<String>, ControllerError> {
    let (ConfigResource::Topic(topic), Some((_, default))) = (res, LIST_KEYS.iter().find(|(k, _)| *k == name)) else {
        return Err(ControllerError::InvalidConfig(format!(
            "Config value append is not allowed for config key: {name}"
        )));
    };
    let image = c.metadata.image();
    let current = image.topic_configs.get(topic).and_then(|t| t.get(name)).map_or(*default, |v| v.as_str());
    Ok(current.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
}

/// Kafka's APPEND (add the items not yet there) and SUBTRACT (remove them).
fn append_or_subtract(mut items: Vec<String>, value: Option<&str>, append: bool) -> String {
    for v in value.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if append && !items.iter().any(|i| i == v) {
            items.push(v.to_string());
        } else if !append {
            items.retain(|i| i != v);
        }
    }
    items.join(",")
}

async fn alter_configs(c: &Controller, req: AlterConfigsRequest, version: i16) -> Result<(Bytes, i64), ForwardError> {
    use strom_protocol::kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut resp = AlterConfigsResponse::default();
    let mut last_offset = -1;
    for r in &req.resources {
        let mut out = AlterConfigsResourceResponse::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        let result = async {
            let res = resource(r.resource_type, &r.resource_name)?;
            let changes =
                r.configs.iter().map(|cfg| (cfg.name.to_string(), cfg.value.as_ref().map(|v| v.to_string()))).collect();
            c.alter_configs(res, changes, true, req.validate_only).await
        }
        .await;
        match result {
            Ok(o) => last_offset = last_offset.max(o),
            Err(e) => {
                out.error_code = e.kafka_code();
                out.error_message = msg(&e);
            }
        }
        resp.responses.push(out);
    }
    Ok((encode(&resp, version)?, last_offset))
}

#[cfg(test)]
mod tests {
    use super::append_or_subtract;

    fn items(v: &str) -> Vec<String> {
        v.split(',').map(String::from).collect()
    }

    #[test]
    fn append_adds_missing_items_and_subtract_removes_them() {
        assert_eq!(append_or_subtract(items("delete"), Some("compact"), true), "delete,compact");
        assert_eq!(append_or_subtract(items("delete"), Some("delete"), true), "delete");
        assert_eq!(append_or_subtract(items("delete,compact"), Some("delete"), false), "compact");
        assert_eq!(append_or_subtract(items("compact"), Some("delete"), false), "compact");
        assert_eq!(append_or_subtract(items("a"), Some(" b , c "), true), "a,b,c");
    }
}
