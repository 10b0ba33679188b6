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
    # Log retention of a second: the commit is older than it when the coordinator dies, and
    # still there (the offsets topic is compacted, never deleted by retention).
    c = cluster_factory(3, extra=["offsets.topic.replication.factor=3", "offsets.topic.num.partitions=3",
                                  "default.replication.factor=3", "min.insync.replicas=2",
                                  "log.retention.ms=1000", "log.retention.check.interval.ms=100"])
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
    probe = Consumer({"bootstrap.servers": c.bootstrap, "group.id": "probe"})
    wait_until("retention to delete the data topic's records",
               lambda: probe.get_watermark_offsets(TopicPartition("orders", 0), timeout=5)[0] > 0, timeout=60)
    probe.close()

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


def test_members_carry_on_through_a_coordinator_failover_without_a_rebalance(cluster_factory):
    """The coordinator stores each Stable generation's membership in __consumer_offsets: the
    new coordinator resumes the group, so its members keep their partitions (no revoke, no
    new assignment) and their commits are accepted in the same generation."""
    c = cluster_factory(3, extra=["offsets.topic.replication.factor=3", "offsets.topic.num.partitions=3",
                                  "default.replication.factor=3", "min.insync.replicas=2"])
    c.create_topic("shipments", partitions=4, rf=3)
    events = {"a": [], "b": []}

    def member(name):
        cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": "dispatch", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
                         "heartbeat.interval.ms": 500})
        cons.subscribe(["shipments"],
                       on_assign=lambda _c, ps: events[name].append(("assign", sorted(p.partition for p in ps))),
                       on_revoke=lambda _c, ps: events[name].append(("revoke", sorted(p.partition for p in ps))))
        return cons
    a, b = member("a"), member("b")

    def split():
        for cons in (a, b):
            cons.consume(10, timeout=0.1)
        return len(a.assignment()) == 2 and len(b.assignment()) == 2
    wait_until("two members with 2 partitions each", split, timeout=60)
    before = {n: list(e) for n, e in events.items()}
    mine = {n: sorted(p.partition for p in cons.assignment()) for n, cons in (("a", a), ("b", b))}
    coordinator = coordinator_of(c, "dispatch")

    c.node(coordinator).kill()
    # Longer than a few heartbeats at the new coordinator, shorter than the session timeout.
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(40):
        p.produce("shipments", value=f"s{i}".encode(), partition=i % 4)
    assert p.flush(60) == 0

    def moved_on():
        for cons in (a, b):
            cons.consume(10, timeout=0.1)
        return coordinator_of(c, "dispatch") != coordinator
    wait_until("the group to find its new coordinator", moved_on, timeout=60)
    # Keep polling (heartbeating) a while at the new coordinator.
    for _ in range(40):
        for cons in (a, b):
            cons.consume(10, timeout=0.05)
    assert events == before, f"a rebalance happened: {events} (before the kill: {before})"
    assert {n: sorted(p.partition for p in cons.assignment()) for n, cons in (("a", a), ("b", b))} == mine
    # A commit in the resumed generation is accepted.
    a.commit(offsets=[TopicPartition("shipments", mine["a"][0], 1)], asynchronous=False)
    a.close()
    b.close()


def test_no_committed_offset_goes_backwards_when_the_coordinator_dies_under_commit_load(cluster_factory):
    """A consumer commits synchronously, one record at a time, while its coordinator is killed:
    every commit that was acknowledged stays (the committed offset of a partition never falls
    below one acknowledged before), and commits go on at the new coordinator."""
    import threading
    c = cluster_factory(3, extra=["offsets.topic.replication.factor=3", "offsets.topic.num.partitions=3",
                                  "default.replication.factor=3", "min.insync.replicas=2"])
    c.create_topic("ledger", partitions=2, rf=3)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(3000):
        p.produce("ledger", value=f"l{i}".encode(), partition=i % 2)
    assert p.flush(60) == 0
    conf = {"bootstrap.servers": c.bootstrap, "group.id": "auditors", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 10000}
    cons = Consumer(conf)
    cons.subscribe(["ledger"])
    acknowledged = {}  # partition -> highest acknowledged committed offset
    stop = threading.Event()
    failures = []

    def work():
        while not stop.is_set():
            for m in cons.consume(20, timeout=0.2):
                if m.error() is not None:
                    continue
                tp = TopicPartition("ledger", m.partition(), m.offset() + 1)
                try:
                    cons.commit(offsets=[tp], asynchronous=False)
                    acknowledged[m.partition()] = max(acknowledged.get(m.partition(), 0), m.offset() + 1)
                except Exception as e:  # noqa: BLE001 - retriable during the failover
                    failures.append(str(e))
    t = threading.Thread(target=work)
    t.start()
    try:
        wait_until("commits under way", lambda: sum(acknowledged.values()) >= 200, timeout=60)
        coordinator = coordinator_of(c, "auditors")
        c.node(coordinator).kill()
        at_kill = sum(acknowledged.values())
        wait_until("commits to go on at the new coordinator", lambda: sum(acknowledged.values()) >= at_kill + 200,
                   timeout=90)
    finally:
        stop.set()
        t.join(30)
    last = dict(acknowledged)
    cons.close()
    check = Consumer({**conf, "group.id": "auditors"})
    got = {tp.partition: tp.offset for tp in check.committed([TopicPartition("ledger", 0), TopicPartition("ledger", 1)],
                                                             timeout=10)}
    check.close()
    for part, off in last.items():
        assert got[part] >= off, f"partition {part}: committed {got[part]} < acknowledged {off}"
