//! Admin requests the controller executes (CreateTopics, DeleteTopics, CreatePartitions,
//! AlterConfigs, IncrementalAlterConfigs, AlterUserScramCredentials, CreateAcls, DeleteAcls):
//! authorized here, per resource, then forwarded without the refused resources; the refused
//! ones are added to the controller's answer with Kafka's authorization error. (The controller
//! trusts its brokers: authorization is the broker's, as for every other API.)

use bytes::{Bytes, BytesMut};
use strom_metadata::acl::Operation;
use strom_protocol::frame;
use strom_protocol::kafka_protocol::messages::*;
use strom_protocol::kafka_protocol::protocol::{Decodable, Encodable};
use strom_protocol::values::str_bytes;

use super::access::{Access, CLUSTER_AUTHORIZATION_FAILED, SECURITY_DISABLED, TOPIC_AUTHORIZATION_FAILED};
use super::{admin, Broker, RequestError};

/// What was refused, to add to the answer.
enum Refused {
    /// Topic names (CreateTopics, DeleteTopics by name, CreatePartitions).
    Topics(Vec<StrBytes>),
    /// Config resources: (type, name, code, message).
    Configs(Vec<(i8, StrBytes, i16, Option<String>)>),
    /// The whole request, with this code (cluster-level APIs).
    All(i16),
}

use strom_protocol::kafka_protocol::protocol::StrBytes;

/// Splits `body` into what `a` may do (forwarded) and what it may not (or what this broker
/// refuses: a dynamic broker config it cannot apply, [`crate::dynamic_config`]).
fn split(b: &Broker, a: &Access<'_>, body: RequestKind) -> (RequestKind, Refused) {
    let topic_ok = |op: Operation, t: &TopicName| a.may_topic(op, t.0.as_str());
    match body {
        RequestKind::CreateTopics(mut r) => {
            let cluster = a.may_cluster(Operation::Create);
            let (ok, no): (Vec<_>, Vec<_>) =
                r.topics.drain(..).partition(|t| cluster || topic_ok(Operation::Create, &t.name));
            r.topics = ok;
            (RequestKind::CreateTopics(r), Refused::Topics(no.into_iter().map(|t| t.name.0).collect()))
        }
        RequestKind::DeleteTopics(mut r) => {
            let mut refused = Vec::new();
            r.topic_names.retain(|t| {
                topic_ok(Operation::Delete, t) || {
                    refused.push(t.0.clone());
                    false
                }
            });
            r.topics.retain(|t| match &t.name {
                Some(n) if !topic_ok(Operation::Delete, n) => {
                    refused.push(n.0.clone());
                    false
                }
                _ => true,
            });
            (RequestKind::DeleteTopics(r), Refused::Topics(refused))
        }
        RequestKind::CreatePartitions(mut r) => {
            let (ok, no): (Vec<_>, Vec<_>) = r.topics.drain(..).partition(|t| topic_ok(Operation::Alter, &t.name));
            r.topics = ok;
            (RequestKind::CreatePartitions(r), Refused::Topics(no.into_iter().map(|t| t.name.0).collect()))
        }
        RequestKind::AlterConfigs(mut r) => {
            let mut refused = Vec::new();
            r.resources.retain(|x| {
                let changes: Vec<(String, Option<String>)> =
                    x.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))).collect();
                let why = config_refusal(b, a, x.resource_type, x.resource_name.as_str(), Ok(&changes), true);
                why.map(|(c, m)| refused.push((x.resource_type, x.resource_name.clone(), c, m))).is_none()
            });
            (RequestKind::AlterConfigs(r), Refused::Configs(refused))
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            let mut refused = Vec::new();
            r.resources.retain(|x| {
                // SET (0) and DELETE (1); APPEND and SUBTRACT are for list keys (topics only).
                let changes: Result<Vec<(String, Option<String>)>, String> = x
                    .configs
                    .iter()
                    .map(|c| match c.config_operation {
                        0 => Ok((c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))),
                        1 => Ok((c.name.to_string(), None)),
                        op => Err(format!(
                            "Config value append is not allowed for config key: {} (operation {op})",
                            c.name.as_str()
                        )),
                    })
                    .collect();
                let why = config_refusal(b, a, x.resource_type, x.resource_name.as_str(), changes.as_deref(), false);
                why.map(|(c, m)| refused.push((x.resource_type, x.resource_name.clone(), c, m))).is_none()
            });
            (RequestKind::IncrementalAlterConfigs(r), Refused::Configs(refused))
        }
        body @ (RequestKind::CreateAcls(_) | RequestKind::DeleteAcls(_)) if !a.enabled() => {
            (body, Refused::All(SECURITY_DISABLED))
        }
        body => {
            let code = if a.may_cluster(Operation::Alter) { 0 } else { CLUSTER_AUTHORIZATION_FAILED };
            (body, Refused::All(code))
        }
    }
}

