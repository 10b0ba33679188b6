"""Consumer-group benchmarks (issue #7), on one local node with librdkafka consumers:

- rebalance: 10 members join one group on a 60-partition topic; the time from the first
  subscribe until every member holds its share (all 60 partitions owned, 6 each), over
  several rounds (a new group each round): median and max. `group.initial.rebalance.delay.ms`
  is strom's default, 0 (Kafka's is 3000: it would add 3 s to every figure).
- OffsetCommit: synchronous commits of one partition's offset, one after another from one
  consumer (latency p50/p99) and from 4 consumers at once (throughput).

    STROM_BIN=target/release/strom python benches/groups.py [rounds]
"""

import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
from strom_cluster import Cluster, wait_until  # noqa: E402

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

MEMBERS, PARTITIONS = 10, 60


def member(bootstrap, group):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                     "session.timeout.ms": 10000, "heartbeat.interval.ms": 500})


def rebalance_round(bootstrap, topic):
    group = f"rebalance-{uuid.uuid4()}"
    members = [member(bootstrap, group) for _ in range(MEMBERS)]
    start = time.monotonic()
    for m in members:
        m.subscribe([topic])

    # One thread polls every member in turn (a confluent-kafka consumer is not to be polled
    # and asked for its assignment from two threads at once).
    def settled():
        for m in members:
            m.poll(0)
        owned = [p.partition for m in members for p in m.assignment()]
        return sorted(owned) == list(range(PARTITIONS)) and all(len(m.assignment()) == PARTITIONS // MEMBERS for m in members)
    wait_until("every member to hold its share", settled, timeout=120, interval=0.005)
    took = time.monotonic() - start
    for m in members:
        m.close()
    return took


def commit_latencies(bootstrap, topic, n, partition):
    c = member(bootstrap, f"committer-{uuid.uuid4()}")
    out = []
    for i in range(n):
        t = time.monotonic()
        c.commit(offsets=[TopicPartition(topic, partition, i)], asynchronous=False)
        out.append(time.monotonic() - t)
    c.close()
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        c = Cluster(d, 1).start()
        try:
            c.create_topic("members", partitions=PARTITIONS, rf=1)
            c.create_topic("commits", partitions=4, rf=1)
            bs = c.bootstrap
            times = [rebalance_round(bs, "members") for _ in range(rounds)]
            one = commit_latencies(bs, "commits", 2000, 0)
            results = [None] * 4

            def run(i):
                results[i] = commit_latencies(bs, "commits", 1000, i)
            start = time.monotonic()
            ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            parallel_s = time.monotonic() - start
        finally:
            c.stop()
    print(f"rebalance, {MEMBERS} members joining a {PARTITIONS}-partition topic, {rounds} rounds "
          "(group.initial.rebalance.delay.ms=0, the default): "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    print(f"OffsetCommit, one consumer, sync, 2000 commits: {len(one) / sum(one):.0f} commits/s, "
          f"p50 {pct(one, 0.5) * 1000:.2f} ms, p99 {pct(one, 0.99) * 1000:.2f} ms")
    allc = [x for r in results for x in r]
    print(f"OffsetCommit, 4 consumers at once, 4000 commits: {len(allc) / parallel_s:.0f} commits/s, "
          f"p50 {pct(allc, 0.5) * 1000:.2f} ms, p99 {pct(allc, 0.99) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
