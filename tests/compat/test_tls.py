"""TLS listeners (issue #20, first step) as librdkafka and kafka-python users see them: an SSL
listener beside the PLAINTEXT one, keystores as a PEM file, PKCS12 or inline PEM; mutual TLS
(`ssl.client.auth=required`) lets in a client whose certificate the truststore vouches for and
refuses one without a certificate, one signed by another CA and an expired one; a plaintext
client on the TLS port is refused; the node keeps serving everyone else throughout. Settings
Strom cannot honour stop the node with the key named."""

import os
import subprocess
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from conftest import STROM, free_port, refused, round_trip, wait_until
from certs import make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(str(tmp_path_factory.mktemp("certs")))


def tls_node(node_factory, *settings):
    """A node with an SSL listener beside its PLAINTEXT one; `.tls_bootstrap` is its address."""
    n = node_factory()
    n.tls_port = free_port()
    n.tls_bootstrap = f"127.0.0.1:{n.tls_port}"
    n.extra = [
        f"listeners=PLAINTEXT://127.0.0.1:{n.kafka_port},SSL://127.0.0.1:{n.tls_port},"
        f"CONTROLLER://127.0.0.1:{n.controller_port}",
        *settings,
    ]
    return n.start()


def ssl_conf(certs, node, **extra):
    return {"bootstrap.servers": node.tls_bootstrap, "security.protocol": "SSL", "ssl.ca.location": certs.ca_pem,
            **extra}


@pytest.mark.parametrize("keystore", ["pem-file", "pkcs12", "inline-pem"])
def test_librdkafka_produces_and_consumes_over_an_ssl_listener(node_factory, certs, keystore):
    settings = {
        "pem-file": ["ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}"],
        "pkcs12": ["ssl.keystore.type=PKCS12", f"ssl.keystore.location={certs.server_p12}",
                   f"ssl.keystore.password={certs.password}"],
        "inline-pem": ["listener.name.ssl.ssl.keystore.type=PEM",
                       "listener.name.ssl.ssl.keystore.key=" + open(certs.server_key).read(),
                       "listener.name.ssl.ssl.keystore.certificate.chain=" + open(certs.server_chain).read()],
    }[keystore]
    n = tls_node(node_factory, *settings)
    topic = "tls-" + uuid.uuid4().hex[:8]
    conf = ssl_conf(certs, n)
    round_trip(conf, topic)
    # Metadata over TLS names the TLS listener's address (the listener the client came in on).
    md = AdminClient(conf).list_topics(timeout=10)
    assert [f"{b.host}:{b.port}" for b in md.brokers.values()] == [n.tls_bootstrap]


def test_kafka_python_produces_and_consumes_over_an_ssl_listener(node_factory, certs):
    from kafka import KafkaConsumer, KafkaProducer
    n = tls_node(node_factory, "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}")
    topic = "tls-kp-" + uuid.uuid4().hex[:8]
    common = {"bootstrap_servers": n.tls_bootstrap, "security_protocol": "SSL", "ssl_cafile": certs.ca_pem}
    p = KafkaProducer(acks="all", **common)
    p.send(topic, b"over tls").get(timeout=30)
    p.close()
    c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **common)
    assert [m.value for m in c][:1] == [b"over tls"]
    c.close()


def test_kafka_python_with_mutual_tls(node_factory, certs):
    from kafka import KafkaConsumer, KafkaProducer
    n = tls_node(node_factory, "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}",
                 "ssl.truststore.type=PEM", f"ssl.truststore.location={certs.ca_pem}", "ssl.client.auth=required")
    topic = "mtls-kp-" + uuid.uuid4().hex[:8]
    common = {"bootstrap_servers": n.tls_bootstrap, "security_protocol": "SSL", "ssl_cafile": certs.ca_pem,
              "ssl_certfile": certs.client_cert, "ssl_keyfile": certs.client_key}
    p = KafkaProducer(acks="all", **common)
    p.send(topic, b"over mtls").get(timeout=30)
    p.close()
    c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **common)
    assert [m.value for m in c][:1] == [b"over mtls"]
    c.close()


