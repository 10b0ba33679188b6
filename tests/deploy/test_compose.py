"""The three-node compose cluster from the host, as users meet it: topics spread over the
brokers, a chaos workload through kill / pause / network loss / full restart that loses and
duplicates nothing, and data that survives `down` + `up`."""

import os
import tempfile
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from conftest import ROOT, BOOTSTRAP, PROJECT, compose, container, docker, healthy, strom, up_with_retries, wait_until


def describe(topic):
    """{partition: (leader, replicas, isr)} from `strom topics --describe`."""
    out = {}
    for line in strom("topics", "--bootstrap-server", BOOTSTRAP, "--describe", "--topic", topic).splitlines():
        f = dict(x.split(": ", 1) for x in line.strip().split("\t") if ": " in x)
        if "Partition" in f:
            out[int(f["Partition"])] = (int(f["Leader"]) if f["Leader"] != "none" else -1,
                                        f["Replicas"].split(","), sorted(f["Isr"].split(",")) if f["Isr"] else [])
    return out


def full_isr(topic):
    d = describe(topic)
    return d and all(leader >= 0 and sorted(r) == isr for leader, r, isr in d.values())


def busiest_leader(topic):
    counts = {}
    for leader, _, _ in describe(topic).values():
        counts[leader] = counts.get(leader, 0) + 1
    return max(counts, key=counts.get)


def consume_everything(topic, partitions, expected, timeout=120):
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"check-{time.time()}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = []

    def done():
        for m in c.consume(1000, timeout=0.5):
            if m.error() is None:
                seen.append((m.partition(), m.offset(), m.value()))
            elif m.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(m.error())
        return len(seen) >= expected
    try:
        wait_until(f"{expected} records of {topic}", done, timeout=timeout)
    finally:
        c.close()
    return seen


def test_topics_spread_over_the_three_brokers(cluster):
    out = strom("topics", "--bootstrap-server", "localhost:19092", "--create", "--topic", "spread",
                "--partitions", "6", "--replication-factor", "3")
    assert out.strip() == "Created topic spread."
    wait_until("a full ISR", lambda: full_isr("spread"), timeout=60)
    d = describe("spread")
    assert sorted({leader for leader, _, _ in d.values()}) == [1, 2, 3]
    assert all(sorted(r) == ["1", "2", "3"] for _, r, _ in d.values())


def test_monitoring_profile_scrapes_every_node(cluster):
    """`--profile monitoring` adds Prometheus (image built from the host's Debian package):
    its API on localhost:9090 reports all three nodes' /metrics up and their series."""
    import shutil
    import subprocess
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed on the host (apt-get install prometheus)")
    subprocess.run(["bash", os.path.join(ROOT, "deploy", "build-prometheus-image.sh")], check=True,
                   capture_output=True, timeout=300)
    compose("--profile", "monitoring", "up", "-d", "prometheus")
    try:
        check_prometheus()
    finally:
        # The later tests restart the cluster without the profile.
        compose("--profile", "monitoring", "rm", "-s", "-f", "prometheus", check=False)


def check_prometheus():
    import json
    import urllib.parse
    import urllib.request

    def query(q):
        url = "http://localhost:9090/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)["data"]["result"]
        except OSError:
            return []

    def all_up():
        ups = query('up{job="strom"}')
        return len(ups) == 3 and all(float(u["value"][1]) == 1 for u in ups)
    wait_until("Prometheus to scrape all three nodes", all_up, timeout=90, interval=1)
    active = query("sum(kafka_controller_kafkacontroller_activecontrollercount)")
    assert active and float(active[0]["value"][1]) == 1


