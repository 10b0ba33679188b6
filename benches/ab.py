"""Two builds side by side, one node each, in one run: `rdkafka_performance -P` (RECORDS x 1 KiB,
one partition, acks=1, linger.ms=5, batch.size=1000000, DESIGN.md's settings) then `-C` of
the same records, ROUNDS times, alternating the builds round by round (after one warm-up
round of each), each round on a fresh topic deleted afterwards. `sync` runs before every
produce. Prints each run and the medians with the ratio after / before.

    cargo build --release -p strom && bash benches/build-rdkafka-performance.sh
    STROM_BIN=target/release/strom STROM_BIN_BEFORE=/path/to/old/strom \\
        tests/.venv/bin/python benches/ab.py        (ROUNDS=5, RECORDS=500000)
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
from perf_tool import delete_topic, mb_per_s, run  # noqa: E402

RECORDS = int(os.environ.get("RECORDS", "500000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))


def main():
    builds = {"before": os.environ["STROM_BIN_BEFORE"], "after": strom_cluster.STROM}
    results = {b: {"produce": [], "consume": []} for b in builds}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        clusters = {}
        try:
            for label, binary in builds.items():
                strom_cluster.STROM = binary
                clusters[label] = Cluster(os.path.join(d, label), 1).start()
            for rnd in range(ROUNDS + 1):
                for label, c in clusters.items():
                    topic = f"ab-{rnd}"
                    subprocess.run(["sync"])
                    produce = mb_per_s(run(["-P", "-b", c.bootstrap, "-t", topic, "-p", "0", "-s", "1024", "-c",
                                        str(RECORDS), "-a", "1", "-X", "linger.ms=5", "-X", "batch.size=1000000"]))
                    consume = mb_per_s(run(["-C", "-b", c.bootstrap, "-t", topic, "-p", "0", "-o", "beginning", "-c",
                                            str(RECORDS)]))
                    delete_topic(builds[label], c.bootstrap, topic)
                    if rnd == 0:
                        continue
                    results[label]["produce"].append(produce)
                    results[label]["consume"].append(consume)
                    print(f"round {rnd} {label}: produce {produce:.0f} MB/s, consume {consume:.0f} MB/s "
                          f"({RECORDS} x 1 KiB = {RECORDS * 1024 / 1e6:.0f} MB written)", flush=True)
        finally:
            for c in clusters.values():
                c.stop()
    for what in ("produce", "consume"):
        med = {b: statistics.median(results[b][what]) for b in builds}
        print(f"{what}: median before {med['before']:.0f} MB/s, after {med['after']:.0f} MB/s, "
              f"after / before = {med['after'] / med['before']:.2f}", flush=True)


if __name__ == "__main__":
    main()
