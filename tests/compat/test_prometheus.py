"""A real Prometheus server (Debian's `prometheus`, installed by .ci/run) scrapes a node on
loopback, and its HTTP API answers queries over what Strom exported: the scrape target is up
and the counters it stored moved by what was produced."""

import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port, wait_until

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)")


def query(port, q):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_a_node(node):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic("scraped", 1, 1)])["scraped"].result(10)
    with tempfile.TemporaryDirectory(prefix="prometheus-") as d:
        config = os.path.join(d, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n"
                    "scrape_configs:\n  - job_name: strom\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{node.metrics_port}']\n")
        port = free_port()
        log = open(os.path.join(d, "prometheus.log"), "wb")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={d}/data",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            def up():
                try:
                    return [float(r["value"][1]) for r in query(port, 'up{job="strom"}')] == [1.0]
                except OSError:
                    return False
            wait_until("Prometheus to scrape the node (up == 1)", up, timeout=30, interval=0.2)

            p = Producer({"bootstrap.servers": node.bootstrap, "linger.ms": 5})
            for _ in range(1000):
                p.produce("scraped", value=b"m" * 10)
            assert p.flush(30) == 0
            series = 'kafka_server_brokertopicmetrics_messagesin_total{topic="scraped"}'

            def stored():
                r = query(port, series)
                return r and float(r[0]["value"][1]) == 1000
            wait_until("Prometheus to store 1000 messages in for the topic", stored, timeout=30, interval=0.2)
            leaders = query(port, "kafka_server_replicamanager_leadercount")
            assert leaders and float(leaders[0]["value"][1]) >= 1
        finally:
            prom.terminate()
            prom.wait(10)