def test_chaos_through_compose_loses_and_duplicates_nothing(cluster):
    topic = "chaos"
    strom("topics", "--bootstrap-server", BOOTSTRAP, "--create", "--topic", topic, "--partitions", "6",
          "--replication-factor", "3")
    wait_until("a full ISR", lambda: full_isr(topic), timeout=60)
    acked, errors, stop = {}, [], threading.Event()

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            errors.append(err)

    conf = {"bootstrap.servers": BOOTSTRAP, "acks": "all", "enable.idempotence": True,
            "linger.ms": 5, "message.timeout.ms": 120000}
    # librdkafka's idempotence decisions (epoch bumps, sequence errors, drains), kept to judge
    # any duplicate below (and in STROM_CLIENT_DEBUG_LOG, if set, for reading afterwards).
    import logging
    debug_log = os.environ.get("STROM_CLIENT_DEBUG_LOG") or os.path.join(tempfile.mkdtemp(), "librdkafka.log")
    logger = logging.getLogger("librdkafka-chaos")
    handler = logging.FileHandler(debug_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    conf.update({"debug": "eos", "logger": logger})
    fatal = []

    def produce():
        p = Producer(conf)
        i = 0
        while not stop.is_set():
            try:
                p.produce(topic, key=f"k{i % 50}".encode(), value=f"v{i}".encode(), on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            except KafkaException as e:
                # librdkafka's fatal idempotence error (it happens against Kafka too after
                # outages): an application makes a new producer; so do we, and report it.
                if not (e.args[0].fatal() or e.args[0].code() == KafkaError._FATAL):
                    raise
                fatal.append(e.args[0].str())
                p.flush(30)
                p = Producer(conf)
                continue
            p.poll(0.001 if i % 20 else 0.01)
        p.flush(180)

    t = threading.Thread(target=produce)
    t.start()
    try:
        def progress(n):
            start = len(acked)
            wait_until(f"{n} more acknowledged records", lambda: len(acked) >= start + n, timeout=120)

        progress(500)
        # 1. kill the busiest leader's container, then start it again.
        victim = busiest_leader(topic)
        compose("kill", f"strom-{victim}")
        progress(500)
        compose("start", f"strom-{victim}")
        wait_until("a full ISR after the kill", lambda: full_isr(topic), timeout=120)

        # 2. pause a leader past the session timeout, then unpause it.
        victim = busiest_leader(topic)
        compose("pause", f"strom-{victim}")
        wait_until("the paused leader to lose its leaderships", lambda: victim not in {l for l, _, _ in describe(topic).values()}, timeout=60)
        progress(500)
        compose("unpause", f"strom-{victim}")
        wait_until("a full ISR after the pause", lambda: full_isr(topic), timeout=120)

        # 3. cut a leader off the compose network, then reconnect it.
        victim = busiest_leader(topic)
        net = f"{PROJECT}_strom"
        docker("network", "disconnect", net, container(f"strom-{victim}"))
        wait_until("the cut-off leader to lose its leaderships", lambda: victim not in {l for l, _, _ in describe(topic).values()}, timeout=60)
        progress(500)
        docker("network", "connect", "--alias", f"strom-{victim}", net, container(f"strom-{victim}"))
        wait_until("a full ISR after the reconnect", lambda: full_isr(topic), timeout=120)

        # 4. restart the whole cluster.
        compose("restart")
        wait_until("the cluster healthy after a restart", healthy, timeout=120, interval=0.5)
        progress(500)
    finally:
        stop.set()
        t.join(240)
    assert not t.is_alive()
    # Outstanding messages of a producer that went fatal fail with that fatal error; any other
    # delivery error is a failure.
    after_fatal = {KafkaError._FATAL, KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT} if fatal else set()
    other = [e for e in errors if not (e.fatal() or e.code() in after_fatal)]
    assert not other, other[:5]
    if fatal:
        print(f"producer fatal errors (replaced): {fatal}")
    wait_until("a full ISR at the end", lambda: full_isr(topic), timeout=120)
    seen = consume_everything(topic, 6, len(acked))
    values = [v for _, _, v in seen]
    lost = [v for v in acked if v not in set(values)]
    dups = len(values) - len(set(values))
    # The replicas' logs agree byte for byte.
    partition_logs = {}
    with tempfile.TemporaryDirectory() as d:
        for p in range(6):
            logs = set()
            for n in (1, 2, 3):
                dst = os.path.join(d, f"n{n}-p{p}")
                docker("cp", f"{container(f'strom-{n}')}:/var/lib/strom/{topic}-{p}", dst)
                logs.add(b"".join(open(os.path.join(dst, f), "rb").read() for f in sorted(os.listdir(dst)) if f.endswith(".log")))
            assert len(logs) == 1, f"replicas of {topic}-{p} differ"
            partition_logs[p] = logs.pop()
    # No duplicates at all. For reading a failure: a duplicate whose copies carry one producer
    # id and epoch is one the broker should have refused; copies under different epochs come
    # from librdkafka bumping its epoch (librdkafka #4953), which the broker must not provoke
    # (see producer_state.rs); librdkafka's own log says why it bumped.
    where = {}
    for p, o, v in seen:
        where.setdefault(v, []).append((p, o))
    copies = []
    for v, ps in where.items():
        if len(ps) > 1:
            producers = sorted({producer_of(partition_logs[p], o) for p, o in ps})
            copies.append((v, ps, producers, acked.get(v)))
    handler.close()
    logger.removeHandler(handler)
    with open(debug_log, errors="replace") as f:
        bumps = [line.strip() for line in f if "epoch bump" in line or "ERRSEQ" in line]
    print(f"chaos: acknowledged={len(acked)} lost={len(lost)} duplicated={dups}; librdkafka epoch bumps: {len(bumps)}")
    assert not lost, f"{len(lost)} acknowledged records lost"
    assert not dups, (f"{dups} records written twice; (value, positions, (producer id, epoch), acknowledged at): "
                      f"{copies[:10]}; librdkafka: {bumps[:4]}")
    # Every record is where its acknowledgement said.
    at = {v: (p, o) for p, o, v in seen}
    assert all(at[v] == po for v, po in acked.items())


def producer_of(log, offset):
    """(producer id, producer epoch) of the record batch holding `offset` in a partition's
    concatenated segments (RecordBatch v2 header: base offset at 0, length at 8, producer id
    at 43, epoch at 51, last offset delta at 23)."""
    import struct
    pos = 0
    while pos + 61 <= len(log):
        base, length = struct.unpack_from(">qi", log, pos)
        (last_delta,) = struct.unpack_from(">i", log, pos + 23)
        if base <= offset <= base + last_delta:
            pid, epoch = struct.unpack_from(">qh", log, pos + 43)
            return pid, epoch
        pos += 12 + length
    raise AssertionError(f"offset {offset} is in no batch")


def test_data_survives_down_and_up(cluster):
    topic = "durable"
    strom("topics", "--bootstrap-server", BOOTSTRAP, "--create", "--topic", topic, "--partitions", "3",
          "--replication-factor", "3")
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    for i in range(1000):
        p.produce(topic, value=f"d{i}".encode())
    assert p.flush(60) == 0
    compose("down")
    up_with_retries()
    wait_until("the cluster healthy after down and up", healthy, timeout=120, interval=0.5)
    values = {v for _, _, v in consume_everything(topic, 3, 1000)}
    assert values == {f"d{i}".encode() for i in range(1000)}
