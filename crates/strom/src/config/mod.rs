//! Node configuration: Kafka's `server.properties` key names and defaults.
//!
//! Layers, lowest precedence first: built-in defaults ([`keys::KEYS`]), the `--config`
//! file, `STROM_<KEY>` environment variables (dots as underscores), `--override key=value`.
//! [`RawConfig`] holds the merged strings with where each came from; [`NodeConfig::from_raw`]
//! turns them into typed values and checks the whole setup. Every error names the key.

pub mod keys;
mod parse;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use parse::{Listener, Voter};

/// Where a value came from (Kafka's DescribeConfigs calls these config sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Override,
}

/// A configuration problem. The node refuses to start on any of these (exit code 2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid --override {0:?}: expected key=value")]
    OverrideSyntax(String),
    #[error("invalid value {value:?} for {key}: {reason}")]
    BadValue { key: String, value: String, reason: String },
    #[error("{key}: {reason}")]
    Inconsistent { key: String, reason: String },
}

impl ConfigError {
    /// The key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::BadValue { key, .. } | ConfigError::Inconsistent { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn inconsistent(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Inconsistent { key: key.to_string(), reason: reason.into() }
}

/// The merged key/value strings, each with its source.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    values: BTreeMap<String, (String, Source)>,
    /// Keys set by the user that Strom does not know (warned about at start).
    pub unknown_keys: Vec<String>,
}

impl RawConfig {
    /// Merges the layers. `env` is the process environment (passed in so tests control it).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let mut raw = RawConfig::default();
        for k in keys::KEYS {
            if let Some(d) = k.default {
                raw.values.insert(k.name.to_string(), (d.to_string(), Source::Default));
            }
        }
        if let Some(path) = file {
            let f = std::fs::File::open(path)
                .map_err(|e| ConfigError::File { path: path.to_path_buf(), reason: e.to_string() })?;
            let props = java_properties::read(std::io::BufReader::new(f))
                .map_err(|e| ConfigError::File { path: path.to_path_buf(), reason: e.to_string() })?;
            for (k, v) in props {
                raw.set(k.trim().to_string(), v.trim().to_string(), Source::File);
            }
        }
        let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("STROM_")).collect();
        env.sort();
        for (var, v) in env {
            match env_key(&var) {
                Some(k) => raw.set(k.to_string(), v, Source::Env),
                // Not a key Strom reads: kept under its key form when it is one Strom must
                // refuse (so the refusal names it), otherwise only warned about.
                None => match var.strip_prefix("STROM_").map(env_var_key_form) {
                    Some(k) if keys::is_refused(&k, &v) => {
                        raw.values.insert(k, (v, Source::Env));
                    }
                    _ => raw.unknown_keys.push(var),
                },
            }
        }
        for o in overrides {
            let (k, v) = o.split_once('=').ok_or_else(|| ConfigError::OverrideSyntax(o.clone()))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(ConfigError::OverrideSyntax(o.clone()));
            }
            raw.set(k.to_string(), v.trim().to_string(), Source::Override);
        }
        Ok(raw)
    }

    fn set(&mut self, key: String, value: String, source: Source) {
        if !keys::is_known(&key) && !self.unknown_keys.contains(&key) {
            self.unknown_keys.push(key.clone());
        }
        self.values.insert(key, (value, source));
    }

    /// The value of `key` (after merging), if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// Where the value of `key` came from.
    pub fn source(&self, key: &str) -> Option<Source> {
        self.values.get(key).map(|(_, s)| *s)
    }

    /// Keys the user set that Kafka acts on and Strom does not implement yet
    /// ([`keys::REFUSED_UNTIL_IMPLEMENTED`]); the node refuses to start with any of them.
    /// Environment variables count under their key form (`STROM_SSL_KEYSTORE_LOCATION` is
    /// `ssl.keystore.location`).
    pub fn refused_keys(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|(k, (v, s))| *s != Source::Default && keys::is_refused(k, v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every merged key and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, Source)> {
        self.values.iter().map(|(k, (v, s))| (k.as_str(), v.as_str(), *s))
    }
}

/// Maps `STROM_LOG_RETENTION_MS` back to `log.retention.ms` by matching the known keys.
fn env_key(var: &str) -> Option<&'static str> {
    keys::KEYS
        .iter()
        .map(|k| k.name)
        .chain(keys::ACCEPTED_WITHOUT_EFFECT.iter().copied())
        .find(|k| keys::env_var_name(k) == var)
}

/// `SSL_KEYSTORE_LOCATION` as `ssl.keystore.location` (the inverse of [`keys::env_var_name`]
/// for keys without dashes).
fn env_var_key_form(var: &str) -> String {
    var.to_ascii_lowercase().replace('_', ".")
}

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// Defaults for partition logs (topics may override them).
#[derive(Debug, Clone, PartialEq)]
pub struct LogDefaults {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// `None`: keep forever.
    pub retention_ms: Option<u64>,
    /// `None`: no size limit.
    pub retention_bytes: Option<u64>,
    pub retention_check_interval_ms: u64,
    pub index_interval_bytes: u64,
    pub flush_interval_messages: u64,
    pub flush_interval_ms: Option<u64>,
    /// `log.cleanup.policy` names compact.
    pub compact: bool,
    /// `log.cleanup.policy` names delete (retention by time and size applies).
    pub delete: bool,
    pub cleaner: CleanerSettings,
    /// `compression.type`: the codec stored batches have (`Producer`: as sent).
    pub compression: strom_storage::CompressionType,
    /// `log.message.timestamp.type` is LogAppendTime.
    pub log_append_time: bool,
    /// `log.message.timestamp.before.max.ms` (`None`: Long.MAX_VALUE, no bound).
    pub timestamp_before_max_ms: Option<u64>,
    /// `log.message.timestamp.after.max.ms` (`None`: no bound).
    pub timestamp_after_max_ms: Option<u64>,
}

