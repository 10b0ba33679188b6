//! The table of configuration keys Strom knows: Kafka's names, Kafka's defaults.
//!
//! Defaults follow Apache Kafka's, except where Kafka's own shipped single-node
//! `config/server.properties` overrides them (the internal topics' replication factors,
//! the initial rebalance delay), since `strom server` with no arguments is a single node.
//! The defaults that make a whole node (`node.id`, `process.roles`, listeners, voters)
//! are those of that same shipped file, with our data directory `./data`. Broker liveness
//! (`broker.session.timeout.ms`, `broker.heartbeat.interval.ms`) is deliberately faster than
//! Kafka's: see docs/architecture.md, "Failure detection".

/// One known key.
pub struct KeyDef {
    pub name: &'static str,
    /// `None`: unset unless the user sets it.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

const fn key(name: &'static str, default: Option<&'static str>, doc: &'static str) -> KeyDef {
    KeyDef { name, default, doc }
}

/// Keys Strom reads. Anything else is warned about (see [`ACCEPTED_WITHOUT_EFFECT`]).
pub const KEYS: &[KeyDef] = &[
    key("node.id", Some("1"), "This node's id, unique in the cluster."),
    key("process.roles", Some("broker,controller"), "broker, controller, or both."),
    key("controller.quorum.voters", Some("1@127.0.0.1:9093"), "The controller quorum: id@host:port,…"),
    key(
        "listeners",
        Some("PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"),
        "Listeners to bind: NAME://host:port,…",
    ),
    key("advertised.listeners", None, "Listeners given to clients; defaults to the broker listeners."),
    key(
        "listener.security.protocol.map",
        Some("CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"),
        "Listener name to security protocol.",
    ),
    key("controller.listener.names", Some("CONTROLLER"), "Listener names used by the controller."),
    key("inter.broker.listener.name", Some("PLAINTEXT"), "Listener brokers use to reach each other."),
    // TLS of SSL listeners (strom_security::tls reads them); each may be set per listener as
    // listener.name.<listener>.<key>.
    key("ssl.keystore.type", Some("JKS"), "PEM or PKCS12 (JKS is not read: convert it to PKCS12)."),
    key("ssl.keystore.location", None, "The keystore file: PEM (key and chain in one file) or PKCS12."),
    key("ssl.keystore.password", None, "The PKCS12 keystore's password."),
    key("ssl.key.password", None, "The private key's password (PKCS12: the store's password)."),
    key("ssl.keystore.key", None, "The private key as inline PEM (with ssl.keystore.type=PEM)."),
    key("ssl.keystore.certificate.chain", None, "The certificate chain as inline PEM."),
    key("ssl.truststore.type", Some("JKS"), "PEM or PKCS12."),
    key("ssl.truststore.location", None, "Certificate authorities that vouch for clients (mTLS)."),
    key("ssl.truststore.password", None, "The PKCS12 truststore's password."),
    key("ssl.truststore.certificates", None, "Trusted certificates as inline PEM."),
    key("ssl.client.auth", Some("none"), "none, requested or required (mutual TLS)."),
    key("ssl.enabled.protocols", Some("TLSv1.2,TLSv1.3"), "TLS versions served (TLSv1.2, TLSv1.3)."),
    key("ssl.protocol", Some("TLSv1.3"), "TLS, TLSv1.2 or TLSv1.3."),
    key("ssl.cipher.suites", None, "Cipher suites served (IANA names); unset: rustls's defaults."),
    key(
        "ssl.endpoint.identification.algorithm",
        Some("https"),
        "Brokers verify each other's host names (https; nothing else is served).",
    ),
    key(
        "ssl.principal.mapping.rules",
        Some("DEFAULT"),
        "A client certificate's subject to a principal name: RULE:pattern/replacement/[LU],…,DEFAULT.",
    ),
    // Authorization (crates/strom-broker/src/apis/access.rs; ACLs in the metadata log).
    key(
        "authorizer.class.name",
        Some(""),
        "Any class name turns on Strom's ACL authorizer (as Kafka's StandardAuthorizer).",
    ),
    key("super.users", Some(""), "Principals allowed everything: User:admin;User:CN=broker,O=example."),
    key("allow.everyone.if.no.acl.found", Some("false"), "Whether a resource without any ACL is open to all."),
    // SASL of SASL_PLAINTEXT / SASL_SSL listeners (crates/strom-broker/src/authenticator.rs).
    key("sasl.enabled.mechanisms", Some("GSSAPI"), "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (GSSAPI is not served)."),
    key("sasl.server.max.receive.size", Some("524288"), "Largest frame a connection may send before it authenticated."),
    key(
        "sasl.mechanism.inter.broker.protocol",
        Some("GSSAPI"),
        "How brokers log in to a SASL inter-broker listener: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.",
    ),
    key(
        "sasl.mechanism.controller.protocol",
        Some("GSSAPI"),
        "How nodes log in to a SASL controller listener: PLAIN (the only mechanism served there).",
    ),
    key("connections.max.reauth.ms", Some("0"), "SASL session lifetime (KIP-368); 0: sessions do not expire."),
    key("log.dirs", Some("./data"), "Directory (comma-separated list) holding partition logs and metadata."),
    key("log.dir", None, "Used when log.dirs is not set."),
    key("num.partitions", Some("1"), "Partitions of an auto-created topic."),
    key("default.replication.factor", Some("1"), "Replication factor of an auto-created topic."),
    key("min.insync.replicas", Some("1"), "Fewest in-sync replicas for an acks=all produce."),
    key("auto.create.topics.enable", Some("true"), "Create a topic on first Metadata or Produce."),
    key("auto.leader.rebalance.enable", Some("true"), "Move leadership back to preferred replicas."),
    key("log.segment.bytes", Some("1073741824"), "Roll a segment at this size."),
    key(
        "compression.type",
        Some("producer"),
        "Codec of stored batches: producer (as sent), uncompressed, gzip, snappy, lz4 or zstd.",
    ),
    key(
        "log.message.timestamp.type",
        Some("CreateTime"),
        "CreateTime (store the producer's timestamps) or LogAppendTime (the leader's clock).",
    ),
    key(
        "log.message.timestamp.before.max.ms",
        Some("9223372036854775807"),
        "With CreateTime, refuse records timestamped more than this before the append.",
    ),
    key(
        "log.message.timestamp.after.max.ms",
        Some("9223372036854775807"),
        "With CreateTime, refuse records timestamped more than this after the append.",
    ),
    key("log.roll.ms", None, "Roll a segment at this age (wins over log.roll.hours)."),
    key("log.roll.hours", Some("168"), "Roll a segment at this age."),
    key("log.retention.ms", None, "Delete segments older than this (-1: keep forever); wins over minutes/hours."),
    key("log.retention.minutes", None, "Retention in minutes; wins over hours."),
    key("log.retention.hours", Some("168"), "Retention in hours."),
    key("log.retention.bytes", Some("-1"), "Delete old segments past this partition size (-1: no limit)."),
    key("log.retention.check.interval.ms", Some("300000"), "How often retention runs."),
    key(
        "log.cleanup.policy",
        Some("delete"),
        "delete (retention by time and size), compact (latest record per key), or both.",
    ),
    key("log.cleaner.enable", Some("true"), "Run the log cleaner (compacted topics are not compacted without it)."),
    key("log.cleaner.threads", Some("1"), "Threads cleaning compacted logs."),
    key("log.cleaner.backoff.ms", Some("15000"), "How long the cleaner sleeps when no log needs cleaning."),
    key("log.cleaner.min.cleanable.ratio", Some("0.5"), "Clean a log once this share of it is dirty."),
    key("log.cleaner.delete.retention.ms", Some("86400000"), "How long a tombstone is kept after cleaning."),
    key("log.cleaner.min.compaction.lag.ms", Some("0"), "A record stays uncompacted at least this long."),
    key(
        "log.cleaner.max.compaction.lag.ms",
        Some("9223372036854775807"),
        "A dirty record is compacted within this long, whatever the dirty ratio.",
    ),
    key(
        "log.cleaner.io.max.bytes.per.second",
        Some("1.7976931348623157E308"),
        "Bytes per second the cleaner threads may read, together.",
    ),
    key("log.index.interval.bytes", Some("4096"), "Bytes between two offset index entries."),
    key(
        "log.flush.interval.messages",
        Some("9223372036854775807"),
        "fsync after this many messages (Kafka's default: never; durability comes from replication).",
    ),
    key("log.flush.interval.ms", None, "fsync at least this often."),
    key("offsets.topic.replication.factor", Some("1"), "Replication factor of __consumer_offsets."),
    key("offsets.topic.num.partitions", Some("50"), "Partitions of __consumer_offsets."),
    key("offsets.topic.segment.bytes", Some("104857600"), "Segment size of __consumer_offsets (a compacted topic)."),
    key(
        "offsets.retention.minutes",
        Some("10080"),
        "An empty group's committed offsets are kept this long after it became empty (never while it has members).",
    ),
    key("offsets.retention.check.interval.ms", Some("600000"), "How often expired committed offsets are looked for."),
    // Kafka: 3 and 2. Strom's defaults make a single node (its default) work, as
    // offsets.topic.replication.factor's does; a cluster sets 3 and 2 (deploy/).
    key("transaction.state.log.replication.factor", Some("1"), "Replication factor of __transaction_state."),
    key("transaction.state.log.min.isr", Some("1"), "min.insync.replicas of __transaction_state."),
    key("transaction.state.log.num.partitions", Some("50"), "Partitions of __transaction_state."),
    key(
        "transaction.state.log.segment.bytes",
        Some("104857600"),
        "Segment size of __transaction_state (a compacted topic).",
    ),
    key("transaction.max.timeout.ms", Some("900000"), "The longest transaction.timeout.ms a producer may ask for."),
    key(
        "transactional.id.expiration.ms",
        Some("604800000"),
        "A transactional id with no transaction open and unused this long is forgotten.",
    ),
    key(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        Some("10000"),
        "How often transactions past their timeout are looked for (and aborted).",
    ),
    key(
        "transaction.partition.verification.enable",
        Some("true"),
        "A leader asks the transaction coordinator before it takes the first batch of a transaction (KIP-890).",
    ),
    key(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        Some("3600000"),
        "How often expired transactional ids are looked for.",
    ),
    key("replica.lag.time.max.ms", Some("30000"), "A follower this far behind leaves the ISR."),
    // Kafka: 9000 / 2000. Strom detects a dead broker within ~2 s so acks=all does not stall
    // for 9 s on every partition (DESIGN.md §5; reasons in docs/architecture.md).
    key("broker.session.timeout.ms", Some("2000"), "A broker silent this long is fenced."),
    // Kafka: 1000. Strom elects within about a second; a voter answers a vote request only
    // after fsyncing its vote, and openraft gives the request this long, so on disks whose
    // fsync can take longer (docs/operations.md, "Slow disks") raise it.
    key(
        "controller.quorum.election.timeout.ms",
        Some("300"),
        "A controller that hears no leader for this long starts an election; vote requests time out after it.",
    ),
    key("broker.heartbeat.interval.ms", Some("500"), "How often a broker heartbeats the controller."),
    key("broker.rack", None, "Rack of this broker, for rack-aware placement."),
    key("unclean.leader.election.enable", Some("false"), "Allow an out-of-sync replica to become leader."),
    key("message.max.bytes", Some("1048588"), "Largest record batch a broker accepts."),
    key("socket.request.max.bytes", Some("104857600"), "Largest request a broker reads."),
    key("group.max.size", Some("2147483647"), "Members (pending ones included) one consumer group may hold."),
    key("group.min.session.timeout.ms", Some("6000"), "Shortest session timeout a group member may ask for."),
    key("group.max.session.timeout.ms", Some("1800000"), "Longest session timeout a group member may ask for."),
    key("group.initial.rebalance.delay.ms", Some("0"), "Wait for more members before the first rebalance."),
    key("metrics.listener", Some("127.0.0.1:9464"), "HTTP address of /metrics, /healthz and /readyz (empty: off)."),
    key(
        "metrics.per.partition.enable",
        Some("true"),
        "Export per-partition series (log size, segments, group lag); false bounds label cardinality.",
    ),
    key("max.connections", Some("1000"), "Most client connections a broker holds at once."),
    key("max.connections.per.ip", Some("2147483647"), "Most connections from one address; more are closed."),
    key(
        "max.connections.per.ip.overrides",
        Some(""),
        "Per-address exceptions to max.connections.per.ip: host-or-ip:count,…",
    ),
    key(
        "queued.max.request.bytes",
        Some("-1"),
        "Most request bytes a broker buffers at once over all connections (reads wait); -1: unbounded.",
    ),
    key("fetch.max.bytes", Some("57671680"), "Largest Fetch response a consumer gets (its own limit may be lower)."),
    key(
        "fetch.response.memory.max.bytes",
        Some("115343360"),
        "Strom's: record bytes all consumer Fetch responses hold at once, read to written (fetches wait for room).",
    ),
    key(
        "replica.fetch.response.max.bytes",
        Some("10485760"),
        "Largest Fetch response a follower gets (its own limit may be lower).",
    ),
    key(
        "producer.id.expiration.ms",
        Some("86400000"),
        "An idempotent producer whose last batch is this old is forgotten by the partitions.",
    ),
    key("producer.id.expiration.check.interval.ms", Some("600000"), "How often idle producer ids are looked for."),
    key("offset.metadata.max.bytes", Some("4096"), "Longest metadata string a committed offset may carry."),
    key(
        "num.io.threads",
        Some("8"),
        "Log reads and appends (produce, fetch, replication) that run at once, off the network threads.",
    ),
    key("connections.max.idle.ms", Some("600000"), "Close a client connection idle this long."),
];

/// Kafka keys that are commonly set in `server.properties` and that Strom accepts without
/// acting on them: they are neither errors nor worth a warning.
pub const ACCEPTED_WITHOUT_EFFECT: &[&str] = &[
    "num.network.threads",
    "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "controller.quorum.bootstrap.servers",
    "zookeeper.connect",
];

/// Kafka keys (exact names, or prefixes ending in `.`) that change what Kafka does (security,
/// quotas, compaction, transactions, offset expiry) and that Strom does not implement yet.
/// Accepting one and then not doing it would leave a user believing a protection or a rule
/// is in force, so a node refuses to start with any of them, naming the key. A key leaves
/// this list in the commit that implements it.
pub const REFUSED_UNTIL_IMPLEMENTED: &[&str] = &[
    // Security: TLS, SASL, authorization.
    "ssl.",
    "sasl.",
    "security.",
    "listener.name.",
    "principal.builder.class",
    "delegation.token.",
    // Quotas.
    "quota.",
    "client.quota.callback.class",
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    // Cleaner tuning Strom does not have (the other log.cleaner.* keys are in KEYS).
    "log.cleaner.",
    // Deprecated by the before/after keys (KIP-937), which Strom implements.
    "log.message.timestamp.difference.max.ms",
    // The state log's other settings (load buffer size) are Kafka's internals.
    "transaction.state.log.",
];

/// Values of refused keys that ask for exactly what Strom does (no protection, no feature):
/// they are accepted.
const REFUSED_KEY_HARMLESS_VALUES: &[(&str, &str)] =
    &[("security.inter.broker.protocol", "PLAINTEXT"), ("log.cleanup.policy", "delete")];

/// True when setting `name` to `value` must be refused: the key is in
/// [`REFUSED_UNTIL_IMPLEMENTED`], not implemented ([`KEYS`]) or accepted without effect, and
/// the value is not one that asks for what Strom already does.
pub fn is_refused(name: &str, value: &str) -> bool {
    if is_listener_key(name) {
        return false;
    }
    let listed =
        REFUSED_UNTIL_IMPLEMENTED.iter().any(|r| if r.ends_with('.') { name.starts_with(r) } else { name == *r });
    let harmless = REFUSED_KEY_HARMLESS_VALUES.iter().any(|(k, v)| *k == name && value.trim().eq_ignore_ascii_case(v));
    listed && !harmless && !ACCEPTED_WITHOUT_EFFECT.contains(&name) && find(name).is_none()
}

/// Looks a key up in [`KEYS`].
pub fn find(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}

/// True for a key Strom reads or knowingly ignores.
pub fn is_known(name: &str) -> bool {
    find(name).is_some() || ACCEPTED_WITHOUT_EFFECT.contains(&name) || is_listener_key(name)
}

/// Keys a listener may set for itself as `listener.name.<listener>.<key>`, beside the TLS ones.
pub const LISTENER_KEYS: &[&str] = &[
    "sasl.enabled.mechanisms",
    "plain.sasl.jaas.config",
    "scram-sha-256.sasl.jaas.config",
    "scram-sha-512.sasl.jaas.config",
    "connections.max.reauth.ms",
];

/// `listener.name.<listener>.<key>`: a key set for one listener (Kafka's per-listener
/// override), for a key Strom reads per listener (TLS, SASL).
pub fn is_listener_key(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("listener.name.") else { return false };
    rest.split_once('.').is_some_and(|(listener, key)| {
        !listener.is_empty() && (strom_security::tls::is_key(key) || LISTENER_KEYS.contains(&key))
    })
}

/// The environment variable that sets `key`: `STROM_` + upper case, dots as underscores.
pub fn env_var_name(key: &str) -> String {
    format!("STROM_{}", key.replace(['.', '-'], "_").to_ascii_uppercase())
}
