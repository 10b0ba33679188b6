//! The controller listener over TLS (issue #20): a three-voter quorum whose Raft RPCs and
//! broker calls run over mutual TLS, with the authorizer on. A caller whose certificate
//! subject is a super user registers; one the same CA signed but without CLUSTER_ACTION is
//! refused with CLUSTER_AUTHORIZATION_FAILED, and so is a caller without TLS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use strom_controller::controller::{Controller, ControllerConfig};
use strom_metadata::acl::AuthorizerSettings;
use strom_metadata::client::{ClientError, ControllerClient};
use strom_protocol::proto::controller as pb;
use strom_security::reload::ListenerTls;
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
        let keys: HashMap<&str, String> = [
            ("ssl.keystore.type", "PEM".to_string()),
            ("ssl.keystore.location", keystore.display().to_string()),
            ("ssl.truststore.type", "PEM".to_string()),
            ("ssl.truststore.location", self.ca.display().to_string()),
            ("ssl.client.auth", "required".to_string()),
        ]
        .into_iter()
        .collect();
        let settings = TlsSettings::from_keys(|k| keys.get(k).cloned()).unwrap();
        Arc::new(ListenerTls::new(settings, serve, true).unwrap())
    }
}

fn config(dir: &std::path::Path, id: i32, voters: &[(i32, String)], tls: Arc<ListenerTls>) -> ControllerConfig {
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
        authorizer: Some(AuthorizerSettings { super_users: vec!["User:CN=node".into()], allow_if_no_acl: false }),
    }
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
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let voters: Vec<(i32, String)> =
        listeners.iter().enumerate().map(|(i, l)| (i as i32 + 1, l.local_addr().unwrap().to_string())).collect();
    let stop = CancellationToken::new();
    let mut members = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let c = config(pki.dir.path(), i as i32 + 1, &voters, pki.tls(&node, true));
        members.push(Controller::start(c, l, stop.clone()).await.unwrap());
    }
    // Raft runs over TLS: the voters elect a leader and agree on it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views: Vec<Option<i32>> = members.iter().map(|c| c.active_controller()).collect();
        if views[0].is_some() && views.iter().all(|v| *v == views[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "no leader elected over TLS: {views:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let node_client = ControllerClient::new(&voters, pki.tls(&node, false).client.as_ref()).unwrap();
    let r = register(&node_client, 7).await.expect("a super user's certificate registers");
    assert_eq!(r.error_code, 0, "{}", r.error_message);

    let intruder_client = ControllerClient::new(&voters, pki.tls(&intruder, false).client.as_ref()).unwrap();
    let e = register(&intruder_client, 8).await.expect_err("a certificate without CLUSTER_ACTION registered");
    assert!(e.to_string().contains("CLUSTER_AUTHORIZATION_FAILED"), "{e}");

    let plain_client = ControllerClient::new(&voters, None).unwrap();
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
