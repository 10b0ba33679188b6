"""Transactional produce (issue #22's benchmark): records/s of 1 KiB records written in
transactions of 100 and of 10,000 records, beside the idempotent producer (acks=all) in the
same run, on the same node, with the same client, and each commit's latency (p50, p99: the
time `commit_transaction` takes, markers included on the coordinator side before the next
transaction may add partitions).

The client is librdkafka through confluent-kafka (rdkafka_performance has no transactions).
One Python thread feeds it, so the absolute rates are the client's; the ratio between the
rows is what the broker costs a transaction.

    cargo build --release -p strom
    STROM_BIN=target/release/strom [NODES=3] tests/.venv/bin/python benches/transactions.py
    (RECORDS=200000 × 1 KiB per row; 3 partitions; NODES=3: RF=3, min ISR 2)
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
from strom_cluster import Cluster  # noqa: E402

from confluent_kafka import Producer  # noqa: E402

RECORDS = int(os.environ.get("RECORDS", "200000"))
NODES = int(os.environ.get("NODES", "1"))
PARTITIONS = 3
PAYLOAD = os.urandom(1024)


def page_cache_kib():
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["Cached"].split()[0])


def run_row(bootstrap, topic, txn_size):
    """Produces RECORDS records; txn_size None: idempotent, else transactions of that many.
    Returns (records/s, commit latencies in ms, MB written to the page cache)."""
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000, "acks": "all",
            "enable.idempotence": True, "queue.buffering.max.messages": 1_000_000}
    if txn_size is not None:
        conf["transactional.id"] = f"bench-{uuid.uuid4()}"
    p = Producer(conf)
    if txn_size is not None:
        p.init_transactions(30)
    subprocess.run(["sync"], check=True)
    cache0 = page_cache_kib()
    commits = []
    start = time.monotonic()
    sent = 0
    while sent < RECORDS:
        n = min(txn_size or RECORDS, RECORDS - sent)
        if txn_size is not None:
            p.begin_transaction()
        for i in range(n):
            while True:
                try:
                    p.produce(topic, value=PAYLOAD, partition=(sent + i) % PARTITIONS)
                    break
                except BufferError:
                    p.poll(0.01)
            if i % 1000 == 0:
                p.poll(0)
        sent += n
        if txn_size is not None:
            t0 = time.monotonic()
            p.commit_transaction(60)
            commits.append((time.monotonic() - t0) * 1000)
    assert p.flush(120) == 0
    elapsed = time.monotonic() - start
    return RECORDS / elapsed, commits, (page_cache_kib() - cache0) / 1024


def main():
    import strom_cluster
    strom_cluster.STROM = os.environ.get("STROM_BIN", strom_cluster.STROM)
    extra = []
    if NODES > 1:
        extra = ["transaction.state.log.replication.factor=3", "transaction.state.log.min.isr=2",
                 "min.insync.replicas=2"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        c = Cluster(d, NODES, extra=extra).start()
        try:
            rows = []
            for name, size in [("idempotent", None), ("transactions of 100", 100),
                               ("transactions of 10,000", 10_000)]:
                topic = f"bench-{uuid.uuid4().hex[:6]}"
                c.create_topic(topic, partitions=PARTITIONS, rf=min(NODES, 3))
                rate, commits, written = run_row(c.bootstrap, topic, size)
                rows.append((name, rate, commits, written))
            base = rows[0][1]
            print(f"{NODES} node(s), {RECORDS} × 1 KiB per row, {PARTITIONS} partitions")
            print(f"{'producer':<24}{'records/s':>12}{'× idempotent':>14}{'commit p50 ms':>15}{'p99 ms':>9}"
                  f"{'MB to page cache':>18}")
            for name, rate, commits, written in rows:
                p50 = f"{statistics.median(commits):.1f}" if commits else "-"
                p99 = f"{sorted(commits)[max(0, int(len(commits) * 0.99) - 1)]:.1f}" if commits else "-"
                print(f"{name:<24}{rate:>12,.0f}{rate / base:>14.2f}{p50:>15}{p99:>9}{written:>18.0f}")
        finally:
            c.stop()


if __name__ == "__main__":
    main()
