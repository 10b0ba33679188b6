//! The controller listener over TLS and SASL (issue #20): a three-voter quorum whose Raft
//! RPCs and broker calls run over mutual TLS (or over TLS with a SASL PLAIN login), with the
//! authorizer on. A caller whose certificate subject (or SASL user) is a super user
//! registers; one the same CA signed (or a known user) without CLUSTER_ACTION is refused
//! with CLUSTER_AUTHORIZATION_FAILED, and a caller without TLS (or with a wrong password) is
//! refused before any call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use strom_controller::controller::{Controller, ControllerConfig};
use strom_metadata::acl::AuthorizerSettings;
use strom_metadata::client::{ClientError, ControllerClient};
use strom_metadata::controller_sasl::{plain_config, PlainLogin};
use strom_metadata::transport::ControllerSecurity;
use strom_protocol::proto::controller as pb;
use strom_security::reload::ListenerTls;
use strom_security::sasl::SaslConfig;
use strom_security::tls::TlsSettings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A CA and PEM keystores (key and chain in one file) it signed, one per subject CN.
struct Pki {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
}

impl Pki {
    fn new() -> (Pki, rcgen::Issuer<'static, KeyPair>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        (Pki { dir, ca: ca_path }, rcgen::Issuer::new(params, ca_key))
    }

