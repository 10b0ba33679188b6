use std::io::Write;

use super::*;

fn load(file: Option<&str>, env: &[(&str, &str)], overrides: &[&str]) -> Result<NodeConfig, ConfigError> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    if let Some(text) = file {
        tmp.as_file().write_all(text.as_bytes()).unwrap();
    }
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let raw = RawConfig::load(file.map(|_| tmp.path()), env, &overrides)?;
    NodeConfig::from_raw(raw)
}

fn ov(overrides: &[&str]) -> Result<NodeConfig, ConfigError> {
    load(None, &[], overrides)
}

fn err_key(r: Result<NodeConfig, ConfigError>) -> String {
    r.expect_err("expected a config error").key().expect("error names a key").to_string()
}

#[test]
fn defaults_are_a_single_node_cluster_on_9092() {
    let c = ov(&[]).unwrap();
    assert_eq!(c.node_id, 1);
    assert_eq!(c.roles, Roles { broker: true, controller: true });
    assert_eq!(c.quorum_voters, vec![Voter { id: 1, host: "127.0.0.1".into(), port: 9093 }]);
    let b = c.broker_listeners();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].bind_addr(), "127.0.0.1:9092");
    assert_eq!(c.controller_listener().unwrap().bind_addr(), "127.0.0.1:9093");
    assert_eq!(c.advertised_listeners[0].host, "127.0.0.1");
    assert_eq!(c.log_dirs, vec![PathBuf::from("./data")]);
    assert_eq!(c.num_partitions, 1);
    assert_eq!(c.controller_election_timeout_ms, 300);
    assert_eq!(c.log.segment_bytes, 1 << 30);
    assert_eq!(c.log.retention_ms, Some(168 * 3_600_000));
    assert_eq!(c.log.retention_bytes, None);
    assert_eq!(c.message_max_bytes, 1_048_588);
    assert!(c.raw.unknown_keys.is_empty());
    assert_eq!(c.raw.source("node.id"), Some(Source::Default));
}

