"""SASL listeners (issue #20) as librdkafka and kafka-python users see them: PLAIN with users
from the listener's JAAS config, SCRAM-SHA-256 and SCRAM-SHA-512 with credentials stored in the
metadata log (made with AdminClient.alter_user_scram_credentials and with `strom configs`),
over SASL_PLAINTEXT and SASL_SSL. A wrong password, an unknown user, a deleted credential are
refused; the node keeps serving everyone else; failures are counted. Sessions expire after
`connections.max.reauth.ms` and librdkafka re-authenticates (KIP-368)."""

import os
import re
import socket
import struct
import subprocess
import urllib.request
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

from conftest import STROM, free_port, refused, round_trip
from certs import make_certs

PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" '
              'password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";')


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(str(tmp_path_factory.mktemp("certs")))


def sasl_node(node_factory, certs, *extra):
    """A node with PLAINTEXT, SASL_PLAINTEXT and SASL_SSL listeners (PLAIN and both SCRAMs)."""
    n = node_factory()
    n.sasl_port, n.sasl_ssl_port = free_port(), free_port()
    n.extra = [
        f"listeners=PLAINTEXT://127.0.0.1:{n.kafka_port},SASL_PLAINTEXT://127.0.0.1:{n.sasl_port},"
        f"SASL_SSL://127.0.0.1:{n.sasl_ssl_port},CONTROLLER://127.0.0.1:{n.controller_port}",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}",
        f"listener.name.sasl_ssl.plain.sasl.jaas.config={PLAIN_JAAS}",
        "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}",
        *extra,
    ]
    return n.start()


def sasl_conf(node, certs, mechanism, user, password, ssl=False):
    conf = {"bootstrap.servers": f"127.0.0.1:{node.sasl_ssl_port if ssl else node.sasl_port}",
            "security.protocol": "SASL_SSL" if ssl else "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}
    if ssl:
        conf["ssl.ca.location"] = certs.ca_pem
    return conf


def metric(node, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name}_total (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


def add_scram(node, user, password, mechanisms=(ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    ups = [UserScramCredentialUpsertion(user, ScramCredentialInfo(m, 8192), password.encode()) for m in mechanisms]
    for f in admin.alter_user_scram_credentials(ups).values():
        f.result(15)


def test_plain_users_from_the_jaas_config_over_sasl_plaintext_and_sasl_ssl(node_factory, certs):
    n = sasl_node(node_factory, certs)
    topic = "sasl-plain-" + uuid.uuid4().hex[:8]
    for ssl in (False, True):
        round_trip(sasl_conf(n, certs, "PLAIN", "alice", "alice-secret", ssl=ssl), topic)
    failed_before = metric(n, "kafka_server_socket_server_metrics_failed_authentication")
    assert refused(sasl_conf(n, certs, "PLAIN", "alice", "wrong"))
    assert refused(sasl_conf(n, certs, "PLAIN", "mallory", "alice-secret"))
    assert refused(sasl_conf(n, certs, "PLAIN", "alice", "wrong", ssl=True))
    assert metric(n, "kafka_server_socket_server_metrics_failed_authentication") >= failed_before + 3
    # No credentials at all (a plaintext client on the SASL port) is refused too.
    assert refused({"bootstrap.servers": f"127.0.0.1:{n.sasl_port}"})
    # The node kept serving, and no password reached its log.
    round_trip(sasl_conf(n, certs, "PLAIN", "admin", "admin-secret"), topic)
    round_trip({"bootstrap.servers": n.bootstrap}, topic)
    log = open(n.log_path).read()
    assert "alice-secret" not in log and "admin-secret" not in log


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_users_made_with_the_admin_client(node_factory, certs, mechanism):
    n = sasl_node(node_factory, certs)
    topic = "sasl-scram-" + uuid.uuid4().hex[:8]
    user = "bob-" + uuid.uuid4().hex[:6]
    assert refused(sasl_conf(n, certs, mechanism, user, "bob-secret")), "no credential yet"
    add_scram(n, user, "bob-secret")
    for ssl in (False, True):
        round_trip(sasl_conf(n, certs, mechanism, user, "bob-secret", ssl=ssl), topic)
    assert refused(sasl_conf(n, certs, mechanism, user, "not-bobs"))
    # Described without secrets; deleted, the login is refused.
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    desc = admin.describe_user_scram_credentials([user])[user].result(15)
    assert sorted((c.mechanism, c.iterations) for c in desc.scram_credential_infos) == [
        (ScramMechanism.SCRAM_SHA_256, 8192), (ScramMechanism.SCRAM_SHA_512, 8192)]
    m = ScramMechanism.SCRAM_SHA_256 if mechanism.endswith("256") else ScramMechanism.SCRAM_SHA_512
    for f in admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, m)]).values():
        f.result(15)
    assert refused(sasl_conf(n, certs, mechanism, user, "bob-secret"))


def test_scram_credentials_refused_as_kafka_refuses_them(node_factory, certs):
    n = sasl_node(node_factory, certs)
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    too_few = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"x")
    with pytest.raises(Exception) as e:
        admin.alter_user_scram_credentials([too_few])["carol"].result(15)
    assert "UNACCEPTABLE_CREDENTIAL" in str(e.value) or "iterations" in str(e.value), e.value
    gone = UserScramCredentialDeletion("nobody", ScramMechanism.SCRAM_SHA_512)
    with pytest.raises(Exception) as e:
        admin.alter_user_scram_credentials([gone])["nobody"].result(15)
    assert "RESOURCE_NOT_FOUND" in str(e.value) or "does not exist" in str(e.value), e.value


