//! What the CLI tools share: a connection to a cluster from `--bootstrap-server`, metadata,
//! connections to individual brokers, and Kafka error names. The tools speak only the Kafka
//! protocol (at versions Kafka 3.x and 4.x also serve), so they work against real Kafka too.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use strom_client::{ClientSecurity, Connection, SaslCredentials};
use strom_protocol::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use strom_protocol::kafka_protocol::messages::{FindCoordinatorRequest, MetadataRequest, MetadataResponse};
use strom_protocol::kafka_protocol::protocol::Request;
use strom_protocol::values::{str_bytes, topic_name};

const TIMEOUT: Duration = Duration::from_secs(30);
/// How long one bootstrap server gets to answer before the next is tried.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(5);
pub const METADATA_VERSION: i16 = 12;

/// Kafka's name for an error code, as its tools print it.
pub fn error_name(code: i16) -> &'static str {
    match code {
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        19 => "NOT_ENOUGH_REPLICAS",
        22 => "ILLEGAL_GENERATION",
        25 => "UNKNOWN_MEMBER_ID",
        27 => "REBALANCE_IN_PROGRESS",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        38 => "INVALID_REPLICATION_FACTOR",
        40 => "INVALID_CONFIG",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        47 => "INVALID_PRODUCER_EPOCH",
        48 => "INVALID_TXN_STATE",
        49 => "INVALID_PRODUCER_ID_MAPPING",
        51 => "CONCURRENT_TRANSACTIONS",
        52 => "TRANSACTION_COORDINATOR_FENCED",
        53 => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        90 => "PRODUCER_FENCED",
        105 => "TRANSACTIONAL_ID_NOT_FOUND",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        30 => "GROUP_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        44 => "POLICY_VIOLATION",
        54 => "SECURITY_DISABLED",
        58 => "SASL_AUTHENTICATION_FAILED",
        68 => "NON_EMPTY_GROUP",
        69 => "GROUP_ID_NOT_FOUND",
        86 => "GROUP_SUBSCRIBED_TO_TOPIC",
        91 => "RESOURCE_NOT_FOUND",
        92 => "DUPLICATE_RESOURCE",
        93 => "UNACCEPTABLE_CREDENTIAL",
        _ => "UNKNOWN_SERVER_ERROR",
    }
}

/// A cluster reached through its bootstrap servers.
pub struct Cluster {
    bootstrap: Connection,
    brokers: BTreeMap<i32, String>,
    conns: HashMap<i32, Connection>,
    security: ClientSecurity,
}