#[test]
fn every_listed_key_is_read() {
    let c = ov(&[
        "node.id=3",
        "process.roles=broker",
        "controller.quorum.voters=1@a:9093,2@b:9093,3@c:9093",
        "listeners=INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092",
        "advertised.listeners=INTERNAL://node3:9092,EXTERNAL://localhost:19092",
        "listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=INTERNAL",
        "log.dirs= /d1 ",
        "num.partitions=6",
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "auto.create.topics.enable=false",
        "log.segment.bytes=1048576",
        "log.retention.hours=1",
        "log.retention.bytes=1000000",
        "log.flush.interval.messages=1",
        "log.flush.interval.ms=50",
        "offsets.topic.replication.factor=3",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=3",
        "transaction.state.log.min.isr=2",
        "transaction.state.log.num.partitions=5",
        "transaction.max.timeout.ms=60000",
        "replica.lag.time.max.ms=2000",
        "broker.session.timeout.ms=3000",
        "broker.heartbeat.interval.ms=500",
        "controller.quorum.election.timeout.ms=3000",
        "unclean.leader.election.enable=true",
        "message.max.bytes=2000000",
        "socket.request.max.bytes=5000000",
        "group.initial.rebalance.delay.ms=3000",
        "broker.rack=r1",
        "max.connections.per.ip=10",
        "max.connections.per.ip.overrides=127.0.0.1:100, [::1]:50",
        "queued.max.request.bytes=10000000",
        "fetch.max.bytes=1048576",
        "replica.fetch.response.max.bytes=2097152",
        "offset.metadata.max.bytes=100",
        "fetch.response.memory.max.bytes=3000000",
        "num.io.threads=3",
    ])
    .unwrap();
    assert_eq!(c.node_id, 3);
    assert_eq!(c.roles, Roles { broker: true, controller: false });
    assert_eq!(c.quorum_voters.len(), 3);
    assert_eq!(c.quorum_voters[2], Voter { id: 3, host: "c".into(), port: 9093 });
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.advertised_listeners[1].host, "localhost");
    assert_eq!(c.advertised_listeners[1].security_protocol, "PLAINTEXT");
    assert_eq!(c.inter_broker_listener_name, "INTERNAL");
    assert_eq!(c.log_dirs, vec![PathBuf::from("/d1")]);
    assert_eq!(c.max_connections_per_ip, 10);
    let localhost: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let v6: std::net::IpAddr = "::1".parse().unwrap();
    assert_eq!(c.max_connections_per_ip_overrides.get(&localhost), Some(&100));
    assert_eq!(c.max_connections_per_ip_overrides.get(&v6), Some(&50));
    assert_eq!(c.queued_max_request_bytes, Some(10_000_000));
    assert_eq!((c.fetch_max_bytes, c.replica_fetch_response_max_bytes), (1_048_576, 2_097_152));
    assert_eq!(c.offset_metadata_max_bytes, 100);
    assert_eq!((c.fetch_response_memory_max_bytes, c.num_io_threads), (3_000_000, 3));
    assert_eq!(c.num_partitions, 6);
    assert_eq!(c.default_replication_factor, 3);
    assert_eq!(c.min_insync_replicas, 2);
    assert!(!c.auto_create_topics_enable);
    assert_eq!(c.log.segment_bytes, 1_048_576);
    assert_eq!(c.log.retention_ms, Some(3_600_000));
    assert_eq!(c.log.retention_bytes, Some(1_000_000));
    assert_eq!(c.log.flush_interval_messages, 1);
    assert_eq!(c.log.flush_interval_ms, Some(50));
    assert_eq!(c.offsets_topic_replication_factor, 3);
    assert_eq!(c.offsets_topic_num_partitions, 10);
    assert_eq!(c.transactions.max_timeout_ms, 60_000);
    assert_eq!((c.transactions.replication_factor, c.transactions.min_isr), (3, 2));
    assert_eq!(c.transactions.num_partitions, 5);
    assert_eq!(c.replica_lag_time_max_ms, 2000);
    assert_eq!(c.broker_session_timeout_ms, 3000);
    assert_eq!(c.broker_heartbeat_interval_ms, 500);
    assert_eq!(c.controller_election_timeout_ms, 3000);
    assert!(c.unclean_leader_election_enable);
    assert_eq!(c.message_max_bytes, 2_000_000);
    assert_eq!(c.socket_request_max_bytes, 5_000_000);
    assert_eq!(c.group_initial_rebalance_delay_ms, 3000);
    assert_eq!(c.broker_rack.as_deref(), Some("r1"));
    assert!(c.controller_listener().is_none());
}

#[test]
fn retention_ms_wins_over_minutes_and_hours() {
    let c = ov(&["log.retention.hours=5", "log.retention.minutes=7"]).unwrap();
    assert_eq!(c.log.retention_ms, Some(7 * 60_000));
    let c = ov(&["log.retention.hours=5", "log.retention.minutes=7", "log.retention.ms=123"]).unwrap();
    assert_eq!(c.log.retention_ms, Some(123));
    let c = ov(&["log.retention.ms=-1"]).unwrap();
    assert_eq!(c.log.retention_ms, None);
}

#[test]
fn precedence_is_file_then_env_then_override() {
    let file = "# comment\nnum.partitions=2\nmin.insync.replicas = 2\nlog.segment.bytes: 5000\n";
    let c = load(Some(file), &[], &[]).unwrap();
    assert_eq!((c.num_partitions, c.min_insync_replicas, c.log.segment_bytes), (2, 2, 5000));
    assert_eq!(c.raw.source("num.partitions"), Some(Source::File));

    let env = [("STROM_NUM_PARTITIONS", "3"), ("STROM_LOG_SEGMENT_BYTES", "6000")];
    let c = load(Some(file), &env, &[]).unwrap();
    assert_eq!((c.num_partitions, c.min_insync_replicas, c.log.segment_bytes), (3, 2, 6000));
    assert_eq!(c.raw.source("num.partitions"), Some(Source::Env));

    let c = load(Some(file), &env, &["num.partitions=4"]).unwrap();
    assert_eq!((c.num_partitions, c.min_insync_replicas, c.log.segment_bytes), (4, 2, 6000));
    assert_eq!(c.raw.source("num.partitions"), Some(Source::Override));
}