/// The log cleaner (`log.cleaner.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct CleanerSettings {
    pub enable: bool,
    pub threads: usize,
    pub backoff_ms: u64,
    pub min_cleanable_ratio: f64,
    pub delete_retention_ms: u64,
    pub min_compaction_lag_ms: u64,
    /// `None`: Long.MAX_VALUE.
    pub max_compaction_lag_ms: Option<u64>,
    /// `None`: Double.MAX_VALUE, unthrottled.
    pub io_max_bytes_per_second: Option<u64>,
}

/// The typed, validated configuration of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: i32,
    pub roles: Roles,
    pub quorum_voters: Vec<Voter>,
    pub listeners: Vec<Listener>,
    /// What clients are told, one per broker listener.
    pub advertised_listeners: Vec<Listener>,
    pub security_protocols: BTreeMap<String, String>,
    pub controller_listener_names: Vec<String>,
    pub inter_broker_listener_name: String,
    /// Each SSL / SASL_SSL listener's TLS (its files read and checked at start, and watched
    /// for changes), the controller listener's too when it is SSL (even on a broker-only
    /// node, which only connects to it).
    pub listener_tls: BTreeMap<String, Arc<ListenerTls>>,
    /// The authorizer, when `authorizer.class.name` is set.
    pub authorizer: Option<strom_metadata::acl::AuthorizerSettings>,
    /// Each SASL_PLAINTEXT / SASL_SSL listener's SASL.
    pub listener_sasl: BTreeMap<String, strom_security::sasl::SaslConfig>,
    /// How this broker reaches other brokers (TLS, SASL) on the inter-broker listener.
    pub inter_broker_security: strom_client::ClientSecurity,
    /// How this node reaches the controller listener on the voters (TLS, SASL PLAIN login).
    pub controller_security: strom_metadata::transport::ControllerSecurity,
    pub sasl_server_max_receive_size: usize,
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i32,
    pub auto_create_topics_enable: bool,
    pub auto_leader_rebalance_enable: bool,
    pub log: LogDefaults,
    pub offsets_topic_replication_factor: i16,
    pub offsets_topic_segment_bytes: u64,
    /// The transaction coordinator's settings (`transaction.*`, `transactional.id.*`).
    pub transactions: strom_broker::coordinator::txn::TxnSettings,
    pub offsets_topic_num_partitions: i32,
    pub replica_lag_time_max_ms: u64,
    pub broker_session_timeout_ms: u64,
    /// `controller.quorum.election.timeout.ms`: the Raft election timeout (its heartbeat is a
    /// third of it).
    pub controller_election_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub broker_rack: Option<String>,
    pub unclean_leader_election_enable: bool,
    pub message_max_bytes: i32,
    pub socket_request_max_bytes: i32,
    pub group_initial_rebalance_delay_ms: u64,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub metrics_listener: Option<SocketAddr>,
    /// True when `metrics.listener` was set by the user (a bind failure then stops the node).
    pub metrics_listener_explicit: bool,
    pub metrics_per_partition: bool,
    pub max_connections: usize,
    pub connections_max_idle_ms: u64,
    /// `max.connections.per.ip`, and its per-address exceptions.
    pub max_connections_per_ip: usize,
    pub max_connections_per_ip_overrides: BTreeMap<std::net::IpAddr, usize>,
    /// `queued.max.request.bytes`; `None`: unbounded (Kafka's -1).
    pub queued_max_request_bytes: Option<usize>,
    pub fetch_max_bytes: usize,
    /// `fetch.response.memory.max.bytes`: the broker's budget for consumer Fetch responses.
    pub fetch_response_memory_max_bytes: usize,
    pub replica_fetch_response_max_bytes: usize,
    pub offset_metadata_max_bytes: usize,
    /// `num.io.threads`: concurrent log reads and appends of request handlers.
    pub num_io_threads: usize,
    pub producer_id_expiration_ms: i64,
    pub group_max_size: usize,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub producer_id_expiration_check_interval_ms: u64,
    /// The merged strings, kept for DescribeConfigs (values and sources).
    pub raw: RawConfig,
}

