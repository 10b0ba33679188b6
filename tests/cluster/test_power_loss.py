"""Power loss (issue #21): a node started with `SIMULATE_POWER_LOSS=1` (the test build) keeps
each file's fsynced length, and SIGUSR1 cuts every file back to it and ends the process, as a
power cut drops the page cache (strom_storage::power_loss). Killing a process does not show
this: the kernel keeps its page cache.

- One node: a topic with `flush.messages=1` loses nothing it acknowledged. A topic with the
  default policy (no fsync per append) beside it, under the same load and the same cut, loses
  acknowledged records: proof the cut drops what was not synced (and why Kafka relies on
  replicas instead).
- Three nodes, default policy, RF=3, min ISR 2, acks=all: the leader's unsynced bytes are lost
  with it and it restarts at once; what was acknowledged is on the other two, the restarted
  node fetches it back, and nothing acknowledged is lost.

Needs the test build (tests/run.sh builds `strom` with the `failpoints` feature)."""

import os
import re
import signal
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from strom_cluster import wait_until  # noqa: E402

EXIT_POWER_CUT = 86


class Load:
    """A producer thread writing unique values to topics, remembering what was acknowledged."""

    def __init__(self, bootstrap, topics, acks="all"):
        self.acked = {t: set() for t in topics}
        self.topics = topics
        self.pad = os.urandom(200)
        self.stop = threading.Event()
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 2,
                                  "enable.idempotence": True, "message.timeout.ms": 20000,
                                  "queue.buffering.max.messages": 5000})
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def on_delivery(self, err, msg):
        if err is None:
            self.acked[msg.topic()].add(msg.value())

    def count(self):
        return sum(len(a) for a in self.acked.values())

    def run(self):
        pad = self.pad
        while not self.stop.is_set():
            for t in self.topics:
                try:
                    self.producer.produce(t, value=uuid.uuid4().bytes + pad, on_delivery=self.on_delivery)
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
        self.producer.flush(30)

    def finish(self):
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the producer did not finish"


def read_all(bootstrap, topic, partitions, timeout=60):
    """Every value in the topic, read from the beginning to each partition's end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    ends = {}
    for p in range(partitions):
        _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        ends[p] = hi
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got, done = set(), {p for p, hi in ends.items() if hi == 0}
    deadline = time.monotonic() + timeout
    while len(done) < partitions and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.add(m.value())
        if m.offset() + 1 >= ends[m.partition()]:
            done.add(m.partition())
    c.close()
    assert len(done) == partitions, f"{topic}: read to the end of {sorted(done)} of {partitions} partitions"
    return got


def power_cut(node):
    node.mark("power cut")
    node.signal(signal.SIGUSR1)
    wait_until(f"node {node.node_id} to stop at the cut", lambda: not node.is_running(), timeout=30)
    assert node.proc.returncode == EXIT_POWER_CUT, (node.proc.returncode, node.log_tail(40))
    m = re.findall(r"simulated power cut: (\d+) unsynced bytes dropped from (\d+) files", node.log_tail(400))
    assert m, node.log_tail(40)
    return int(m[-1][0])


def test_a_power_cut_loses_nothing_synced_per_message_and_drops_what_was_not(cluster_factory):
    c = cluster_factory(1, start=False)
    node = c.node(1)
    node.env = {"SIMULATE_POWER_LOSS": "1"}
    c.start()
    assert "simulated power loss armed" in node.log_tail(200), (
        "the strom binary was built without the `failpoints` feature (tests/run.sh builds it with)")
    synced, unsynced = "synced-" + uuid.uuid4().hex[:6], "unsynced-" + uuid.uuid4().hex[:6]
    c.create_topic(synced, partitions=3, rf=1, config={"flush.messages": "1"})
    c.create_topic(unsynced, partitions=3, rf=1)

    load = Load(c.bootstrap, [synced, unsynced], acks="all")
    wait_until("records to be acknowledged on both topics",
               lambda: min(len(a) for a in load.acked.values()) >= 2000, timeout=60, interval=0.1)
    dropped = power_cut(node)
    load.finish()
    acked = {t: set(a) for t, a in load.acked.items()}

    node.start()
    c.wait_for_brokers(1)
    got = {t: read_all(c.bootstrap, t, 3) for t in (synced, unsynced)}
    lost_synced = acked[synced] - got[synced]
    lost_unsynced = acked[unsynced] - got[unsynced]
    print(f"power cut: {dropped} bytes dropped; flush.messages=1: {len(acked[synced])} acknowledged, "
          f"{len(lost_synced)} lost; default policy: {len(acked[unsynced])} acknowledged, {len(lost_unsynced)} lost")
    assert not lost_synced, f"{len(lost_synced)} of {len(acked[synced])} acknowledged records lost with flush.messages=1"
    assert lost_unsynced, "the cut dropped nothing of the unsynced topic: the simulation did not work"
    assert dropped > 0


def test_a_power_cut_of_one_node_of_three_loses_nothing_acknowledged(cluster_factory):
    c = cluster_factory(3, start=False)
    for n in c.nodes.values():
        n.env = {"SIMULATE_POWER_LOSS": "1"}
    c.start()
    topic = "cut-" + uuid.uuid4().hex[:8]
    c.create_topic(topic, partitions=3, rf=3, config={"min.insync.replicas": "2"})
    c.wait_full_isr(topic)
    victim = c.node(c.leader_of(topic, 0))

    load = Load(c.bootstrap, [topic], acks="all")
    wait_until("records to be acknowledged", lambda: load.count() >= 5000, timeout=60, interval=0.1)
    dropped = power_cut(victim)
    # Back at once, as a machine that reboots: its new incarnation is fenced and leaves every
    # ISR before it may lead again, so its shorter logs never become the truth.
    victim.start()
    before = load.count()
    wait_until("writes after the cut", lambda: load.count() >= before + 3000, timeout=60, interval=0.1)
    c.wait_full_isr(topic, timeout=90)
    before = load.count()
    wait_until("writes with the cut node back", lambda: load.count() >= before + 2000, timeout=60, interval=0.1)
    load.finish()

    acked = load.acked[topic]
    got = read_all(c.bootstrap, topic, 3)
    lost = acked - got
    print(f"power cut of node {victim.node_id}: {dropped} unsynced bytes dropped; "
          f"{len(acked)} acknowledged, {len(lost)} lost")
    assert dropped > 0, "the cut node had nothing unsynced: the test did not test anything"
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost"

    # The cut node's own replicas hold every acknowledged record again (fetched back).
    ids = {v[:16] for v in acked}

    def missing():
        stored = set()
        for p in range(3):
            # Values are a 16-byte id then the load's padding (uncompressed): each piece
            # before a padding ends with an id.
            stored.update(piece[-16:] for piece in victim.partition_log_bytes(topic, p).split(load.pad))
        return ids - stored
    wait_until(f"node {victim.node_id}'s replicas to hold every acknowledged record", lambda: not missing(),
               timeout=30, interval=0.5)
