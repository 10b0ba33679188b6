"""kcat (librdkafka's command-line client, from Debian) against a node: metadata, produce
with keys, consume from the beginning."""

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")


def kcat(*args, stdin=None):
    r = subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_kcat_produces_lists_and_consumes(node):
    b = ["-b", node.bootstrap]
    lines = "".join(f"k{i}:v{i}\n" for i in range(100)).encode()
    kcat(*b, "-P", "-t", "kcat-topic", "-K", ":", stdin=lines)
    meta = kcat(*b, "-L", "-t", "kcat-topic")
    assert 'topic "kcat-topic" with 1 partitions' in meta
    assert "1 brokers:" in meta
    out = kcat(*b, "-C", "-t", "kcat-topic", "-o", "beginning", "-e", "-f", "%k=%s@%o\n")
    assert out.splitlines() == [f"k{i}=v{i}@{i}" for i in range(100)]
