//! Node assembly: from a [`NodeConfig`] to running roles.
//!
//! Start order: claim the data directory (lock file, `meta.properties`), bind every listener
//! (so a port conflict fails the start, not a later request), then serve until shutdown.
//! Shutdown: listeners stop accepting, connections finish their current request, then
//! [`run`] returns.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use strom_broker::apis::{config_source, Apis};
use strom_broker::fetcher::ReplicaFetchers;
use strom_broker::isr::IsrManager;
use strom_broker::lifecycle::BrokerLifecycle;
use strom_broker::metrics::BrokerMetrics;
use strom_broker::replica::ReplicaManager;
use strom_broker::server::{KafkaListener, ListenerSecurity};
use strom_broker::BrokerSettings;
use strom_controller::controller::{Controller, ControllerConfig};
use strom_metadata::client::ControllerClient;
use strom_protocol::proto::controller as pb;
use strom_storage::{CleanStats, LogConfig, TimestampType};
use tokio_util::sync::CancellationToken;

use crate::config::{NodeConfig, Source};

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
    /// The cluster id its `meta.properties` holds (None: not known yet).
    cluster_id: Option<String>,
}

impl DataDir {
    /// Creates the directory if needed, locks it, and checks (or writes) `meta.properties`:
    /// a directory written by another node id is refused.
    fn claim(path: &Path, node_id: i32) -> anyhow::Result<Self> {
        fs::create_dir_all(path).with_context(|| format!("cannot create log dir {}", path.display()))?;
        let lock = File::create(path.join(".lock"))
            .with_context(|| format!("cannot create the lock file in {}", path.display()))?;
        lock.try_lock()
            .map_err(|_| anyhow::anyhow!("log dir {} is in use by another process (.lock is held)", path.display()))?;
        let cluster_id = match MetaProperties::read(path)? {
            Some(meta) => {
                if meta.node_id != Some(node_id) {
                    return Err(StartError::Config(format!(
                        "node.id: {node_id} does not match node.id {} in {}",
                        meta.node_id.map_or("(missing)".to_string(), |s| s.to_string()),
                        path.join(META_FILE).display()
                    ))
                    .into());
                }
                meta.cluster_id
            }
            None => {
                MetaProperties { node_id: Some(node_id), cluster_id: None }.write(path)?;
                None
            }
        };
        Ok(DataDir { _lock: lock, path: path.to_path_buf(), cluster_id })
    }
}

const META_FILE: &str = "meta.properties";

/// A log dir's `meta.properties` (Kafka's file and keys: `version`, `node.id`, `cluster.id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    pub node_id: Option<i32>,
    pub cluster_id: Option<String>,
}

impl MetaProperties {
    /// Reads `dir/meta.properties`; `None` when the directory has none (never formatted).
    pub fn read(dir: &Path) -> anyhow::Result<Option<MetaProperties>> {
        let meta = dir.join(META_FILE);
        let text = match fs::read_to_string(&meta) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", meta.display())),
        };
        let value = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Ok(Some(MetaProperties {
            node_id: value("node.id").and_then(|v| v.parse().ok()),
            cluster_id: value("cluster.id"),
        }))
    }

    /// Writes `dir/meta.properties` atomically (`strom_storage::durable`).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let mut text = String::from("version=1\n");
        if let Some(id) = self.node_id {
            text.push_str(&format!("node.id={id}\n"));
        }
        if let Some(c) = &self.cluster_id {
            text.push_str(&format!("cluster.id={c}\n"));
        }
        strom_storage::durable::write_atomically(&dir.join(META_FILE), text.as_bytes())
            .with_context(|| format!("cannot write {}", dir.join(META_FILE).display()))
    }
}

/// The one cluster id the log dirs agree on (None: none has one yet); dirs of two clusters
/// are refused.
fn stored_cluster_id(dirs: &[DataDir]) -> anyhow::Result<Option<String>> {
    let mut found: Option<(&DataDir, &String)> = None;
    for d in dirs {
        if let Some(c) = &d.cluster_id {
            match found {
                Some((first, id)) if id != c => {
                    return Err(StartError::Config(format!(
                        "log.dirs: {} holds cluster {id} but {} holds cluster {c}",
                        first.path.display(),
                        d.path.display()
                    ))
                    .into())
                }
                Some(_) => {}
                None => found = Some((d, c)),
            }
        }
    }
    Ok(found.map(|(_, c)| c.clone()))
}

