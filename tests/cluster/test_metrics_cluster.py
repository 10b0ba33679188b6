"""Replication state in the metrics: a killed follower makes the leader's partitions
under-replicated, and they go back to zero when it rejoins."""

import os
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from strom_cluster import wait_until  # noqa: E402


def gauge(node, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as r:
        for fam in text_string_to_metric_families(r.read().decode()):
            for s in fam.samples:
                if s.name == name and not s.labels:
                    return s.value
    return None


def test_under_replicated_partitions_follow_a_follower_loss(cluster_factory):
    c = cluster_factory(3)
    c.create_topic("watched", partitions=3, rf=3)
    c.wait_full_isr("watched")
    assert sum(gauge(n, "kafka_server_replicamanager_underreplicatedpartitions") for n in c.nodes.values()) == 0
    assert sum(gauge(n, "kafka_controller_kafkacontroller_activecontrollercount") for n in c.nodes.values()) == 1
    victim = c.node(3)
    victim.kill()
    alive = [c.node(1), c.node(2)]
    wait_until("under-replicated partitions on the survivors",
               lambda: sum(gauge(n, "kafka_server_replicamanager_underreplicatedpartitions") for n in alive) == 3,
               timeout=30)
    victim.start()
    c.wait_full_isr("watched")
    wait_until("no under-replicated partitions",
               lambda: sum(gauge(n, "kafka_server_replicamanager_underreplicatedpartitions") for n in c.nodes.values()) == 0,
               timeout=30)


def test_group_lag_covers_partitions_led_by_other_brokers(cluster_factory):
    """The coordinator reports lag for every partition of the group, also those another broker
    leads (from its follower replica's high watermark)."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    c = cluster_factory(3)
    c.create_topic("lagged", partitions=3, rf=3)
    c.wait_full_isr("lagged")
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for part in range(3):
        for i in range(100):
            p.produce("lagged", value=b"v", partition=part)
    assert p.flush(30) == 0
    cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": "laggards", "enable.auto.commit": False})
    committed = {0: 10, 1: 20, 2: 30}
    cons.commit(offsets=[TopicPartition("lagged", part, off) for part, off in committed.items()], asynchronous=False)
    cons.close()
    leaders = {part: leader for part, (leader, _, _) in c.partitions("lagged").items()}
    assert len(set(leaders.values())) > 1, f"leaders not spread: {leaders}"

    def lags():
        out = {}
        for n in c.nodes.values():
            with urllib.request.urlopen(f"http://127.0.0.1:{n.metrics_port}/metrics", timeout=5) as r:
                for fam in text_string_to_metric_families(r.read().decode()):
                    for s in fam.samples:
                        if s.name == "kafka_consumergroup_lag" and s.labels.get("group") == "laggards":
                            out[(n.node_id, int(s.labels["partition"]))] = s.value
        return out
    wait_until("lag of every partition on the coordinator",
               lambda: {part: v for (_, part), v in lags().items()} == {part: 100 - off for part, off in committed.items()},
               timeout=30)
    # One broker (the coordinator) reports all three partitions.
    assert len({node for node, _ in lags()}) == 1