/// ALTER_CONFIGS on the topic, or on the cluster for a broker resource, and for a broker
/// resource the dynamic-config rules ([`crate::dynamic_config`]); `Some((code, message))` if
/// refused.
fn config_refusal(
    b: &Broker,
    a: &Access<'_>,
    resource_type: i8,
    name: &str,
    changes: Result<&[(String, Option<String>)], &String>,
    replace: bool,
) -> Option<(i16, Option<String>)> {
    match resource_type {
        strom_metadata::records::RESOURCE_TOPIC => {
            (!a.may_topic(Operation::AlterConfigs, name)).then_some((TOPIC_AUTHORIZATION_FAILED, None))
        }
        _ if !a.may_cluster(Operation::AlterConfigs) => Some((CLUSTER_AUTHORIZATION_FAILED, None)),
        strom_metadata::records::RESOURCE_BROKER => {
            let s = &b.settings;
            changes
                .map_err(String::clone)
                .and_then(|c| crate::dynamic_config::check(s.node_id, &s.listener_tls, &b.image(), name, c, replace))
                .err()
                .map(|why| (crate::dynamic_config::INVALID_REQUEST, Some(why)))
        }
        _ => None,
    }
}

fn nothing_left(body: &RequestKind) -> bool {
    match body {
        RequestKind::CreateTopics(r) => r.topics.is_empty(),
        RequestKind::DeleteTopics(r) => r.topic_names.is_empty() && r.topics.is_empty(),
        RequestKind::CreatePartitions(r) => r.topics.is_empty(),
        RequestKind::AlterConfigs(r) => r.resources.is_empty(),
        RequestKind::IncrementalAlterConfigs(r) => r.resources.is_empty(),
        _ => false,
    }
}

fn decode<M: Decodable + Default>(body: &[u8], version: i16) -> M {
    let mut b = Bytes::copy_from_slice(body);
    M::decode(&mut b, version).unwrap_or_default()
}

fn encode<M: Encodable>(m: &M, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    // Our own response types at a version the decoder accepted encode.
    let _ = m.encode(&mut out, version);
    out.freeze()
}

