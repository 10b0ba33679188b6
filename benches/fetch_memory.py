"""Fetch memory and consume cost (issue #21's benchmark): six consumers that ask for 1 GB per
response and per partition read one 400 MB partition at once, and the broker's resident
memory is sampled throughout (/proc/<pid>/status, every 20 ms; VmHWM at the end). Beside it:
the consume rate of one `rdkafka_performance -C` reading the same partition alone, and the
broker's CPU seconds per GB served (/proc/<pid>/stat) in both.

With STROM_BIN_BEFORE set to another build, the same steps run against it first, in the
same run (each on a fresh node), so the two can be compared side by side.

    cargo build --release -p strom && bash benches/build-rdkafka-performance.sh
    STROM_BIN=target/release/strom [STROM_BIN_BEFORE=/path/to/old/strom] \\
        tests/.venv/bin/python benches/fetch_memory.py
    (RECORDS=400000 × 1 KiB; CONSUMERS=6)
"""

import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
import strom_cluster  # noqa: E402
from strom_cluster import Cluster  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_tool import TOOL, cpu_seconds, mb_per_s, run, status_kib  # noqa: E402

RECORDS = int(os.environ.get("RECORDS", "400000"))
CONSUMERS = int(os.environ.get("CONSUMERS", "6"))
ONE_GB = 1_000_000_000
BIG_FETCH = ["-X", f"fetch.max.bytes={ONE_GB}", "-X", f"max.partition.fetch.bytes={ONE_GB}",
             "-X", f"receive.message.max.bytes={ONE_GB + 512}"]


def consume_cmd(bootstrap, topic, extra=()):
    return [TOOL, "-C", "-b", bootstrap, "-t", topic, "-p", "0", "-o", "beginning", "-c", str(RECORDS), *extra]


def measure(binary):
    strom_cluster.STROM = binary
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        c = Cluster(d, 1).start()
        try:
            pid = c.node(1).proc.pid
            topic = "fetch-memory"
            subprocess.run([binary, "topics", "--bootstrap-server", c.bootstrap, "--create", "--topic", topic,
                            "--partitions", "1", "--replication-factor", "1"], check=True, capture_output=True)
            subprocess.run(["sync"])
            subprocess.run([TOOL, "-P", "-b", c.bootstrap, "-t", topic, "-p", "0", "-s", "1024", "-c", str(RECORDS),
                            "-a", "1", "-X", "linger.ms=5", "-X", "batch.size=1000000"],
                           check=True, capture_output=True, timeout=600)
            gb = RECORDS * 1024 / 1e9
            # One consumer alone, default fetch settings: the consume rate and its CPU cost.
            cpu0 = cpu_seconds(pid)
            alone = (mb_per_s(run(consume_cmd(c.bootstrap, topic)[1:])), (cpu_seconds(pid) - cpu0) / gb)
            # Six at once, each asking for 1 GB responses.
            idle = status_kib(pid, "VmRSS")
            peak = [idle]
            done = threading.Event()

            def sample():
                while not done.is_set():
                    peak[0] = max(peak[0], status_kib(pid, "VmRSS"))
                    time.sleep(0.02)
            sampler = threading.Thread(target=sample)
            sampler.start()
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            procs = [subprocess.Popen(consume_cmd(c.bootstrap, topic, BIG_FETCH), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for _ in range(CONSUMERS)]
            outs = [p.communicate(timeout=900)[0] for p in procs]
            wall = time.monotonic() - t0
            done.set()
            sampler.join()
            together = (CONSUMERS * RECORDS * 1024 / 1e6 / wall, (cpu_seconds(pid) - cpu0) / (gb * CONSUMERS))
            failed = [o[-300:] for p, o in zip(procs, outs) if p.returncode != 0]
            if failed:
                raise SystemExit(f"a consumer failed: {failed[0]}")
            return {"alone": alone, "together": together, "idle_mib": idle / 1024, "peak_mib": peak[0] / 1024,
                    "hwm_mib": status_kib(pid, "VmHWM") / 1024}
        finally:
            c.stop()


def main():
    if not os.path.exists(TOOL):
        raise SystemExit("run: bash benches/build-rdkafka-performance.sh")
    runs = []
    if os.environ.get("STROM_BIN_BEFORE"):
        runs.append(("before", os.environ["STROM_BIN_BEFORE"]))
    runs.append(("after", strom_cluster.STROM))
    print(f"{RECORDS} × 1 KiB = {RECORDS * 1024 / 1e6:.0f} MB in one partition; {CONSUMERS} consumers with "
          f"fetch.max.bytes = max.partition.fetch.bytes = 1 GB", flush=True)
    for label, binary in runs:
        m = measure(binary)
        print(f"{label} ({binary}): one consumer {m['alone'][0]:.0f} MB/s, broker {m['alone'][1]:.2f} CPU s/GB; "
              f"{CONSUMERS} consumers {m['together'][0]:.0f} MB/s in all, broker {m['together'][1]:.2f} CPU s/GB; "
              f"broker RSS idle {m['idle_mib']:.0f} MiB, peak {m['peak_mib']:.0f} MiB sampled, "
              f"VmHWM {m['hwm_mib']:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
