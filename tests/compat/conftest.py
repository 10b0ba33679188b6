"""Fixtures for the real-client tests: a `strom` node started as a user starts it
(the binary from STROM_BIN, its own temp data dir, free ports), waited on with deadlines."""

import os
import signal
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))

# One definition of the binary, free ports and deadline waits, shared with the cluster harness.
from strom_cluster import STROM, free_port, wait_until  # noqa: E402,F401


class Node:
    """One single-node Strom cluster (controller + broker)."""

    def __init__(self, data_dir, extra=()):
        self.data_dir = data_dir
        self.kafka_port = free_port()
        self.controller_port = free_port()
        self.metrics_port = free_port()
        self.extra = list(extra)
        self.proc = None
        self.log_path = os.path.join(data_dir, "strom.log")

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.kafka_port}"

    def start(self):
        args = [
            STROM, "server",
            "--override", f"listeners=PLAINTEXT://127.0.0.1:{self.kafka_port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "--override", f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            "--override", f"log.dirs={os.path.join(self.data_dir, 'data')}",
            "--override", f"metrics.listener=127.0.0.1:{self.metrics_port}",
        ]
        for kv in self.extra:
            args += ["--override", kv]
        log = open(self.log_path, "ab")
        # STROM_* variables are config keys to a node; STROM_BIN is ours, not its.
        env = {k: v for k, v in os.environ.items() if k != "STROM_BIN"}
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_until("the broker to serve metadata", self.ready, timeout=30)
        return self

    def ready(self):
        from confluent_kafka.admin import AdminClient
        if self.proc.poll() is not None:
            raise AssertionError(f"strom exited with {self.proc.returncode}; log: {self.log_tail()}")
        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        return len(md.brokers) == 1

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def node():
    with tempfile.TemporaryDirectory(prefix="strom-compat-") as d:
        n = Node(d).start()
        try:
            yield n
        finally:
            n.stop()


@pytest.fixture
def node_factory():
    made = []
    with tempfile.TemporaryDirectory(prefix="strom-compat-") as d:
        def make(extra=()):
            n = Node(d, extra)
            made.append(n)
            return n
        try:
            yield make
        finally:
            for n in made:
                n.stop()


def committed(node, group, topic, partition=0):
    """`group`'s committed offset of `topic`/`partition` (negative: none), read as a client does."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return c.committed([TopicPartition(topic, partition)], timeout=15)[0].offset
    finally:
        c.close()


def round_trip(conf, topic):
    """Produces one record over `conf`'s connection (acks=all) and reads it back in a new group;
    returns the value."""
    import uuid
    from confluent_kafka import Consumer, Producer
    value = uuid.uuid4().hex.encode()
    p = Producer({**conf, "acks": "all"})
    errors = []
    p.produce(topic, value=value, on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0 and not errors, errors
    c = Consumer({**conf, "group.id": f"rt-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = []
    try:
        def got():
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                seen.append(m.value())
            return value in seen
        wait_until("the record to come back", got, timeout=30)
    finally:
        c.close()
    return value


def refused(conf):
    """True when a client with `conf` gets no metadata (its handshake or login refused)."""
    from confluent_kafka.admin import AdminClient
    try:
        return len(AdminClient({**conf, "socket.timeout.ms": 3000}).list_topics(timeout=4).brokers) == 0
    except Exception:
        return True