/// Runs the node until `shutdown` is cancelled.
///
/// Shutdown order: the broker asks the controller for a controlled shutdown (leaderships move
/// away) and its listeners drain; then the partition logs are closed cleanly; the controller
/// stops last, so a single node's broker can still reach it while shutting down.
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let dirs = config.log_dirs.iter().map(|d| DataDir::claim(d, config.node_id)).collect::<anyhow::Result<Vec<_>>>()?;
    let data_dir = dirs.first().map(|d| d.path.clone()).context("log.dirs is empty")?;
    let cluster_id = stored_cluster_id(&dirs)?;
    // Set when the node must stop for a reason that is the operator's to fix (exit code 2).
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();

    // The controller and the broker's heartbeats run on their own runtime
    // (control_plane.rs's rule): everything they spawn, and the listener they accept on,
    // belongs to it.
    let control = crate::control_plane::ControlPlane::start().context("cannot start the control runtime")?;
    let controller_stop = CancellationToken::new();
    let controller = match config.controller_listener() {
        Some(l) => {
            let (addr, controller_config, stop) =
                (l.bind_addr(), controller_config(&config, &data_dir, cluster_id.clone()), controller_stop.clone());
            let started = control
                .handle()
                .spawn(async move {
                    let listener = tokio::net::TcpListener::bind(&addr)
                        .await
                        .with_context(|| format!("cannot bind controller listener {addr}"))?;
                    tracing::info!(addr = %listener.local_addr()?, "controller listener bound");
                    Controller::start(controller_config, listener, stop).await.context("cannot start the controller")
                })
                .await
                .context("the controller's start was cancelled")??;
            Some(started)
        }
        None => None,
    };

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(c) = controller.clone() {
        // A quorum member whose Raft failed (a write to its log failed) stops the node.
        let (shutdown, fatal) = (shutdown.clone(), fatal.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                why = c.failed() => stop_fatally(&fatal, &shutdown, format!("the controller's Raft failed ({why}): the node stops")),
            }
        });
    }
    if !config.roles.broker && !config.listener_tls.is_empty() {
        tasks.spawn(watch_certificates(config.node_id, config.listener_tls.clone(), None, shutdown.clone()));
    }
    let mut cluster_id_source = controller.clone().map(ClusterIdSource::Controller);
    let mut broker = None;
    let mut broker_apis = None;
    if config.roles.broker {
        let voters: Vec<(i32, String)> =
            config.quorum_voters.iter().map(|v| (v.id, format!("{}:{}", v.host, v.port))).collect();
        // The client's connections are driven by the control runtime.
        let client = {
            let _on_control = control.handle().enter();
            ControllerClient::new(&voters, &config.controller_security)?
        };
        let endpoints = config
            .advertised_listeners
            .iter()
            .map(|l| pb::Endpoint {
                listener: l.name.clone(),
                host: l.host.clone(),
                port: l.port as u32,
                security_protocol: l.security_protocol.clone(),
            })
            .collect();
        let lifecycle = BrokerLifecycle::new(
            config.node_id,
            client,
            endpoints,
            config.broker_rack.clone(),
            cluster_id.clone(),
            Duration::from_millis(config.broker_heartbeat_interval_ms),
        );
        let replicas = Arc::new(
            ReplicaManager::new(config.node_id, data_dir.clone(), log_config(&config))
                .with_io_threads(config.num_io_threads),
        );
        let apis = Arc::new(Apis::new(broker_settings(&config), lifecycle.clone(), replicas.clone()));
        let limits = strom_broker::server::ConnectionLimits::new(
            config.max_connections_per_ip,
            config.max_connections_per_ip_overrides.clone(),
            config.queued_max_request_bytes,
        );
        for l in config.broker_listeners() {
            let settings = broker_settings(&config);
            let security = ListenerSecurity {
                tls: config.listener_tls.get(&l.name).cloned(),
                sasl: config.listener_sasl.get(&l.name).cloned(),
            };
            let bound = KafkaListener::bind(&l.name, &l.bind_addr(), settings, apis.clone(), security, limits.clone())
                .await
                .with_context(|| format!("cannot bind listener {}://{}", l.name, l.bind_addr()))?;
            tracing::info!(listener = %l.name, addr = %bound.local_addr()?, "kafka listener bound");
            tasks.spawn(bound.run(shutdown.clone()));
        }
        {
            // Heartbeats on the control runtime; the metadata it follows is applied to the
            // replicas on this one.
            let (lifecycle, replicas, shutdown, fatal) =
                (lifecycle.clone(), replicas.clone(), shutdown.clone(), fatal.clone());
            let data_plane = tokio::runtime::Handle::current();
            let stop = shutdown.clone();
            let run = control.handle().spawn(async move { lifecycle.run(replicas, data_plane, stop).await });
            tasks.spawn(async move {
                match run.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => stop_fatally(&fatal, &shutdown, e.to_string()),
                    Err(e) => stop_fatally(&fatal, &shutdown, format!("the broker's lifecycle task failed: {e}")),
                }
            });
        }
        {
            // A failed log directory stops the node (replica/log_dir.rs's rule): its controlled
            // shutdown moves every leadership to the other replicas at once.
            let (replicas, shutdown, fatal) = (replicas.clone(), shutdown.clone(), fatal.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    why = replicas.log_dir_health.failed() => stop_fatally(
                        &fatal,
                        &shutdown,
                        format!("log directory {} failed ({why}): the broker stops", replicas.log_dir().display()),
                    ),
                }
            });
        }
        cluster_id_source = Some(ClusterIdSource::Broker(lifecycle.clone()));
        if !config.listener_tls.is_empty() {
            let dynamic = DynamicTls { lifecycle: lifecycle.clone(), listeners: broker_settings_tls(&config) };
            tasks.spawn(watch_certificates(
                config.node_id,
                config.listener_tls.clone(),
                Some(dynamic),
                shutdown.clone(),
            ));
        }
        tasks.spawn(apis.clone().run_group_timer(shutdown.clone()));
        tasks.spawn(apis.clone().run_offsets_upkeep(shutdown.clone()));
        tasks.spawn(apis.clone().run_transactions(shutdown.clone()));
        let fetchers = ReplicaFetchers::new(
            config.inter_broker_listener_name.clone(),
            config.inter_broker_security.clone(),
            replicas.clone(),
            lifecycle.clone(),
        );
        tasks.spawn(fetchers.run(shutdown.clone()));
        let isr = IsrManager::new(
            lifecycle.clone(),
            replicas.clone(),
            Duration::from_millis(config.replica_lag_time_max_ms),
            apis.metrics().clone(),
        );
        tasks.spawn(isr.run(shutdown.clone()));
        let expiry = ProducerExpiry {
            max_age_ms: config.producer_id_expiration_ms,
            check_interval_ms: config.producer_id_expiration_check_interval_ms,
        };
        tasks.spawn(housekeeping(replicas.clone(), config.log.retention_check_interval_ms, expiry, shutdown.clone()));
        if config.log.cleaner.enable {
            let c = &config.log.cleaner;
            let io_per_thread = c.io_max_bytes_per_second.map(|r| (r / c.threads as u64).max(1));
            for shard in 0..c.threads {
                tasks.spawn(log_cleaner(
                    replicas.clone(),
                    shard,
                    c.threads,
                    c.backoff_ms,
                    io_per_thread,
                    apis.metrics().clone(),
                    shutdown.clone(),
                ));
            }
        }
        broker = Some(replicas);
        broker_apis = Some(apis);
    }
    if let Some(source) = cluster_id_source {
        let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.path.clone()).collect();
        tasks.spawn(keep_cluster_id(source, dirs, config.node_id, cluster_id.clone(), fatal.clone(), shutdown.clone()));
    }
    let metrics_stop = CancellationToken::new();
    let mut metrics_task = None;
    if let Some(addr) = config.metrics_listener {
        match crate::metrics_http::serve(addr, broker_apis.clone(), controller.clone(), metrics_stop.clone()).await {
            Ok((bound, task)) => {
                tracing::info!(addr = %bound, "metrics endpoint bound");
                metrics_task = Some(task);
            }
            // The built-in default was not asked for: a second node on the same host must
            // not fail to start over it. A metrics.listener the user set still fails loudly.
            Err(e) if !config.metrics_listener_explicit => tracing::warn!(
                addr = %addr,
                error = %e,
                "cannot bind the default metrics.listener; running without /metrics (set metrics.listener to choose a free address)"
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot bind metrics.listener {addr}")),
        }
    }
    tracing::info!(
        roles = ?config.roles,
        log_dirs = ?dirs.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>(),
        startup_ms = started.elapsed().as_millis() as u64,
        "node started"
    );

    shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    metrics_stop.cancel();
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    if let Some(replicas) = broker {
        replicas.close_all();
    }
    controller_stop.cancel();
    if let Some(c) = controller {
        let _ = control.handle().spawn(async move { c.raft.shutdown().await }).await;
    }
    drop(control);
    tracing::info!("node stopped");
    let fatal = fatal.lock().unwrap_or_else(|p| p.into_inner()).take();
    match fatal {
        Some(why) => Err(StartError::Config(why).into()),
        None => Ok(()),
    }
}

