"""The controller quorum as real processes, each node in its own network namespace: a minority
cut off from the others cannot commit a metadata change, the majority elects a new active
controller and goes on, and the minority catches up once it is reachable again.

Each node is asked on its own: `strom topics --bootstrap-server <node>` talks to that node
only (a librdkafka client would move on to whichever broker it likes), and whether a node is
the active controller is its own `kafka_controller_kafkacontroller_activecontrollercount`."""

import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from strom_cluster import STROM, Network, wait_until  # noqa: E402


def topics_of(node):
    r = subprocess.run([STROM, "topics", "--bootstrap-server", node.bootstrap, "--list"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return {t for t in r.stdout.split() if not t.startswith("__")}


def is_active_controller(node):
    url = f"http://{node.host}:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("kafka_controller_kafkacontroller_activecontrollercount "):
                return float(line.split()[1]) == 1
    return False


def active_controllers(c, ids):
    return [i for i in ids if is_active_controller(c.node(i))]


def create_through(node, topic, partitions, rf):
    return subprocess.run([STROM, "topics", "--bootstrap-server", node.bootstrap, "--create", "--topic", topic,
                           "--partitions", str(partitions), "--replication-factor", str(rf)],
                          capture_output=True, text=True, timeout=120)


def test_cut_off_active_controller_cannot_commit_and_catches_up(cluster_factory):
    assert Network.available(), "this test needs root and iproute2 (ip netns) to cut a node off"
    c = cluster_factory(3, netns=True)
    every = list(c.nodes)
    old = wait_until("one active controller", lambda: (a := active_controllers(c, every)) and len(a) == 1 and a[0],
                     timeout=30)
    others = [i for i in every if i != old]
    c.cut(old)

    # The cut-off node still believes it is the active controller, but cannot reach a quorum:
    # a topic asked of it is never committed.
    r = create_through(c.node(old), "asked-of-the-minority", 1, 1)
    assert r.returncode != 0, f"the minority committed a topic: {r.stdout}"

    # The majority elects a new active controller and commits without the cut-off node.
    wait_until("the majority to elect a new active controller", lambda: len(active_controllers(c, others)) == 1,
               timeout=30)
    r = create_through(c.node(others[0]), "made-by-the-majority", 2, 2)
    assert r.returncode == 0, r.stderr
    wait_until("the majority's brokers to see the new topic",
               lambda: all("made-by-the-majority" in topics_of(c.node(i)) for i in others), timeout=30)

    # Healed, the old controller steps down and follows the new one, learns the majority's
    # change, and the change it could not commit is gone everywhere.
    c.heal(old)
    healed = time.monotonic()

    def caught_up():
        views = [topics_of(n) for n in c.nodes.values()]
        return (all(v == views[0] for v in views) and "made-by-the-majority" in views[0]
                and len(active_controllers(c, others)) == 1 and not is_active_controller(c.node(old)))
    wait_until("the healed node to follow the new controller and catch up", caught_up, timeout=60)
    print(f"caught up {time.monotonic() - healed:.2f} s after the heal")
    for n in c.nodes.values():
        assert "asked-of-the-minority" not in topics_of(n)