def test_mutual_tls_lets_in_only_clients_the_truststore_vouches_for(node_factory, certs):
    n = tls_node(node_factory, "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}",
                 "ssl.truststore.type=PEM", f"ssl.truststore.location={certs.ca_pem}", "ssl.client.auth=required")
    topic = "mtls-" + uuid.uuid4().hex[:8]
    good = ssl_conf(certs, n, **{"ssl.certificate.location": certs.client_cert, "ssl.key.location": certs.client_key})
    round_trip(good, topic)
    assert refused(ssl_conf(certs, n)), "a client without a certificate was let in"
    assert refused(ssl_conf(certs, n, **{"ssl.certificate.location": certs.rogue_cert,
                                         "ssl.key.location": certs.rogue_key})), "another CA's client was let in"
    assert refused(ssl_conf(certs, n, **{"ssl.certificate.location": certs.expired_cert,
                                         "ssl.key.location": certs.expired_key})), "an expired certificate was let in"
    # The node kept serving: the good client and the PLAINTEXT listener still work.
    round_trip(good, topic)
    round_trip({"bootstrap.servers": n.bootstrap}, topic)


def test_requested_client_auth_lets_in_clients_without_a_certificate_only(node_factory, certs):
    # (PKCS12 truststores are read as Java reads them, trusted entries only: tested in
    # crates/strom-security/tests/tls.rs, since `cryptography` cannot write that attribute.)
    n = tls_node(node_factory, "ssl.keystore.type=PKCS12", f"ssl.keystore.location={certs.server_p12}",
                 f"ssl.keystore.password={certs.password}", "ssl.truststore.type=PEM",
                 f"ssl.truststore.location={certs.ca_pem}", "ssl.client.auth=requested")
    topic = "mtls-req-" + uuid.uuid4().hex[:8]
    # Requested: a client with no certificate is let in, as is one with a good certificate
    # (what a client does with a certificate the server's CA list does not name is up to it).
    round_trip(ssl_conf(certs, n), topic)
    round_trip(ssl_conf(certs, n, **{"ssl.certificate.location": certs.client_cert,
                                     "ssl.key.location": certs.client_key}), topic)