#[test]
fn unknown_keys_are_collected_for_a_warning_not_refused() {
    let c =
        load(Some("no.such.key=1\nnum.io.threads=8\n"), &[("STROM_NOPE", "x"), ("PATH", "/bin")], &["also.unknown=2"])
            .unwrap();
    assert_eq!(c.raw.unknown_keys, vec!["no.such.key", "STROM_NOPE", "also.unknown"]);
}

#[test]
fn missing_config_file_is_an_error_naming_the_path() {
    let raw = RawConfig::load(Some(Path::new("/no/such/server.properties")), Vec::new(), &[]);
    let e = raw.unwrap_err();
    assert!(e.to_string().contains("/no/such/server.properties"), "{e}");
}

#[test]
fn override_without_equals_is_refused() {
    let e = RawConfig::load(None, Vec::new(), &["node.id".to_string()]).unwrap_err();
    assert_eq!(e, ConfigError::OverrideSyntax("node.id".into()));
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&str, &str)] = &[
        ("node.id=abc", "node.id"),
        ("node.id=-1", "node.id"),
        ("process.roles=worker", "process.roles"),
        ("process.roles=", "process.roles"),
        ("controller.quorum.voters=1@nohostport", "controller.quorum.voters"),
        ("controller.quorum.voters=1@a:1,1@b:2", "controller.quorum.voters"),
        ("listeners=PLAINTEXT//127.0.0.1:9092", "listeners"),
        ("listeners=BOGUS://127.0.0.1:9092", "listeners"),
        ("listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9092", "listeners"),
        ("listener.security.protocol.map=PLAINTEXT:CARRIER_PIGEON", "listener.security.protocol.map"),
        ("log.dirs= , ", "log.dirs"),
        ("num.partitions=0", "num.partitions"),
        ("default.replication.factor=0", "default.replication.factor"),
        ("min.insync.replicas=0", "min.insync.replicas"),
        ("auto.create.topics.enable=yes", "auto.create.topics.enable"),
        ("log.segment.bytes=10", "log.segment.bytes"),
        ("log.retention.hours=x", "log.retention.hours"),
        ("log.retention.ms=-5", "log.retention.ms"),
        ("log.retention.bytes=-2", "log.retention.bytes"),
        ("log.flush.interval.messages=0", "log.flush.interval.messages"),
        ("log.flush.interval.ms=soon", "log.flush.interval.ms"),
        ("offsets.topic.replication.factor=0", "offsets.topic.replication.factor"),
        ("offsets.topic.num.partitions=0", "offsets.topic.num.partitions"),
        ("transaction.state.log.num.partitions=0", "transaction.state.log.num.partitions"),
        ("transaction.max.timeout.ms=0", "transaction.max.timeout.ms"),
        ("transactional.id.expiration.ms=x", "transactional.id.expiration.ms"),
        ("replica.lag.time.max.ms=0", "replica.lag.time.max.ms"),
        ("broker.session.timeout.ms=-1", "broker.session.timeout.ms"),
        ("controller.quorum.election.timeout.ms=10", "controller.quorum.election.timeout.ms"),
        ("broker.heartbeat.interval.ms=x", "broker.heartbeat.interval.ms"),
        ("unclean.leader.election.enable=1", "unclean.leader.election.enable"),
        ("message.max.bytes=99999999999", "message.max.bytes"),
        ("socket.request.max.bytes=0", "socket.request.max.bytes"),
        ("group.initial.rebalance.delay.ms=-3", "group.initial.rebalance.delay.ms"),
        ("metrics.listener=localhost", "metrics.listener"),
        ("num.io.threads=0", "num.io.threads"),
    ];
    for (o, key) in cases {
        let e = ov(&[o]).expect_err(o);
        assert_eq!(e.key(), Some(*key), "{o}: {e}");
        assert!(e.to_string().contains(key), "message names the key: {e}");
    }
}