impl NodeConfig {
    /// Parses and validates. The first problem found is returned.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        use parse::*;
        let r = &raw;
        let node_id: i32 = int(r, "node.id")?;
        if node_id < 0 {
            return Err(bad(r, "node.id", "must be 0 or greater"));
        }
        let roles = roles(r)?;
        let quorum_voters = match r.get("controller.quorum.voters") {
            Some(v) if !v.trim().is_empty() => voters(r, v)?,
            _ => Vec::new(),
        };
        let security_protocols = protocol_map(r)?;
        let listeners = listeners(r, "listeners", &security_protocols)?;
        if let Some(key) = r.refused_keys().first() {
            return Err(inconsistent(
                key,
                "changes behaviour in Kafka and Strom does not implement it yet; remove it \
                 (see docs/operations.md, \"Configuration keys Strom refuses\")",
            ));
        }
        let controller_listener_names = list(r, "controller.listener.names");
        let inter_broker_listener_name = r.get("inter.broker.listener.name").unwrap_or("").trim().to_string();
        // A per-listener key must name a listener of this node (or the controller listener it
        // reaches), in lower case as Kafka's prefix writes it: any other would be read by no one.
        let known: Vec<String> = listeners
            .iter()
            .map(|l| l.name.as_str())
            .chain(controller_listener_names.first().map(String::as_str))
            .map(str::to_ascii_lowercase)
            .collect();
        for (key, _, _) in r.iter() {
            let Some(listener) = key.strip_prefix("listener.name.").and_then(|rest| rest.split_once('.')).map(|x| x.0)
            else {
                continue;
            };
            if !known.iter().any(|k| k == listener) {
                return Err(inconsistent(
                    key,
                    format!(
                        "names no listener of this node ({known:?}; the prefix is listener.name.<name in lower case>.)"
                    ),
                ));
            }
        }
        let listener_tls =
            listener_tls(r, &listeners, &security_protocols, &controller_listener_names, &inter_broker_listener_name)?;
        let listener_sasl = listener_sasl(r, &listeners)?;
        let inter_broker_security =
            inter_broker_security(r, &listeners, &inter_broker_listener_name, &listener_tls, &listener_sasl)?;
        let controller_security =
            controller_security(r, &security_protocols, &controller_listener_names, &listener_tls, &listener_sasl)?;
        // A SCRAM login entry is a broker's own credential for the inter-broker listener.
        for l in &listeners {
            for mech in ["scram-sha-256", "scram-sha-512"] {
                let key = format!("listener.name.{}.{mech}.sasl.jaas.config", l.name.to_ascii_lowercase());
                let used = l.name == inter_broker_listener_name
                    && r.get("sasl.mechanism.inter.broker.protocol")
                        .is_some_and(|m| m.trim().eq_ignore_ascii_case(mech));
                if r.get(&key).is_some() && !used {
                    return Err(inconsistent(
                        &key,
                        "only the inter-broker listener's entry for sasl.mechanism.inter.broker.protocol is read \
                         (SCRAM users live in the metadata log: strom configs)",
                    ));
                }
            }
        }
        let sasl_server_max_receive_size = int_at_least(r, "sasl.server.max.receive.size", 1)? as usize;
        let authorizer = match r.get("authorizer.class.name").map(str::trim) {
            Some(class) if !class.is_empty() => {
                let super_users: Vec<String> = r
                    .get("super.users")
                    .unwrap_or("")
                    .split(';')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect();
                if let Some(bad_user) = super_users.iter().find(|u| !u.contains(':') || u.ends_with(':')) {
                    return Err(bad(r, "super.users", &format!("{bad_user} is not of the form User:name")));
                }
                Some(strom_metadata::acl::AuthorizerSettings {
                    super_users,
                    allow_if_no_acl: boolean(r, "allow.everyone.if.no.acl.found")?,
                })
            }
            _ => None,
        };
        let controller_listener_name = controller_listener_names.first();
        check_nodes_reach_the_controller(
            authorizer.as_ref(),
            controller_listener_name,
            controller_listener_name.and_then(|n| listener_tls.get(n)),
            controller_security.sasl.as_ref(),
        )?;

        // Roles against quorum and listeners (KRaft's own start-up checks).
        if quorum_voters.is_empty() {
            return Err(inconsistent(
                "controller.quorum.voters",
                "must be set: every node needs the controller quorum",
            ));
        }
        if roles.controller {
            if !quorum_voters.iter().any(|v| v.id == node_id) {
                return Err(inconsistent(
                    "controller.quorum.voters",
                    format!("node.id {node_id} has the controller role but is not one of the voters"),
                ));
            }
            let Some(first) = controller_listener_names.first() else {
                return Err(inconsistent(
                    "controller.listener.names",
                    "must name a listener when process.roles has controller",
                ));
            };
            if !listeners.iter().any(|l| &l.name == first) {
                return Err(inconsistent("controller.listener.names", format!("listener {first} is not in listeners")));
            }
        }
        if roles.broker {
            if !roles.controller {
                if let Some(l) = listeners.iter().find(|l| controller_listener_names.contains(&l.name)) {
                    return Err(inconsistent(
                        "listeners",
                        format!("a broker-only node must not bind the controller listener {}", l.name),
                    ));
                }
            }
            if !listeners.iter().any(|l| l.name == inter_broker_listener_name) {
                return Err(inconsistent(
                    "inter.broker.listener.name",
                    format!("listener {inter_broker_listener_name:?} is not in listeners"),
                ));
            }
        }
        let broker_listeners: Vec<&Listener> =
            listeners.iter().filter(|l| !controller_listener_names.contains(&l.name)).collect();
        let advertised_listeners = match r.get("advertised.listeners") {
            Some(v) if !v.trim().is_empty() => {
                let adv = listeners_from(r, "advertised.listeners", v, &security_protocols)?;
                if let Some(l) = adv.iter().find(|l| l.host == "0.0.0.0" || l.host == "::") {
                    return Err(inconsistent(
                        "advertised.listeners",
                        format!("{} cannot use the nonroutable meta-address {}", l.name, l.host),
                    ));
                }
                for l in &adv {
                    if !listeners.iter().any(|b| b.name == l.name) {
                        return Err(inconsistent(
                            "advertised.listeners",
                            format!("listener {} is not in listeners", l.name),
                        ));
                    }
                }
                adv
            }
            _ => broker_listeners.iter().map(|l| Listener { host: routable_host(&l.host), ..(*l).clone() }).collect(),
        };

