"""Replicated produce latency (issue #21's benchmark): three local nodes, one partition, RF=3,
min ISR 2, acks=all, 1 KiB records, linger.ms=1, librdkafka's `rdkafka_performance`:

1. the peak: `-P` as fast as it goes (RECORDS records), ROUNDS times, alternating the builds;
2. `-P -r 25000 -l -A file` (25 MB/s, the issue's reference load) for SECONDS;
3. the same at half of (1)'s rate.

Per-message latencies (`-A`, microseconds, from produce() to the delivery report) give p50,
p99, p99.9 and max. With STROM_BIN_BEFORE set, another build's cluster runs beside it and does
the same steps, in the same run. `sync` runs before each produce; each run has its own topic,
deleted afterwards.

    cargo build --release -p strom && bash benches/build-rdkafka-performance.sh
    STROM_BIN=target/release/strom [STROM_BIN_BEFORE=/path/to/old/strom] \\
        tests/.venv/bin/python benches/latency.py        (RECORDS=500000, SECONDS=20, ROUNDS=3; PEAK_ONLY=1: step 1 alone;
        RATES=25000,50000: these rates instead of 25000 and half the peak)
"""

import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
import strom_cluster  # noqa: E402
from strom_cluster import Cluster  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_tool import TOOL, delete_topic, mb_per_s, msgs_per_s, run  # noqa: E402

RECORDS = int(os.environ.get("RECORDS", "500000"))
SECONDS = int(os.environ.get("SECONDS", "20"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
BASE = ["-s", "1024", "-a", "-1", "-X", "linger.ms=1", "-p", "0"]


def produce(bootstrap, topic, args):
    subprocess.run(["sync"])
    summary = run(["-P", "-b", bootstrap, "-t", topic, *BASE, *args])
    return mb_per_s(summary), msgs_per_s(summary)


def percentiles(path):
    with open(path) as f:
        lat = sorted(int(x) for x in f if x.strip())
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000  # noqa: E731
    return f"p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, p99.9 {pick(0.999):.1f} ms, max {lat[-1] / 1000:.1f} ms " \
           f"({len(lat)} records)"


def fresh_topic(c, name):
    c.create_topic(name, partitions=1, rf=3, config={"min.insync.replicas": "2"})
    c.wait_full_isr(name)


def main():
    if not os.path.exists(TOOL):
        raise SystemExit("run: bash benches/build-rdkafka-performance.sh")
    builds = ([("before", os.environ["STROM_BIN_BEFORE"])] if os.environ.get("STROM_BIN_BEFORE") else []) + [
        ("after", strom_cluster.STROM)]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        clusters = {}
        try:
            for label, binary in builds:
                strom_cluster.STROM = binary
                clusters[label] = (binary, Cluster(os.path.join(d, label), 3).start())
            # Peaks, alternating the builds round by round on fresh topics (the first round
            # of each is a warm-up: see benches/tls.py on this VM's first-touch page cache).
            peaks = {label: [] for label in clusters}
            for rnd in range(ROUNDS + 1):
                for label, (binary, c) in clusters.items():
                    name = f"peak-{rnd}"
                    fresh_topic(c, name)
                    mb, msgs = produce(c.bootstrap, name, ["-c", str(RECORDS)])
                    delete_topic(binary, c.bootstrap, name, settle=2)
                    if rnd > 0:
                        peaks[label].append((mb, msgs))
                        print(f"round {rnd} {label}: peak {mb:.0f} MB/s ({msgs:.0f} msgs/s, {RECORDS} x 1 KiB "
                              f"written)", flush=True)
            for label in clusters:
                mb = statistics.median(m for m, _ in peaks[label])
                msgs = statistics.median(n for _, n in peaks[label])
                print(f"{label}: median peak {mb:.0f} MB/s ({msgs:.0f} msgs/s)", flush=True)
            if os.environ.get("PEAK_ONLY"):
                return
            for label, (binary, c) in clusters.items():
                half = int(statistics.median(n for _, n in peaks[label]) / 2)
                rates = [int(r) for r in os.environ["RATES"].split(",")] if os.environ.get("RATES") else [25000, half]
                for rate in rates:
                    name = f"lat-{rate}"
                    fresh_topic(c, name)
                    path = os.path.join(d, f"{label}-{rate}.lat")
                    mb, _ = produce(c.bootstrap, name, ["-r", str(rate), "-c", str(rate * SECONDS), "-l", "-A", path])
                    delete_topic(binary, c.bootstrap, name, settle=2)
                    print(f"{label}: at {rate} msgs/s ({mb:.0f} MB/s, {rate * SECONDS} x 1 KiB written): "
                          f"{percentiles(path)}", flush=True)
        finally:
            for _, c in clusters.values():
                c.stop()


if __name__ == "__main__":
    main()
