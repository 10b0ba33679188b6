//! `strom topics`: the flags and output of Kafka's `kafka-topics.sh`.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use strom_protocol::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use strom_protocol::kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use strom_protocol::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use strom_protocol::kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use strom_protocol::kafka_protocol::messages::*;

use super::cluster::{error_name, Cluster};
use strom_protocol::values::{str_bytes, topic_name};

#[derive(clap::Args, Debug)]
pub struct TopicsArgs {
    /// The Kafka server(s) to connect to: host:port,…
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    /// Create a new topic.
    #[arg(long)]
    create: bool,
    /// List all topics.
    #[arg(long)]
    list: bool,
    /// Describe topics: partitions, leaders, replicas, ISR, configs.
    #[arg(long)]
    describe: bool,
    /// Delete a topic.
    #[arg(long)]
    delete: bool,
    /// Change a topic's partition count (or configs).
    #[arg(long)]
    alter: bool,
    /// The topic (for list and describe: only this one).
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of a new topic, or the new partition count with --alter.
    #[arg(long)]
    partitions: Option<i32>,
    /// Replication factor of a new topic.
    #[arg(long)]
    replication_factor: Option<i16>,
    /// A topic config override key=value. Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    configs: Vec<String>,
    /// With --create: no error if the topic exists.
    #[arg(long)]
    if_not_exists: bool,
    /// With --alter or --delete: no error if the topic does not exist.
    #[arg(long)]
    if_exists: bool,
    /// With --describe: only partitions whose ISR is smaller than their replicas.
    #[arg(long)]
    under_replicated_partitions: bool,
    /// With --list or --describe: leave out internal topics.
    #[arg(long)]
    exclude_internal: bool,
}

fn parse_configs(configs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    configs
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--config {kv}: expected KEY=VALUE"),
        })
        .collect()
}

pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let actions = [args.create, args.list, args.describe, args.delete, args.alter];
    if actions.iter().filter(|a| **a).count() != 1 {
        bail!("exactly one of --create, --list, --describe, --delete, --alter is required");
    }
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    if args.create {
        create(&mut cluster, &args).await
    } else if args.list {
        list(&mut cluster, &args).await
    } else if args.describe {
        describe(&mut cluster, &args).await
    } else if args.delete {
        delete(&mut cluster, &args).await
    } else {
        alter(&mut cluster, &args).await
    }
}

fn required_topic(args: &TopicsArgs) -> anyhow::Result<&str> {
    args.topic.as_deref().context("--topic is required")
}

async fn create(cluster: &mut Cluster, args: &TopicsArgs) -> anyhow::Result<()> {
    let name = required_topic(args)?;
    let mut t = CreatableTopic::default();
    t.name = topic_name(name);
    t.num_partitions = args.partitions.unwrap_or(-1);
    t.replication_factor = args.replication_factor.unwrap_or(-1);
    t.configs = parse_configs(&args.configs)?
        .into_iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = str_bytes(&k);
            c.value = Some(str_bytes(&v));
            c
        })
        .collect();
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let resp = cluster.send(5, &req).await?;
    let r = resp.topics.first().context("empty CreateTopics response")?;
    match r.error_code {
        0 => println!("Created topic {name}."),
        36 if args.if_not_exists => {}
        code => bail!(
            "Error while executing topic command : {} ({})",
            r.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default(),
            error_name(code)
        ),
    }
    Ok(())
}

async fn list(cluster: &mut Cluster, args: &TopicsArgs) -> anyhow::Result<()> {
    let md = cluster.metadata(None).await?;
    let mut names: Vec<String> = md
        .topics
        .iter()
        .filter(|t| !(args.exclude_internal && t.is_internal))
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .filter(|n| args.topic.as_ref().is_none_or(|t| t == n))
        .collect();
    names.sort();
    for n in names {
        println!("{n}");
    }
    Ok(())
}

/// The topic's configs that differ from the broker defaults (DYNAMIC_TOPIC_CONFIG), as
/// kafka-topics prints them.
async fn dynamic_configs(cluster: &mut Cluster, topic: &str) -> anyhow::Result<String> {
    let mut r = DescribeConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = str_bytes(topic);
    r.configuration_keys = None;
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![r];
    let resp = cluster.send(4, &req).await?;
    let Some(res) = resp.results.first() else { return Ok(String::new()) };
    let mut out: Vec<String> = res
        .configs
        .iter()
        .filter(|c| c.config_source == 1)
        .map(|c| format!("{}={}", c.name, c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()))
        .collect();
    out.sort();
    Ok(out.join(","))
}

