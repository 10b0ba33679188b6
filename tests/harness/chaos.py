"""The chaos workload and history checker, shared by tests/cluster/test_chaos.py (short runs
in CI) and the soak mode (`python tests/harness/chaos.py --seed 7 --duration 600`).

A workload runs producers (librdkafka, acks=all; half idempotent) that record every send,
ack (with partition and offset) and error into a history. At the end everything is read
back and the checker counts: acknowledged, lost (acknowledged but not read back), duplicated
(read back more than once, idempotent producers only are held to zero), reordered (a
producer's acknowledged records of one key out of send order), unknown (sends with no
outcome: timed out, which is allowed to have happened or not), and whether the replicas'
logs agree byte for byte.
"""

import argparse
import os
import random
import sys
import tempfile
import threading
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as P

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from strom_cluster import Cluster, Network, wait_until  # noqa: E402


class Producer(threading.Thread):
    """One producer sending `key-seq` records until stopped; records its history."""

    def __init__(self, bootstrap, topic, name, idempotent, rate=2000):
        super().__init__(daemon=True)
        self.name_ = name
        self.idempotent = idempotent
        self.topic = topic
        self.rate = rate
        self.sent = 0
        self.acked = {}  # value -> (partition, offset)
        self.failed = {}  # value -> error (definitely not written, per the client)
        self.stop_flag = threading.Event()
        conf = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": idempotent,
                "linger.ms": 5, "message.timeout.ms": 60000, "retry.backoff.ms": 50}
        debug_dir = os.environ.get("CHAOS_RDKAFKA_DEBUG")
        if debug_dir:
            # librdkafka's own log of one producer, for reading a failure afterwards.
            import logging
            log = logging.getLogger(f"rdkafka-{name}")
            os.makedirs(debug_dir, exist_ok=True)
            handler = logging.FileHandler(os.path.join(debug_dir, f"{name}.log"))
            handler.setFormatter(logging.Formatter("%(created).3f %(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.DEBUG)
            conf.update({"debug": "broker,topic,metadata,eos", "logger": log})
        self.conf = conf
        self.p = P(conf)
        # librdkafka's idempotent producer raises a fatal error when it cannot tell whether its
        # sequence numbers still match the broker's (it does so against Kafka too, after
        # outages: librdkafka issues #3584, #4438). Applications then make a new producer (a
        # new producer id); so does this one, and counts it. Values stay unique, so the
        # checker's duplicate and order rules still hold across the replacement.
        self.fatal_errors = []

    def on_delivery(self, err, msg):
        v = msg.value()
        if err is None:
            self.acked[v] = (msg.partition(), msg.offset())
        else:
            self.failed[v] = err

    def run(self):
        interval = 1.0 / self.rate
        nxt = time.monotonic()
        while not self.stop_flag.is_set():
            key = f"{self.name_}-k{self.sent % 16}".encode()
            value = f"{self.name_}:{self.sent}".encode()
            try:
                self.p.produce(self.topic, key=key, value=value, on_delivery=self.on_delivery)
                self.sent += 1
            except BufferError:
                pass
            except KafkaException as e:
                err = e.args[0]
                if not (err.fatal() or err.code() == KafkaError._FATAL):
                    raise
                self.fatal_errors.append(err.str())
            if self.fatal_errors and self.fatal_errors[-1] is not None:
                self.p.flush(30)  # every outstanding message gets its (failed) report
                self.p = P(self.conf)
                self.fatal_errors.append(None)
                continue
            self.p.poll(0)
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.p.flush(120)

    def stop(self):
        self.stop_flag.set()


# A compacted topic's settings for chaos: small segments and an eager cleaner, so cleanings
# run all the time and leader kills land during them (the node needs log.cleaner.backoff.ms
# small too: COMPACTED_NODE_CONFIG).
COMPACTED_TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.bytes": "16384",
                          "min.cleanable.dirty.ratio": "0.01", "min.insync.replicas": "2"}
COMPACTED_NODE_CONFIG = ["log.cleaner.backoff.ms=200"]


class Workload:
    """Producers writing `topic` (delete policy: every acknowledged record must be read back)
    and, with `compacted_topic`, a compacted topic beside it (the latest acknowledged value of
    every key must be read back). Scenarios pick victims by `topic`'s leaders."""

    def __init__(self, cluster, topic, partitions=6, producers=2, compacted_topic=None):
        self.cluster = cluster
        self.topic = topic
        self.partitions = partitions
        self.compacted_topic = compacted_topic
        cluster.create_topic(topic, partitions=partitions, rf=3, config={"min.insync.replicas": "2"})
        self.producers = [Producer(cluster.bootstrap, topic, f"p{i}", idempotent=(i % 2 == 0)) for i in range(producers)]
        self.compacted_producers = []
        if compacted_topic:
            cluster.create_topic(compacted_topic, partitions=partitions, rf=3, config=COMPACTED_TOPIC_CONFIG)
            # Names go on from the first topic's. Not idempotent, and at a third of the rate:
            # the latest-value check needs neither, and the delete topic's producers keep the
            # conditions their zero-duplicate rule was measured under (a heavier load makes
            # librdkafka decommission a restarting broker's handle with requests in flight,
            # then bump its epoch and resend: duplicates of the client's making, #4953).
            self.compacted_producers = [
                Producer(cluster.bootstrap, compacted_topic, f"c{i}", idempotent=False, rate=600)
                for i in range(2)]
        self.wait_full_isr()

    def topics(self):
        return [self.topic] + ([self.compacted_topic] if self.compacted_topic else [])

    def wait_full_isr(self, timeout=120):
        for t in self.topics():
            self.cluster.wait_full_isr(t, timeout=timeout)

    def start(self):
        for p in self.producers + self.compacted_producers:
            p.start()

    def acked(self):
        return sum(len(p.acked) for p in self.producers)

    def wait_progress(self, n, timeout=120):
        start = self.acked()
        wait_until(f"{n} more acknowledged records", lambda: self.acked() >= start + n, timeout=timeout)

    def stop(self):
        everyone = self.producers + self.compacted_producers
        for p in everyone:
            p.stop()
        for p in everyone:
            p.join(180)

    def check(self):
        """Reads everything back; returns the counts (and asserts nothing itself)."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition
        c = self.cluster
        self.wait_full_isr()
        total_acked = self.acked()
        cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": f"checker-{time.time()}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
        cons.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])
        seen, eof = [], set()

        def done():
            for m in cons.consume(1000, timeout=0.5):
                if m.error() is None:
                    seen.append((m.partition(), m.offset(), m.value()))
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                else:
                    raise AssertionError(m.error())
            return len(eof) == self.partitions and len(seen) >= total_acked
        try:
            wait_until("every record read back", done, timeout=180)
        finally:
            cons.close()
        where = {}
        for p, o, v in seen:
            where.setdefault(v, []).append((p, o))
        counts = {"acknowledged": total_acked, "read": len(seen), "lost": 0, "duplicated": 0,
                  "producer_fatal_errors": sum(1 for p in self.producers for e in p.fatal_errors if e),
                  "duplicated_idempotent": 0, "moved": 0, "reordered": 0, "unknown": 0}
        for prod in self.producers:
            for v, at in prod.acked.items():
                if v not in where:
                    counts["lost"] += 1
                    at_there = [sv for sp, so, sv in seen if (sp, so) == at]
                    print(f"lost: {v!r} acknowledged at {at}; read there: {at_there}", flush=True)
                elif at not in where[v]:
                    counts["moved"] += 1
            counts["unknown"] += prod.sent - len(prod.acked) - len(prod.failed)
            # Order per key: acknowledged records of one key, in send order, at growing offsets.
            by_key = {}
            for v, (p, o) in prod.acked.items():
                seq = int(v.split(b":")[1])
                by_key.setdefault(seq % 16, []).append((seq, p, o))
            if not prod.idempotent:
                continue  # without idempotence, retries may reorder (as in Kafka)
            for recs in by_key.values():
                recs.sort()
                offs = [o for _, _, o in recs]
                counts["reordered"] += sum(1 for a, b in zip(offs, offs[1:]) if b < a)
        for v, ps in where.items():
            if len(ps) > 1:
                counts["duplicated"] += len(ps) - 1
                if int(v.split(b":")[0][1:]) % 2 == 0:  # p0, p2, …: the idempotent ones
                    counts["duplicated_idempotent"] += len(ps) - 1
        counts["replicas_agree"] = self.replicas_agree()
        return counts

    def replicas_agree(self):
        for p in range(self.partitions):
            def same():
                logs = {n.partition_log_bytes(self.topic, p) for n in self.cluster.nodes.values()}
                return len(logs) == 1
            try:
                wait_until(f"replicas of {self.topic}-{p} to agree", same, timeout=30)
            except AssertionError:
                self.describe_disagreement(p)
                return False
        return True

    def describe_disagreement(self, p):
        """Prints where the replicas of partition `p` part (sizes and the first differing
        byte), for reading a failure."""
        logs = {n.node_id: n.partition_log_bytes(self.topic, p) for n in self.cluster.nodes.values()}
        sizes = {i: len(b) for i, b in logs.items()}
        ref_id, ref = next(iter(logs.items()))
        first_diff = {}
        for i, b in logs.items():
            k = next((j for j, (x, y) in enumerate(zip(ref, b)) if x != y), min(len(ref), len(b)))
            first_diff[i] = k
        print(f"replicas of {self.topic}-{p} differ: bytes per node {sizes}; first byte differing from "
              f"node {ref_id}: {first_diff}; partitions as the nodes see them: {self.cluster.partitions(self.topic)}",
              flush=True)

    def check_compacted(self):
        """The compacted topic read back (returns counts; asserts nothing itself):
        `latest_lost` counts keys whose latest acknowledged value is neither read back at its
        offset nor superseded by a later record of the key; `moved`, acknowledged values read
        at another offset; `cleaned`, acknowledged records no longer read (compaction ran);
        `replicas_converge`, whether every replica's log holds the same latest record per key."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition
        topic = self.compacted_topic
        cons = Consumer({"bootstrap.servers": self.cluster.bootstrap, "group.id": f"checker-{time.time()}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
        cons.assign([TopicPartition(topic, p, 0) for p in range(self.partitions)])
        seen, eof = {}, set()  # (partition, offset) -> (key, value)

        def done():
            for m in cons.consume(1000, timeout=0.5):
                if m.error() is None:
                    seen[(m.partition(), m.offset())] = (m.key(), m.value())
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                else:
                    raise AssertionError(m.error())
            return len(eof) == self.partitions
        try:
            wait_until(f"every partition of {topic} read to its end", done, timeout=180)
        finally:
            cons.close()
        last_read = {}  # key -> (offset, value) of the last record read
        for (p, o), (k, v) in sorted(seen.items()):
            last_read[k] = (o, v)
        value_at = {v: po for po, (_, v) in seen.items()}
        counts = {"acknowledged": 0, "read": len(seen), "latest_lost": 0, "moved": 0, "cleaned": 0}
        for prod in self.compacted_producers:
            counts["acknowledged"] += len(prod.acked)
            latest = {}  # key -> (offset, value) of its last acknowledged record
            for v, (p, o) in prod.acked.items():
                k = f"{prod.name_}-k{int(v.split(b':')[1]) % 16}".encode()  # as Producer.run makes it
                if k not in latest or latest[k][0] < o:
                    latest[k] = (o, v)
                if v in value_at and value_at[v] != (p, o):
                    counts["moved"] += 1
                if v not in value_at:
                    counts["cleaned"] += 1
            for k, (o, v) in latest.items():
                got = last_read.get(k)
                if got is None or got[0] < o or (got[0] == o and got[1] != v):
                    counts["latest_lost"] += 1
                    print(f"latest of {k!r} lost: acknowledged {v!r} at {o}; last read {got}", flush=True)
        counts["replicas_converge"] = self.replicas_converge()
        return counts

    def replicas_converge(self):
        """Each replica compacts on its own, so their bytes differ; the latest record of every
        key in their logs must not."""
        for p in range(self.partitions):
            def same():
                views = [latest_per_key(n.partition_log_bytes(self.compacted_topic, p))
                         for n in self.cluster.nodes.values()]
                return bool(views[0]) and all(v == views[0] for v in views)
            try:
                wait_until(f"replicas of {self.compacted_topic}-{p} to converge", same, timeout=30)
            except AssertionError:
                return False
        return True


def _varint(b, i):
    """A zigzag varint of record batch v2 at b[i:]: (value, next index)."""
    shift = raw = 0
    while True:
        byte = b[i]
        i += 1
        raw |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), i


def latest_per_key(log):
    """{key: (offset, value)} of the last record of each key in uncompressed record batches
    (v2), control batches skipped: what a compacted log's reader converges to."""
    out, pos = {}, 0
    while pos + 61 <= len(log):
        base = int.from_bytes(log[pos:pos + 8], "big", signed=True)
        length = int.from_bytes(log[pos + 8:pos + 12], "big", signed=True)
        end = pos + 12 + length
        attributes = int.from_bytes(log[pos + 21:pos + 23], "big")
        count = int.from_bytes(log[pos + 57:pos + 61], "big", signed=True)
        assert attributes & 0x07 == 0, "the chaos producers send uncompressed batches"
        i = pos + 61
        for _ in range(count if not attributes & 0x20 else 0):
            _, i = _varint(log, i)  # record length
            i += 1  # attributes
            _, i = _varint(log, i)  # timestamp delta
            delta, i = _varint(log, i)
            klen, i = _varint(log, i)
            key = bytes(log[i:i + max(klen, 0)])
            i += max(klen, 0)
            vlen, i = _varint(log, i)
            value = bytes(log[i:i + vlen]) if vlen >= 0 else None
            i += max(vlen, 0)
            headers, i = _varint(log, i)
            for _ in range(headers):
                hk, i = _varint(log, i)
                i += hk
                hv, i = _varint(log, i)
                i += max(hv, 0)
            out[key] = (base + delta, value)
        pos = end
    return out


# ---- scenarios: each takes (cluster, workload, rng) and disturbs the cluster ------------------

def leader_of_most(cluster, topic):
    counts = {}
    for leader, _, _ in cluster.partitions(topic).values():
        counts[leader] = counts.get(leader, 0) + 1
    return max(counts, key=counts.get)


def kill_leader_repeatedly(c, w, rng, times=10):
    for _ in range(times):
        victim = leader_of_most(c, w.topic)
        c.node(victim).kill()
        w.wait_progress(200)
        c.node(victim).start()
        w.wait_full_isr()


def pause_leader(c, w, rng):
    victim = leader_of_most(c, w.topic)
    c.node(victim).pause()
    wait_until("the paused leader to lose its leaderships",
               lambda: victim not in {l for l, _, _ in c.partitions(w.topic).values()}, timeout=60)
    w.wait_progress(300)
    c.node(victim).resume()
    w.wait_full_isr()


def leaders_seen_by(c, node_id, topic):
    from confluent_kafka.admin import AdminClient
    t = AdminClient({"bootstrap.servers": c.node(node_id).bootstrap}).list_topics(topic, timeout=3).topics[topic]
    return {p.leader for p in t.partitions.values()}


def cut_leader(c, w, rng):
    """The leader of most partitions loses the other nodes (not the clients): the majority
    fences it and elects new leaders; acks=all writes it still takes cannot reach a second
    ISR member and are never acknowledged; healed, it truncates and rejoins."""
    victim = leader_of_most(c, w.topic)
    others = [i for i in c.nodes if i != victim]
    c.cut(victim)
    wait_until("the majority to move leaderships off the cut-off node",
               lambda: all(victim not in leaders_seen_by(c, i, w.topic) for i in others), timeout=60)
    w.wait_progress(300, timeout=180)
    c.heal(victim)
    w.wait_full_isr()


def kill_two_of_three(c, w, rng):
    """With one node left acks=all cannot be satisfied (min ISR 2): nothing is acknowledged
    (and so nothing acknowledged can be lost); with a second node back, writes resume."""
    ids = list(c.nodes)
    rng.shuffle(ids)
    a, b = ids[0], ids[1]
    c.node(a).kill()
    c.node(b).kill()
    before = w.acked()
    c.node(a).start()
    w.wait_progress(300, timeout=180)
    assert w.acked() > before
    c.node(b).start()
    w.wait_full_isr()


def full_cluster_kill(c, w, rng):
    for n in c.nodes.values():
        n.kill()
    for n in c.nodes.values():
        n.start()
    c.wait_for_brokers(3, timeout=120)
    w.wait_progress(300, timeout=180)


def rolling_restart(c, w, rng):
    for n in c.nodes.values():
        n.stop()  # SIGTERM: controlled shutdown
        n.start()
        c.wait_for_brokers(3, timeout=120)
        w.wait_full_isr()
        w.wait_progress(200)


SCENARIOS = {
    "kill-leader": kill_leader_repeatedly,
    "pause-leader": pause_leader,
    "cut-leader": cut_leader,
    "kill-two": kill_two_of_three,
    "full-kill": full_cluster_kill,
    "rolling-restart": rolling_restart,
}


def soak(seed, duration, strom_dir=None):
    """Random scenarios for `duration` seconds; prints the checker's counts."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(dir=strom_dir) as d:
        netns = Network.available()
        c = Cluster(d, 3, netns=netns, extra=COMPACTED_NODE_CONFIG).start()
        try:
            w = Workload(c, "soak", compacted_topic="soak-compacted")
            w.start()
            end = time.monotonic() + duration
            names = sorted(n for n in SCENARIOS if netns or n != "cut-leader")
            while time.monotonic() < end:
                name = rng.choice(names)
                print(f"[seed {seed}] {name}", flush=True)
                fn = SCENARIOS[name]
                fn(c, w, rng) if name != "kill-leader" else fn(c, w, rng, times=rng.randint(1, 3))
            w.stop()
            counts = w.check()
            counts["compacted"] = w.check_compacted()
            print(counts)
            return counts
        finally:
            c.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--duration", type=float, default=300)
    a = ap.parse_args()
    counts = soak(a.seed, a.duration)
    cc = counts["compacted"]
    bad = (counts["lost"] or counts["moved"] or counts["duplicated_idempotent"] or counts["reordered"]
           or not counts["replicas_agree"] or cc["latest_lost"] or cc["moved"] or not cc["replicas_converge"])
    sys.exit(1 if bad else 0)
