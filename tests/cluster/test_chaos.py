"""Chaos on three nodes (RF=3, min ISR 2) under an acks=all workload of two librdkafka
producers (one idempotent): leader kills, a paused leader, a leader cut off from the other
nodes (each node in its own network namespace; the clients still reach it), two of three
nodes killed, a full-cluster kill, a rolling restart. Expected: nothing acknowledged lost or moved, no
duplicates from the idempotent producer, per-key order kept, replicas byte-identical. A compacted
topic beside it (small segments, an eager cleaner, so kills land during cleanings) must keep the
latest acknowledged value of every key, and its replicas converge per key.
The same workload runs again with every internal listener on TLS and SASL (brokers on SASL_SSL,
the quorum on SASL_SSL with PLAIN; tests/cluster/test_secure_cluster.py runs the quorum on
mutual TLS) through leader kills, a cut-off leader, a full-cluster kill and a rolling
restart. The soak mode runs the scenarios at random: `python tests/harness/chaos.py --seed N --duration S`."""

import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

import chaos  # noqa: E402
from certs import listeners_with_internal, make_certs, secured_internal_listeners  # noqa: E402
from strom_cluster import Network  # noqa: E402


def test_chaos_scenarios_lose_nothing(cluster_factory):
    assert Network.available(), "the chaos test needs root and iproute2 (ip netns) to cut a node off"
    c = cluster_factory(3, netns=True, extra=chaos.COMPACTED_NODE_CONFIG)
    w = chaos.Workload(c, "chaos", compacted_topic="chaos-compacted")
    w.start()
    rng = random.Random(1)
    try:
        w.wait_progress(500)
        chaos.kill_leader_repeatedly(c, w, rng, times=10)
        chaos.pause_leader(c, w, rng)
        chaos.cut_leader(c, w, rng)
        chaos.kill_two_of_three(c, w, rng)
        chaos.full_cluster_kill(c, w, rng)
        chaos.rolling_restart(c, w, rng)
    finally:
        w.stop()
    counts = w.check()
    print(counts)
    assert counts["acknowledged"] > 2000
    assert counts["lost"] == 0, counts
    assert counts["moved"] == 0, counts
    assert counts["duplicated_idempotent"] == 0, counts
    assert counts["reordered"] == 0, counts
    assert counts["replicas_agree"], counts
    compacted = w.check_compacted()
    print(compacted)
    assert compacted["acknowledged"] > 2000, compacted
    assert compacted["latest_lost"] == 0, compacted
    assert compacted["moved"] == 0, compacted
    assert compacted["cleaned"] > compacted["acknowledged"] // 2, f"the cleaner did not run: {compacted}"
    assert compacted["replicas_converge"], compacted


def test_chaos_with_internal_listeners_on_tls_loses_nothing(cluster_factory, tmp_path):
    assert Network.available(), "the chaos test needs root and iproute2 (ip netns) to cut a node off"
    made = []

    def per_node(node):
        # The nodes' addresses are known once the cluster's namespaces exist: the certificate
        # is made for them at the first node's start.
        if not made:
            net = node.cluster.network
            made.append(make_certs(str(tmp_path / "certs"), ips=[net.address(i) for i in node.cluster.nodes]))
        return [*listeners_with_internal(node, 9091), *secured_internal_listeners(made[0], controller="SASL_SSL")]
    c = cluster_factory(3, netns=True, per_node=per_node)
    w = chaos.Workload(c, "chaos-tls")
    w.start()
    rng = random.Random(2)
    try:
        w.wait_progress(500)
        chaos.kill_leader_repeatedly(c, w, rng, times=4)
        chaos.cut_leader(c, w, rng)
        chaos.full_cluster_kill(c, w, rng)
        chaos.rolling_restart(c, w, rng)
    finally:
        w.stop()
    counts = w.check()
    print(counts)
    assert counts["acknowledged"] > 2000
    assert counts["lost"] == 0, counts
    assert counts["moved"] == 0, counts
    assert counts["duplicated_idempotent"] == 0, counts
    assert counts["reordered"] == 0, counts
    assert counts["replicas_agree"], counts
