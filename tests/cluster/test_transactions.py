"""Exactly-once on three nodes (issue #22): a consume-transform-produce service (librdkafka:
read a topic at read_committed, write each record to another topic and commit the input
offsets in the same transaction) while the transaction coordinator's node and partition
leaders are killed and restarted. Expected: the output, read at read_committed, holds every
input record exactly once (nothing aborted or uncommitted is seen, nothing committed lost),
and every input offset is committed. A read_committed reader running throughout sees, of each
partition, a prefix of the final output (never an aborted or not-yet-committed record)."""

import collections
import os
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from strom_cluster import STROM, wait_until  # noqa: E402

NODE_CONFIG = [
    "transaction.state.log.replication.factor=3",
    "transaction.state.log.min.isr=2",
    "transaction.state.log.num.partitions=3",
    "offsets.topic.replication.factor=3",
    "offsets.topic.num.partitions=3",
    "min.insync.replicas=2",
    "group.initial.rebalance.delay.ms=0",
]
RECORDS = 6000
PARTITIONS = 3


def call_with_deadline(fn, seconds):
    """Runs `fn`, raising RuntimeError if it has not returned after `seconds`. librdkafka's
    send_offsets_to_transaction can hang past its own timeout when the group coordinator's
    broker was dropped from the metadata meanwhile (librdkafka issues #5511 and #5456, open):
    Strom, like Kafka, lists only unfenced brokers, and fences a killed one within about two
    seconds. A service then gives up on the producer and makes a new one, as this one does."""
    done, failure = threading.Event(), []

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            failure.append(e)
        finally:
            done.set()
    threading.Thread(target=run, daemon=True).start()
    if not done.wait(seconds):
        raise RuntimeError(f"client call hung for {seconds}s (librdkafka #5511)")
    if failure:
        raise failure[0]


class Transformer:
    """The service: one consumer and one transactional producer, rebuilt after any failure
    (the new producer's InitProducerId fences the old one and aborts what it left open)."""

    def __init__(self, cluster, source, sink, group, txn_id):
        self.cluster, self.source, self.sink, self.group, self.txn_id = cluster, source, sink, group, txn_id
        self.stop = threading.Event()
        self.committed_txns = 0
        self.restarts = 0
        self.errors = []
        self.stage = "not started"
        self.thread = threading.Thread(target=self.run, daemon=True)

    def clients(self):
        bootstrap = ",".join(n.bootstrap for n in self.cluster.nodes.values())
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": self.group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "isolation.level": "read_committed",
                      "session.timeout.ms": 6000})
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": self.txn_id, "linger.ms": 5,
                      "transaction.timeout.ms": 20000, "message.timeout.ms": 15000})
        try:
            p.init_transactions(60)
        except BaseException:
            c.close()
            raise
        c.subscribe([self.source])
        return c, p

    def run(self):
        c = p = None
        while not self.stop.is_set():
            try:
                if c is None:
                    c, p = self.clients()
                msgs = [m for m in c.consume(50, timeout=0.5) if m.error() is None]
                if not msgs:
                    continue
                self.stage = f"{time.time():.3f} begin ({len(msgs)} records)"
                p.begin_transaction()
                for m in msgs:
                    p.produce(self.sink, key=m.key(), value=m.value(), partition=m.partition())
                self.stage = f"{time.time():.3f} send offsets"
                offsets, group = c.position(c.assignment()), c.consumer_group_metadata()
                call_with_deadline(lambda: p.send_offsets_to_transaction(offsets, group, 20), 30)
                self.stage = f"{time.time():.3f} commit"
                p.commit_transaction(30)
                self.stage = f"{time.time():.3f} committed"
                self.committed_txns += 1
            except (KafkaException, RuntimeError) as e:
                self.errors.append(f"{time.time():.3f} {str(e)[:300]}")
                self.restarts += 1
                try:
                    if c is not None:
                        c.close()
                except Exception:  # noqa: BLE001 - a consumer of a failed round
                    pass
                c = p = None
                time.sleep(0.2)
        if c is not None:
            c.close()

    def committed(self):
        bootstrap = ",".join(n.bootstrap for n in self.cluster.nodes.values() if n.is_running())
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": self.group, "enable.auto.commit": False})
        try:
            tps = c.committed([TopicPartition(self.source, p) for p in range(PARTITIONS)], timeout=10)
            return sum(max(tp.offset, 0) for tp in tps)
        finally:
            c.close()