#[test]
fn contradictory_setups_are_refused() {
    // A broker needs a quorum to talk to.
    assert_eq!(err_key(ov(&["process.roles=broker", "controller.quorum.voters="])), "controller.quorum.voters");
    // A controller must be one of the voters.
    assert_eq!(err_key(ov(&["node.id=2"])), "controller.quorum.voters");
    // The controller listener must be bound.
    assert_eq!(err_key(ov(&["listeners=PLAINTEXT://127.0.0.1:9092"])), "controller.listener.names");
    // A broker-only node must not bind the controller listener.
    assert_eq!(err_key(ov(&["process.roles=broker"])), "listeners");
    // The inter-broker listener must exist.
    assert_eq!(err_key(ov(&["inter.broker.listener.name=INTERNAL"])), "inter.broker.listener.name");
    // Clients cannot be sent to 0.0.0.0.
    assert_eq!(err_key(ov(&["advertised.listeners=PLAINTEXT://0.0.0.0:9092"])), "advertised.listeners");
    // Heartbeats must come more often than the session times out.
    assert_eq!(
        err_key(ov(&["broker.heartbeat.interval.ms=9000", "broker.session.timeout.ms=9000"])),
        "broker.heartbeat.interval.ms"
    );
}

#[test]
fn wildcard_bind_advertises_the_host_name() {
    let c = ov(&["listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093"]).unwrap();
    assert_ne!(c.advertised_listeners[0].host, "0.0.0.0");
    assert!(!c.advertised_listeners[0].host.is_empty());
}

#[test]
fn env_var_names_use_underscores() {
    assert_eq!(keys::env_var_name("log.retention.ms"), "STROM_LOG_RETENTION_MS");
    assert_eq!(env_key("STROM_LOG_RETENTION_MS"), Some("log.retention.ms"));
    assert_eq!(env_key("STROM_NOT_A_KEY"), None);
}

#[test]
fn a_sasl_listener_needs_mechanisms_strom_serves_and_serves_clients_only() {
    let listeners = "listeners=PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093";
    // Kafka's default mechanism, GSSAPI, is not served.
    let e = ov(&[listeners]).expect_err("GSSAPI must be refused");
    assert_eq!(e.key(), Some("sasl.enabled.mechanisms"), "{e}");
    let e = ov(&[listeners, "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN"]).expect_err("no JAAS");
    assert_eq!(e.key(), Some("listener.name.sasl_plaintext.plain.sasl.jaas.config"), "{e}");
    let c = ov(&[
        listeners,
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512",
        "connections.max.reauth.ms=60000",
        r#"listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_a="p";"#,
    ])
    .unwrap();
    let sasl = &c.listener_sasl["SASL_PLAINTEXT"];
    assert_eq!(sasl.mechanisms.len(), 2);
    assert_eq!(sasl.plain_users.get("a").map(String::as_str), Some("p"));
    assert_eq!(sasl.max_reauth_ms, Some(60_000));
    // Between brokers: the mechanism brokers use must be named, enabled, and have a login.
    let base = [
        "listeners=SECURE://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093",
        "inter.broker.listener.name=SECURE",
        "sasl.enabled.mechanisms=SCRAM-SHA-256",
        "listener.security.protocol.map=SECURE:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
    ];
    let e = ov(&base).expect_err("GSSAPI between brokers");
    assert_eq!(e.key(), Some("sasl.mechanism.inter.broker.protocol"), "{e}");
    let with_mech = [&base[..], &["sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256"]].concat();
    let e = ov(&with_mech).expect_err("no login for brokers");
    assert_eq!(e.key(), Some("listener.name.secure.scram-sha-256.sasl.jaas.config"), "{e}");
    let login = r#"listener.name.secure.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="b";"#;
    let c = ov(&[&with_mech[..], &[login]].concat()).unwrap();
    let creds = c.inter_broker_security.sasl.unwrap();
    assert_eq!((creds.username.as_str(), creds.password.as_str()), ("broker", "b"));
    // A SCRAM login entry anywhere else would do nothing: refused.
    let e = ov(&[
        &base[..],
        &[
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256",
            login,
            r#"listener.name.secure.scram-sha-512.sasl.jaas.config=x.M required;"#,
        ],
    ]
    .concat())
    .expect_err("an unused login entry");
    assert_eq!(e.key(), Some("listener.name.secure.scram-sha-512.sasl.jaas.config"), "{e}");
}

