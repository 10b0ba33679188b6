//! `strom transactions` (kafka-transactions.sh). So far `describe-producers`: the producers a
//! partition's leader keeps state for, with each one's open transaction (DescribeProducers).
//! The other commands of kafka-transactions.sh (`list`, `describe`, `abort`,
//! `find-hanging`) need the transaction coordinator, which Strom does not have yet; they are
//! not offered.

use anyhow::{anyhow, bail};
use strom_protocol::kafka_protocol::messages::describe_producers_request::TopicRequest;
use strom_protocol::kafka_protocol::messages::DescribeProducersRequest;
use strom_protocol::values::topic_name;

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
        TransactionsCommand::DescribeProducers { topic, partition, broker_id } => {
            let broker = match broker_id {
                Some(id) => id,
                None => *cluster
                    .leaders(&topic)
                    .await?
                    .get(&partition)
                    .ok_or_else(|| anyhow!("topic {topic} has no partition {partition}"))?,
            };
            let mut t = TopicRequest::default();
            t.name = topic_name(&topic);
            t.partition_indexes = vec![partition];
            let mut req = DescribeProducersRequest::default();
            req.topics = vec![t];
            let resp = cluster.send_to(broker, 0, &req, std::time::Duration::ZERO).await?;
            let p = resp
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| anyhow!("broker {broker} answered for no partition"))?;
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
