"""A coordinator failover keeps every committed offset: the offsets live in the replicated
__consumer_offsets topic and the new coordinator reloads them."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from strom_cluster import wait_until  # noqa: E402


def coordinator_of(cluster, group):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})  # alive until the result is in
    return admin.describe_consumer_groups([group])[group].result(20).coordinator.id


def test_committed_offsets_survive_the_coordinators_death(cluster_factory):
    c = cluster_factory(3, extra=["offsets.topic.replication.factor=3", "offsets.topic.num.partitions=3",
                                  "default.replication.factor=3", "min.insync.replicas=2"])
    c.create_topic("orders", partitions=2, rf=3)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(200):
        p.produce("orders", key=f"k{i}".encode(), value=f"o{i}".encode())
    assert p.flush(30) == 0

    conf = {"bootstrap.servers": c.bootstrap, "group.id": "billing", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000}
    cons = Consumer(conf)
    cons.subscribe(["orders"])
    seen = []
    wait_until("200 records", lambda: seen.extend(m for m in cons.consume(100, timeout=0.3) if m.error() is None) or len(seen) >= 200)
    cons.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in cons.committed([TopicPartition("orders", 0), TopicPartition("orders", 1)], timeout=10)}
    assert sum(committed.values()) == 200, committed
    coordinator = coordinator_of(c, "billing")
    cons.close()

    c.node(coordinator).kill()
    c.wait_for_brokers(2)
    after = Consumer({**conf, "bootstrap.servers": c.bootstrap})

    def same_offsets():
        got = after.committed([TopicPartition("orders", 0), TopicPartition("orders", 1)], timeout=5)
        return {tp.partition: tp.offset for tp in got} == committed
    wait_until("the committed offsets at the new coordinator", same_offsets, timeout=60)
    new_coordinator = coordinator_of(c, "billing")
    assert new_coordinator != coordinator
    after.close()
