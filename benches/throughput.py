"""Single-node throughput and footprint, side by side with the machine's own limits in the
same run (DESIGN.md §5):

- page cache: dd writing and reading a 2 GiB file; loopback: one TCP stream of 1 MiB sends;
- `strom perf produce` (500k × 1 KiB, acks=1, 1 MB requests) and `strom perf consume`;
- librdkafka's `rdkafka_performance` with DESIGN.md §5's reference settings (500k × 1 KiB,
  one partition, acks=1, linger.ms=5, batch.size=1000000), produce then consume, when
  `benches/build-rdkafka-performance.sh` has built it;
- start to serving, resident memory idle and after the run.

    STROM_BIN=target/release/strom python benches/throughput.py
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
from strom_cluster import STROM, Cluster, wait_until  # noqa: E402

MB = 1024 * 1024
RDKAFKA_PERFORMANCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "rdkafka-perf",
                                   "rdkafka_performance")


def rdkafka_performance(bootstrap, mode_args):
    """Runs the tool; returns its summary lines (those starting with '%' and naming msgs/s)."""
    r = subprocess.run([RDKAFKA_PERFORMANCE, *mode_args, "-b", bootstrap, "-t", "rdperf", "-p", "0",
                        "-c", "500000"], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "msgs/s" in ln or "MB/s" in ln]
    return lines[-1].strip() if lines else f"(no summary; exit {r.returncode}: {r.stderr[-300:]})"


def dd(args):
    r = subprocess.run(["dd", *args], capture_output=True, text=True)
    m = re.search(r"([\d.,]+) ([GM])B/s", r.stderr)
    v = float(m.group(1).replace(",", "."))
    return v * 1000 if m.group(2) == "G" else v


def loopback_mb_s(total=4096 * MB):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = [0]

    def sink():
        conn, _ = srv.accept()
        while True:
            b = conn.recv(4 * MB)
            if not b:
                break
            got[0] += len(b)
    t = threading.Thread(target=sink)
    t.start()
    c = socket.create_connection(("127.0.0.1", port))
    buf = b"\0" * MB
    start = time.monotonic()
    for _ in range(total // MB):
        c.sendall(buf)
    c.close()
    t.join()
    return got[0] / MB / (time.monotonic() - start)


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        f = os.path.join(d, "dd.bin")
        dd_write = dd(["if=/dev/zero", f"of={f}", "bs=1M", "count=2048"])
        dd_read = dd([f"if={f}", "of=/dev/null", "bs=1M"])
        os.remove(f)
        loop = loopback_mb_s()
        c = Cluster(d, 1)
        n = c.node(1)
        started = time.monotonic()
        n.start()
        wait_until("serving", lambda: len(c.metadata(timeout=1).brokers) == 1, timeout=30, interval=0.005)
        start_s = time.monotonic() - started
        try:
            idle = rss_mb(n.proc.pid)
            bs = ["--bootstrap-server", n.bootstrap]
            subprocess.run([STROM, "topics", *bs, "--create", "--topic", "perf", "--partitions", "1"], check=True, capture_output=True)
            prod = subprocess.run([STROM, "perf", "produce", *bs, "--topic", "perf", "--num-records", "500000",
                                   "--record-size", "1024", "--acks", "1", "--batch-size", "1000000"],
                                  check=True, capture_output=True, text=True).stdout.strip()
            cons = subprocess.run([STROM, "perf", "consume", *bs, "--topic", "perf", "--messages", "500000"],
                                  check=True, capture_output=True, text=True).stdout.strip()
            rd_prod = rd_cons = None
            if os.path.exists(RDKAFKA_PERFORMANCE):
                subprocess.run([STROM, "topics", *bs, "--create", "--topic", "rdperf", "--partitions", "1"],
                               check=True, capture_output=True)
                rd_prod = rdkafka_performance(n.bootstrap, ["-P", "-s", "1024", "-a", "1", "-X", "linger.ms=5",
                                                            "-X", "batch.size=1000000"])
                rd_cons = rdkafka_performance(n.bootstrap, ["-C", "-o", "beginning"])
            after = rss_mb(n.proc.pid)
        finally:
            c.stop()
    print(f"page cache dd: write {dd_write:.0f} MB/s, read {dd_read:.0f} MB/s")
    print(f"loopback TCP, one stream: {loop:.0f} MiB/s")
    print(f"strom perf produce: {prod}")
    print(f"strom perf consume: {cons}")
    if rd_prod is not None:
        print(f"rdkafka_performance produce: {rd_prod}")
        print(f"rdkafka_performance consume: {rd_cons}")
    print(f"start to serving: {start_s * 1000:.0f} ms; RSS idle {idle:.0f} MiB, after the run {after:.0f} MiB")


if __name__ == "__main__":
    main()