        let log_dirs: Vec<PathBuf> = match r.get("log.dirs").or_else(|| r.get("log.dir")) {
            Some(v) => v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(PathBuf::from).collect(),
            None => Vec::new(),
        };
        if log_dirs.is_empty() {
            return Err(bad(r, "log.dirs", "must name at least one directory"));
        }
        if log_dirs.len() > 1 {
            // Several directories (Kafka's JBOD) would need partitions placed across them and
            // a failed directory taken offline alone; until then one is served, not several
            // with all but the first silently unused.
            return Err(bad(
                r,
                "log.dirs",
                "several directories (JBOD) are not supported yet: name one (a RAID or LVM volume spans disks)",
            ));
        }
        let message_max_bytes = int_in(r, "message.max.bytes", 0, i32::MAX as i64)? as i32;
        let socket_request_max_bytes = int_in(r, "socket.request.max.bytes", 1, i32::MAX as i64)? as i32;
        if message_max_bytes > socket_request_max_bytes {
            return Err(inconsistent(
                "message.max.bytes",
                format!(
                    "{message_max_bytes} is more than socket.request.max.bytes ({socket_request_max_bytes}): \
                     no produce request could carry a batch that large"
                ),
            ));
        }
        let queued_max_request_bytes = match int_in(r, "queued.max.request.bytes", i64::MIN, i64::MAX)? {
            q if q <= 0 => None,
            q if q < socket_request_max_bytes as i64 => {
                // Kafka's own check: a request larger than the pool could never be read.
                return Err(inconsistent(
                    "queued.max.request.bytes",
                    format!("{q} is less than socket.request.max.bytes ({socket_request_max_bytes})"),
                ));
            }
            q => Some(q.min(i32::MAX as i64 * 64) as usize),
        };
        let max_connections_per_ip_overrides = per_ip_overrides(r)?;
        let fetch_max_bytes = int_in(r, "fetch.max.bytes", 1024, i32::MAX as i64)? as usize;
        let group_min_session_timeout_ms = int_in(r, "group.min.session.timeout.ms", 0, i32::MAX as i64)? as i32;
        let group_max_session_timeout_ms = int_in(r, "group.max.session.timeout.ms", 0, i32::MAX as i64)? as i32;
        if group_min_session_timeout_ms > group_max_session_timeout_ms {
            return Err(inconsistent(
                "group.min.session.timeout.ms",
                format!(
                    "{group_min_session_timeout_ms} is more than group.max.session.timeout.ms \
                     ({group_max_session_timeout_ms}): no member could join"
                ),
            ));
        }
        let fetch_response_memory_max_bytes =
            usize::try_from(int_in(r, "fetch.response.memory.max.bytes", 1024, i64::MAX)?).unwrap_or(usize::MAX);
        if fetch_response_memory_max_bytes < fetch_max_bytes {
            // The budget would silently shrink every response below fetch.max.bytes.
            return Err(inconsistent(
                "fetch.response.memory.max.bytes",
                format!("{fetch_response_memory_max_bytes} is less than fetch.max.bytes ({fetch_max_bytes})"),
            ));
        }

        let log = LogDefaults {
            segment_bytes: int_at_least(r, "log.segment.bytes", 14)?,
            segment_ms: ms_with_fallback(r, "log.roll.ms", None, "log.roll.hours")?
                .ok_or_else(|| bad(r, "log.roll.hours", "must not be -1"))?,
            retention_ms: ms_with_fallback(
                r,
                "log.retention.ms",
                Some("log.retention.minutes"),
                "log.retention.hours",
            )?,
            retention_bytes: optional_limit(r, "log.retention.bytes")?,
            retention_check_interval_ms: int_at_least(r, "log.retention.check.interval.ms", 1)?,
            index_interval_bytes: int_at_least(r, "log.index.interval.bytes", 0)?,
            flush_interval_messages: int_at_least(r, "log.flush.interval.messages", 1)?,
            flush_interval_ms: match r.get("log.flush.interval.ms") {
                Some(_) => Some(int_at_least(r, "log.flush.interval.ms", 0)?),
                None => None,
            },
            compact: cleanup_policy(r)?.0,
            delete: cleanup_policy(r)?.1,
            cleaner: CleanerSettings {
                enable: boolean(r, "log.cleaner.enable")?,
                threads: int_in(r, "log.cleaner.threads", 1, 64)? as usize,
                backoff_ms: int_at_least(r, "log.cleaner.backoff.ms", 1)?,
                min_cleanable_ratio: double_in(r, "log.cleaner.min.cleanable.ratio", 0.0, 1.0)?,
                delete_retention_ms: int_at_least(r, "log.cleaner.delete.retention.ms", 0)?,
                min_compaction_lag_ms: int_at_least(r, "log.cleaner.min.compaction.lag.ms", 0)?,
                max_compaction_lag_ms: timestamp_bound(r, "log.cleaner.max.compaction.lag.ms")?,
                io_max_bytes_per_second: {
                    let v = double_in(r, "log.cleaner.io.max.bytes.per.second", 1.0, f64::MAX)?;
                    (v < 1e18).then_some(v as u64)
                },
            },
            compression: strom_storage::CompressionType::parse(r.get("compression.type").unwrap_or("producer"))
                .ok_or_else(|| {
                    bad(r, "compression.type", "expected producer, uncompressed, gzip, snappy, lz4 or zstd")
                })?,
            log_append_time: match r.get("log.message.timestamp.type").map(str::trim) {
                Some("LogAppendTime") => true,
                Some("CreateTime") | None => false,
                Some(_) => return Err(bad(r, "log.message.timestamp.type", "expected CreateTime or LogAppendTime")),
            },
            timestamp_before_max_ms: timestamp_bound(r, "log.message.timestamp.before.max.ms")?,
            timestamp_after_max_ms: timestamp_bound(r, "log.message.timestamp.after.max.ms")?,
        };

