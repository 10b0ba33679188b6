//! `strom`: the command line. See the crate docs in `lib.rs` for the layout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use strom::config::{self, keys, NodeConfig, RawConfig};
use strom::logging::{self, LogFormat};
use strom::{node, shutdown, tools};

#[derive(Parser, Debug)]
#[command(name = "strom", version, about = "An event-streaming cluster that speaks the Kafka protocol")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node. With no arguments: a complete single-node cluster on 127.0.0.1:9092.
    Server(ServerArgs),
    /// Create, list, describe, alter and delete topics (the flags of kafka-topics.sh).
    Topics(tools::topics::TopicsArgs),
    /// ACLs: add, remove, list (the flags of kafka-acls.sh).
    Acls(tools::acls::AclsArgs),
    /// SCRAM users: add, remove, describe credentials (the flags of kafka-configs.sh).
    Configs(tools::configs::ConfigsArgs),
    /// List, describe (with lag), delete consumer groups and reset their offsets.
    ConsumerGroups(tools::groups::GroupsArgs),
    /// Transactions and producers: list, describe, describe-producers, abort (the flags of
    /// kafka-transactions.sh).
    Transactions(tools::transactions::TransactionsArgs),
    /// Send lines from stdin as records.
    ConsoleProducer(tools::console::ProducerArgs),
    /// Print records of a topic.
    ConsoleConsumer(tools::console::ConsumerArgs),
    /// The cluster id, active controller and live brokers (non-zero exit when too few).
    Cluster(tools::cluster_info::ClusterArgs),
    /// Load generators: produce / consume throughput and latency.
    #[command(subcommand)]
    Perf(tools::perf::PerfCommand),
    /// Log dirs: a new cluster id, or format dirs for one (kafka-storage.sh).
    #[command(subcommand)]
    Storage(tools::storage::StorageCommand),
}

#[derive(clap::Args, Debug, Default)]
struct ServerArgs {
    /// A Kafka-style server.properties file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set one key, overriding the file and STROM_* environment variables. Repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormatArg,
}

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
enum LogFormatArg {
    #[default]
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// Exit code for a configuration the node refuses.
const EXIT_CONFIG: u8 = 2;

/// How long a stopped node waits for blocking work still running before it exits.
const BLOCKING_WORK_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Server(ServerArgs::default())) {
        Command::Server(args) => server(args),
        Command::Topics(args) => tools::run_tool(|| tools::topics::run(args)),
        Command::Configs(args) => tools::run_tool(|| tools::configs::run(args)),
        Command::Acls(args) => tools::run_tool(|| tools::acls::run(args)),
        Command::ConsumerGroups(args) => tools::run_tool(|| tools::groups::run(args)),
        Command::Transactions(args) => tools::run_tool(|| tools::transactions::run(args)),
        Command::ConsoleProducer(args) => tools::run_tool(|| tools::console::produce(args)),
        Command::ConsoleConsumer(args) => tools::run_tool(|| tools::console::consume(args)),
        Command::Cluster(args) => tools::run_tool(|| tools::cluster_info::run(args)),
        Command::Perf(cmd) => tools::run_tool(|| tools::perf::run(cmd)),
        Command::Storage(cmd) => match tools::storage::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strom storage: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn server(args: ServerArgs) -> ExitCode {
    let config =
        RawConfig::load(args.config.as_deref(), std::env::vars(), &args.overrides).and_then(NodeConfig::from_raw);
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strom: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    logging::init(args.log_format.into(), Some(config.node_id));
    for key in &config.raw.unknown_keys {
        tracing::warn!(key = %key, "unknown configuration key (ignored)");
    }
    // TLS and SASL keys do something only for listeners of their kind.
    for (key, _, source) in config.raw.iter() {
        if source == config::Source::Default {
            continue;
        }
        let tls_key = key.starts_with("ssl.") || (keys::is_listener_key(key) && key.contains(".ssl."));
        let sasl_key = !tls_key && (key.starts_with("sasl.") || keys::is_listener_key(key));
        if tls_key && config.listener_tls.is_empty() {
            tracing::warn!(key = %key, "TLS key set, but no listener is SSL or SASL_SSL: it has no effect");
        }
        if sasl_key && config.listener_sasl.is_empty() && config.controller_security.sasl.is_none() {
            tracing::warn!(key = %key, "SASL key set, but no listener is SASL_PLAINTEXT or SASL_SSL: it has no effect");
        }
    }
    // Test builds only (the `failpoints` feature): the FAILPOINTS environment variable names
    // failpoints and their actions, e.g. `fsync=sleep(500)` (docs/operations.md).
    #[cfg(feature = "failpoints")]
    let _failpoints = {
        let scenario = fail::FailScenario::setup();
        for (name, action) in fail::list() {
            tracing::warn!(failpoint = %name, action = %action, "failpoint configured");
        }
        scenario
    };
    // Simulated power loss (test builds): SIGUSR1 drops every file's unsynced bytes and ends
    // the node (strom_storage::power_loss).
    let power_loss = std::env::var_os("SIMULATE_POWER_LOSS").is_some_and(|v| v == "1");
    if power_loss {
        tracing::warn!("simulated power loss armed: SIGUSR1 drops unsynced bytes and ends the node");
    }
    #[cfg(not(feature = "failpoints"))]
    for var in ["FAILPOINTS", "SIMULATE_POWER_LOSS"] {
        if std::env::var_os(var).is_some() {
            tracing::error!(variable = var, "set, but this build has no failpoints (a test build has them)");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        shutdown::watch_signals(shutdown.clone())?;
        if power_loss && strom_storage::power_loss::arm() {
            shutdown::watch_power_cut()?;
        }
        node::run(config, shutdown).await
    });
    // The node has stopped its tasks; what may still run is blocking disk work (a flush, a
    // cleaner pass) on a disk that may have failed, and a syscall on a failing disk can hang
    // for good. Dropping the runtime would wait for it: a stopped node that never exits. It
    // gets a grace period, then the process exits anyway (Kafka halts on a failed disk).
    let stopping = std::time::Instant::now();
    runtime.shutdown_timeout(BLOCKING_WORK_GRACE);
    if stopping.elapsed() >= BLOCKING_WORK_GRACE {
        tracing::warn!(
            grace_ms = BLOCKING_WORK_GRACE.as_millis() as u64,
            "blocking work still running at exit: abandoned"
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            match e.downcast_ref::<node::StartError>() {
                Some(node::StartError::Config(_)) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
