//! The admin, console and perf tools. They speak only the Kafka protocol (through
//! `strom-client`), so they work against any Kafka-compatible cluster, Strom or Kafka.
//!
//! - [`topics`]: `strom topics` (kafka-topics.sh).
//! - [`configs`]: `strom configs` (kafka-configs.sh, SCRAM users).
//! - [`acls`]: `strom acls` (kafka-acls.sh).
//! - [`groups`]: `strom consumer-groups` (kafka-consumer-groups.sh).
//! - [`transactions`]: `strom transactions describe-producers` (kafka-transactions.sh).
//! - [`console`]: `strom console-producer` / `strom console-consumer`.
//! - [`cluster_info`]: `strom cluster` (cluster id, controller, live brokers; a healthcheck).
//! - [`perf`]: `strom perf produce` / `strom perf consume`.
//! - [`storage`]: `strom storage random-uuid` / `format` (kafka-storage.sh): a node's log dirs.
//! - [`cluster`]: bootstrap, metadata, broker connections, error names; [`records`]: batches,
//!   Kafka's murmur2 partitioner, decoding.

pub mod acls;
pub mod cluster;
pub mod cluster_info;
pub mod configs;
pub mod console;
pub mod group_member;
pub mod groups;
pub mod perf;
pub mod records;
pub mod storage;
pub mod topics;
pub mod transactions;

/// Runs a tool on a small runtime of its own and maps errors to an exit code (1), printing
/// them as Kafka's tools do.
pub fn run_tool<F: std::future::Future<Output = anyhow::Result<()>>>(f: impl FnOnce() -> F) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