        let broker_session_timeout_ms: u64 = int_at_least(r, "broker.session.timeout.ms", 1)?;
        let broker_heartbeat_interval_ms: u64 = int_at_least(r, "broker.heartbeat.interval.ms", 1)?;
        let controller_election_timeout_ms: u64 = int_at_least(r, "controller.quorum.election.timeout.ms", 30)?;
        if broker_heartbeat_interval_ms >= broker_session_timeout_ms {
            return Err(inconsistent(
                "broker.heartbeat.interval.ms",
                format!("{broker_heartbeat_interval_ms} must be less than broker.session.timeout.ms ({broker_session_timeout_ms})"),
            ));
        }
        // Only a metrics listener the user asked for must bind; the built-in default is
        // skipped with a warning when its port is taken (a second node on the same host).
        let metrics_listener_explicit = r.source("metrics.listener").is_some_and(|s| s != Source::Default);
        let metrics_listener = match r.get("metrics.listener").map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<SocketAddr>()
                    .map_err(|_| bad(r, "metrics.listener", "expected ip:port, or empty to disable"))?,
            ),
        };

        Ok(NodeConfig {
            node_id,
            roles,
            quorum_voters,
            advertised_listeners,
            listeners,
            security_protocols,
            listener_tls,
            listener_sasl,
            inter_broker_security,
            controller_security,
            sasl_server_max_receive_size,
            authorizer,
            controller_listener_names,
            inter_broker_listener_name,
            log_dirs,
            num_partitions: int_in(r, "num.partitions", 1, i32::MAX as i64)? as i32,
            default_replication_factor: int_in(r, "default.replication.factor", 1, i16::MAX as i64)? as i16,
            min_insync_replicas: int_in(r, "min.insync.replicas", 1, i32::MAX as i64)? as i32,
            auto_create_topics_enable: boolean(r, "auto.create.topics.enable")?,
            auto_leader_rebalance_enable: boolean(r, "auto.leader.rebalance.enable")?,
            log,
            offsets_topic_replication_factor: int_in(r, "offsets.topic.replication.factor", 1, i16::MAX as i64)? as i16,
            offsets_topic_segment_bytes: int_at_least(r, "offsets.topic.segment.bytes", 14)?,
            offsets_topic_num_partitions: int_in(r, "offsets.topic.num.partitions", 1, i32::MAX as i64)? as i32,
            transactions: strom_broker::coordinator::txn::TxnSettings {
                num_partitions: int_in(r, "transaction.state.log.num.partitions", 1, i32::MAX as i64)? as i32,
                replication_factor: int_in(r, "transaction.state.log.replication.factor", 1, i16::MAX as i64)? as i16,
                min_isr: int_in(r, "transaction.state.log.min.isr", 1, i32::MAX as i64)? as i32,
                segment_bytes: int_at_least(r, "transaction.state.log.segment.bytes", 14)?,
                max_timeout_ms: int_in(r, "transaction.max.timeout.ms", 1, i32::MAX as i64)? as i32,
                id_expiration_ms: int_in(r, "transactional.id.expiration.ms", 1, i32::MAX as i64)?,
                abort_check_interval_ms: int_at_least(
                    r,
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                    1,
                )?,
                expiration_check_interval_ms: int_at_least(
                    r,
                    "transaction.remove.expired.transaction.cleanup.interval.ms",
                    1,
                )?,
                verification: boolean(r, "transaction.partition.verification.enable")?,
            },
            replica_lag_time_max_ms: int_at_least(r, "replica.lag.time.max.ms", 1)?,
            broker_session_timeout_ms,
            controller_election_timeout_ms,
            broker_heartbeat_interval_ms,
            broker_rack: r.get("broker.rack").map(str::trim).filter(|s| !s.is_empty()).map(String::from),
            unclean_leader_election_enable: boolean(r, "unclean.leader.election.enable")?,
            message_max_bytes,
            socket_request_max_bytes,
            group_initial_rebalance_delay_ms: int_at_least(r, "group.initial.rebalance.delay.ms", 0)?,
            offsets_retention_ms: int_in(r, "offsets.retention.minutes", 1, i32::MAX as i64)? * 60_000,
            offsets_retention_check_interval_ms: int_at_least(r, "offsets.retention.check.interval.ms", 1)?,
            metrics_listener,
            metrics_listener_explicit,
            metrics_per_partition: boolean(r, "metrics.per.partition.enable")?,
            max_connections: int_at_least(r, "max.connections", 1)? as usize,
            connections_max_idle_ms: int_at_least(r, "connections.max.idle.ms", 1)?,
            max_connections_per_ip: int_in(r, "max.connections.per.ip", 0, i32::MAX as i64)? as usize,
            max_connections_per_ip_overrides,
            queued_max_request_bytes,
            fetch_max_bytes,
            fetch_response_memory_max_bytes,
            replica_fetch_response_max_bytes: int_in(r, "replica.fetch.response.max.bytes", 0, i32::MAX as i64)?
                as usize,
            offset_metadata_max_bytes: int_in(r, "offset.metadata.max.bytes", 0, i32::MAX as i64)? as usize,
            num_io_threads: int_in(r, "num.io.threads", 1, 256)? as usize,
            producer_id_expiration_ms: int_in(r, "producer.id.expiration.ms", 1, i32::MAX as i64)?,
            group_max_size: int_in(r, "group.max.size", 1, i32::MAX as i64)? as usize,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            producer_id_expiration_check_interval_ms: int_at_least(r, "producer.id.expiration.check.interval.ms", 1)?,
            raw,
        })
    }

    /// The listener the controller quorum binds (present when this node is a controller).
    pub fn controller_listener(&self) -> Option<&Listener> {
        let name = self.controller_listener_names.first()?;
        self.roles.controller.then(|| self.listeners.iter().find(|l| &l.name == name)).flatten()
    }

    /// The controller listener's TLS when it is `SSL` (served if this node is a controller,
    /// used to reach the quorum either way).
    pub fn controller_tls(&self) -> Option<&Arc<ListenerTls>> {
        self.listener_tls.get(self.controller_listener_names.first()?)
    }

    /// The listeners Kafka clients connect to (present when this node is a broker).
    pub fn broker_listeners(&self) -> Vec<&Listener> {
        if !self.roles.broker {
            return Vec::new();
        }
        self.listeners.iter().filter(|l| !self.controller_listener_names.contains(&l.name)).collect()
    }
}