#[test]
fn an_authorizer_is_on_when_a_class_is_named() {
    assert!(ov(&[]).unwrap().authorizer.is_none());
    let c = ov(&[
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:admin; User:CN=broker,O=example",
        "allow.everyone.if.no.acl.found=true",
    ])
    .unwrap();
    let a = c.authorizer.unwrap();
    assert_eq!(a.super_users, vec!["User:admin".to_string(), "User:CN=broker,O=example".to_string()]);
    assert!(a.allow_if_no_acl);
    let e = ov(&["authorizer.class.name=x", "super.users=admin"]).expect_err("a principal without a type");
    assert_eq!(e.key(), Some("super.users"));
    // Nodes reach a PLAINTEXT controller listener as User:ANONYMOUS, which then needs to be a
    // super user (no ACL can exist before the quorum runs): refused rather than a node that
    // never registers.
    let e = ov(&["authorizer.class.name=x", "super.users=User:admin"]).expect_err("nodes locked out");
    assert_eq!(e.key(), Some("super.users"), "{e}");
    assert!(e.to_string().contains("User:ANONYMOUS"), "{e}");
    ov(&["authorizer.class.name=x", "super.users=User:admin;User:ANONYMOUS"]).unwrap();
}

#[test]
fn an_ssl_listener_needs_a_keystore_and_serves_clients_only() {
    // Kafka's own habit: SSL://… with the default map (SSL:SSL), no keystore.
    let e = ov(&["listeners=PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093"])
        .expect_err("an SSL listener without a keystore must be refused");
    assert_eq!(e.key(), Some("ssl.keystore.location"), "{e}");
    // The per-listener key is named when that is the one at fault.
    let e = ov(&[
        "listeners=PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093",
        "listener.name.ssl.ssl.keystore.type=PKCS12",
        "listener.name.ssl.ssl.keystore.location=/nonexistent.p12",
    ])
    .expect_err("a missing PKCS12 password must be refused");
    assert_eq!(e.key(), Some("ssl.keystore.password"), "{e}");
    let e = ov(&[
        "listeners=PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093",
        "listener.name.ssl.ssl.keystore.type=JKS",
        "ssl.keystore.location=/k.jks",
    ])
    .expect_err("a JKS keystore must be refused");
    assert_eq!(e.key(), Some("listener.name.ssl.ssl.keystore.type"), "{e}");
    // The controller listener may be SSL (it needs a keystore like any other).
    let e = ov(&[
        "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:SSL",
    ])
    .expect_err("an SSL controller listener without a keystore must be refused");
    assert_eq!(e.key(), Some("ssl.keystore.location"), "{e}");
    // A broker-only node reaches an SSL controller listener it does not bind: it needs the
    // listener's truststore (the keystore file is read too, as its client certificate).
    let e = ov(&[
        "process.roles=broker",
        "listeners=PLAINTEXT://127.0.0.1:9092",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:SSL",
        "listener.name.controller.ssl.keystore.type=PEM",
        "listener.name.controller.ssl.keystore.location=/nonexistent.pem",
    ])
    .expect_err("a controller listener the node cannot reach");
    assert_eq!(e.key(), Some("ssl.truststore.location"), "{e}");
    // Bad principal mapping rules are refused by name.
    let e = ov(&[
        "listeners=PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093",
        "ssl.keystore.type=PEM",
        "ssl.keystore.location=/nonexistent.pem",
        "listener.name.ssl.ssl.principal.mapping.rules=RULE:^CN=(.*$/$1/",
    ])
    .expect_err("a rule that does not compile");
    assert_eq!(e.key(), Some("listener.name.ssl.ssl.principal.mapping.rules"), "{e}");
}

