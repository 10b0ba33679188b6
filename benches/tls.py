"""TLS beside plain TCP on one node, in one run (issue #20's benchmark): librdkafka's
`rdkafka_performance` (built with OpenSSL) produces and consumes 500k × 1 KiB records over a
PLAINTEXT listener and over an SSL listener of the same node, and `openssl s_time` measures
new TLS connections per second (full handshakes, TLSv1.3, ECDSA P-256 key).

    cargo build --release -p strom && bash benches/build-rdkafka-performance.sh --ssl
    STROM_BIN=target/release/strom tests/.venv/bin/python benches/tls.py
    (CIPHER=TLS_AES_128_GCM_SHA256 to serve one suite only)
"""

import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
from certs import make_certs  # noqa: E402
from strom_cluster import Cluster, free_port  # noqa: E402

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "rdkafka-perf-ssl",
                    "rdkafka_performance")
RECORDS = int(os.environ.get("RECORDS", "500000"))


def perf(args, extra):
    """One rdkafka_performance run; its last summary line and the MB/s in it."""
    r = subprocess.run([TOOL, *args, *extra, "-s", "1024", "-c", str(RECORDS)], capture_output=True, text=True,
                       timeout=900)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "MB/s" in ln]
    if not lines:
        raise SystemExit(f"rdkafka_performance: no summary (exit {r.returncode}): {r.stderr[-800:]}")
    m = re.search(r"([\d.]+) MB/s", lines[-1])
    return float(m.group(1)), lines[-1].strip()


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
            plain = ["-b", c.bootstrap]
            tls = ["-b", f"127.0.0.1:{tls_port}", "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={certs.ca_pem}"]
            results = {}
            for name, conn in (("plaintext", plain), ("ssl", tls)):
                topic = f"bench-{name}"
                subprocess.run(["sync"])
                produce = perf(["-P", "-t", topic, "-p", "0", "-a", "1", "-X", "linger.ms=5", "-X",
                                "batch.size=1000000"], conn)
                consume = perf(["-C", "-t", topic, "-p", "0", "-o", "beginning", "-e"], conn)
                results[name] = (produce, consume)
                print(f"{name}: produce {produce[0]:.0f} MB/s, consume {consume[0]:.0f} MB/s "
                      f"({RECORDS} × 1 KiB = {RECORDS * 1024 / 1e6:.0f} MB written)", flush=True)
            for i, what in ((0, "produce"), (1, "consume")):
                ratio = results["ssl"][i][0] / results["plaintext"][i][0]
                print(f"{what}: SSL / PLAINTEXT = {ratio:.2f}", flush=True)
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