/// The host to advertise for a bind host: the machine's host name for a wildcard bind (as
/// Kafka does), otherwise the host itself.
fn routable_host(host: &str) -> String {
    if host.is_empty() || host == "0.0.0.0" || host == "::" {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests;

pub use strom_security::reload::ListenerTls;

/// `max.connections.per.ip.overrides`: `host-or-ip:count,…` (a host name is resolved once, at
/// start, to each of its addresses).
fn per_ip_overrides(r: &RawConfig) -> Result<BTreeMap<std::net::IpAddr, usize>, ConfigError> {
    use std::net::ToSocketAddrs;
    let key = "max.connections.per.ip.overrides";
    let mut out = BTreeMap::new();
    for entry in r.get(key).unwrap_or("").split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, count) =
            entry.rsplit_once(':').ok_or_else(|| parse::bad(r, key, &format!("{entry}: expected host:count")))?;
        let count: usize =
            count.trim().parse().map_err(|_| parse::bad(r, key, &format!("{entry}: the count must be a number")))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<std::net::IpAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, 0)
                .to_socket_addrs()
                .map_err(|e| parse::bad(r, key, &format!("{host} does not resolve: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        for ip in addrs {
            out.insert(ip, count);
        }
    }
    Ok(out)
}

/// With an authorizer, brokers and controllers need CLUSTER_ACTION on the controller listener,
/// and before the quorum runs no ACL can grant it: the principal this node has there must be
/// a super user (or `allow.everyone.if.no.acl.found` on). The principal is the SASL user the
/// node logs in as when the listener is SASL; else the node's certificate subject (mapped by
/// the listener's rules) when the listener is SSL and asks for client certificates;
/// `User:ANONYMOUS` otherwise. Caught here, as a clear refusal, instead of a node that never
/// registers.
fn check_nodes_reach_the_controller(
    authorizer: Option<&strom_metadata::acl::AuthorizerSettings>,
    controller_listener: Option<&String>,
    controller_tls: Option<&Arc<ListenerTls>>,
    login: Option<&strom_metadata::controller_sasl::PlainLogin>,
) -> Result<(), ConfigError> {
    let (Some(a), Some(listener)) = (authorizer, controller_listener) else { return Ok(()) };
    if a.allow_if_no_acl {
        return Ok(());
    }
    let mtls = controller_tls.filter(|t| t.settings.client_auth != strom_security::tls::ClientAuth::None);
    let principal = match (login, mtls) {
        (Some(login), _) => format!("User:{}", login.username),
        (None, Some(t)) => format!(
            "User:{}",
            t.settings
                .own_principal()
                .map_err(|e| inconsistent("super.users", format!("the controller listener {listener}: {e}")))?
        ),
        (None, None) => format!("User:{}", strom_security::ANONYMOUS),
    };
    if a.super_users.contains(&principal) {
        return Ok(());
    }
    let how = if login.is_some() {
        "the user of listener.name.<listener>.plain.sasl.jaas.config"
    } else if controller_tls.is_some() {
        "its certificate's subject, mapped by ssl.principal.mapping.rules"
    } else {
        "no one is authenticated on a listener without ssl.client.auth"
    };
    Err(inconsistent(
        "super.users",
        format!(
            "with the authorizer on, brokers and controllers need CLUSTER_ACTION on the controller listener \
             {listener}, and this node reaches it as {principal} ({how}), which is not a super user: add it \
             to super.users, or make the listener SSL with ssl.client.auth=required and list the nodes' \
             certificate principals, or SASL with the nodes' PLAIN user"
        ),
    ))
}

/// How this node reaches the controller listener of the quorum's voters: the listener's TLS
/// client side when it is `SSL` or `SASL_SSL`, and a SASL PLAIN login when it is
/// `SASL_PLAINTEXT` or `SASL_SSL` (`sasl.mechanism.controller.protocol`, and the username
/// and password of `listener.name.<listener>.plain.sasl.jaas.config`). Only PLAIN is served
/// there ([`strom_metadata::controller_sasl`] says why); a node that binds the listener is
/// refused if it enables another mechanism on it.
fn controller_security(
    r: &RawConfig,
    protocols: &BTreeMap<String, String>,
    controller_listener_names: &[String],
    tls: &BTreeMap<String, Arc<ListenerTls>>,
    sasl: &BTreeMap<String, strom_security::sasl::SaslConfig>,
) -> Result<strom_metadata::transport::ControllerSecurity, ConfigError> {
    use strom_security::sasl::{jaas, Mechanism};
    let mut out = strom_metadata::transport::ControllerSecurity::default();
    let mech_key = "sasl.mechanism.controller.protocol";
    let Some(name) = controller_listener_names.first() else {
        if r.source(mech_key).is_some_and(|s| s != Source::Default) {
            return Err(inconsistent(mech_key, "has no effect: controller.listener.names is empty"));
        }
        return Ok(out);
    };
    out.tls = tls.get(name).and_then(|t| t.client.clone());
    let protocol = protocols.get(name).map_or("PLAINTEXT", String::as_str);
    if !protocol.starts_with("SASL_") {
        if r.source(mech_key).is_some_and(|s| s != Source::Default) {
            return Err(inconsistent(mech_key, format!("has no effect: the controller listener {name} is {protocol}")));
        }
        return Ok(out);
    }
    let mechanism = r.get(mech_key).unwrap_or("GSSAPI").trim().to_string();
    if Mechanism::from_name(&mechanism) != Some(Mechanism::Plain) {
        return Err(inconsistent(
            mech_key,
            format!(
                "{mechanism} is not served on the controller listener {name} ({protocol}): Strom serves PLAIN \
                 there (SCRAM credentials live in the metadata log, which the quorum must agree on before \
                 its members can log in to each other); set it to PLAIN"
            ),
        ));
    }
    if let Some(server) = sasl.get(name) {
        let (_, enabled_key) = listener_value(r, name, "sasl.enabled.mechanisms")
            .unwrap_or_else(|| (String::new(), "sasl.enabled.mechanisms".into()));
        if let Some(other) = server.mechanisms.iter().find(|m| **m != Mechanism::Plain) {
            return Err(inconsistent(
                &enabled_key,
                format!("the controller listener {name} serves PLAIN only, not {}", other.name()),
            ));
        }
        if !server.mechanisms.contains(&Mechanism::Plain) {
            return Err(inconsistent(&enabled_key, format!("the controller listener {name} must enable PLAIN")));
        }
    }
    let jaas_key = format!("listener.name.{}.plain.sasl.jaas.config", name.to_ascii_lowercase());
    let why = format!("nodes log in to the controller listener {name} with this entry's username and password");
    let (username, password) = jaas_login(r, &jaas_key, why, Some(jaas::PLAIN_LOGIN_MODULE))?;
    out.sasl = Some(strom_metadata::controller_sasl::PlainLogin { username, password });
    Ok(out)
}

/// How this broker reaches other brokers on the inter-broker listener: its TLS as a client
/// (the listener's truststore checks the leader; its keystore is this broker's client
/// certificate) and SASL (`sasl.mechanism.inter.broker.protocol`, the user and password from
/// `listener.name.<listener>.<mechanism>.sasl.jaas.config`'s `username`/`password`).
fn inter_broker_security(
    r: &RawConfig,
    listeners: &[Listener],
    inter_broker_listener_name: &str,
    tls: &BTreeMap<String, Arc<ListenerTls>>,
    sasl: &BTreeMap<String, strom_security::sasl::SaslConfig>,
) -> Result<strom_client::ClientSecurity, ConfigError> {
    use strom_security::sasl::Mechanism;
    let mut out = strom_client::ClientSecurity::default();
    let Some(l) = listeners.iter().find(|l| l.name == inter_broker_listener_name) else { return Ok(out) };
    let mech_key = "sasl.mechanism.inter.broker.protocol";
    if !l.security_protocol.starts_with("SASL_") && r.source(mech_key).is_some_and(|s| s != Source::Default) {
        return Err(inconsistent(
            mech_key,
            format!("has no effect: the inter-broker listener {} is {}", l.name, l.security_protocol),
        ));
    }
    let lower = l.name.to_ascii_lowercase();
    if let Some(t) = tls.get(&l.name) {
        let client = t.client.clone().ok_or_else(|| {
            inconsistent(
                &format!("listener.name.{lower}.ssl.truststore.location"),
                "inter-broker TLS needs a client side",
            )
        })?;
        out.tls = Some(client);
    }
    if let Some(s) = sasl.get(&l.name) {
        let key = "sasl.mechanism.inter.broker.protocol";
        let name = r.get(key).unwrap_or("GSSAPI").trim().to_string();
        let mechanism = Mechanism::from_name(&name).ok_or_else(|| {
            inconsistent(key, format!("{name} is not served (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 are)"))
        })?;
        if !s.mechanisms.contains(&mechanism) {
            return Err(inconsistent(key, format!("{name} is not enabled on the inter-broker listener {}", l.name)));
        }
        let jaas_key = format!("listener.name.{lower}.{}.sasl.jaas.config", name.to_ascii_lowercase());
        let why = format!("brokers log in to {} with this entry's username and password", l.name);
        let (username, password) = jaas_login(r, &jaas_key, why, None)?;
        out.sasl = Some(strom_client::SaslCredentials { mechanism, username, password });
    }
    Ok(out)
}

/// This node's own login from JAAS entry `jaas_key`: its `username` and `password` (`why`
/// says what needs them when the key is missing; `module`: the login module it must name).
fn jaas_login(
    r: &RawConfig,
    jaas_key: &str,
    why: String,
    module: Option<&str>,
) -> Result<(String, String), ConfigError> {
    use strom_security::sasl::jaas;
    let text = r.get(jaas_key).ok_or_else(|| inconsistent(jaas_key, why))?;
    let entry = jaas::parse(text).map_err(|why| inconsistent(jaas_key, why))?;
    if let Some(module) = module.filter(|m| *m != entry.login_module) {
        return Err(inconsistent(jaas_key, format!("needs {module}, not {}", entry.login_module)));
    }
    let field =
        |f: &str| entry.options.get(f).cloned().ok_or_else(|| inconsistent(jaas_key, format!("no {f}=\"...\" option")));
    Ok((field("username")?, field("password")?))
}

/// A listener's value of `key`: `listener.name.<listener>.<key>` (the listener name in lower
/// case, as Kafka) first, then `key`. Returns the value and the key it came from.
fn listener_value(r: &RawConfig, listener: &str, key: &str) -> Option<(String, String)> {
    let prefixed = format!("listener.name.{}.{key}", listener.to_ascii_lowercase());
    match r.get(&prefixed) {
        Some(v) => Some((v.to_string(), prefixed)),
        None => r.get(key).map(|v| (v.to_string(), key.to_string())),
    }
}

/// The SASL of every SASL_PLAINTEXT / SASL_SSL listener: `sasl.enabled.mechanisms` (PLAIN,
/// SCRAM-SHA-256, SCRAM-SHA-512; Kafka's default GSSAPI is not served), PLAIN's users from
/// `listener.name.<listener>.plain.sasl.jaas.config`, `connections.max.reauth.ms`.
fn listener_sasl(
    r: &RawConfig,
    listeners: &[Listener],
) -> Result<BTreeMap<String, strom_security::sasl::SaslConfig>, ConfigError> {
    use strom_security::sasl::{jaas, Mechanism, SaslConfig};
    let mut out = BTreeMap::new();
    for l in listeners.iter().filter(|l| l.security_protocol.starts_with("SASL_")) {
        let (value, key) = listener_value(r, &l.name, "sasl.enabled.mechanisms")
            .unwrap_or(("GSSAPI".into(), "sasl.enabled.mechanisms".into()));
        let mut mechanisms = Vec::new();
        for name in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let m = Mechanism::from_name(name).ok_or_else(|| {
                inconsistent(
                    &key,
                    format!(
                        "listener {}: mechanism {name} is not served (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 are)",
                        l.name
                    ),
                )
            })?;
            if !mechanisms.contains(&m) {
                mechanisms.push(m);
            }
        }
        if mechanisms.is_empty() {
            return Err(inconsistent(&key, format!("listener {} enables no SASL mechanism", l.name)));
        }
        let jaas_key = format!("listener.name.{}.plain.sasl.jaas.config", l.name.to_ascii_lowercase());
        let plain_users = match (mechanisms.contains(&Mechanism::Plain), r.get(&jaas_key)) {
            (true, Some(text)) => jaas::parse(text)
                .and_then(|e| jaas::plain_users(&e))
                .map_err(|why| inconsistent(&jaas_key, format!("listener {}: {why}", l.name)))?,
            (true, None) => {
                return Err(inconsistent(&jaas_key, format!("listener {} enables PLAIN: its users go here", l.name)))
            }
            (false, Some(_)) => {
                return Err(inconsistent(&jaas_key, format!("listener {} does not enable PLAIN", l.name)));
            }
            (false, None) => Default::default(),
        };
        let max_reauth_ms = match listener_value(r, &l.name, "connections.max.reauth.ms") {
            Some((v, k)) => {
                let ms: i64 = v.trim().parse().map_err(|_| parse::bad(r, &k, "expected an integer (milliseconds)"))?;
                (ms > 0).then_some(ms as u64)
            }
            None => None,
        };
        out.insert(l.name.clone(), SaslConfig { mechanisms, plain_users, max_reauth_ms });
    }
    Ok(out)
}

