"""Offset retention as Kafka's (issue #19, KIP-211): `offsets.retention.minutes` counts from when
a group became empty, never while it has members; a group that never had members (offsets
committed without a generation) counts from its commit. Expired offsets are tombstoned, and
`strom consumer-groups --describe` shows what is left. Kafka's smallest retention is one
minute, so this test takes a little over one."""

import subprocess
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import STROM, committed, wait_until

RETENTION = ["offsets.retention.minutes=1", "offsets.retention.check.interval.ms=500",
             "offsets.topic.num.partitions=1"]




def describe(node, group):
    r = subprocess.run([STROM, "consumer-groups", "--bootstrap-server", node.bootstrap, "--describe", "--group", group],
                       capture_output=True, timeout=60)
    return r.stdout.decode() + r.stderr.decode()


def member(node, group, topic, stop, ready):
    """A group member that commits once and then stays (polling, so its session lasts)."""
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.subscribe([topic])
    got = 0
    while not stop.is_set():
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got += 1
            if got == 5:
                c.commit(message=m, asynchronous=False)
                ready.set()
    c.close()


def test_offsets_expire_only_after_their_group_is_empty_for_the_retention(node_factory):
    n = node_factory(RETENTION).start()
    topic = "data-" + uuid.uuid4().hex[:8]
    staying, leaving, simple = (f"{k}-{uuid.uuid4().hex[:6]}" for k in ("staying", "leaving", "simple"))
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(15)
    p = Producer({"bootstrap.servers": n.bootstrap})
    for i in range(20):
        p.produce(topic, value=b"v%d" % i)
    assert p.flush(15) == 0

    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=member, args=(n, staying, topic, stop, ready), daemon=True)
    t.start()
    try:
        assert ready.wait(60), "the staying member never committed"
        # A member that commits and leaves: its group is empty from here.
        c = Consumer({"bootstrap.servers": n.bootstrap, "group.id": leaving, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        wait_until("the leaving member to get a record", lambda: (m := c.poll(0.5)) is not None and m.error() is None,
                   timeout=60)
        c.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
        c.close()
        emptied = time.monotonic()
        # A commit without a group generation (a "simple" consumer).
        s = Consumer({"bootstrap.servers": n.bootstrap, "group.id": simple, "enable.auto.commit": False})
        s.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
        s.close()
        assert (committed(n, staying, topic), committed(n, leaving, topic), committed(n, simple, topic)) == (5, 7, 3)

        wait_until("the empty group's offsets to expire", lambda: committed(n, leaving, topic) < 0, timeout=150)
        assert time.monotonic() - emptied >= 59, "offsets expired before their group was empty for a minute"
        wait_until("the simple consumer's offsets to expire", lambda: committed(n, simple, topic) < 0, timeout=30)
        # The staying group's commit is as old, but the group has a member: it stays.
        assert committed(n, staying, topic) == 5
        assert t.is_alive()
        rows = [l.split() for l in describe(n, staying).splitlines() if l.startswith(staying)]
        assert [(r[1], r[2], r[3]) for r in rows] == [(topic, "0", "5")]
        assert not any(l.startswith(leaving) for l in describe(n, leaving).splitlines())
    finally:
        stop.set()
        t.join(30)
    # The expiry is on disk: after a restart the expired offsets stay gone, the kept one stays.
    n.stop()
    n.start()
    assert (committed(n, staying, topic), committed(n, leaving, topic), committed(n, simple, topic)) == (5, -1001, -1001)