/// A tool's `--command-config` file (Kafka's client properties): `security.protocol`
/// (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL); for TLS the servers' CA from
/// `ssl.truststore.location` (`ssl.truststore.type` PEM or PKCS12, `ssl.truststore.password`)
/// or librdkafka's `ssl.ca.location`; for SASL `sasl.mechanism` (PLAIN, SCRAM-SHA-256,
/// SCRAM-SHA-512) and the user, from `sasl.jaas.config`'s `username`/`password` (as the Java
/// tools take them) or librdkafka's `sasl.username`/`sasl.password`. Anything the tools cannot
/// do is refused.
pub fn command_config(path: Option<&std::path::Path>) -> anyhow::Result<ClientSecurity> {
    let Some(path) = path else { return Ok(ClientSecurity::default()) };
    let file = std::fs::File::open(path).with_context(|| format!("--command-config {}", path.display()))?;
    let props = java_properties::read(std::io::BufReader::new(file))
        .with_context(|| format!("--command-config {}: not a properties file", path.display()))?;
    let protocol = props.get("security.protocol").map(String::as_str).unwrap_or("PLAINTEXT");
    let (tls, sasl) = match protocol {
        "PLAINTEXT" => (false, false),
        "SSL" => (true, false),
        "SASL_PLAINTEXT" => (false, true),
        "SASL_SSL" => (true, true),
        other => bail!("--command-config: security.protocol={other}: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    };
    let mut security = ClientSecurity::default();
    if tls {
        use strom_security::tls::TrustStore;
        let kind = props.get("ssl.truststore.type").map(|t| t.to_ascii_uppercase()).unwrap_or_else(|| "PEM".into());
        let store = match (props.get("ssl.truststore.location"), props.get("ssl.ca.location")) {
            (Some(p), _) if kind == "PKCS12" => TrustStore::Pkcs12 {
                path: p.into(),
                password: props.get("ssl.truststore.password").cloned().unwrap_or_default(),
            },
            (Some(p), _) if kind == "PEM" => TrustStore::PemFile(p.into()),
            (Some(_), _) => bail!("--command-config: ssl.truststore.type={kind} is not supported (PEM, PKCS12)"),
            (None, Some(p)) => TrustStore::PemFile(p.into()),
            (None, None) => bail!("--command-config: TLS needs ssl.truststore.location (or ssl.ca.location)"),
        };
        let config = strom_security::tls::client_trusting(&store).map_err(|e| anyhow!("--command-config: {e}"))?;
        security.tls = Some(strom_security::reload::Shared::new(config));
    }
    if !sasl {
        return Ok(security);
    }
    let mech_name = props.get("sasl.mechanism").map(String::as_str).unwrap_or("GSSAPI");
    let mechanism = strom_security::sasl::Mechanism::from_name(mech_name).with_context(|| {
        format!("--command-config: sasl.mechanism={mech_name} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
    })?;
    let jaas = match props.get("sasl.jaas.config") {
        Some(j) => {
            Some(strom_security::sasl::jaas::parse(j).map_err(|e| anyhow!("--command-config: sasl.jaas.config: {e}"))?)
        }
        None => None,
    };
    let field = |jaas_key: &str, prop: &str| {
        jaas.as_ref()
            .and_then(|e| e.options.get(jaas_key).cloned())
            .or_else(|| props.get(prop).cloned())
            .with_context(|| format!("--command-config: no {jaas_key} (sasl.jaas.config) or {prop}"))
    };
    security.sasl = Some(SaslCredentials {
        mechanism,
        username: field("username", "sasl.username")?,
        password: field("password", "sasl.password")?,
    });
    Ok(security)
}

impl Cluster {
    /// Connects to the first bootstrap server (`host:port,…`) that answers.
    pub async fn connect(bootstrap: &str) -> anyhow::Result<Cluster> {
        Self::connect_with(bootstrap, ClientSecurity::default()).await
    }

    /// Connects, every connection with `security` (TLS, SASL).
    pub async fn connect_with(bootstrap: &str, security: ClientSecurity) -> anyhow::Result<Cluster> {
        let mut last = None;
        for addr in bootstrap.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            // A server that accepts but does not answer (paused, cut off behind a proxy) must
            // not stop us from trying the next one.
            let attempt = async {
                let c = Connection::connect_secure(addr, "strom-tools", TIMEOUT, &security).await?;
                let mut cluster = Cluster {
                    bootstrap: c,
                    brokers: BTreeMap::new(),
                    conns: HashMap::new(),
                    security: security.clone(),
                };
                cluster.metadata(Some(vec![])).await?;
                Ok::<_, anyhow::Error>(cluster)
            };
            match tokio::time::timeout(BOOTSTRAP_TIMEOUT, attempt).await {
                Ok(Ok(cluster)) => return Ok(cluster),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(anyhow!("{addr} did not answer within {BOOTSTRAP_TIMEOUT:?}")),
            }
        }
        match last {
            Some(e) => Err(e).context(format!("cannot reach any of {bootstrap}")),
            None => bail!("--bootstrap-server is empty"),
        }
    }

    /// Sends to the bootstrap broker.
    pub async fn send<R: Request>(&mut self, version: i16, req: &R) -> anyhow::Result<R::Response> {
        Ok(self.bootstrap.send(version, req, Duration::ZERO).await?)
    }

    /// Sends to broker `id` (connecting on first use).
    pub async fn send_to<R: Request>(
        &mut self,
        id: i32,
        version: i16,
        req: &R,
        wait: Duration,
    ) -> anyhow::Result<R::Response> {
        if !self.conns.contains_key(&id) {
            let addr = self.brokers.get(&id).cloned().ok_or_else(|| anyhow!("broker {id} is not in the metadata"))?;
            let c = Connection::connect_secure(&addr, "strom-tools", TIMEOUT, &self.security).await?;
            self.conns.insert(id, c);
        }
        let c = self.conns.get_mut(&id).ok_or_else(|| anyhow!("no connection to broker {id}"))?;
        match c.send(version, req, wait).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.conns.remove(&id);
                Err(e.into())
            }
        }
    }

    /// Metadata for `topics` (None: all), remembering broker addresses.
    pub async fn metadata(&mut self, topics: Option<Vec<String>>) -> anyhow::Result<MetadataResponse> {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut m = MetadataRequestTopic::default();
                    m.name = Some(topic_name(t));
                    m
                })
                .collect()
        });
        req.allow_auto_topic_creation = false;
        let resp = self.send(METADATA_VERSION, &req).await?;
        for b in &resp.brokers {
            self.brokers.insert(b.node_id.0, format!("{}:{}", b.host, b.port));
        }
        Ok(resp)
    }

    /// The coordinator of `key`: a group (`key_type` 0) or a transactional id (1). Retried for a
    /// few seconds while none is available (an internal topic being created, an election).
    pub async fn find_coordinator(&mut self, key: &str, key_type: i8) -> anyhow::Result<i32> {
        let mut last = 0;
        for attempt in 0..20 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let mut req = FindCoordinatorRequest::default();
            req.key = str_bytes(key);
            req.key_type = key_type;
            let resp = self.send(3, &req).await?;
            if resp.error_code == 0 {
                self.metadata(Some(vec![])).await?;
                return Ok(resp.node_id.0);
            }
            last = resp.error_code;
        }
        bail!("cannot find the coordinator of {key}: {}", error_name(last))
    }

    /// Every broker id in the metadata.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.brokers.keys().copied().collect()
    }

    /// The leader of every partition of `topic`.
    pub async fn leaders(&mut self, topic: &str) -> anyhow::Result<BTreeMap<i32, i32>> {
        let md = self.metadata(Some(vec![topic.to_string()])).await?;
        let t = md.topics.first().ok_or_else(|| anyhow!("no metadata for {topic}"))?;
        if t.error_code != 0 {
            bail!("topic {topic}: {}", error_name(t.error_code));
        }
        Ok(t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0)).collect())
    }
}
