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
