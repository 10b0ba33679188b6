"""A slow disk (issue #21): node 2 runs with the failpoint `fsync=sleep(500)`, so every fsync
and fdatasync it makes (segments, indexes, its Raft log, snapshots) takes half a second more,
and a topic with `flush.messages=1` makes every append fsync: its disk is saturated for the
whole load. Appends and reads run off the async workers and the controller and the broker's
heartbeats on their own runtime, so no broker misses its session (2 s) and no controller
election happens, while produce requests to node 2 do wait on its disk.

The heartbeat round trip under that load is measured on node 2 (the slow one) from its
`strom_broker_heartbeat_seconds` histogram and printed; the assertion bounds its p99 well
under the session timeout.

Needs the test build (tests/run.sh builds `strom` with the `failpoints` feature)."""

import os
import sys
import threading
import time
import urllib.request
import uuid

from confluent_kafka import Producer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from strom_cluster import wait_until  # noqa: E402

LOAD_SECONDS = 20
FSYNC_DELAY_MS = 500


def scrape(node):
    with urllib.request.urlopen(f"http://{node.host}:{node.metrics_port}/metrics", timeout=5) as r:
        return list(text_string_to_metric_families(r.read().decode()))


def sample(families, name, labels=None):
    for fam in families:
        for s in fam.samples:
            if s.name == name and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())):
                return s.value
    return None


def buckets(families, name, labels=None):
    """[(upper bound, cumulative count)] of a histogram, in order."""
    out = []
    for fam in families:
        for s in fam.samples:
            if s.name == name + "_bucket" and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())):
                out.append((float(s.labels["le"]), s.value))
    return sorted(out)


def quantile_bound(bs, q):
    """The upper bound of the bucket holding quantile q."""
    total = bs[-1][1]
    for le, count in bs:
        if count >= q * total:
            return le
    return float("inf")


def test_a_slow_disk_fences_no_broker_and_elects_no_controller(cluster_factory):
    c = cluster_factory(3, start=False)
    slow = c.node(2)
    slow.env = {"FAILPOINTS": f"fsync=sleep({FSYNC_DELAY_MS})"}
    c.start()
    assert "failpoint configured" in slow.log_tail(200), (
        "node 2 ignored FAILPOINTS: the strom binary was built without the `failpoints` feature "
        "(tests/run.sh builds it with)")
    topic = "slow-" + uuid.uuid4().hex[:8]
    c.create_topic(topic, partitions=3, rf=3, config={"flush.messages": "1", "min.insync.replicas": "2"})
    c.wait_full_isr(topic)

    terms_before = {n.node_id: sample(scrape(n), "kafka_server_raftmetrics_current_epoch") for n in c.nodes.values()}
    hb_before = buckets(scrape(slow), "strom_broker_heartbeat_seconds")
    for n in c.nodes.values():
        n.mark("slow-disk load starts")

    acked, errors = [0], []
    stop = threading.Event()

    def load():
        # A bounded queue: the producer waits for the slow partitions (BufferError) rather
        # than queueing more than they can take before the messages time out.
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 2,
                      "queue.buffering.max.messages": 20000, "message.timeout.ms": 300000})

        def on_delivery(err, _msg):
            if err is None:
                acked[0] += 1
            else:
                errors.append(err)
        payload = os.urandom(1000)
        while not stop.is_set():
            try:
                p.produce(topic, value=payload, on_delivery=on_delivery)
            except BufferError:
                p.poll(0.05)
            p.poll(0)
        p.flush(120)

    t = threading.Thread(target=load)
    t.start()
    deadline = time.monotonic() + LOAD_SECONDS
    wait_until("the load to run", lambda: time.monotonic() >= deadline or not t.is_alive(),
               timeout=LOAD_SECONDS + 10, interval=0.5)
    stop.set()
    t.join(150)
    assert not t.is_alive(), "the producer did not finish"

    # The disk was slow: produce requests to node 2 waited on its fsyncs.
    fam = scrape(slow)
    produce = buckets(fam, "kafka_network_requestmetrics_totaltime_seconds", {"request": "Produce"})
    slow_produces = produce[-1][1] - dict(produce).get(0.4096, 0)
    assert slow_produces > 0, f"no produce on node 2 took over 0.4 s: the failpoint did nothing ({produce})"
    assert acked[0] > 0 and not errors, (acked[0], errors[:5])

    # Nothing fenced, nobody elected.
    for n in c.nodes.values():
        log = n.log_tail(2000)
        since = log[log.rfind("slow-disk load starts"):]
        assert "broker fenced" not in since, f"node {n.node_id} fenced a broker:\n{since[-3000:]}"
        assert "fenced=true" not in since, f"node {n.node_id}'s broker was fenced:\n{since[-3000:]}"
        assert "now the active controller" not in since, f"node {n.node_id} was elected:\n{since[-3000:]}"
    terms_after = {n.node_id: sample(scrape(n), "kafka_server_raftmetrics_current_epoch") for n in c.nodes.values()}
    assert terms_after == terms_before, (terms_before, terms_after)

    # Heartbeat round trips of the slow node during the load.
    hb_after = buckets(fam, "strom_broker_heartbeat_seconds")
    during = [(le, after - dict(hb_before).get(le, 0)) for le, after in hb_after]
    p99 = quantile_bound(during, 0.99)
    print(f"slow disk: {acked[0]} records acknowledged in {LOAD_SECONDS} s; node 2 heartbeats: "
          f"{int(during[-1][1])}, p99 <= {p99 * 1000:.1f} ms; produce requests over 0.4 s on node 2: "
          f"{int(slow_produces)}")
    assert during[-1][1] >= LOAD_SECONDS, f"too few heartbeats during the load: {during}"
    assert p99 <= 0.4096, f"heartbeat p99 {p99} s under a slow disk: {during}"


def test_slow_disks_on_every_voter_elect_once_with_a_long_enough_election_timeout(cluster_factory):
    """Every node's fsync takes 500 ms, so the active controller's own metadata appends are
    slow too (openraft 0.9's core waits for each one's flush: docs/operations.md, "Slow
    disks"). A voter answers a vote only after fsyncing it, and the vote request times out
    after `controller.quorum.election.timeout.ms`: with the default (300 ms) no election can
    succeed here; with 3 s one does, and metadata writes through the slow leader (a topic
    created, acks=all writes) cause no further election."""
    c = cluster_factory(3, extra=["controller.quorum.election.timeout.ms=3000"], start=False)
    for n in c.nodes.values():
        n.env = {"FAILPOINTS": f"fsync=sleep({FSYNC_DELAY_MS})"}
    c.start(timeout=120)
    terms = {n.node_id: sample(scrape(n), "kafka_server_raftmetrics_current_epoch") for n in c.nodes.values()}
    topic = "slow-all-" + uuid.uuid4().hex[:8]
    c.create_topic(topic, partitions=1, rf=3, config={"min.insync.replicas": "2"}, timeout=120)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "message.timeout.ms": 120000})
    for i in range(20):
        p.produce(topic, value=b"%d" % i)
    assert p.flush(120) == 0
    after = {n.node_id: sample(scrape(n), "kafka_server_raftmetrics_current_epoch") for n in c.nodes.values()}
    assert after == terms, f"an election during metadata writes on slow disks: {terms} -> {after}"
    elected = sum(n.log_tail(100000).count("now the active controller") for n in c.nodes.values())
    assert elected == 1, f"{elected} elections"
