"""Replicated throughput and latency (issue: replication benchmarks; DESIGN.md §5), side by side
in one run with `strom perf produce`, 1 KiB records, three partitions:

1. one node, RF=1, acks=1, as fast as it goes, then at half that rate with client-sized
   requests (16 KiB), for the latency percentiles a user sees at moderate load;
2. three local nodes, RF=3, min ISR 2, acks=all, as fast as it goes;
3. the same three nodes at half of (2)'s rate with 16 KiB requests.

    STROM_BIN=target/release/strom python benches/replicated.py [records]
"""

import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
from strom_cluster import STROM, Cluster  # noqa: E402


def perf(bootstrap, topic, records, acks, extra=()):
    out = subprocess.run([STROM, "perf", "produce", "--bootstrap-server", bootstrap, "--topic", topic,
                          "--num-records", str(records), "--record-size", "1024", "--acks", acks, *extra],
                         check=True, capture_output=True, text=True).stdout.strip()
    rate = float(re.search(r"([\d.]+) records/sec", out).group(1))
    return out, rate


def topic(c, name, rf, min_isr):
    subprocess.run([STROM, "topics", "--bootstrap-server", c.bootstrap, "--create", "--topic", name,
                    "--partitions", "3", "--replication-factor", str(rf),
                    "--config", f"min.insync.replicas={min_isr}"], check=True, capture_output=True)
    c.wait_full_isr(name)


def main():
    records = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        one = Cluster(os.path.join(d, "one"), 1).start()
        try:
            topic(one, "rf1", 1, 1)
            single, single_peak = perf(one.bootstrap, "rf1", records, "1")
            topic(one, "rf1-half", 1, 1)
            single_half, _ = perf(one.bootstrap, "rf1-half", records // 2, "1",
                                  ["--throughput", str(single_peak / 2), "--batch-size", "16384"])
        finally:
            one.stop()
        three = Cluster(os.path.join(d, "three"), 3).start()
        try:
            topic(three, "rf3", 3, 2)
            replicated, peak = perf(three.bootstrap, "rf3", records, "all")
            topic(three, "rf3-half", 3, 2)
            half, _ = perf(three.bootstrap, "rf3-half", records // 2, "all",
                           ["--throughput", str(peak / 2), "--batch-size", "16384"])
        finally:
            three.stop()
    print(f"1 node, RF=1, acks=1:          {single}")
    print(f"1 node, RF=1, acks=1, 50%:     {single_half}")
    print(f"3 nodes, RF=3, acks=all:       {replicated}")
    print(f"3 nodes, RF=3, acks=all, 50%:  {half}")


if __name__ == "__main__":
    main()