def test_strom_configs_adds_describes_and_deletes_scram_users(node_factory, certs):
    n = sasl_node(node_factory, certs)
    run = lambda *a: subprocess.run([STROM, "configs", "--bootstrap-server", n.bootstrap, *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    r = run("--alter", "--entity-type", "users", "--entity-name", "dave", "--add-config",
            "SCRAM-SHA-256=[iterations=8192,password=dave-secret],SCRAM-SHA-512=[password=dave-secret]")
    assert r.returncode == 0 and "Completed updating config for user dave" in r.stdout, r.stderr
    r = run("--describe", "--entity-type", "users", "--entity-name", "dave")
    assert r.returncode == 0, r.stderr
    assert "SCRAM-SHA-256=iterations=8192" in r.stdout and "SCRAM-SHA-512=iterations=4096" in r.stdout, r.stdout
    round_trip(sasl_conf(n, certs, "SCRAM-SHA-512", "dave", "dave-secret"), "configs-" + uuid.uuid4().hex[:6])
    r = run("--alter", "--entity-type", "users", "--entity-name", "dave", "--delete-config", "SCRAM-SHA-512")
    assert r.returncode == 0, r.stderr
    assert refused(sasl_conf(n, certs, "SCRAM-SHA-512", "dave", "dave-secret"))
    round_trip(sasl_conf(n, certs, "SCRAM-SHA-256", "dave", "dave-secret"), "configs-" + uuid.uuid4().hex[:6])


def test_kafka_python_with_plain_and_scram_over_sasl_plaintext_and_sasl_ssl(node_factory, certs):
    from kafka import KafkaConsumer, KafkaProducer
    n = sasl_node(node_factory, certs)
    add_scram(n, "erin", "erin-secret")
    for mechanism, user, password, ssl in (("PLAIN", "alice", "alice-secret", False),
                                           ("SCRAM-SHA-256", "erin", "erin-secret", False),
                                           ("SCRAM-SHA-512", "erin", "erin-secret", False),
                                           ("PLAIN", "alice", "alice-secret", True),
                                           ("SCRAM-SHA-512", "erin", "erin-secret", True)):
        topic = "sasl-kp-" + uuid.uuid4().hex[:8]
        common = {"bootstrap_servers": f"127.0.0.1:{n.sasl_ssl_port if ssl else n.sasl_port}",
                  "security_protocol": "SASL_SSL" if ssl else "SASL_PLAINTEXT",
                  "sasl_mechanism": mechanism, "sasl_plain_username": user, "sasl_plain_password": password}
        if ssl:
            common["ssl_cafile"] = certs.ca_pem
        p = KafkaProducer(acks="all", **common)
        p.send(topic, b"over sasl").get(timeout=30)
        p.close()
        c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **common)
        assert [m.value for m in c][:1] == [b"over sasl"], mechanism
        c.close()


def test_sessions_expire_and_librdkafka_reauthenticates(node_factory, certs):
    n = sasl_node(node_factory, certs, "connections.max.reauth.ms=1500")
    topic = "sasl-reauth-" + uuid.uuid4().hex[:8]
    conf = sasl_conf(n, certs, "PLAIN", "alice", "alice-secret")
    before = metric(n, "kafka_server_socket_server_metrics_successful_authentication")
    p = Producer({**conf, "acks": "all"})
    # Six seconds of produces on the same producer: its sessions expire every 1.5 s; it keeps
    # working only by re-authenticating.
    import time
    deadline = time.monotonic() + 6
    errors = []
    while time.monotonic() < deadline:
        p.produce(topic, value=b"x", on_delivery=lambda err, msg: err and errors.append(err))
        p.flush(10)
        time.sleep(0.1)
    assert not errors, errors[:3]
    assert metric(n, "kafka_server_socket_server_metrics_successful_authentication") >= before + 3


def test_bad_bytes_before_authentication_close_only_that_connection(node_factory, certs):
    n = sasl_node(node_factory, certs, "sasl.server.max.receive.size=1024")

    def send(data):
        s = socket.create_connection(("127.0.0.1", n.sasl_port), timeout=5)
        s.sendall(data)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        s.close()
    send(os.urandom(2048))
    send(struct.pack(">i", 4096) + b"\0" * 4096)  # over sasl.server.max.receive.size
    # A Metadata request before any handshake.
    send(struct.pack(">ihhih", 10, 3, 1, 7, -1))
    round_trip(sasl_conf(n, certs, "PLAIN", "alice", "alice-secret"), "sasl-after-junk-" + uuid.uuid4().hex[:6])
    assert n.proc.poll() is None


def test_an_oversized_frame_before_authentication_is_refused_on_its_length(node_factory, certs):
    """A frame over sasl.server.max.receive.size before authentication closes the connection as
    soon as its length prefix arrives: none of it is buffered, and it takes no room in
    queued.max.request.bytes that authenticated clients need."""
    n = sasl_node(node_factory, certs, "sasl.server.max.receive.size=1024",
                  "queued.max.request.bytes=104857600")
    with socket.create_connection(("127.0.0.1", n.sasl_port), timeout=5) as s:
        s.sendall(struct.pack(">i", 1 << 20))  # claims 1 MB, sends none of it
        try:
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
        assert closed, "the node waited for the body of a frame it must refuse"
    round_trip(sasl_conf(n, certs, "PLAIN", "alice", "alice-secret"), "sasl-after-big-" + uuid.uuid4().hex[:6])


@pytest.mark.parametrize("settings,key", [
    ([], "sasl.enabled.mechanisms"),  # Kafka's default, GSSAPI, is not served
    (["sasl.enabled.mechanisms=OAUTHBEARER"], "sasl.enabled.mechanisms"),
    (["sasl.enabled.mechanisms=PLAIN"], "listener.name.sasl_plaintext.plain.sasl.jaas.config"),
    (["sasl.enabled.mechanisms=PLAIN", "listener.name.sasl_plaintext.plain.sasl.jaas.config=x.Module required;"],
     "listener.name.sasl_plaintext.plain.sasl.jaas.config"),
    (["sasl.enabled.mechanisms=SCRAM-SHA-256", "sasl.mechanism.inter.broker.protocol=PLAIN"],
     "sasl.mechanism.inter.broker.protocol"),
])
def test_sasl_settings_strom_cannot_honour_stop_the_node_with_the_key_named(tmp_path, settings, key):
    port, sport, cport = free_port(), free_port(), free_port()
    args = [STROM, "server", "--override",
            f"listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sport},CONTROLLER://127.0.0.1:{cport}",
            "--override", f"controller.quorum.voters=1@127.0.0.1:{cport}", "--override", f"log.dirs={tmp_path / 'data'}"]
    for s in settings:
        args += ["--override", s]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr[-1000:])
    assert key in r.stderr, r.stderr[-1000:]