/// Adds the refused resources to a response body (`controller` is the controller's answer
/// for the rest, or empty when nothing was forwarded).
fn add_refused(api_key: ApiKey, version: i16, controller: &[u8], refused: &Refused) -> Bytes {
    match (api_key, refused) {
        (ApiKey::CreateTopics, Refused::Topics(names)) => {
            let mut r: CreateTopicsResponse = decode(controller, version);
            for n in names {
                let mut t = create_topics_response::CreatableTopicResult::default();
                t.name = TopicName(n.clone());
                t.error_code = TOPIC_AUTHORIZATION_FAILED;
                r.topics.push(t);
            }
            encode(&r, version)
        }
        (ApiKey::DeleteTopics, Refused::Topics(names)) => {
            let mut r: DeleteTopicsResponse = decode(controller, version);
            for n in names {
                let mut t = delete_topics_response::DeletableTopicResult::default();
                t.name = Some(TopicName(n.clone()));
                t.error_code = TOPIC_AUTHORIZATION_FAILED;
                r.responses.push(t);
            }
            encode(&r, version)
        }
        (ApiKey::CreatePartitions, Refused::Topics(names)) => {
            let mut r: CreatePartitionsResponse = decode(controller, version);
            for n in names {
                let mut t = create_partitions_response::CreatePartitionsTopicResult::default();
                t.name = TopicName(n.clone());
                t.error_code = TOPIC_AUTHORIZATION_FAILED;
                r.results.push(t);
            }
            encode(&r, version)
        }
        (ApiKey::AlterConfigs, Refused::Configs(rs)) => {
            let mut r: AlterConfigsResponse = decode(controller, version);
            for (rt, name, code, message) in rs {
                let mut x = alter_configs_response::AlterConfigsResourceResponse::default();
                x.resource_type = *rt;
                x.resource_name = name.clone();
                x.error_code = *code;
                x.error_message = message.as_deref().map(str_bytes);
                r.responses.push(x);
            }
            encode(&r, version)
        }
        (ApiKey::IncrementalAlterConfigs, Refused::Configs(rs)) => {
            let mut r: IncrementalAlterConfigsResponse = decode(controller, version);
            for (rt, name, code, message) in rs {
                let mut x = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                x.resource_type = *rt;
                x.resource_name = name.clone();
                x.error_code = *code;
                x.error_message = message.as_deref().map(str_bytes);
                r.responses.push(x);
            }
            encode(&r, version)
        }
        _ => Bytes::copy_from_slice(controller),
    }
}

/// The whole request refused with `code` (cluster-level APIs).
fn refuse_all(body: &RequestKind, code: i16, version: i16) -> Bytes {
    match body {
        RequestKind::AlterUserScramCredentials(r) => {
            let mut resp = AlterUserScramCredentialsResponse::default();
            for user in r.deletions.iter().map(|d| &d.name).chain(r.upsertions.iter().map(|u| &u.name)) {
                if resp.results.iter().any(|x| x.user == *user) {
                    continue;
                }
                let mut o = alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default();
                o.user = user.clone();
                o.error_code = code;
                resp.results.push(o);
            }
            encode(&resp, version)
        }
        RequestKind::CreateAcls(r) => {
            let mut resp = CreateAclsResponse::default();
            for _ in &r.creations {
                let mut o = create_acls_response::AclCreationResult::default();
                o.error_code = code;
                if code == SECURITY_DISABLED {
                    o.error_message = Some(str_bytes("No Authorizer is configured on the broker"));
                }
                resp.results.push(o);
            }
            encode(&resp, version)
        }
        RequestKind::DeleteAcls(r) => {
            let mut resp = DeleteAclsResponse::default();
            for _ in &r.filters {
                let mut o = delete_acls_response::DeleteAclsFilterResult::default();
                o.error_code = code;
                if code == SECURITY_DISABLED {
                    o.error_message = Some(str_bytes("No Authorizer is configured on the broker"));
                }
                resp.filter_results.push(o);
            }
            encode(&resp, version)
        }
        _ => Bytes::new(),
    }
}

/// Authorizes, forwards what is allowed, and answers for the whole request.
pub(super) async fn handle(
    b: &Broker,
    a: &Access<'_>,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: RequestKind,
) -> Result<Option<Bytes>, RequestError> {
    let (allowed, refused) = split(b, a, body);
    if let Refused::All(code) = refused {
        if code != 0 {
            let answer = refuse_all(&allowed, code, version);
            return Ok(Some(frame::encode_response_body(api_key, version, correlation_id, &answer)?));
        }
    }
    let controller_answer = if nothing_left(&allowed) {
        Bytes::new()
    } else {
        match b.forward(api_key, version, &allowed).await {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(node = b.settings.node_id, api = ?api_key, error = %e, "admin request failed");
                let failed = admin::forward_failed(&allowed);
                let mut out = BytesMut::new();
                failed.encode_body(&mut out, version);
                out.freeze()
            }
        }
    };
    let answer = match &refused {
        Refused::Topics(v) if v.is_empty() => controller_answer,
        Refused::Configs(v) if v.is_empty() => controller_answer,
        Refused::All(_) => controller_answer,
        other => add_refused(api_key, version, &controller_answer, other),
    };
    Ok(Some(frame::encode_response_body(api_key, version, correlation_id, &answer)?))
}
