"""Fixtures for the multi-node tests: a cluster of real `strom` processes (tests/harness)."""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from strom_cluster import Cluster  # noqa: E402


@pytest.fixture
def cluster_factory(request):
    made = []
    with tempfile.TemporaryDirectory(prefix="strom-cluster-") as d:
        def make(n=3, extra=(), netns=False, per_node=None, start=True):
            c = Cluster(os.path.join(d, f"c{len(made)}"), n=n, extra=extra, netns=netns, per_node=per_node)
            made.append(c)
            try:
                return c.start() if start else c
            except BaseException:
                c.stop()
                raise
        try:
            yield make
        finally:
            failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
            for c in made:
                if failed:
                    keep = os.environ.get("STROM_FAILED_LOGS")
                    for n in c.nodes.values():
                        print(f"==== node {n.node_id} log tail\n{n.log_tail(80)}")
                        if keep:
                            os.makedirs(keep, exist_ok=True)
                            shutil.copy(n.log_path, os.path.join(keep, f"{request.node.name}-node{n.node_id}.log"))
                            # And the node's data, to compare replicas afterwards.
                            shutil.copytree(n.data_dir, os.path.join(keep, f"{request.node.name}-node{n.node_id}-data"),
                                            dirs_exist_ok=True, ignore_dangling_symlinks=True)
                c.stop()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
