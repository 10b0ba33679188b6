"""Produce latency on one partition while the log cleaner compacts other partitions, beside
the same load with the cleaner idle, in one run (issue #19's second cleaner figure).

One node (release binary), `log.cleaner.backoff.ms=100`. A compacted topic `dirty` (4
partitions, 64 MiB segments) is filled with keyed 1 KiB records, every key written twice,
while `min.compaction.lag.ms` keeps the cleaner off it. Then, on topic `load` (one partition):

1. idle: librdkafka's `rdkafka_performance` produces at a fixed rate (acks=1, linger.ms=1),
   per-message latency from its `-l -A` file;
2. busy: `min.compaction.lag.ms` is set to 0 (IncrementalAlterConfigs) and the same load runs
   at once; the cleaner's bytes-read counter says when it has read every sealed segment, so
   the report says whether the run lay inside the cleaning.

    cargo build --release -p strom && bash benches/build-rdkafka-performance.sh
    sync; STROM_BIN=target/release/strom tests/.venv/bin/python benches/cleaner.py
    (DIRTY_MB=1024 to size the dirty log; CLEANER_IO_MB=64 to throttle the cleaner)
"""

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
from strom_cluster import Cluster, wait_until  # noqa: E402

RDKAFKA_PERFORMANCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "rdkafka-perf",
                                   "rdkafka_performance")
MB = 1024 * 1024
DIRTY_PARTITIONS = 4
DIRTY_BYTES = int(os.environ.get("DIRTY_MB", "1536")) * MB
RATE = int(os.environ.get("RATE", "20000"))  # records/s of 1 KiB on `load`
RECORDS = int(os.environ.get("RECORDS", "100000"))


def metric(node, name):
    body = urllib.request.urlopen(f"http://{node.host}:{node.metrics_port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name}(?:_total)? (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


def sealed_bytes(data_dir, topic):
    """Bytes of every partition's segments but its active (last) one: what the cleaner reads."""
    total = 0
    for name in os.listdir(data_dir):
        if name.rsplit("-", 1)[0] != topic:
            continue
        logs = sorted(f for f in os.listdir(os.path.join(data_dir, name)) if f.endswith(".log"))
        total += sum(os.path.getsize(os.path.join(data_dir, name, f)) for f in logs[:-1])
    return total


def fill_dirty(bootstrap):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1000000,
                  "queue.buffering.max.kbytes": 1048576})
    value = b"v" * 1000
    keys = DIRTY_BYTES // 1024 // 2
    for round_ in range(2):
        for k in range(keys):
            while True:
                try:
                    p.produce("dirty", key=b"key-%09d" % k, value=value)
                    break
                except BufferError:
                    p.poll(0.05)
        p.flush(300)
    return keys * 2


def produce_latencies(bootstrap, label):
    """One rdkafka_performance run on `load`; (p50, p99, p99.9, max) in ms from its -A file."""
    with tempfile.NamedTemporaryFile("r", suffix=".lat") as lat:
        r = subprocess.run([RDKAFKA_PERFORMANCE, "-P", "-b", bootstrap, "-t", "load", "-p", "0", "-s", "1024",
                            "-c", str(RECORDS), "-r", str(RATE), "-a", "1", "-X", "linger.ms=1", "-l",
                            "-A", lat.name], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"rdkafka_performance failed: {r.stderr[-500:]}")
        us = sorted(int(x) for x in lat.read().split() if x.strip().isdigit())
    pick = lambda q: us[min(len(us) - 1, int(q * len(us)))] / 1000  # noqa: E731
    print(f"{label}: {len(us)} records, latency p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms, "
          f"p99.9 {pick(0.999):.2f} ms, max {us[-1] / 1000:.2f} ms", flush=True)
    return pick(0.5), pick(0.99), pick(0.999), us[-1] / 1000


def main():
    if not os.path.exists(RDKAFKA_PERFORMANCE):
        raise SystemExit("run benches/build-rdkafka-performance.sh first")
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigEntry, AlterConfigOpType, NewTopic
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        extra = ["log.cleaner.backoff.ms=100"]
        if os.environ.get("CLEANER_IO_MB"):  # log.cleaner.io.max.bytes.per.second, in MiB/s
            extra.append(f"log.cleaner.io.max.bytes.per.second={int(os.environ['CLEANER_IO_MB']) * MB}")
        c = Cluster(d, 1, extra=extra).start()
        try:
            n = c.node(1)
            admin = AdminClient({"bootstrap.servers": c.bootstrap})
            dirty = NewTopic("dirty", num_partitions=DIRTY_PARTITIONS, replication_factor=1, config={
                "cleanup.policy": "compact", "segment.bytes": str(64 * MB), "min.compaction.lag.ms": "86400000"})
            load = NewTopic("load", num_partitions=1, replication_factor=1)
            for f in admin.create_topics([dirty, load]).values():
                f.result(30)
            t0 = time.monotonic()
            records = fill_dirty(c.bootstrap)
            print(f"filled `dirty`: {records} keyed 1 KiB records ({DIRTY_BYTES // MB} MiB, every key twice) "
                  f"in {time.monotonic() - t0:.1f} s", flush=True)
            produce_latencies(c.bootstrap, "warm-up")
            subprocess.run(["sync"])
            idle = produce_latencies(c.bootstrap, "cleaner idle")
            sealed = sealed_bytes(n.data_dir, "dirty")
            before = metric(n, "strom_log_cleaner_bytes_read")
            res = ConfigResource("topic", "dirty", incremental_configs=[
                ConfigEntry("min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)])
            admin.incremental_alter_configs([res])[res].result(30)
            altered = time.monotonic()
            busy = produce_latencies(c.bootstrap, "cleaner busy")
            took = time.monotonic() - altered
            wait_until("the cleaner to read every sealed segment",
                       lambda: metric(n, "strom_log_cleaner_bytes_read") - before >= sealed, timeout=600, interval=0.2)
            cleaning = time.monotonic() - altered
            print(f"the cleaner read {sealed / MB:.0f} MiB of sealed segments in {cleaning:.1f} s from the "
                  f"config change ({sealed / MB / cleaning:.0f} MiB/s, at most); the busy run took {took:.1f} s "
                  f"from the same moment, so it ran {'inside' if took <= cleaning else 'partly outside'} the cleaning",
                  flush=True)
            print(f"p99 busy / idle: {busy[1] / idle[1]:.2f}", flush=True)
        finally:
            c.stop()


if __name__ == "__main__":
    main()