/// Records why the node must stop and starts its shutdown.
fn stop_fatally(fatal: &std::sync::Mutex<Option<String>>, shutdown: &CancellationToken, why: String) {
    tracing::error!("{why}");
    fatal.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
    shutdown.cancel();
}

/// Where a node learns the cluster id: its broker's image, or (a controller-only node) its
/// controller's.
enum ClusterIdSource {
    Broker(Arc<BrokerLifecycle>),
    Controller(Arc<Controller>),
}

impl ClusterIdSource {
    /// Waits until the metadata log names the cluster id; None on shutdown.
    async fn wait(&self, shutdown: &CancellationToken) -> Option<String> {
        match self {
            ClusterIdSource::Broker(l) => {
                let mut rx = l.subscribe();
                tokio::select! {
                    _ = shutdown.cancelled() => None,
                    img = rx.wait_for(|i| i.cluster_id.is_some()) => img.ok().and_then(|i| i.cluster_id.clone()),
                }
            }
            ClusterIdSource::Controller(c) => {
                let mut rx = c.metadata.subscribe();
                loop {
                    if let Some(id) = c.metadata.image().cluster_id.clone() {
                        return Some(id);
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        r = rx.changed() => if r.is_err() { return None },
                    }
                }
            }
        }
    }
}

/// Keeps the cluster id in every log dir's `meta.properties`: stores it once the metadata
/// log names it, and stops the node when the log names another one than the stored id (this
/// node's data belongs to another cluster).
async fn keep_cluster_id(
    source: ClusterIdSource,
    dirs: Vec<PathBuf>,
    node_id: i32,
    stored: Option<String>,
    fatal: Arc<std::sync::Mutex<Option<String>>>,
    shutdown: CancellationToken,
) {
    let Some(learned) = source.wait(&shutdown).await else { return };
    match stored {
        Some(s) if s == learned => {}
        Some(s) => stop_fatally(
            &fatal,
            &shutdown,
            format!("refusing to join: the log dirs hold cluster {s}, the controller quorum is cluster {learned}"),
        ),
        None => {
            for d in &dirs {
                let meta = MetaProperties { node_id: Some(node_id), cluster_id: Some(learned.clone()) };
                if let Err(e) = meta.write(d) {
                    stop_fatally(&fatal, &shutdown, format!("{e:#}"));
                    return;
                }
            }
            tracing::info!(cluster_id = %learned, "cluster id stored in meta.properties");
        }
    }
}