def test_a_plaintext_client_on_the_tls_port_and_garbage_are_refused_and_the_node_keeps_serving(node_factory, certs):
    import socket
    n = tls_node(node_factory, "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}")
    assert refused({"bootstrap.servers": n.tls_bootstrap})
    # Random bytes and a truncated handshake: the connection is closed, nothing else happens.
    for junk in (os.urandom(4096), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        s = socket.create_connection(("127.0.0.1", n.tls_port), timeout=5)
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        s.close()
    topic = "tls-after-junk-" + uuid.uuid4().hex[:8]
    round_trip(ssl_conf(certs, n), topic)
    assert n.proc.poll() is None


@pytest.mark.parametrize("setting,key", [
    ([], "ssl.keystore.location"),
    (["ssl.keystore.type=JKS", "ssl.keystore.location=/nonexistent.jks"], "ssl.keystore.type"),
    (["ssl.keystore.type=PEM", "ssl.keystore.location=/nonexistent.pem"], "ssl.keystore.location"),
    (["ssl.keystore.type=PEM", "ssl.keystore.location={pem}", "ssl.enabled.protocols=TLSv1.1"],
     "ssl.enabled.protocols"),
    (["ssl.keystore.type=PEM", "ssl.keystore.location={pem}", "ssl.cipher.suites=TLS_RSA_WITH_RC4_128_MD5"],
     "ssl.cipher.suites"),
    (["ssl.keystore.type=PEM", "ssl.keystore.location={pem}", "ssl.client.auth=required"], "ssl.truststore.location"),
    (["ssl.keystore.type=PEM", "ssl.keystore.location={pem}", "ssl.principal.mapping.rules=RULE:^CN=(.*$/$1/"],
     "ssl.principal.mapping.rules"),
    # With the authorizer on, nodes reach the PLAINTEXT controller listener as User:ANONYMOUS,
    # which is not a super user here: the node could never register, so it does not start.
    (["ssl.keystore.type=PEM", "ssl.keystore.location={pem}", "authorizer.class.name=x", "super.users=User:admin"],
     "super.users"),
    # A SASL controller listener: Kafka's default mechanism there (GSSAPI) is not served.
    (["ssl.keystore.type=PEM", "ssl.keystore.location={pem}",
      "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,CONTROLLER:SASL_PLAINTEXT",
      "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
      "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
      'required username="node" password="node-secret" user_node="node-secret";'],
     "sasl.mechanism.controller.protocol"),
])
def test_tls_settings_strom_cannot_honour_stop_the_node_with_the_key_named(tmp_path, certs, setting, key):
    port, tport, cport = free_port(), free_port(), free_port()
    args = [STROM, "server", "--override",
            f"listeners=PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{tport},CONTROLLER://127.0.0.1:{cport}",
            "--override", f"controller.quorum.voters=1@127.0.0.1:{cport}",
            "--override", f"log.dirs={tmp_path / 'data'}"]
    for s in setting:
        args += ["--override", s.replace("{pem}", certs.server_pem)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr[-1000:])
    assert key in r.stderr, r.stderr[-1000:]


def test_tls_between_brokers_needs_a_truststore(tmp_path, certs):
    """Brokers reach each other over the inter-broker listener as clients: with TLS there they
    check the leader against the truststore, which must be given."""
    port, cport = free_port(), free_port()
    r = subprocess.run([STROM, "server", "--override", f"listeners=SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                        "--override", f"controller.quorum.voters=1@127.0.0.1:{cport}",
                        "--override", "inter.broker.listener.name=SSL", "--override", "ssl.keystore.type=PEM",
                        "--override", f"ssl.keystore.location={certs.server_pem}",
                        "--override", f"log.dirs={tmp_path / 'data'}"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "truststore" in r.stderr, r.stderr[-1000:]


def mapped_node(node_factory, certs):
    """mTLS on the client listener and on the controller listener, principals mapped by a rule
    that keeps the CN of the test OU's certificates (and maps nothing else), the authorizer on
    with only alice and the node's own certificate (CN=broker) as super users."""
    n = node_factory()
    n.tls_port = free_port()
    n.tls_bootstrap = f"127.0.0.1:{n.tls_port}"
    n.extra = [
        f"listeners=PLAINTEXT://127.0.0.1:{n.kafka_port},SSL://127.0.0.1:{n.tls_port},"
        f"CONTROLLER://127.0.0.1:{n.controller_port}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,CONTROLLER:SSL",
        "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}",
        "ssl.truststore.type=PEM", f"ssl.truststore.location={certs.ca_pem}", "ssl.client.auth=required",
        "ssl.principal.mapping.rules=RULE:^CN=([^,]*),OU=test,O=strom$/$1/L",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:alice;User:broker",
    ]
    return n.start()


def test_principal_mapping_rules_name_clients_and_nodes(node_factory, certs):
    """ssl.principal.mapping.rules as Kafka applies them: alice's certificate subject
    (CN=alice,OU=test,O=strom) becomes User:alice, which is a super user; the node itself
    reaches its SSL controller listener as User:broker (it registers, so the node serves at
    all); a certificate no rule maps is refused; anonymous PLAINTEXT clients see no topic."""
    n = mapped_node(node_factory, certs)
    topic = "mapped-" + uuid.uuid4().hex[:8]
    alice = ssl_conf(certs, n, **{"ssl.certificate.location": certs.client_cert, "ssl.key.location": certs.client_key})
    round_trip(alice, topic)
    bob = ssl_conf(certs, n, **{"ssl.certificate.location": certs.ops_cert, "ssl.key.location": certs.ops_key})
    assert refused(bob), "a certificate no rule maps was let in"
    assert topic not in AdminClient({"bootstrap.servers": n.bootstrap}).list_topics(timeout=10).topics
    round_trip(alice, topic)


def test_the_controller_listener_refuses_peers_without_a_trusted_certificate(node_factory, certs):
    """The SSL controller listener with ssl.client.auth=required: a TLS client without a
    certificate, one another CA signed and a plaintext gRPC client get no answer; the node's
    own broker (with its certificate) keeps working."""
    import socket
    import ssl
    n = mapped_node(node_factory, certs)
    port = n.controller_port
    ctx = ssl.create_default_context(cafile=certs.ca_pem)
    # No client certificate: the handshake (or the first read after it, in TLS 1.3) fails.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if not s.recv(1):
                    raise ConnectionError("closed")
    ctx.load_cert_chain(certs.rogue_cert, certs.rogue_key)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if not s.recv(1):
                    raise ConnectionError("closed")
    # Plaintext HTTP/2 (what a gRPC client without TLS sends): closed without an answer.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(64))
        try:
            got = s.recv(4096)
        except OSError:
            got = b""
        assert not got.startswith(b"\x00\x00"), f"an HTTP/2 frame came back: {got[:32]!r}"
    topic = "ctl-tls-" + uuid.uuid4().hex[:8]
    alice = ssl_conf(certs, n, **{"ssl.certificate.location": certs.client_cert, "ssl.key.location": certs.client_key})
    round_trip(alice, topic)  # the broker still reaches its controller (topic creation goes there)
    assert n.proc.poll() is None


def served_certificate(port, certs):
    import socket
    import ssl
    ctx = ssl.create_default_context(cafile=certs.ca_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True)


def test_a_renewed_certificate_is_served_without_a_restart(node_factory, certs, tmp_path):
    """The keystore file is replaced while the node runs: new connections get the new
    certificate within a few seconds, and the node never stopped serving. A broken file
    written over it is refused and the certificate before it stays in use."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    keystore = str(tmp_path / "keystore.pem")
    with open(certs.server_pem, "rb") as src, open(keystore, "wb") as dst:
        dst.write(src.read())
    n = tls_node(node_factory, "ssl.keystore.type=PEM", f"ssl.keystore.location={keystore}")
    pid = n.proc.pid

    def der(pem_path):
        with open(pem_path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read()).public_bytes(Encoding.DER)
    assert served_certificate(n.tls_port, certs) == der(certs.server_chain)
    topic = "reload-" + uuid.uuid4().hex[:8]
    round_trip(ssl_conf(certs, n), topic)
    # Renew: write the new keystore beside, then rename it over the old (as cert managers do).
    tmp = keystore + ".new"
    with open(certs.renewed_server_pem, "rb") as src, open(tmp, "wb") as dst:
        dst.write(src.read())
    os.replace(tmp, keystore)
    wait_until("the renewed certificate to be served",
               lambda: served_certificate(n.tls_port, certs) == der(certs.renewed_server_chain), timeout=20)
    round_trip(ssl_conf(certs, n), topic)
    # A broken keystore: refused, the renewed certificate stays in use.
    with open(keystore, "wb") as f:
        f.write(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    wait_until("the broken keystore to be reported", lambda: "cannot be used" in n.log_tail(200), timeout=20)
    assert served_certificate(n.tls_port, certs) == der(certs.renewed_server_chain)
    round_trip(ssl_conf(certs, n), topic)
    assert n.proc.pid == pid and n.proc.poll() is None


def test_a_dynamic_keystore_config_switches_the_certificate_without_a_restart(node_factory, certs):
    """Kafka's dynamic keystore update: `listener.name.ssl.ssl.keystore.location` set on
    broker 1 with IncrementalAlterConfigs makes new connections get the certificate of the new
    keystore, DescribeConfigs shows it as a dynamic broker config, and it survives a restart
    (it lives in the metadata log). A keystore that cannot be used, and keys Strom does not
    change while it runs, are refused with INVALID_REQUEST and change nothing; deleting the
    key brings back the node's own keystore."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, ResourceType
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    def der(pem_path):
        with open(pem_path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read()).public_bytes(Encoding.DER)
    n = tls_node(node_factory, "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}")
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    key = "listener.name.ssl.ssl.keystore.location"

    def alter(name, value, op=AlterConfigOpType.SET):
        r = ConfigResource(ResourceType.BROKER, "1",
                           incremental_configs=[ConfigEntry(name, value, incremental_operation=op)])
        return admin.incremental_alter_configs([r])[r].result(15)

    def refused_with(name, value):
        with pytest.raises(KafkaException) as e:
            alter(name, value)
        assert e.value.args[0].code() == KafkaError.INVALID_REQUEST, e.value
        return str(e.value)
    assert served_certificate(n.tls_port, certs) == der(certs.server_chain)

    alter(key, certs.renewed_server_pem)
    wait_until("the dynamic keystore's certificate to be served",
               lambda: served_certificate(n.tls_port, certs) == der(certs.renewed_server_chain), timeout=20)
    round_trip(ssl_conf(certs, n), "dyn-" + uuid.uuid4().hex[:8])
    described = admin.describe_configs([ConfigResource(ResourceType.BROKER, "1")])
    entry = list(described.values())[0].result(10)[key]
    assert entry.value == certs.renewed_server_pem and entry.source == ConfigSource.DYNAMIC_BROKER_CONFIG.value, entry

    # Refused, nothing changed: a file that is not a keystore, a key Strom does not change
    # while it runs, a listener without TLS.
    message = refused_with(key, certs.ca_pem)
    assert "ssl" in message.lower(), message
    # Another certificate subject (alice's key and certificate): refused, as Kafka does unless
    # ssl.allow.dn.changes=true.
    other = os.path.join(certs.dir, "alice-keystore.pem")
    with open(other, "wb") as out, open(certs.client_key, "rb") as k, open(certs.client_cert, "rb") as c:
        out.write(k.read() + c.read())
    message = refused_with(key, other)
    assert "subject" in message and "ssl.allow.dn.changes" in message, message
    # Kafka's prefix holds the listener name in lower case.
    refused_with("listener.name.SSL.ssl.keystore.location", certs.renewed_server_pem)
    message = refused_with("log.retention.ms", "1000")
    assert "log.retention.ms" in message, message
    refused_with("listener.name.plaintext.ssl.keystore.location", certs.renewed_server_pem)
    entry = list(admin.describe_configs([ConfigResource(ResourceType.BROKER, "1")]).values())[0].result(10)
    assert entry[key].value == certs.renewed_server_pem
    assert "log.retention.ms" not in entry or entry["log.retention.ms"].source != ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert served_certificate(n.tls_port, certs) == der(certs.renewed_server_chain)

    # A restart keeps the dynamic keystore (applied again once the node has its metadata).
    n.stop()
    n.start()
    wait_until("the dynamic keystore served after a restart",
               lambda: served_certificate(n.tls_port, certs) == der(certs.renewed_server_chain), timeout=30)

    # The tool (kafka-configs.sh's flags) shows it, and deleting the key brings back the
    # node's own keystore.
    tool = [STROM, "configs", "--bootstrap-server", n.bootstrap, "--entity-type", "brokers", "--entity-name", "1"]
    shown = subprocess.run(tool + ["--describe"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and f"{key}={certs.renewed_server_pem}" in shown.stdout, shown
    bad = subprocess.run(tool + ["--alter", "--add-config", "log.retention.ms=1000"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode != 0 and "INVALID_REQUEST" in bad.stderr, bad
    done = subprocess.run(tool + ["--alter", "--delete-config", key], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done
    wait_until("the node's own keystore served again",
               lambda: served_certificate(n.tls_port, certs) == der(certs.server_chain), timeout=20)