    fn keystore(&self, issuer: &rcgen::Issuer<'static, KeyPair>, cn: &str) -> std::path::PathBuf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, issuer).unwrap();
        let path = self.dir.path().join(format!("{cn}.pem"));
        std::fs::write(&path, format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
        path
    }

    fn tls(&self, keystore: &std::path::Path, serve: bool) -> Arc<ListenerTls> {
        self.tls_with(keystore, serve, "required")
    }

    fn tls_without_client_auth(&self, keystore: &std::path::Path, serve: bool) -> Arc<ListenerTls> {
        self.tls_with(keystore, serve, "none")
    }

    fn tls_with(&self, keystore: &std::path::Path, serve: bool, client_auth: &str) -> Arc<ListenerTls> {
        let keys: HashMap<&str, String> = [
            ("ssl.keystore.type", "PEM".to_string()),
            ("ssl.keystore.location", keystore.display().to_string()),
            ("ssl.truststore.type", "PEM".to_string()),
            ("ssl.truststore.location", self.ca.display().to_string()),
            ("ssl.client.auth", client_auth.to_string()),
        ]
        .into_iter()
        .collect();
        let settings = TlsSettings::from_keys(|k| keys.get(k).cloned()).unwrap();
        Arc::new(ListenerTls::new(settings, serve, true).unwrap())
    }
}

/// A voter's config: mutual TLS, or (with `sasl`) TLS and a PLAIN login as `node`.
fn config(
    dir: &std::path::Path,
    id: i32,
    voters: &[(i32, String)],
    tls: Arc<ListenerTls>,
    sasl: Option<SaslConfig>,
) -> ControllerConfig {
    let super_user = if sasl.is_some() { "User:node" } else { "User:CN=node" };
    let peers =
        ControllerSecurity { tls: tls.client.clone(), sasl: sasl.as_ref().map(|_| login("node", "node-secret")) };
    ControllerConfig {
        node_id: id,
        voters: voters.to_vec(),
        metadata_dir: dir.join(format!("node-{id}")),
        broker_session_timeout_ms: 5000,
        num_partitions: 1,
        default_replication_factor: 1,
        unclean_leader_election_enable: false,
        auto_leader_rebalance_enable: true,
        raft_heartbeat_ms: 50,
        cluster_id: None,
        tls: Some(tls),
        sasl: sasl.map(|s| (s, 4096)),
        peers,
        authorizer: Some(AuthorizerSettings { super_users: vec![super_user.into()], allow_if_no_acl: false }),
    }
}

fn login(user: &str, password: &str) -> PlainLogin {
    PlainLogin { username: user.into(), password: password.into() }
}

/// Starts three voters on `configs` and waits until they agree on a leader.
async fn quorum(
    configs: impl Fn(i32, &[(i32, String)]) -> ControllerConfig,
    stop: &CancellationToken,
) -> (Vec<Arc<Controller>>, Vec<(i32, String)>) {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let voters: Vec<(i32, String)> =
        listeners.iter().enumerate().map(|(i, l)| (i as i32 + 1, l.local_addr().unwrap().to_string())).collect();
    let mut members = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        members.push(Controller::start(configs(i as i32 + 1, &voters), l, stop.clone()).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views: Vec<Option<i32>> = members.iter().map(|c| c.active_controller()).collect();
        if views[0].is_some() && views.iter().all(|v| *v == views[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "no leader elected: {views:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (members, voters)
}

async fn register(client: &ControllerClient, broker_id: i32) -> Result<pb::RegisterBrokerResponse, ClientError> {
    client
        .call(Duration::from_secs(3), Duration::from_secs(1), |mut c| async move {
            c.register_broker(pb::RegisterBrokerRequest {
                broker_id,
                incarnation_id: format!("inc-{broker_id}").into_bytes(),
                listeners: vec![],
                rack: None,
                cluster_id: None,
            })
            .await
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_over_mutual_tls_admits_only_callers_with_cluster_action() {
    let (pki, issuer) = Pki::new();
    let node = pki.keystore(&issuer, "node");
    let intruder = pki.keystore(&issuer, "intruder");
    let stop = CancellationToken::new();
    // Raft runs over TLS: the voters elect a leader and agree on it.
    let (members, voters) =
        quorum(|id, voters| config(pki.dir.path(), id, voters, pki.tls(&node, true), None), &stop).await;

    let tls_only =
        |keystore: &std::path::Path| ControllerSecurity { tls: pki.tls(keystore, false).client.clone(), sasl: None };
    let node_client = ControllerClient::new(&voters, &tls_only(&node)).unwrap();
    let r = register(&node_client, 7).await.expect("a super user's certificate registers");
    assert_eq!(r.error_code, 0, "{}", r.error_message);

    let intruder_client = ControllerClient::new(&voters, &tls_only(&intruder)).unwrap();
    let e = register(&intruder_client, 8).await.expect_err("a certificate without CLUSTER_ACTION registered");
    assert!(e.to_string().contains("CLUSTER_AUTHORIZATION_FAILED"), "{e}");

    let plain_client = ControllerClient::new(&voters, &ControllerSecurity::default()).unwrap();
    let e = register(&plain_client, 9).await.expect_err("a plaintext caller registered");
    assert!(!e.to_string().contains("CLUSTER_AUTHORIZATION_FAILED"), "refused before any call: {e}");

    // Broker 7 is registered (in the active controller's image at least); 8 and 9 nowhere.
    assert!(members.iter().any(|m| m.metadata.image().brokers.contains_key(&7)));
    assert!(members.iter().all(|m| !m.metadata.image().brokers.keys().any(|id| *id == 8 || *id == 9)));
    stop.cancel();
    for m in members {
        let _ = m.raft.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_over_sasl_ssl_admits_only_logged_in_callers_with_cluster_action() {
    let (pki, issuer) = Pki::new();
    // The listener asks no client certificate: who a caller is comes from its PLAIN login.
    let server = pki.keystore(&issuer, "server");
    let users: std::collections::BTreeMap<String, String> =
        [("node", "node-secret"), ("app", "app-secret")].into_iter().map(|(u, p)| (u.into(), p.into())).collect();
    let stop = CancellationToken::new();
    let (members, voters) = quorum(
        |id, voters| {
            let tls = pki.tls_without_client_auth(&server, true);
            config(pki.dir.path(), id, voters, tls, Some(plain_config(users.clone())))
        },
        &stop,
    )
    .await;
    let client_tls = pki.tls_without_client_auth(&server, false).client.clone();
    let as_user = |user: &str, password: &str| {
        ControllerClient::new(
            &voters,
            &ControllerSecurity { tls: client_tls.clone(), sasl: Some(login(user, password)) },
        )
        .unwrap()
    };

    let r = register(&as_user("node", "node-secret"), 7).await.expect("a super user logged in registers");
    assert_eq!(r.error_code, 0, "{}", r.error_message);

    let e = register(&as_user("app", "app-secret"), 8).await.expect_err("a user without CLUSTER_ACTION registered");
    assert!(e.to_string().contains("CLUSTER_AUTHORIZATION_FAILED"), "{e}");

    let failed_before: u64 = members.iter().map(|m| m.failed_authentications.get()).sum();
    let e = register(&as_user("node", "wrong"), 9).await.expect_err("a wrong password registered");
    assert!(!e.to_string().contains("CLUSTER_AUTHORIZATION_FAILED"), "refused before any call: {e}");
    let tls_only = ControllerClient::new(&voters, &ControllerSecurity { tls: client_tls.clone(), sasl: None }).unwrap();
    register(&tls_only, 10).await.expect_err("a caller that did not log in registered");
    let failed_after: u64 = members.iter().map(|m| m.failed_authentications.get()).sum();
    assert!(failed_after > failed_before, "failed logins not counted: {failed_before} -> {failed_after}");

    assert!(members.iter().any(|m| m.metadata.image().brokers.contains_key(&7)));
    assert!(members.iter().all(|m| !m.metadata.image().brokers.keys().any(|id| (8..=10).contains(id))));
    stop.cancel();
    for m in members {
        let _ = m.raft.shutdown().await;
    }
}
