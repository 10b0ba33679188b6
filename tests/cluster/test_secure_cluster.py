"""Three nodes whose brokers replicate over a SASL_SSL inter-broker listener (TLS checked against
the cluster's CA, brokers logging in as User:broker) and whose controller listener is SSL with
mutual TLS (the nodes' certificate subject mapped to User:broker by ssl.principal.mapping.rules),
with the authorizer on and only the broker and admin users as super users (issue #20):
replication works (a follower's Fetch needs CLUSTER_ACTION, which only the broker user has),
the quorum elects and brokers register over TLS, acks=all survives a leader kill, and an
anonymous client on the plaintext listener sees nothing."""

import os
import sys
import urllib.request
import uuid

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from certs import INTERNAL_JAAS, listeners_with_internal, make_certs, secured_internal_listeners  # noqa: E402
from strom_cluster import free_port, wait_until  # noqa: E402

JAAS = INTERNAL_JAAS


def secured(node):
    if not hasattr(node, "internal_port"):
        node.internal_port = free_port()
    return listeners_with_internal(node, node.internal_port)


def node_3_with_a_wrong_password(listener):
    """Per-node settings: node 3 logs in on `listener` (lower case) with a wrong password; it
    still admits the others with the right one."""
    wrong = JAAS.replace('password="broker-secret" user_broker', 'password="wrong" user_broker')

    def per_node(node):
        out = secured(node)
        if node.node_id == 3:
            out.append(f"listener.name.{listener}.plain.sasl.jaas.config={wrong}")
        return out
    return per_node


def admin_conf(c, certs):
    servers = ",".join(f"{n.host}:{n.internal_port}" for n in c.nodes.values() if n.is_running())
    return {"bootstrap.servers": servers, "security.protocol": "SASL_SSL", "ssl.ca.location": certs.ca_pem,
            "sasl.mechanism": "PLAIN", "sasl.username": "admin", "sasl.password": "admin-secret"}


def full_isr(c, certs, topic):
    t = AdminClient(admin_conf(c, certs)).list_topics(topic, timeout=5).topics[topic]
    return t.error is None and all(p.leader >= 0 and sorted(p.replicas) == sorted(p.isrs) for p in t.partitions.values())


def test_brokers_replicate_over_sasl_ssl_with_the_authorizer_on(cluster_factory, tmp_path):
    certs = make_certs(str(tmp_path / "certs"))
    c = cluster_factory(3, per_node=secured, extra=[
        *secured_internal_listeners(certs),
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:broker;User:admin",
    ])
    topic = "secure-" + uuid.uuid4().hex[:8]
    a = AdminClient(admin_conf(c, certs))
    a.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
    wait_until("every partition's ISR full (followers fetch over SASL_SSL)", lambda: full_isr(c, certs, topic),
               timeout=60)

    acked = []

    def produce(n):
        p = Producer({**admin_conf(c, certs), "acks": "all", "enable.idempotence": True})
        for i in range(n):
            p.produce(topic, key=b"k%d" % (i % 7), value=uuid.uuid4().hex.encode(),
                      on_delivery=lambda err, msg: err is None and acked.append(msg.value()))
        assert p.flush(60) == 0
    produce(300)
    assert len(acked) == 300
    # The leader of partition 0 dies: the others elect a leader, acks=all goes on (min ISR 2).
    t = AdminClient(admin_conf(c, certs)).list_topics(topic, timeout=5).topics[topic]
    c.node(t.partitions[0].leader).kill()
    produce(300)
    assert len(acked) == 600
    # Assigned, not subscribed: the offsets topic has one replica here (offsets.topic.
    # replication.factor=1), and its node may be the one killed.
    cons = Consumer({**admin_conf(c, certs), "group.id": f"g-{uuid.uuid4()}", "enable.auto.commit": False})
    cons.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen = set()
    try:
        def all_read():
            for m in cons.consume(500, timeout=0.5):
                if m.error() is None:
                    seen.add(m.value())
            return seen >= set(acked)
        wait_until("every acknowledged record read back", all_read, timeout=60)
    finally:
        cons.close()
    # Anonymous on the plaintext listener: the topic is invisible.
    md = AdminClient({"bootstrap.servers": c.bootstrap}).list_topics(timeout=10)
    assert topic not in md.topics
    p = Producer({"bootstrap.servers": c.bootstrap, "message.timeout.ms": 5000})
    errors = []
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: err and errors.append(err))
    p.flush(10)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], errors