def coordinator_of(cluster, txn_id):
    bootstrap = ",".join(n.bootstrap for n in cluster.nodes.values() if n.is_running())
    out = subprocess.run([STROM, "transactions", "--bootstrap-server", bootstrap, "describe",
                          "--transactional-id", txn_id], capture_output=True, timeout=60, check=True).stdout.decode()
    return int(out.splitlines()[1].split("\t")[0])


class LiveReader:
    """A read_committed consumer of the output while the service runs: what it sees of each
    partition must be a prefix of what is finally there (it never sees a record of an
    aborted transaction, Jepsen's G1a, nor one of a transaction not yet committed that later
    aborts)."""

    def __init__(self, cluster, topic):
        self.cluster, self.topic = cluster, topic
        self.seen = {p: [] for p in range(PARTITIONS)}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        bootstrap = ",".join(n.bootstrap for n in self.cluster.nodes.values())
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"live-{uuid.uuid4()}",
                      "isolation.level": "read_committed", "enable.auto.commit": False})
        c.assign([TopicPartition(self.topic, p, 0) for p in range(PARTITIONS)])
        try:
            while not self.stop.is_set():
                for m in c.consume(500, timeout=0.5):
                    if m.error() is None:
                        self.seen[m.partition()].append((m.offset(), m.value()))
        finally:
            c.close()


def read_committed(cluster, topic, expect, timeout=60):
    bootstrap = ",".join(n.bootstrap for n in cluster.nodes.values())
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got, eof = {p: [] for p in range(PARTITIONS)}, set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and (len(eof) < PARTITIONS or sum(map(len, got.values())) < expect):
            for m in c.consume(1000, timeout=0.5):
                if m.error():
                    eof.add(m.partition())
                else:
                    got[m.partition()].append((m.offset(), m.value()))
    finally:
        c.close()
    return got


def test_consume_transform_produce_is_exactly_once_through_coordinator_and_leader_kills(cluster_factory):
    c = cluster_factory(3, extra=NODE_CONFIG)
    source, sink = "eos-in", "eos-out"
    c.create_topic(source, partitions=PARTITIONS, rf=3)
    c.create_topic(sink, partitions=PARTITIONS, rf=3)
    feeder = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True})
    inputs = [f"r-{i:05d}".encode() for i in range(RECORDS)]
    for i, v in enumerate(inputs):
        feeder.produce(source, value=v, partition=i % PARTITIONS)
    assert feeder.flush(60) == 0

    t = Transformer(c, source, sink, f"eos-{uuid.uuid4()}", f"eos-{uuid.uuid4()}")
    live = LiveReader(c, sink)
    live.thread.start()
    t.thread.start()
    try:
        wait_until("the first transactions", lambda: t.committed_txns >= 3, timeout=60)
        assert not t.errors, t.errors
        for round_ in range(4):
            if round_ % 2 == 0:
                victim = coordinator_of(c, t.txn_id)
                what = "transaction coordinator"
            else:
                victim = c.leader_of(sink, round_ % PARTITIONS)
                what = "output partition leader"
            before = t.committed_txns
            c.node(victim).mark(f"kill ({what})")
            c.node(victim).kill()
            time.sleep(1.0)
            c.node(victim).start()
            c.wait_for_brokers(3, timeout=60)
            try:
                wait_until(f"transactions to go on after killing the {what}",
                           lambda: t.committed_txns > before, timeout=90)
            except AssertionError as e:
                raise AssertionError(f"{e}; stage {t.stage}; errors {t.errors[-5:]}") from None
        wait_until("every input offset committed", lambda: t.committed() == RECORDS, timeout=180)
    finally:
        t.stop.set()
        t.thread.join(60)
    final = read_committed(c, sink, RECORDS)
    live.stop.set()
    live.thread.join(30)
    print({"transactions": t.committed_txns, "restarts": t.restarts, "errors": t.errors[:5],
           "seen_live": sum(map(len, live.seen.values()))})
    for p in range(PARTITIONS):
        seen = live.seen[p]
        assert seen == final[p][:len(seen)], f"partition {p}: a read_committed reader saw records not in the final output"
    assert sum(map(len, live.seen.values())) > RECORDS // 2, "the live reader saw little: it checked little"

    out = [v for p in range(PARTITIONS) for _, v in final[p]]
    counts = collections.Counter(out)
    duplicated = [v for v, n in counts.items() if n > 1]
    missing = set(inputs) - set(counts)
    foreign = set(counts) - set(inputs)
    assert not duplicated, f"{len(duplicated)} records written twice, e.g. {duplicated[:5]}"
    assert not missing, f"{len(missing)} input records missing, e.g. {sorted(missing)[:5]}"
    assert not foreign, foreign
    assert len(out) == RECORDS