#[test]
fn combinations_that_cannot_work_are_refused_by_name() {
    for (settings, key) in [
        (&["log.dirs=/d1,/d2"][..], "log.dirs"),
        (&["message.max.bytes=2000000", "socket.request.max.bytes=1000000"][..], "message.max.bytes"),
        (&["queued.max.request.bytes=1000000", "socket.request.max.bytes=2000000"][..], "queued.max.request.bytes"),
        (&["fetch.response.memory.max.bytes=1000000"][..], "fetch.response.memory.max.bytes"),
        (
            &["group.min.session.timeout.ms=7000", "group.max.session.timeout.ms=6500"][..],
            "group.min.session.timeout.ms",
        ),
        (&["max.connections.per.ip.overrides=127.0.0.1"][..], "max.connections.per.ip.overrides"),
        (&["max.connections.per.ip.overrides=127.0.0.1:many"][..], "max.connections.per.ip.overrides"),
    ] {
        let e = ov(settings).expect_err(&format!("{settings:?}"));
        assert_eq!(e.key(), Some(key), "{e}");
    }
    // -1 and 0: unbounded, as Kafka.
    assert_eq!(ov(&["queued.max.request.bytes=0"]).unwrap().queued_max_request_bytes, None);
}

#[test]
fn keys_that_change_kafkas_behaviour_are_refused_by_name() {
    for key in [
        "ssl.engine.factory.class=x.Factory",
        "ssl.secure.random.implementation=SHA1PRNG",
        "sasl.login.callback.handler.class=x.Handler",
        "principal.builder.class=x.PrincipalBuilder",
        "delegation.token.secret.key=x",
        "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=x",
        "log.cleaner.dedupe.buffer.size=134217728",
        "transaction.state.log.load.buffer.size=5242880",
        "quota.window.num=11",
    ] {
        let name = key.split_once('=').unwrap().0;
        let e = ov(&[key]).expect_err(key);
        assert_eq!(e.key(), Some(name), "{e}");
        assert!(e.to_string().contains("does not implement"), "{e}");
    }
    // From the environment too, named by its key.
    let e = load(None, &[("STROM_SASL_KERBEROS_SERVICE_NAME", "kafka")], &[]).expect_err("env sasl key");
    assert_eq!(e.key(), Some("sasl.kerberos.service.name"));
    // Values that ask for what Strom does, and keys Kafka's shipped file sets, still start.
    ov(&[
        "security.inter.broker.protocol=PLAINTEXT",
        "compression.type=producer",
        "compression.type=zstd",
        "log.cleanup.policy=delete",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.max.timeout.ms=60000",
        "transaction.partition.verification.enable=false",
        "transaction.partition.verification.enable=true",
        "log.cleaner.enable=true",
        "log.cleaner.threads=2",
        "log.cleanup.policy=compact,delete",
    ])
    .unwrap();
}

#[test]
fn only_a_metrics_listener_the_user_set_is_explicit() {
    assert!(!ov(&[]).unwrap().metrics_listener_explicit);
    assert!(ov(&["metrics.listener=127.0.0.1:9464"]).unwrap().metrics_listener_explicit);
    assert!(load(None, &[("STROM_METRICS_LISTENER", "127.0.0.1:9500")], &[]).unwrap().metrics_listener_explicit);
}