/// How often the TLS listeners' keystore and truststore files are checked for changes.
pub const CERTIFICATE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Reloads a TLS listener's certificates when its files change (a renewed certificate is
/// served to new connections without a restart; open connections keep theirs). A change that
/// does not make a working configuration is logged once and the old one stays in use.
/// A broker's listeners whose keystores and truststores are dynamic configs
/// (`strom_broker::dynamic_config`), and where their committed values are read.
struct DynamicTls {
    lifecycle: Arc<BrokerLifecycle>,
    listeners: std::collections::BTreeSet<String>,
}

/// The broker listeners with TLS (their names).
fn broker_settings_tls(config: &NodeConfig) -> std::collections::BTreeSet<String> {
    config
        .broker_listeners()
        .iter()
        .filter(|l| config.listener_tls.contains_key(&l.name))
        .map(|l| l.name.clone())
        .collect()
}

/// Every `CERTIFICATE_CHECK_INTERVAL`: lays each broker listener's dynamic keystore and
/// truststore keys from the metadata image over its configuration when they changed, then
/// reloads any listener whose files changed.
async fn watch_certificates(
    node_id: i32,
    listeners: std::collections::BTreeMap<String, Arc<strom_security::reload::ListenerTls>>,
    dynamic: Option<DynamicTls>,
    shutdown: CancellationToken,
) {
    let mut last_error: std::collections::BTreeMap<String, String> = Default::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CERTIFICATE_CHECK_INTERVAL) => {}
        }
        let image = dynamic.as_ref().map(|d| d.lifecycle.image());
        for (name, tls) in &listeners {
            let overrides = match (&dynamic, &image) {
                (Some(d), Some(image)) if d.listeners.contains(name) => {
                    Some(strom_broker::dynamic_config::overrides(image, node_id, name))
                }
                _ => None,
            };
            let tls = tls.clone();
            // File reads: off the async workers.
            // (A dynamic config that cannot be used does not stop file changes from loading.)
            let outcome = tokio::task::spawn_blocking(move || {
                let reconfigured = overrides.as_ref().map(|o| tls.reconfigure(o));
                (reconfigured, tls.reload_if_changed())
            })
            .await;
            let (reconfigured, reloaded) = match outcome {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(node = node_id, listener = %name, error = %e, "certificate check failed");
                    continue;
                }
            };
            let mut errors = Vec::new();
            match reconfigured {
                Some(Ok(true)) => {
                    tracing::info!(node = node_id, listener = %name, "TLS keystore/truststore changed by a dynamic broker config")
                }
                Some(Err(e)) => errors.push(format!("dynamic config: {e}")),
                _ => {}
            }
            match reloaded {
                Ok(true) => tracing::info!(node = node_id, listener = %name, "TLS certificates reloaded"),
                Ok(false) => {}
                Err(e) => errors.push(format!("files: {e}")),
            }
            if errors.is_empty() {
                last_error.remove(name);
            } else {
                let e = errors.join("; ");
                if last_error.get(name) != Some(&e) {
                    tracing::error!(node = node_id, listener = %name, error = %e, "TLS files or dynamic configs changed but cannot be used; the previous certificates stay in use");
                    last_error.insert(name.clone(), e);
                }
            }
        }
    }
}

