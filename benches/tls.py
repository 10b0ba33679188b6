"""TLS beside plain TCP on one node, in one run (issue #20's benchmark): librdkafka's
`rdkafka_performance` (built with OpenSSL) produces and consumes RECORDS × 1 KiB records over a
PLAINTEXT listener and over an SSL listener of the same node, ROUNDS times alternately, and
`openssl s_time` measures new TLS connections per second (full handshakes, TLSv1.3, ECDSA P-256).

Each round writes a fresh topic and deletes it afterwards, after one warm-up round of each: on
this VM a produce into page-cache pages the guest has never touched runs at the host's
page-allocation speed (see "Single node" in docs/benchmarks.md), which would make whichever
listener runs first look faster. Beside MB/s it reports the CPU seconds the broker
(/proc/<pid>/stat) and the client (its rusage) spent on each run, which says which end is the
limit.

    cargo build --release -p strom && bash benches/build-rdkafka-performance.sh --ssl
    STROM_BIN=target/release/strom tests/.venv/bin/python benches/tls.py
    (CIPHER=TLS_AES_128_GCM_SHA256 to serve one suite only; ROUNDS=3, RECORDS=300000)
"""

import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
from certs import make_certs  # noqa: E402
from strom_cluster import STROM, Cluster, free_port  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_tool import TOOL_SSL as TOOL, cpu_seconds, delete_topic  # noqa: E402

RECORDS = int(os.environ.get("RECORDS", "300000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def perf(args, extra, broker_pid):
    """One rdkafka_performance run: (MB/s, broker CPU s, client CPU s)."""
    before_child = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_broker = cpu_seconds(broker_pid)
    r = subprocess.run([TOOL, *args, *extra, "-s", "1024", "-c", str(RECORDS)], capture_output=True, text=True,
                       timeout=900)
    broker = cpu_seconds(broker_pid) - before_broker
    after_child = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after_child.ru_utime + after_child.ru_stime) - (before_child.ru_utime + before_child.ru_stime)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "MB/s" in ln]
    if not lines:
        raise SystemExit(f"rdkafka_performance: no summary (exit {r.returncode}): {r.stderr[-800:]}")
    m = re.search(r"([\d.]+) MB/s", lines[-1])
    return float(m.group(1)), broker, client


def main():
    if not os.path.exists(TOOL):
        raise SystemExit("run: bash benches/build-rdkafka-performance.sh --ssl")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        certs = make_certs(os.path.join(d, "certs"))
        tls_port = free_port()
        c = Cluster(d, 1, per_node=lambda n: [
            f"listeners=PLAINTEXT://127.0.0.1:{n.kafka_port},SSL://127.0.0.1:{tls_port},"
            f"CONTROLLER://127.0.0.1:{n.controller_port}",
            "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_pem}",
            *([f"ssl.cipher.suites={os.environ['CIPHER']}"] if os.environ.get("CIPHER") else [])]).start()
        try:
            pid = c.node(1).proc.pid
            listeners = {
                "plaintext": ["-b", c.bootstrap],
                "ssl": ["-b", f"127.0.0.1:{tls_port}", "-X", "security.protocol=SSL",
                        "-X", f"ssl.ca.location={certs.ca_pem}"],
            }
            produce_args = ["-p", "0", "-a", "1", "-X", "linger.ms=5", "-X", "batch.size=1000000"]
            results = {name: {"produce": [], "consume": []} for name in listeners}
            for rnd in range(ROUNDS + 1):
                for name, conn in listeners.items():
                    topic = f"bench-{name}-{rnd}"
                    subprocess.run(["sync"])
                    produce = perf(["-P", "-t", topic, *produce_args], conn, pid)
                    consume = perf(["-C", "-t", topic, "-p", "0", "-o", "beginning", "-e"], conn, pid)
                    delete_topic(STROM, c.bootstrap, topic)
                    if rnd == 0:
                        continue  # the warm-up round
                    results[name]["produce"].append(produce)
                    results[name]["consume"].append(consume)
                    print(f"round {rnd} {name}: produce {produce[0]:.0f} MB/s (broker {produce[1]:.2f} s, client "
                          f"{produce[2]:.2f} s CPU), consume {consume[0]:.0f} MB/s (broker {consume[1]:.2f} s, "
                          f"client {consume[2]:.2f} s CPU); {RECORDS} × 1 KiB = {RECORDS * 1024 / 1e6:.0f} MB "
                          f"written", flush=True)
            for what in ("produce", "consume"):
                med = {n: statistics.median(r[0] for r in results[n][what]) for n in listeners}
                print(f"{what}: median PLAINTEXT {med['plaintext']:.0f} MB/s, SSL {med['ssl']:.0f} MB/s, "
                      f"SSL / PLAINTEXT = {med['ssl'] / med['plaintext']:.2f}", flush=True)
            r = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{tls_port}", "-new", "-time", "10",
                                "-CAfile", certs.ca_pem], capture_output=True, text=True, timeout=60)
            m = re.search(r"(\d+) connections in ([\d.]+)s; ([\d.]+) connections/user sec", r.stdout)
            print("handshakes: " + (f"{m.group(1)} new TLS connections in {m.group(2)} s "
                                    f"({float(m.group(1)) / float(m.group(2)):.0f}/s)" if m else r.stdout[-400:]),
                  flush=True)
        finally:
            c.stop()


if __name__ == "__main__":
    main()