#[test]
fn a_sasl_controller_listener_serves_plain_only_and_its_nodes_log_in_with_the_jaas_entry() {
    const JAAS: &str = "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.\
                        PlainLoginModule required username=\"node\" password=\"node-secret\" user_node=\"node-secret\";";
    let sasl_controller = |extra: &[&str]| {
        let mut keys = vec![
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            JAAS,
        ];
        keys.extend_from_slice(extra);
        ov(&keys)
    };
    // Kafka's default mechanism for the controller is GSSAPI: not served, so the key is named.
    let e = sasl_controller(&[]).expect_err("GSSAPI on the controller listener");
    assert_eq!(e.key(), Some("sasl.mechanism.controller.protocol"), "{e}");
    let e = sasl_controller(&["sasl.mechanism.controller.protocol=SCRAM-SHA-256"]).expect_err("SCRAM login");
    assert_eq!(e.key(), Some("sasl.mechanism.controller.protocol"), "{e}");

    let c = sasl_controller(&["sasl.mechanism.controller.protocol=PLAIN"]).expect("PLAIN on the controller listener");
    let login = c.controller_security.sasl.as_ref().expect("a login");
    assert_eq!(login.username, "node");
    assert_eq!(login.password, "node-secret");
    let served = c.listener_sasl.get("CONTROLLER").expect("served");
    assert_eq!(served.plain_users.get("node").map(String::as_str), Some("node-secret"));

    // SCRAM is not served on the controller listener, even beside PLAIN.
    let e = ov(&[
        "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
        JAAS,
        "sasl.mechanism.controller.protocol=PLAIN",
    ])
    .expect_err("SCRAM served on the controller listener");
    assert_eq!(e.key(), Some("listener.name.controller.sasl.enabled.mechanisms"), "{e}");

    // With the authorizer on, the nodes' PLAIN user must be a super user.
    let e = sasl_controller(&[
        "sasl.mechanism.controller.protocol=PLAIN",
        "authorizer.class.name=x",
        "super.users=User:admin",
    ])
    .expect_err("nodes locked out");
    assert_eq!(e.key(), Some("super.users"), "{e}");
    assert!(e.to_string().contains("User:node"), "{e}");
    sasl_controller(&["sasl.mechanism.controller.protocol=PLAIN", "authorizer.class.name=x", "super.users=User:node"])
        .expect("the nodes' user is a super user");

    // The mechanism key does nothing for a PLAINTEXT controller listener: refused, not ignored.
    let e = ov(&["sasl.mechanism.controller.protocol=PLAIN"]).expect_err("a key without effect");
    assert_eq!(e.key(), Some("sasl.mechanism.controller.protocol"), "{e}");

    // A broker-only node logs in to a controller listener it does not bind: the JAAS entry's
    // username and password, no users of its own needed.
    let c = ov(&[
        "process.roles=broker",
        "listeners=PLAINTEXT://127.0.0.1:9092",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
         required username=\"node\" password=\"node-secret\";",
    ])
    .expect("a broker-only node");
    assert_eq!(c.controller_security.sasl.map(|l| l.username), Some("node".to_string()));
}

#[test]
fn a_per_listener_key_must_name_a_listener_in_lower_case() {
    let e = ov(&["listener.name.PLAINTEXT.connections.max.reauth.ms=1000"]).expect_err("upper case");
    assert_eq!(e.key(), Some("listener.name.PLAINTEXT.connections.max.reauth.ms"), "{e}");
    let e = ov(&["listener.name.nosuch.connections.max.reauth.ms=1000"]).expect_err("no such listener");
    assert_eq!(e.key(), Some("listener.name.nosuch.connections.max.reauth.ms"), "{e}");
    // Read per listener nowhere: refused rather than ignored.
    let e = ov(&["listener.name.plaintext.sasl.server.max.receive.size=1000"]).expect_err("not read per listener");
    assert_eq!(e.key(), Some("listener.name.plaintext.sasl.server.max.receive.size"), "{e}");
}