/// Flushes logs that are due (`log.flush.interval.ms`) and applies retention on its interval.
/// Producer-state expiry (`producer.id.expiration.ms`, checked every
/// `producer.id.expiration.check.interval.ms`).
#[derive(Debug, Clone, Copy)]
struct ProducerExpiry {
    max_age_ms: i64,
    check_interval_ms: u64,
}

async fn housekeeping(
    replicas: Arc<ReplicaManager>,
    retention_check_ms: u64,
    producers: ProducerExpiry,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_retention = Instant::now();
    let mut last_producer_check = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = last_retention.elapsed() >= Duration::from_millis(retention_check_ms);
        if due {
            last_retention = Instant::now();
        }
        let now_ms = strom_protocol::values::now_ms();
        if last_producer_check.elapsed() >= Duration::from_millis(producers.check_interval_ms) {
            last_producer_check = Instant::now();
            let expired = replicas.expire_producers(now_ms, producers.max_age_ms);
            if expired > 0 {
                tracing::info!(node = replicas.node_id(), producers = expired, "idle producer ids expired");
            }
        }
        // fdatasync and file deletion block: not on the runtime's worker threads.
        let r = replicas.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || r.housekeeping(now_ms, due)).await {
            tracing::error!(error = %e, "housekeeping task failed");
        }
    }
}

