"""Partition open time (issue #21's benchmark): one partition holding SIZE_GB GiB written by an
idempotent producer (`rdkafka_performance -P` with enable.idempotence), then the node is
restarted and the time from its start until /readyz answers 200 is measured (readiness needs
every partition open, its producer state rebuilt). Three restarts: after a clean stop
(SIGTERM), after a SIGKILL, and after a clean stop with the page cache dropped
(/proc/sys/vm/drop_caches, when writable), each with the same data.

With STROM_BIN_BEFORE set to another build, that build opens the same data first, in the
same run: the data directory is written once, by the build under test, and both builds read
it (a build without producer snapshots ignores the snapshot files).

    cargo build --release -p strom && bash benches/build-rdkafka-performance.sh
    STROM_BIN=target/release/strom [STROM_BIN_BEFORE=/path/to/old/strom] \\
        tests/.venv/bin/python benches/open_time.py      (SIZE_GB=10)
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
import strom_cluster  # noqa: E402
from strom_cluster import Cluster  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_tool import TOOL  # noqa: E402

SIZE_GB = float(os.environ.get("SIZE_GB", "10"))
RECORD = 1024


def ready(node):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/readyz", timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def drop_caches():
    try:
        subprocess.run(["sync"])
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def time_to_ready(node, binary):
    strom_cluster.STROM = binary
    started = time.monotonic()
    node.start()
    while not ready(node):
        if not node.is_running():
            raise SystemExit(f"node exited: {node.log_tail(20)}")
        time.sleep(0.01)
    return time.monotonic() - started


def stop(node, how):
    if how == "kill":
        node.kill()
    else:
        node.proc.send_signal(signal.SIGTERM)
        node.proc.wait(timeout=120)


def main():
    if not os.path.exists(TOOL):
        raise SystemExit("run: bash benches/build-rdkafka-performance.sh")
    after = strom_cluster.STROM
    builds = ([("before", os.environ["STROM_BIN_BEFORE"])] if os.environ.get("STROM_BIN_BEFORE") else []) + [
        ("after", after)]
    records = int(SIZE_GB * (1 << 30) / RECORD)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        c = Cluster(d, 1).start()
        node = c.node(1)
        try:
            subprocess.run([after, "topics", "--bootstrap-server", c.bootstrap, "--create", "--topic", "open",
                            "--partitions", "1", "--replication-factor", "1"], check=True, capture_output=True)
            subprocess.run(["sync"])
            t0 = time.monotonic()
            subprocess.run([TOOL, "-P", "-b", c.bootstrap, "-t", "open", "-p", "0", "-s", str(RECORD), "-c",
                            str(records), "-X", "enable.idempotence=true", "-X", "linger.ms=5",
                            "-X", "batch.size=1000000"], check=True, capture_output=True, timeout=3600)
            print(f"wrote {records} x {RECORD} B = {records * RECORD / (1 << 30):.1f} GiB idempotently in "
                  f"{time.monotonic() - t0:.0f} s", flush=True)
            for how in ("term", "kill", "term-cold"):
                for label, binary in builds:
                    stop(node, "kill" if how == "kill" else "term")
                    if how == "kill":
                        # The kill must find a running node of this build, as it would in life.
                        time_to_ready(node, binary)
                        stop(node, "kill")
                    cold = how == "term-cold" and drop_caches()
                    secs = time_to_ready(node, binary)
                    print(f"{label}: after {how}{' (page cache dropped)' if cold else ''}: ready in {secs:.2f} s",
                          flush=True)
        finally:
            c.stop()


if __name__ == "__main__":
    main()