/// The TLS of every SSL and SASL_SSL listener, each key read from
/// `listener.name.<listener>.<key>` first (Kafka's per-listener override, the listener name in
/// lower case) and then `<key>`; its files are read at start. A listener bound here gets a
/// server side; the inter-broker and controller listeners get a client side too (this node
/// connects to them on other nodes), which needs a truststore. The controller listener is
/// included when it is SSL even if this node does not bind it (a broker-only node).
fn listener_tls(
    r: &RawConfig,
    listeners: &[Listener],
    protocols: &BTreeMap<String, String>,
    controller_listener_names: &[String],
    inter_broker_listener_name: &str,
) -> Result<BTreeMap<String, Arc<ListenerTls>>, ConfigError> {
    let is_tls = |p: &str| p == "SSL" || p == "SASL_SSL";
    let mut wanted: Vec<(String, bool)> =
        listeners.iter().filter(|l| is_tls(&l.security_protocol)).map(|l| (l.name.clone(), true)).collect();
    if let Some(c) = controller_listener_names.first() {
        if protocols.get(c).is_some_and(|p| is_tls(p)) && !wanted.iter().any(|(n, _)| n == c) {
            wanted.push((c.clone(), false));
        }
    }
    let mut out = BTreeMap::new();
    for (name, serve) in wanted {
        let prefix = format!("listener.name.{}.", name.to_ascii_lowercase());
        let get = |k: &str| r.get(&format!("{prefix}{k}")).or_else(|| r.get(k)).map(str::to_string);
        let tls_error = |e: strom_security::tls::TlsError| {
            use strom_security::tls::TlsError;
            let (key, reason) = match &e {
                TlsError::Setting { key, reason } => (key.clone(), reason.clone()),
                TlsError::Read { key, path, source } => {
                    (key.clone(), format!("cannot read {}: {source}", path.display()))
                }
                TlsError::Rustls(err) => ("ssl.enabled.protocols".to_string(), err.to_string()),
            };
            let key = if r.get(&format!("{prefix}{key}")).is_some() { format!("{prefix}{key}") } else { key };
            inconsistent(&key, format!("listener {name}: {reason}"))
        };
        let keys: BTreeMap<String, String> =
            strom_security::tls::keys().filter_map(|k| get(k).map(|v| (k.to_string(), v))).collect();
        let connect = name == inter_broker_listener_name || controller_listener_names.first() == Some(&name);
        let tls = ListenerTls::from_keys(keys, serve, connect).map_err(tls_error)?;
        out.insert(name, Arc::new(tls));
    }
    Ok(out)
}
