"""Authorization (issue #20): with `authorizer.class.name` set, every API checks what Kafka
checks, against ACLs kept in the metadata log, and answers Kafka's codes. Clients log in with
SASL PLAIN (alice, bob; admin is a super user); ACLs are made with `strom acls` (the flags of
kafka-acls.sh) and with the AdminClient. Each API family is tried by a real client with and
without the ACL it needs: produce, consume (topic and group), idempotent and transactional producers, admin
(topics, configs, ACLs), groups; DENY wins over ALLOW; PREFIXED patterns; super users;
Metadata lists only the topics a principal may describe. The controller listener is SSL with
mutual TLS: the node reaches it as its certificate's subject, a super user (as a Kafka cluster
with an authorizer must be set up: a PLAINTEXT controller listener would make User:ANONYMOUS,
and so every anonymous client, a super user)."""

import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ConfigResource, NewTopic, ResourcePatternType, ResourceType)

from certs import make_certs
from conftest import STROM, free_port, wait_until

JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        'user_admin="admin-secret" user_alice="alice-secret" user_bob="bob-secret";')
PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    import tempfile  # noqa: F401
    from conftest import Node
    d = str(tmp_path_factory.mktemp("acls"))
    certs = make_certs(str(tmp_path_factory.mktemp("acl-certs")))
    n = Node(d)
    n.sasl_port = free_port()
    n.extra = [
        f"listeners=PLAINTEXT://127.0.0.1:{n.kafka_port},SASL_PLAINTEXT://127.0.0.1:{n.sasl_port},"
        f"CONTROLLER://127.0.0.1:{n.controller_port}",
        "sasl.enabled.mechanisms=PLAIN", f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SSL",
        "listener.name.controller.ssl.keystore.type=PEM",
        f"listener.name.controller.ssl.keystore.location={certs.server_pem}",
        "listener.name.controller.ssl.truststore.type=PEM",
        f"listener.name.controller.ssl.truststore.location={certs.ca_pem}",
        "listener.name.controller.ssl.client.auth=required",
        "super.users=User:admin;User:CN=broker,OU=test,O=strom",
    ]
    n.start()
    yield n
    n.stop()


def conf(node, user, **extra):
    return {"bootstrap.servers": f"127.0.0.1:{node.sasl_port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": PASSWORDS[user], **extra}


def admin(node, user="admin"):
    return AdminClient(conf(node, user))


