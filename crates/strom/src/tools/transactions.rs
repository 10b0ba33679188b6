//! `strom transactions` (kafka-transactions.sh): `list` (ListTransactions on every broker),
//! `describe` (DescribeTransactions at the id's coordinator), `describe-producers` (the
//! producers a partition's leader keeps state for, with each one's open transaction) and
//! `abort` (an abort marker for a hanging transaction, written through WriteTxnMarkers as
//! Kafka's admin client does). `find-hanging` is not offered yet.

use std::time::Duration;

use anyhow::{anyhow, bail};
use strom_protocol::kafka_protocol::messages::describe_producers_request::TopicRequest;
use strom_protocol::kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use strom_protocol::kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest, ListTransactionsRequest,
    ProducerId, TransactionalId, WriteTxnMarkersRequest,
};
use strom_protocol::values::{now_ms, str_bytes, topic_name};

use super::cluster::{command_config, error_name, Cluster};

#[derive(clap::Args, Debug)]
pub struct TransactionsArgs {
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    /// Client settings (security.protocol, sasl.*, ssl.*), as Kafka's tools take them.
    #[arg(long, value_name = "FILE")]
    command_config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: TransactionsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TransactionsCommand {
    /// Every transactional id the cluster's coordinators know: id, coordinator, producer id,
    /// state.
    List,
    /// One transactional id: its coordinator, producer, state, timeout, open transaction's
    /// start and duration, and partitions.
    Describe {
        #[arg(long)]
        transactional_id: String,
    },
    /// Aborts a hanging transaction on one partition (an abort marker written by its leader):
    /// name the transaction by its first offset there (`--start-offset`, found through
    /// describe-producers) or by its producer (`--producer-id`, `--producer-epoch`,
    /// `--coordinator-epoch`).
    Abort {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        start_offset: Option<i64>,
        #[arg(long)]
        producer_id: Option<i64>,
        #[arg(long)]
        producer_epoch: Option<i16>,
        #[arg(long)]
        coordinator_epoch: Option<i32>,
    },
    /// The producers of one partition: id, epoch, coordinator epoch, last sequence, last
    /// timestamp and the start of the open transaction (-1: none).
    DescribeProducers {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        /// Ask this broker (a replica) instead of the partition's leader.
        #[arg(long)]
        broker_id: Option<i32>,
    },
}

pub async fn run(args: TransactionsArgs) -> anyhow::Result<()> {
    let security = command_config(args.command_config.as_deref())?;
    let mut cluster = Cluster::connect_with(&args.bootstrap_server, security).await?;
    match args.command {
        TransactionsCommand::List => list(&mut cluster).await,
        TransactionsCommand::Describe { transactional_id } => describe(&mut cluster, &transactional_id).await,
        TransactionsCommand::Abort {
            topic,
            partition,
            start_offset,
            producer_id,
            producer_epoch,
            coordinator_epoch,
        } => {
            let target = match (start_offset, producer_id, producer_epoch, coordinator_epoch) {
                (Some(offset), None, None, None) => AbortTarget::StartOffset(offset),
                (None, Some(id), Some(epoch), Some(coordinator_epoch)) => {
                    AbortTarget::Producer { id, epoch, coordinator_epoch }
                }
                _ => bail!(
                    "name the transaction with --start-offset, or with --producer-id, --producer-epoch and --coordinator-epoch"
                ),
            };
            abort(&mut cluster, &topic, partition, target).await
        }
        TransactionsCommand::DescribeProducers { topic, partition, broker_id } => {
            let resp = describe_producers(&mut cluster, &topic, partition, broker_id).await?;
            let p = resp
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| anyhow!("the broker answered for no partition"))?;
            if p.error_code != 0 {
                bail!("describe producers of {topic}-{partition}: {}", error_name(p.error_code));
            }
            println!(
                "ProducerId\tProducerEpoch\tLatestCoordinatorEpoch\tLastSequence\tLastTimestamp\tCurrentTransactionStartOffset"
            );
            for s in &p.active_producers {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    s.producer_id.0,
                    s.producer_epoch,
                    s.coordinator_epoch,
                    s.last_sequence,
                    s.last_timestamp,
                    s.current_txn_start_offset
                );
            }
            Ok(())
        }
    }
}

/// The leader of `topic`-`partition`, or `broker_id` when given.
async fn partition_broker(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
    broker_id: Option<i32>,
) -> anyhow::Result<i32> {
    match broker_id {
        Some(id) => Ok(id),
        None => cluster
            .leaders(topic)
            .await?
            .get(&partition)
            .copied()
            .ok_or_else(|| anyhow!("topic {topic} has no partition {partition}")),
    }
}