def test_a_broker_with_a_wrong_inter_broker_password_cannot_replicate(cluster_factory, tmp_path):
    """The negative control: node 3 logs in to the others with a wrong password, so its
    follower fetches are refused and it drops out of every ISR, while the other two go on."""
    certs = make_certs(str(tmp_path / "certs"))
    c = cluster_factory(3, per_node=node_3_with_a_wrong_password("internal"), extra=[
        *secured_internal_listeners(certs),
        "replica.lag.time.max.ms=2000",
    ])
    topic = "wrong-pw-" + uuid.uuid4().hex[:8]
    a = AdminClient(admin_conf(c, certs))
    a.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
    p = Producer({**admin_conf(c, certs), "acks": "all"})
    errors = []

    def isr_without_3():
        """Every partition another node leads has lost node 3 from its ISR (leaders spread,
        so at least one does); the partition node 3 leads, if any, still takes writes."""
        for part in range(3):
            p.produce(topic, value=b"v", partition=part, on_delivery=lambda err, msg: err and errors.append(err))
        p.flush(10)
        t = AdminClient(admin_conf(c, certs)).list_topics(topic, timeout=5).topics[topic]
        led_by_others = [x for x in t.partitions.values() if x.leader != 3]
        return led_by_others and all(3 not in x.isrs and len(x.isrs) == 2 for x in led_by_others)
    wait_until("node 3 to leave the ISRs (its fetches are refused)", isr_without_3, timeout=60)
    assert not errors, errors[:3]


def test_a_quorum_on_sasl_ssl_admits_only_nodes_that_log_in(cluster_factory, tmp_path):
    """The controller listener on SASL_SSL (PLAIN, issue #20) with the authorizer on: nodes 1
    and 2 (the quorum) log in as User:broker, elect a controller and register; node 3, a
    broker only, logs in to the quorum with a wrong password, so it never registers (refused
    before any call, and counted), while the other two serve a replicated topic. (Node 3 is
    not a voter: a voter that cannot reach the others keeps raising its Raft term and, without
    pre-vote in openraft 0.9, would unseat their leader through its answers to appends.)"""
    certs = make_certs(str(tmp_path / "certs"))
    wrong = node_3_with_a_wrong_password("controller")

    def per_node(node):
        out = wrong(node)
        n1, n2 = node.cluster.nodes[1], node.cluster.nodes[2]
        out.append(f"controller.quorum.voters=1@{n1.host}:{n1.controller_port},2@{n2.host}:{n2.controller_port}")
        if node.node_id == 3:
            out += ["process.roles=broker",
                    f"listeners=PLAINTEXT://{node.host}:{node.kafka_port},INTERNAL://{node.host}:{node.internal_port}"]
        return out
    c = cluster_factory(3, per_node=per_node, start=False, extra=[
        *secured_internal_listeners(certs, controller="SASL_SSL"),
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:broker;User:admin",
    ])
    for n in c.nodes.values():
        n.start()
    a = AdminClient({**admin_conf(c, certs), "bootstrap.servers": f"{c.node(1).host}:{c.node(1).internal_port}"})

    def registered():
        return sorted(a.list_topics(timeout=5).brokers)
    wait_until("nodes 1 and 2 registered over a SASL_SSL controller listener", lambda: registered() == [1, 2],
               timeout=60)
    topic = "quorum-sasl-" + uuid.uuid4().hex[:8]
    a.create_topics([NewTopic(topic, 1, 2, config={"min.insync.replicas": "2"})])[topic].result(30)
    p = Producer({**admin_conf(c, certs), "bootstrap.servers": f"{c.node(1).host}:{c.node(1).internal_port}",
                  "acks": "all"})
    for i in range(50):
        p.produce(topic, value=b"%d" % i)
    assert p.flush(30) == 0

    def refusals():
        total = 0
        for n in (c.node(1), c.node(2)):
            with urllib.request.urlopen(f"http://{n.host}:{n.metrics_port}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("strom_controller_failed_authentications_total"):
                        total += float(line.split()[-1])
        return total
    wait_until("node 3's logins refused and counted", lambda: refusals() > 0, timeout=30)
    assert registered() == [1, 2], "node 3 registered with a wrong password"
    assert c.node(3).is_running(), "a refused login must not stop the node"
