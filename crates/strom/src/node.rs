//! Node assembly: from a [`NodeConfig`] to running roles.
//!
//! Start order: claim the data directory (lock file, `meta.properties`), bind every listener
//! (so a port conflict fails the start, not a later request), then serve until shutdown.
//! Shutdown: listeners stop accepting, connections finish their current request, then
//! [`run`] returns.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use strom_broker::apis::Apis;
use strom_broker::server::KafkaListener;
use strom_broker::BrokerSettings;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;

/// Start failures that are the configuration's fault (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
}

/// The claimed data directory: held locked for the life of the process.
struct DataDir {
    _lock: File,
    path: PathBuf,
}

const META_FILE: &str = "meta.properties";

impl DataDir {
    /// Creates the directory if needed, locks it, and checks (or writes) `meta.properties`:
    /// a directory written by another node id is refused.
    fn claim(path: &Path, node_id: i32) -> anyhow::Result<Self> {
        fs::create_dir_all(path).with_context(|| format!("cannot create log dir {}", path.display()))?;
        let lock = File::create(path.join(".lock"))
            .with_context(|| format!("cannot create the lock file in {}", path.display()))?;
        lock.try_lock()
            .map_err(|_| anyhow::anyhow!("log dir {} is in use by another process (.lock is held)", path.display()))?;
        let meta = path.join(META_FILE);
        match fs::read_to_string(&meta) {
            Ok(text) => {
                let stored =
                    text.lines().find_map(|l| l.strip_prefix("node.id=")).and_then(|v| v.trim().parse::<i32>().ok());
                if stored != Some(node_id) {
                    return Err(StartError::Config(format!(
                        "node.id: {node_id} does not match node.id {} in {}",
                        stored.map_or("(missing)".to_string(), |s| s.to_string()),
                        meta.display()
                    ))
                    .into());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tmp = path.join("meta.properties.tmp");
                let mut f = File::create(&tmp)?;
                writeln!(f, "version=1\nnode.id={node_id}")?;
                f.sync_all()?;
                fs::rename(&tmp, &meta)?;
                File::open(path)?.sync_all()?;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", meta.display())),
        }
        Ok(DataDir { _lock: lock, path: path.to_path_buf() })
    }
}

/// Runs the node until `shutdown` is cancelled.
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let dirs = config.log_dirs.iter().map(|d| DataDir::claim(d, config.node_id)).collect::<anyhow::Result<Vec<_>>>()?;

    // The controller quorum's listener. Bound here so that the port is ours from the start;
    // the Raft and controller gRPC services are served on it by strom-controller.
    let controller_listener = match config.controller_listener() {
        Some(l) => Some(
            tokio::net::TcpListener::bind(l.bind_addr())
                .await
                .with_context(|| format!("cannot bind controller listener {}", l.bind_addr()))?,
        ),
        None => None,
    };

    let settings = BrokerSettings {
        node_id: config.node_id,
        socket_request_max_bytes: config.socket_request_max_bytes as usize,
        max_connections: config.max_connections,
        connections_max_idle_ms: config.connections_max_idle_ms,
    };
    let apis = Arc::new(Apis::new());
    let mut kafka_listeners = Vec::new();
    for l in config.broker_listeners() {
        let bound = KafkaListener::bind(&l.name, &l.bind_addr(), settings.clone(), apis.clone())
            .await
            .with_context(|| format!("cannot bind listener {}://{}", l.name, l.bind_addr()))?;
        tracing::info!(listener = %l.name, addr = %bound.local_addr()?, "kafka listener bound");
        kafka_listeners.push(bound);
    }
    if let Some(c) = &controller_listener {
        tracing::info!(addr = %c.local_addr()?, "controller listener bound");
    }
    tracing::info!(
        roles = ?config.roles,
        log_dirs = ?dirs.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>(),
        startup_ms = started.elapsed().as_millis() as u64,
        "node started"
    );

    let mut tasks = tokio::task::JoinSet::new();
    for l in kafka_listeners {
        tasks.spawn(l.run(shutdown.clone()));
    }
    shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    drop(controller_listener);
    tracing::info!("node stopped");
    Ok(())
}
