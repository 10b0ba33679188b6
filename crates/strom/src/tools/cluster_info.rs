//! `strom cluster`: the cluster id, the active controller and the live brokers, from one
//! DescribeCluster request. It exits non-zero unless at least `--expect-brokers` brokers are
//! live, so it serves as a container healthcheck and for waiting on a cluster to form.

use anyhow::bail;
use strom_protocol::kafka_protocol::messages::DescribeClusterRequest;

use super::cluster::{error_name, Cluster};

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    /// Fail unless at least this many brokers are live (unfenced).
    #[arg(long, default_value_t = 1)]
    expect_brokers: usize,
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    let resp = cluster.send(0, &DescribeClusterRequest::default()).await?;
    if resp.error_code != 0 {
        bail!("describe cluster: {}", error_name(resp.error_code));
    }
    println!("Cluster ID: {}", resp.cluster_id);
    println!("Controller: {}", resp.controller_id.0);
    let live: Vec<_> = resp.brokers.iter().filter(|b| !b.is_fenced).collect();
    for b in &live {
        println!("Broker: {} {}:{}", b.broker_id.0, b.host, b.port);
    }
    if live.len() < args.expect_brokers {
        bail!("{} live brokers, expected at least {}", live.len(), args.expect_brokers);
    }
    Ok(())
}
