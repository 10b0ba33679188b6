"""The controller quorum as real processes, each node in its own network namespace: a minority
cut off from the others cannot commit a metadata change, the majority elects a new active
controller and goes on, and the minority catches up once it is reachable again."""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from confluent_kafka import KafkaException  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from strom_cluster import Network, wait_until  # noqa: E402


def topics_seen_by(node):
    md = AdminClient({"bootstrap.servers": node.bootstrap}).list_topics(timeout=3)
    return {name for name in md.topics if not name.startswith("__")}, md.controller_id


def test_cut_off_active_controller_cannot_commit_and_catches_up(cluster_factory):
    assert Network.available(), "this test needs root and iproute2 (ip netns) to cut a node off"
    c = cluster_factory(3, netns=True)
    old = c.metadata().controller_id
    assert old in c.nodes, f"no active controller: {old}"
    others = [i for i in c.nodes if i != old]
    c.cut(old)

    # The cut-off node still believes it is the active controller, but cannot reach a quorum:
    # a topic asked of it is never committed.
    minority = AdminClient({"bootstrap.servers": c.node(old).bootstrap})
    f = minority.create_topics([NewTopic("asked-of-the-minority", 1, 1)],
                               operation_timeout=5, request_timeout=10)["asked-of-the-minority"]
    with pytest.raises(KafkaException):
        f.result(timeout=60)

    # The majority elects a new active controller and commits without the cut-off node.
    majority_bootstrap = ",".join(c.node(i).bootstrap for i in others)
    wait_until("the majority to elect a new active controller",
               lambda: all(topics_seen_by(c.node(i))[1] in others for i in others), timeout=30)
    majority = AdminClient({"bootstrap.servers": majority_bootstrap})
    majority.create_topics([NewTopic("made-by-the-majority", 2, 2)],
                           operation_timeout=20)["made-by-the-majority"].result(timeout=60)
    for i in others:
        assert "made-by-the-majority" in topics_seen_by(c.node(i))[0]

    # Healed, the old controller follows the new one, learns the majority's change, and the
    # change it could not commit is gone everywhere.
    c.heal(old)

    def caught_up():
        views = [topics_seen_by(n) for n in c.nodes.values()]
        return (all(v[0] == views[0][0] for v in views) and "made-by-the-majority" in views[0][0]
                and all(v[1] in others for v in views))
    healed = time.monotonic()
    wait_until("the healed node to follow the new controller and catch up", caught_up, timeout=60)
    print(f"caught up {time.monotonic() - healed:.2f} s after the heal")
    for n in c.nodes.values():
        assert "asked-of-the-minority" not in topics_seen_by(n)[0]