/// One log-cleaner thread (`log.cleaner.threads` of them, each over its share of the
/// partitions): cleans what is due, and sleeps `log.cleaner.backoff.ms` when nothing was.
async fn log_cleaner(
    replicas: Arc<ReplicaManager>,
    shard: usize,
    shards: usize,
    backoff_ms: u64,
    io_max_bytes_per_second: Option<u64>,
    metrics: Arc<BrokerMetrics>,
    shutdown: CancellationToken,
) {
    loop {
        let r = replicas.clone();
        let now_ms = strom_protocol::values::now_ms();
        let stats = tokio::task::spawn_blocking(move || r.clean_round(now_ms, shard, shards, io_max_bytes_per_second))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "log cleaner task failed");
                CleanStats::default()
            });
        metrics.cleaner_bytes_read.inc_by(stats.bytes_read);
        metrics.cleaner_bytes_written.inc_by(stats.bytes_written);
        metrics.cleaner_records_removed.inc_by(stats.records_removed);
        if stats.segments_rewritten == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
            }
        } else if shutdown.is_cancelled() {
            return;
        }
    }
}

fn controller_config(config: &NodeConfig, data_dir: &Path, cluster_id: Option<String>) -> ControllerConfig {
    ControllerConfig {
        node_id: config.node_id,
        voters: config.quorum_voters.iter().map(|v| (v.id, format!("{}:{}", v.host, v.port))).collect(),
        metadata_dir: data_dir.join("__cluster_metadata-0"),
        broker_session_timeout_ms: config.broker_session_timeout_ms,
        num_partitions: config.num_partitions,
        default_replication_factor: config.default_replication_factor,
        unclean_leader_election_enable: config.unclean_leader_election_enable,
        auto_leader_rebalance_enable: config.auto_leader_rebalance_enable,
        raft_heartbeat_ms: (config.controller_election_timeout_ms / 3).max(10),
        cluster_id,
        tls: config.controller_tls().cloned(),
        sasl: config
            .controller_listener()
            .and_then(|l| config.listener_sasl.get(&l.name))
            .map(|s| (s.clone(), config.sasl_server_max_receive_size)),
        peers: config.controller_security.clone(),
        authorizer: config.authorizer.clone(),
    }
}

fn log_config(config: &NodeConfig) -> LogConfig {
    let d = &config.log;
    LogConfig {
        segment_bytes: d.segment_bytes,
        segment_ms: Some(d.segment_ms),
        retention_ms: d.retention_ms,
        retention_bytes: d.retention_bytes,
        index_interval_bytes: d.index_interval_bytes,
        flush_interval_messages: d.flush_interval_messages,
        flush_interval_ms: d.flush_interval_ms,
        max_batch_bytes: config.message_max_bytes.max(0) as usize,
        compression: d.compression,
        delete: d.delete,
        compact: d.compact,
        delete_retention_ms: d.cleaner.delete_retention_ms,
        min_cleanable_dirty_ratio: d.cleaner.min_cleanable_ratio,
        min_compaction_lag_ms: d.cleaner.min_compaction_lag_ms,
        max_compaction_lag_ms: d.cleaner.max_compaction_lag_ms,
        timestamp_type: if d.log_append_time { TimestampType::LogAppendTime } else { TimestampType::CreateTime },
        timestamp_before_max_ms: d.timestamp_before_max_ms,
        timestamp_after_max_ms: d.timestamp_after_max_ms,
    }
}

/// DescribeConfigs source of a broker key: static when the user set it, default otherwise.
fn source_of(config: &NodeConfig, key: &str) -> i8 {
    match config.raw.source(key) {
        Some(Source::Default) | None => config_source::DEFAULT_CONFIG,
        Some(_) => config_source::STATIC_BROKER_CONFIG,
    }
}

