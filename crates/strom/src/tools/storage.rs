//! `strom storage`: the steps of Kafka's `kafka-storage.sh` a node's log dirs need.
//!
//! - `strom storage random-uuid` prints a new cluster id.
//! - `strom storage format -t <cluster id> --config server.properties` writes each log dir's
//!   `meta.properties` with this node's id and the cluster id, so the node joins (or, as the
//!   first, names) exactly that cluster. A dir that is already formatted is refused unless
//!   `--ignore-formatted`. Formatting is optional: a node started on empty dirs takes the
//!   cluster's id (or a new cluster's) at its first start.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::config::{NodeConfig, RawConfig};
use crate::node::MetaProperties;

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Print a new random cluster id.
    RandomUuid,
    /// Write meta.properties (node.id, cluster.id) into every log dir of the configuration.
    Format(FormatArgs),
}

#[derive(clap::Args, Debug)]
pub struct FormatArgs {
    /// The cluster id (from `strom storage random-uuid`).
    #[arg(short = 't', long = "cluster-id", allow_hyphen_values = true)]
    cluster_id: String,
    /// The node's server.properties (its node.id and log.dirs are used).
    #[arg(short = 'c', long)]
    config: Option<PathBuf>,
    /// Set one key, overriding the file and STROM_* environment variables. Repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Skip log dirs that are already formatted instead of failing.
    #[arg(short = 'g', long)]
    ignore_formatted: bool,
}

pub fn run(cmd: StorageCommand) -> anyhow::Result<()> {
    match cmd {
        StorageCommand::RandomUuid => {
            println!("{}", strom_metadata::cluster_id::generate());
            Ok(())
        }
        StorageCommand::Format(args) => format(args),
    }
}

fn format(args: FormatArgs) -> anyhow::Result<()> {
    strom_metadata::cluster_id::validate(&args.cluster_id)?;
    let config = RawConfig::load(args.config.as_deref(), std::env::vars(), &args.overrides)
        .and_then(NodeConfig::from_raw)
        .context("configuration error")?;
    for dir in &config.log_dirs {
        if let Some(existing) = MetaProperties::read(dir)? {
            if args.ignore_formatted {
                println!("{} is already formatted (cluster.id {:?}); skipped", dir.display(), existing.cluster_id);
                continue;
            }
            bail!(
                "log dir {} is already formatted (cluster.id {:?}); use --ignore-formatted to skip it",
                dir.display(),
                existing.cluster_id
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create log dir {}", dir.display()))?;
        MetaProperties { node_id: Some(config.node_id), cluster_id: Some(args.cluster_id.clone()) }.write(dir)?;
        println!("Formatting {} with cluster.id {} and node.id {}", dir.display(), args.cluster_id, config.node_id);
    }
    Ok(())
}
