"""The metrics endpoint, read with Prometheus' own text parser: counters move by what was
produced, state gauges match the state, group lag equals the records left unread."""

import urllib.error
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_until


def scrape(node):
    """{(sample name, frozenset(labels)): value}"""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_health_and_readiness(node):
    def status(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/{path}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    assert status("healthz") == 200
    # Ready once the broker is unfenced, which can come a heartbeat after it serves.
    wait_until("/readyz to answer 200", lambda: status("readyz") == 200, timeout=10)


def test_byte_and_message_counters_move_by_what_was_produced(node):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic("metered", 1, 1)])["metered"].result(10)
    wait_until("the partition in the metrics", lambda: value(scrape(node), "kafka_log_log_numlogsegments", topic="metered", partition="0") == 1)
    before = scrape(node)
    p = Producer({"bootstrap.servers": node.bootstrap, "linger.ms": 20})
    for i in range(5000):
        p.produce("metered", value=b"x" * 100)
    assert p.flush(30) == 0
    after = scrape(node)
    d = lambda name, **l: value(after, name, **l) - value(before, name, **l)
    assert d("kafka_server_brokertopicmetrics_messagesin_total", topic="metered") == 5000
    # Bytes in are the stored batch bytes: exactly what the log grew by.
    grown = d("kafka_log_log_size", topic="metered", partition="0")
    assert d("kafka_server_brokertopicmetrics_bytesin_total", topic="metered") == grown
    assert 5000 * 100 <= grown < 5000 * 100 * 1.5
    produces = d("kafka_network_requestmetrics_requests_total", request="Produce")
    assert produces >= 1
    # Every answered request has a queue time and a send time (acks=1: every produce is answered).
    assert d("kafka_network_requestmetrics_requestqueuetime_seconds_count", request="Produce") == produces
    assert d("kafka_network_requestmetrics_responsesendtime_seconds_count", request="Produce") == produces
    queued = d("kafka_network_requestmetrics_requestqueuetime_seconds_sum", request="Produce")
    total = d("kafka_network_requestmetrics_totaltime_seconds_sum", request="Produce")
    assert 0 <= queued <= total
    assert value(after, "kafka_server_replicamanager_leadercount") >= 1
    assert value(after, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    assert value(after, "kafka_controller_kafkacontroller_activecontrollercount") == 1

    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "meter-readers", "enable.auto.commit": False})
    c.assign([TopicPartition("metered", 0, 0)])
    got = []
    wait_until("5000 records", lambda: got.extend(m for m in c.consume(1000, timeout=0.5) if m.error() is None) or len(got) >= 5000)
    c.commit(offsets=[TopicPartition("metered", 0, 1234)], asynchronous=False)
    c.close()
    final = scrape(node)
    assert value(final, "kafka_server_brokertopicmetrics_bytesout_total", topic="metered") >= grown
    # Lag: records the group has not committed.
    assert value(final, "kafka_consumergroup_lag", group="meter-readers", topic="metered", partition="0") == 5000 - 1234


def test_per_partition_series_can_be_switched_off(node_factory):
    n = node_factory(["metrics.per.partition.enable=false"]).start()
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    admin.create_topics([NewTopic("quiet", 3, 1)])["quiet"].result(10)
    wait_until("three partitions counted", lambda: value(scrape(n), "kafka_server_replicamanager_partitioncount") == 3)
    assert not [k for k in scrape(n) if k[0] == "kafka_log_log_size"]


def test_dashboard_queries_name_only_exported_metrics(node):
    """Every metric a panel of deploy/grafana/strom.json queries is one the node exports."""
    import json
    import os
    import re
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    dash = json.load(open(os.path.join(root, "deploy", "grafana", "strom.json")))
    # Some traffic, so that per-topic and per-group families have series.
    p = Producer({"bootstrap.servers": node.bootstrap})
    p.produce("dash", value=b"v")
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "dash", "enable.auto.commit": False})
    c.assign([TopicPartition("dash", 0, 0)])
    wait_until("the record", lambda: any(m.error() is None for m in c.consume(1, timeout=0.5)))
    c.commit(offsets=[TopicPartition("dash", 0, 1)], asynchronous=False)
    c.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    exported = set()
    for fam in text_string_to_metric_families(text):
        exported.add(fam.name)
        exported.update(s.name for s in fam.samples)
    # Families that only exist once something happened: declared in the text even when empty.
    exported.update(re.findall(r"^# TYPE (\S+)", text, re.M))
    functions = {"sum", "by", "rate", "histogram_quantile", "max", "le", "request", "topic", "group", "partition"}
    assert dash["panels"]
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            names = {n for n in re.findall(r"[a-z_][a-z0-9_]*", t["expr"]) if n not in functions and "_" in n}
            names = {n for n in names if not re.fullmatch(r"\d+[smh]", n)}
            base = lambda n: re.sub(r"_(total|bucket|count|sum)$", "", n)
            missing = [n for n in names if n not in exported and base(n) not in exported]
            assert not missing, f"panel {panel['title']!r} queries {missing}, which the node does not export"
    prom = open(os.path.join(root, "deploy", "prometheus.yml")).read()
    assert "strom-1:9464" in prom and "strom-3:9464" in prom