fn broker_settings(config: &NodeConfig) -> BrokerSettings {
    let d = &config.log;
    let opt = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    let from = |key: &str, value: String| (value, source_of(config, key));
    let fixed = |value: &str| (value.to_string(), config_source::DEFAULT_CONFIG);
    let bound = |v: Option<u64>| v.map_or(i64::MAX.to_string(), |v| v.to_string());
    let topic_defaults: BTreeMap<String, (String, i8)> = [
        (
            "cleanup.policy",
            from("log.cleanup.policy", config.raw.get("log.cleanup.policy").unwrap_or("delete").to_string()),
        ),
        (
            "compression.type",
            from("compression.type", config.raw.get("compression.type").unwrap_or("producer").to_string()),
        ),
        ("delete.retention.ms", from("log.cleaner.delete.retention.ms", d.cleaner.delete_retention_ms.to_string())),
        ("max.compaction.lag.ms", from("log.cleaner.max.compaction.lag.ms", bound(d.cleaner.max_compaction_lag_ms))),
        (
            "min.cleanable.dirty.ratio",
            from("log.cleaner.min.cleanable.ratio", d.cleaner.min_cleanable_ratio.to_string()),
        ),
        (
            "min.compaction.lag.ms",
            from("log.cleaner.min.compaction.lag.ms", d.cleaner.min_compaction_lag_ms.to_string()),
        ),
        ("file.delete.delay.ms", fixed("60000")),
        ("flush.messages", from("log.flush.interval.messages", d.flush_interval_messages.to_string())),
        (
            "flush.ms",
            from("log.flush.interval.ms", d.flush_interval_ms.map_or(i64::MAX.to_string(), |v| v.to_string())),
        ),
        ("index.interval.bytes", from("log.index.interval.bytes", d.index_interval_bytes.to_string())),
        ("max.message.bytes", from("message.max.bytes", config.message_max_bytes.to_string())),
        ("message.timestamp.after.max.ms", from("log.message.timestamp.after.max.ms", bound(d.timestamp_after_max_ms))),
        (
            "message.timestamp.before.max.ms",
            from("log.message.timestamp.before.max.ms", bound(d.timestamp_before_max_ms)),
        ),
        (
            "message.timestamp.type",
            from("log.message.timestamp.type", (if d.log_append_time { "LogAppendTime" } else { "CreateTime" }).into()),
        ),
        ("min.insync.replicas", from("min.insync.replicas", config.min_insync_replicas.to_string())),
        ("retention.bytes", from("log.retention.bytes", opt(d.retention_bytes))),
        ("retention.ms", from("log.retention.hours", opt(d.retention_ms))),
        ("segment.bytes", from("log.segment.bytes", d.segment_bytes.to_string())),
        ("segment.ms", from("log.roll.hours", d.segment_ms.to_string())),
        (
            "unclean.leader.election.enable",
            from("unclean.leader.election.enable", config.unclean_leader_election_enable.to_string()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let broker_configs =
        config.raw.iter().map(|(k, v, _)| (k.to_string(), (v.to_string(), source_of(config, k)))).collect();
    BrokerSettings {
        node_id: config.node_id,
        socket_request_max_bytes: config.socket_request_max_bytes as usize,
        sasl_server_max_receive_size: config.sasl_server_max_receive_size,
        authorizer: config.authorizer.clone(),
        max_connections: config.max_connections,
        fetch_max_bytes: config.fetch_max_bytes,
        replica_fetch_response_max_bytes: config.replica_fetch_response_max_bytes,
        fetch_response_memory_max_bytes: config.fetch_response_memory_max_bytes,
        offset_metadata_max_bytes: config.offset_metadata_max_bytes,
        connections_max_idle_ms: config.connections_max_idle_ms,
        auto_create_topics_enable: config.auto_create_topics_enable,
        num_partitions: config.num_partitions,
        default_replication_factor: config.default_replication_factor,
        min_insync_replicas: config.min_insync_replicas,
        offsets_topic_num_partitions: config.offsets_topic_num_partitions,
        offsets_topic_replication_factor: config.offsets_topic_replication_factor,
        offsets_topic_segment_bytes: config.offsets_topic_segment_bytes,
        transactions: config.transactions.clone(),
        inter_broker_listener: config.inter_broker_listener_name.clone(),
        inter_broker_security: config.inter_broker_security.clone(),
        group_initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
        group_max_size: config.group_max_size,
        group_min_session_timeout_ms: config.group_min_session_timeout_ms,
        group_max_session_timeout_ms: config.group_max_session_timeout_ms,
        offsets_retention_ms: config.offsets_retention_ms,
        offsets_retention_check_interval_ms: config.offsets_retention_check_interval_ms,
        metrics_per_partition: config.metrics_per_partition,
        topic_defaults,
        broker_configs,
        listener_tls: config
            .broker_listeners()
            .iter()
            .filter_map(|l| config.listener_tls.get(&l.name).map(|t| (l.name.clone(), t.clone())))
            .collect(),
    }
}