async fn describe(cluster: &mut Cluster, args: &TopicsArgs) -> anyhow::Result<()> {
    let md = cluster.metadata(args.topic.clone().map(|t| vec![t])).await?;
    let mut topics: BTreeMap<String, &metadata_response::MetadataResponseTopic> = BTreeMap::new();
    for t in &md.topics {
        let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else { continue };
        if t.error_code == 3 {
            if args.topic.is_some() {
                bail!("Topic '{name}' does not exist as expected");
            }
            continue;
        }
        if args.exclude_internal && t.is_internal {
            continue;
        }
        topics.insert(name, t);
    }
    for (name, t) in topics {
        let mut parts: Vec<_> = t.partitions.iter().collect();
        parts.sort_by_key(|p| p.partition_index);
        if args.under_replicated_partitions {
            for p in parts.iter().filter(|p| p.isr_nodes.len() < p.replica_nodes.len()) {
                println!("{}", partition_line(&name, p));
            }
            continue;
        }
        let rf = parts.first().map_or(0, |p| p.replica_nodes.len());
        let configs = dynamic_configs(cluster, &name).await?;
        println!(
            "Topic: {name}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {rf}\tConfigs: {configs}",
            base64_uuid(&t.topic_id),
            parts.len()
        );
        for p in parts {
            println!("{}", partition_line(&name, p));
        }
    }
    Ok(())
}

fn ids(v: &[BrokerId]) -> String {
    v.iter().map(|b| b.0.to_string()).collect::<Vec<_>>().join(",")
}

fn partition_line(topic: &str, p: &metadata_response::MetadataResponsePartition) -> String {
    let leader = if p.leader_id.0 < 0 { "none".to_string() } else { p.leader_id.0.to_string() };
    format!(
        "\tTopic: {topic}\tPartition: {}\tLeader: {leader}\tReplicas: {}\tIsr: {}\tElr: \tLastKnownElr: ",
        p.partition_index,
        ids(&p.replica_nodes),
        ids(&p.isr_nodes)
    )
}

/// Kafka prints topic ids as URL-safe base64 without padding.
fn base64_uuid(id: &uuid::Uuid) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn delete(cluster: &mut Cluster, args: &TopicsArgs) -> anyhow::Result<()> {
    let name = required_topic(args)?;
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = vec![topic_name(name)];
    req.timeout_ms = 30_000;
    let resp = cluster.send(4, &req).await?;
    let r = resp.responses.first().context("empty DeleteTopics response")?;
    match r.error_code {
        0 => Ok(()),
        3 if args.if_exists => Ok(()),
        3 => bail!("Topic '{name}' does not exist as expected"),
        code => bail!("Error while executing topic command : {}", error_name(code)),
    }
}

async fn alter(cluster: &mut Cluster, args: &TopicsArgs) -> anyhow::Result<()> {
    let name = required_topic(args)?;
    let md = cluster.metadata(Some(vec![name.to_string()])).await?;
    if md.topics.first().is_none_or(|t| t.error_code == 3) {
        if args.if_exists {
            return Ok(());
        }
        bail!("Topic '{name}' does not exist as expected");
    }
    if let Some(count) = args.partitions {
        let mut t = CreatePartitionsTopic::default();
        t.name = topic_name(name);
        t.count = count;
        t.assignments = None;
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 30_000;
        let resp = cluster.send(1, &req).await?;
        if let Some(r) = resp.results.first().filter(|r| r.error_code != 0) {
            bail!(
                "Error while executing topic command : {} ({})",
                r.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                error_name(r.error_code)
            );
        }
    }
    let configs = parse_configs(&args.configs)?;
    if !configs.is_empty() {
        let mut res = AlterConfigsResource::default();
        res.resource_type = 2;
        res.resource_name = str_bytes(name);
        res.configs = configs
            .into_iter()
            .map(|(k, v)| {
                let mut c = AlterableConfig::default();
                c.name = str_bytes(&k);
                c.config_operation = 0;
                c.value = Some(str_bytes(&v));
                c
            })
            .collect();
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources = vec![res];
        let resp = cluster.send(1, &req).await?;
        if let Some(r) = resp.responses.first().filter(|r| r.error_code != 0) {
            bail!(
                "Error while executing topic command : {} ({})",
                r.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                error_name(r.error_code)
            );
        }
    }
    if args.partitions.is_none() && args.configs.is_empty() {
        bail!("--alter needs --partitions or --config");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_print_as_kafka_prints_them() {
        // Kafka: Uuid.fromString("AAAAAAAAAAAAAAAAAAAAAQ") has most/least bits 0 and 1.
        let id = uuid::Uuid::from_u128(1);
        assert_eq!(base64_uuid(&id), "AAAAAAAAAAAAAAAAAAAAAQ");
        let id = uuid::Uuid::from_u128(u128::MAX);
        assert_eq!(base64_uuid(&id), "_____________________w");
    }
}