def strom_acls(node, *args, user="admin", tmp=None):
    """`strom acls` as `user`, logged in over SASL with a --command-config file (Kafka's
    client properties)."""
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".properties", delete=False) as f:
        f.write("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{user}" password="{PASSWORDS[user]}";\n')
    r = subprocess.run([STROM, "acls", "--bootstrap-server", f"127.0.0.1:{node.sasl_port}", "--command-config", f.name,
                        *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def new_topic(node, prefix="t"):
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    a = admin(node)  # kept alive until its future resolves
    a.create_topics([NewTopic(name, 1, 1)])[name].result(15)
    return name


def produce_errors(node, user, topic, **extra):
    p = Producer({**conf(node, user), "acks": "all", "message.timeout.ms": 10000, **extra})
    errors = []
    try:
        p.produce(topic, value=b"v", on_delivery=lambda err, msg: err and errors.append(err))
    except KafkaException as e:
        return [e.args[0]]
    p.flush(15)
    return errors


def consume(node, user, topic, group, timeout=15):
    """(values read, errors seen) reading `topic` from the beginning in `group`."""
    c = Consumer({**conf(node, user), "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    values, errors = [], []
    try:
        def done():
            m = c.poll(0.5)
            if m is None:
                return False
            if m.error():
                errors.append(m.error().code())
                return True
            values.append(m.value())
            return True
        try:
            wait_until("a record or an error", done, timeout=timeout)
        except AssertionError:
            pass
    finally:
        c.close()
    return values, errors


def allow(node, principal, op, rtype, name, pattern=ResourcePatternType.LITERAL, permission=AclPermissionType.ALLOW):
    b = AclBinding(rtype, name, pattern, principal, "*", op, permission)
    a = admin(node)
    a.create_acls([b])[b].result(15)


def test_without_acls_nothing_is_allowed_and_metadata_hides_topics(node):
    topic = new_topic(node, "hidden")
    assert produce_errors(node, "admin", topic) == [], "the super user may"
    errors = produce_errors(node, "alice", topic)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], errors
    alice = admin(node, "alice")
    md = alice.list_topics(timeout=10)
    assert topic not in md.topics, "Metadata lists only topics the principal may describe"
    sup = admin(node, "admin")
    assert topic in sup.list_topics(timeout=10).topics


def test_produce_and_consume_with_the_acls_strom_acls_adds(node):
    topic = new_topic(node, "orders")
    group = f"billing-{uuid.uuid4().hex[:6]}"
    out = strom_acls(node, "--add", "--producer", "--allow-principal", "User:alice", "--topic", topic)
    assert "User:alice" in out and "WRITE" in out, out
    assert produce_errors(node, "alice", topic) == []
    # Reading needs READ on the topic and on the group.
    values, errors = consume(node, "bob", topic, group)
    assert values == [] and errors, "bob has no ACL"
    strom_acls(node, "--add", "--consumer", "--allow-principal", "User:bob", "--topic", topic, "--group", group)
    values, errors = consume(node, "bob", topic, group)
    assert values == [b"v"], (values, errors)
    listed = strom_acls(node, "--list", "--topic", topic)
    assert f"name={topic}" in listed and "User:alice" in listed and "User:bob" in listed, listed
    # Removed, refused again.
    strom_acls(node, "--remove", "--allow-principal", "User:alice", "--operation", "Write", "--topic", topic)
    assert [e.code() for e in produce_errors(node, "alice", topic)] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_deny_wins_over_allow_and_prefixed_patterns_match(node):
    base = f"pay-{uuid.uuid4().hex[:6]}"
    eu, secret = new_topic(node, f"{base}-eu"), new_topic(node, f"{base}-secret")
    allow(node, "User:alice", AclOperation.WRITE, ResourceType.TOPIC, base, ResourcePatternType.PREFIXED)
    allow(node, "User:alice", AclOperation.ALL, ResourceType.TOPIC, secret, permission=AclPermissionType.DENY)
    assert produce_errors(node, "alice", eu) == []
    assert [e.code() for e in produce_errors(node, "alice", secret)] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_an_idempotent_producer_needs_write_on_some_topic(node):
    topic = new_topic(node, "idem")
    errors = produce_errors(node, "bob", topic, **{"enable.idempotence": True})
    assert errors and all(e.code() in (KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                        KafkaError._FATAL) for e in errors), errors
    allow(node, "User:bob", AclOperation.WRITE, ResourceType.TOPIC, topic)
    assert produce_errors(node, "bob", topic, **{"enable.idempotence": True}) == []


def test_a_transactional_producer_needs_write_on_its_transactional_id(node):
    topic = new_topic(node, "txn")
    txn_id = f"bob-txn-{uuid.uuid4().hex[:6]}"
    allow(node, "User:bob", AclOperation.WRITE, ResourceType.TOPIC, topic)
    p = Producer(conf(node, "bob", **{"transactional.id": txn_id}))
    with pytest.raises(KafkaException) as e:
        p.init_transactions(15)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, e.value
    allow(node, "User:bob", AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, txn_id)
    p = Producer(conf(node, "bob", **{"transactional.id": txn_id}))
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"in-a-transaction")
    p.commit_transaction(30)


def test_admin_apis_need_their_acls(node):
    a = admin(node, "alice")
    name = f"made-by-alice-{uuid.uuid4().hex[:6]}"
    with pytest.raises(KafkaException) as e:
        a.create_topics([NewTopic(name, 1, 1)])[name].result(15)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    allow(node, "User:alice", AclOperation.CREATE, ResourceType.TOPIC, "made-by-alice-", ResourcePatternType.PREFIXED)
    a.create_topics([NewTopic(name, 1, 1)])[name].result(15)
    # Configs: describing and altering need their own operations.
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    with pytest.raises(KafkaException) as e:
        a.describe_configs([res])[res].result(15)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    allow(node, "User:alice", AclOperation.ALTER_CONFIGS, ResourceType.TOPIC, name)
    assert "retention.ms" in a.describe_configs([res])[res].result(15), "ALTER_CONFIGS implies DESCRIBE_CONFIGS"
    with pytest.raises(KafkaException) as e:
        a.delete_topics([name])[name].result(15)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # ACLs themselves: ALTER on the cluster.
    b = AclBinding(ResourceType.TOPIC, "x", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.READ,
                   AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as e:
        a.create_acls([b])[b].result(15)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # Listing them: DESCRIBE on the cluster. (librdkafka reads DescribeAcls' error code but
    # hands back an empty list; `strom acls` says what the broker answered.)
    with pytest.raises(AssertionError) as e:
        strom_acls(node, "--list", user="alice")
    assert "CLUSTER_AUTHORIZATION_FAILED" in str(e.value), e.value


def test_group_apis_need_group_acls(node):
    topic = new_topic(node, "grp")
    group = f"g-{uuid.uuid4().hex[:6]}"
    assert produce_errors(node, "admin", topic) == []
    values, _ = consume(node, "admin", topic, group)  # the group exists, with a commit
    assert values == [b"v"]
    sup = admin(node)
    assert group in [g.group_id for g in sup.list_consumer_groups().result(15).valid]
    allow(node, "User:bob", AclOperation.READ, ResourceType.TOPIC, topic)
    values, errors = consume(node, "bob", topic, group)
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in errors, (values, errors)
    a = admin(node, "bob")
    with pytest.raises(KafkaException) as e:
        a.delete_consumer_groups([group])[group].result(15)
    assert e.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    listed = [g.group_id for g in a.list_consumer_groups().result(15).valid]
    assert group not in listed, "ListGroups shows only groups the principal may describe"


def test_strom_acls_needs_alter_on_the_cluster_and_a_login(node):
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".properties", delete=False) as f:
        f.write("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=alice\n"
                "sasl.password=alice-secret\n")
    args = ["--add", "--allow-principal", "User:alice", "--operation", "All", "--cluster"]
    r = subprocess.run([STROM, "acls", "--bootstrap-server", f"127.0.0.1:{node.sasl_port}", "--command-config", f.name,
                        *args], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "CLUSTER_AUTHORIZATION_FAILED" in r.stderr, r.stderr
    # Anonymous, on the PLAINTEXT listener: the same.
    r = subprocess.run([STROM, "acls", "--bootstrap-server", node.bootstrap, *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "CLUSTER_AUTHORIZATION_FAILED" in r.stderr, r.stderr


def test_strom_acls_lists_and_the_admin_client_deletes(node):
    name = f"listed-{uuid.uuid4().hex[:6]}"
    allow(node, "User:carol", AclOperation.READ, ResourceType.GROUP, name)
    f = AclBindingFilter(ResourceType.GROUP, name, ResourcePatternType.LITERAL, None, None, AclOperation.ANY,
                         AclPermissionType.ANY)
    sup = admin(node)
    found = sup.describe_acls(f).result(15)
    assert [(b.principal, b.operation) for b in found] == [("User:carol", AclOperation.READ)]
    deleted = sup.delete_acls([f])[f].result(15)
    assert len(deleted) == 1
    assert sup.describe_acls(f).result(15) == []
    listed = strom_acls(node, "--list", "--group", name)
    assert "User:carol" not in listed, listed


def test_acl_requests_without_an_authorizer_are_security_disabled(node_factory):
    n = node_factory().start()
    b = AclBinding(ResourceType.TOPIC, "x", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.READ,
                   AclPermissionType.ALLOW)
    a = AdminClient({"bootstrap.servers": n.bootstrap})
    with pytest.raises(KafkaException) as e:
        a.create_acls([b])[b].result(15)
    assert e.value.args[0].code() == KafkaError.SECURITY_DISABLED