async fn describe_producers(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
    broker_id: Option<i32>,
) -> anyhow::Result<DescribeProducersResponse> {
    let broker = partition_broker(cluster, topic, partition, broker_id).await?;
    let mut t = TopicRequest::default();
    t.name = topic_name(topic);
    t.partition_indexes = vec![partition];
    let mut req = DescribeProducersRequest::default();
    req.topics = vec![t];
    cluster.send_to(broker, 0, &req, Duration::ZERO).await
}

async fn list(cluster: &mut Cluster) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for broker in cluster.broker_ids() {
        let resp = cluster.send_to(broker, 1, &ListTransactionsRequest::default(), Duration::ZERO).await?;
        if resp.error_code != 0 {
            bail!("list transactions at broker {broker}: {}", error_name(resp.error_code));
        }
        for s in resp.transaction_states {
            rows.push((s.transactional_id.0.to_string(), broker, s.producer_id.0, s.transaction_state.to_string()));
        }
    }
    rows.sort();
    println!("TransactionalId\tCoordinator\tProducerId\tTransactionState");
    for (id, broker, producer, state) in rows {
        println!("{id}\t{broker}\t{producer}\t{state}");
    }
    Ok(())
}

async fn describe(cluster: &mut Cluster, transactional_id: &str) -> anyhow::Result<()> {
    let coordinator = cluster.find_coordinator(transactional_id, 1).await?;
    let mut req = DescribeTransactionsRequest::default();
    req.transactional_ids = vec![TransactionalId(str_bytes(transactional_id))];
    let resp = cluster.send_to(coordinator, 0, &req, Duration::ZERO).await?;
    let s = resp.transaction_states.first().ok_or_else(|| anyhow!("the coordinator answered for no id"))?;
    if s.error_code != 0 {
        bail!("describe {transactional_id}: {}", error_name(s.error_code));
    }
    let partitions: Vec<String> =
        s.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| format!("{}-{p}", t.topic.0))).collect();
    let duration = if s.transaction_start_time_ms >= 0 {
        (now_ms() - s.transaction_start_time_ms).max(0).to_string()
    } else {
        "None".to_string()
    };
    let start = if s.transaction_start_time_ms >= 0 { s.transaction_start_time_ms.to_string() } else { "None".into() };
    println!(
        "CoordinatorId\tTransactionalId\tProducerId\tProducerEpoch\tTransactionState\tTransactionTimeoutMs\tCurrentTransactionStartTimeMs\tTransactionDurationMs\tTopicPartitions"
    );
    println!(
        "{coordinator}\t{transactional_id}\t{}\t{}\t{}\t{}\t{start}\t{duration}\t{}",
        s.producer_id.0,
        s.producer_epoch,
        s.transaction_state,
        s.transaction_timeout_ms,
        partitions.join(",")
    );
    Ok(())
}

enum AbortTarget {
    StartOffset(i64),
    Producer { id: i64, epoch: i16, coordinator_epoch: i32 },
}

async fn abort(cluster: &mut Cluster, topic: &str, partition: i32, target: AbortTarget) -> anyhow::Result<()> {
    let (id, epoch, coordinator_epoch) = match target {
        AbortTarget::Producer { id, epoch, coordinator_epoch } => (id, epoch, coordinator_epoch),
        AbortTarget::StartOffset(offset) => {
            let resp = describe_producers(cluster, topic, partition, None).await?;
            let p = resp
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| anyhow!("the leader answered for no partition"))?;
            if p.error_code != 0 {
                bail!("describe producers of {topic}-{partition}: {}", error_name(p.error_code));
            }
            let s = p
                .active_producers
                .iter()
                .find(|s| s.current_txn_start_offset == offset)
                .ok_or_else(|| anyhow!("no open transaction starts at offset {offset} of {topic}-{partition}"))?;
            (s.producer_id.0, s.producer_epoch as i16, s.coordinator_epoch)
        }
    };
    let leader = partition_broker(cluster, topic, partition, None).await?;
    let mut t = WritableTxnMarkerTopic::default();
    t.name = topic_name(topic);
    t.partition_indexes = vec![partition];
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(id);
    m.producer_epoch = epoch;
    m.transaction_result = false;
    m.coordinator_epoch = coordinator_epoch;
    m.topics = vec![t];
    let mut req = WriteTxnMarkersRequest::default();
    req.markers = vec![m];
    let resp = cluster.send_to(leader, 1, &req, Duration::ZERO).await?;
    let code = resp
        .markers
        .first()
        .and_then(|m| m.topics.first())
        .and_then(|t| t.partitions.first())
        .map(|p| p.error_code)
        .ok_or_else(|| anyhow!("the leader answered for no partition"))?;
    if code != 0 {
        bail!("abort on {topic}-{partition}: {}", error_name(code));
    }
    println!("Aborted the transaction of producer {id} (epoch {epoch}) on {topic}-{partition}");
    Ok(())
}
