"""Nothing a client sends can take unbounded memory (issue #21): the broker, not the client,
bounds a Fetch response (`fetch.max.bytes`); `max.connections.per.ip` closes connections over
the limit; `queued.max.request.bytes` bounds the request bytes buffered over all connections
(a request that does not fit waits, it is not dropped); offset commit metadata longer than
`offset.metadata.max.bytes` is refused with OFFSET_METADATA_TOO_LARGE."""

import socket
import struct
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_until


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def kstring(v):
    b = v.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, correlation_id, body):
    payload = struct.pack(">hhi", api_key, version, correlation_id) + kstring("limits-test") + body
    return struct.pack(">i", len(payload)) + payload


def read_frame(s):
    size = struct.unpack(">i", recv_exact(s, 4))[0]
    return recv_exact(s, size)


def connect(node):
    host, port = node.bootstrap.split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def api_versions_ok(s):
    s.sendall(frame(18, 0, 7, b""))
    data = read_frame(s)
    return struct.unpack(">ih", data[:6]) == (7, 0)


def fetch_v4(topic, partition_max_bytes, max_bytes):
    """Fetch v4 of partition 0 from offset 0, as a consumer (replica id -1)."""
    return (struct.pack(">iiiib", -1, 500, 1, max_bytes, 0) + struct.pack(">i", 1) + kstring(topic)
            + struct.pack(">iiqi", 1, 0, 0, partition_max_bytes))


def fill(node, topic, batches, batch_bytes):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": node.bootstrap, "linger.ms": 50, "batch.size": batch_bytes,
                  "compression.type": "none"})
    value = b"x" * 1000
    for _ in range(batches * (batch_bytes // 1000)):
        p.produce(topic, value=value)
        p.poll(0)
    assert p.flush(60) == 0


def test_a_fetch_response_is_bounded_by_the_broker_not_the_client(node_factory):
    n = node_factory(["fetch.max.bytes=1048576"]).start()
    topic = "bounded-" + uuid.uuid4().hex[:8]
    fill(n, topic, batches=12, batch_bytes=500_000)  # ~6 MB in ~500 KB batches
    with connect(n) as s:
        # The client asks for 1 GB per partition and per response.
        s.sendall(frame(1, 4, 9, fetch_v4(topic, 1 << 30, 1 << 30)))
        size = len(read_frame(s))
    # One response of at most fetch.max.bytes (plus one batch, which Kafka always returns
    # whole, and the response's own fields), not the 6 MB the client asked for.
    assert 400_000 < size <= 1_048_576 + 600_000, size
    # A consumer still reads everything, response by response.
    c = Consumer({"bootstrap.servers": n.bootstrap, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                  "fetch.max.bytes": 500_000_000, "max.partition.fetch.bytes": 500_000_000,
                  "receive.message.max.bytes": 500_000_512})
    c.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    try:
        def all_read():
            nonlocal seen
            seen += sum(1 for m in c.consume(1000, timeout=0.5) if m.error() is None)
            return seen >= 6000
        wait_until("every record read", all_read, timeout=60)
    finally:
        c.close()


def test_connections_over_max_connections_per_ip_are_closed(node_factory):
    n = node_factory(["max.connections.per.ip=3"]).start()
    held = [connect(n) for _ in range(3)]
    try:
        assert all(api_versions_ok(s) for s in held)
        extra = connect(n)
        # Closed at once: the request gets no answer.
        try:
            extra.sendall(frame(18, 0, 7, b""))
            assert extra.recv(4) == b""
        except (ConnectionError, OSError):
            pass
        extra.close()
        # One closes: a new connection is let in again.
        held.pop().close()

        def admitted():
            with connect(n) as s:
                return api_versions_ok(s)
        wait_until("a connection to be admitted once one closed", admitted, timeout=10)
    finally:
        for s in held:
            s.close()


def test_max_connections_per_ip_overrides_raise_the_limit_for_one_address(node_factory):
    n = node_factory(["max.connections.per.ip=1", "max.connections.per.ip.overrides=127.0.0.1:4"]).start()
    held = [connect(n) for _ in range(4)]
    try:
        assert all(api_versions_ok(s) for s in held)
    finally:
        for s in held:
            s.close()


def metadata_v1(topics):
    return struct.pack(">i", len(topics)) + b"".join(kstring(t) for t in topics)


def test_queued_max_request_bytes_makes_a_request_wait_for_room_not_fail(node_factory):
    pool = 2_000_000
    n = node_factory([f"queued.max.request.bytes={pool}", f"socket.request.max.bytes={pool}",
                      "auto.create.topics.enable=false"]).start()
    # A takes the whole pool: its length prefix claims 2 MB, and only a little follows.
    a = connect(n)
    a.sendall(struct.pack(">i", pool) + b"\x00" * 1000)
    # B sends a 300 KB Metadata request; it cannot be buffered while A holds the pool.
    b = connect(n)
    names = [f"missing-{i:06d}" for i in range(20000)]
    b.sendall(frame(3, 1, 11, metadata_v1(names)))
    b.settimeout(1.5)
    try:
        b.recv(4)
        raise AssertionError("B was answered while A held every queued request byte")
    except socket.timeout:
        pass
    # The node still answers small requests that arrive whole, and everyone else.
    with connect(n) as c:
        assert api_versions_ok(c)
    # A goes away: B's request is read and answered.
    a.close()
    b.settimeout(20)
    data = read_frame(b)
    assert struct.unpack(">i", data[:4])[0] == 11
    b.close()
    assert n.proc.poll() is None


def test_offset_metadata_longer_than_the_limit_is_refused(node_factory):
    n = node_factory(["offset.metadata.max.bytes=10"]).start()
    topic = "meta-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    c = Consumer({"bootstrap.servers": n.bootstrap, "group.id": f"g-{uuid.uuid4()}", "enable.auto.commit": False})
    try:
        ok = c.commit(offsets=[TopicPartition(topic, 0, 1, metadata="short")], asynchronous=False)
        assert ok[0].error is None
        try:
            res = c.commit(offsets=[TopicPartition(topic, 0, 2, metadata="x" * 11)], asynchronous=False)
            errors = [tp.error for tp in res if tp.error is not None]
        except KafkaException as e:
            errors = [e.args[0]]
        assert errors and "OFFSET_METADATA_TOO_LARGE" in str(errors[0]), errors
        assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 1
    finally:
        c.close()


def producer_id_count(node):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("kafka_server_replicamanager_produceridcount "):
                return int(float(line.split()[1]))
    raise AssertionError("no kafka_server_replicamanager_produceridcount")


def test_idle_producer_ids_expire(node_factory):
    """producer.id.expiration.ms: the state of idempotent producers that went quiet is dropped,
    so it stays bounded however many producers come and go (KIP-847's ProducerIdCount shows it)."""
    # Long enough that the five producers below are all still there when counted, on a busy
    # machine too (each takes a connection, InitProducerId and a produce).
    n = node_factory(["producer.id.expiration.ms=10000", "producer.id.expiration.check.interval.ms=200"]).start()
    topic = "pids-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    for _ in range(5):
        p = Producer({"bootstrap.servers": n.bootstrap, "enable.idempotence": True})
        p.produce(topic, value=b"v")
        assert p.flush(30) == 0
    assert producer_id_count(n) == 5
    wait_until("the five idle producers to expire", lambda: producer_id_count(n) == 0, timeout=40)
    # A producer still writing is kept.
    p = Producer({"bootstrap.servers": n.bootstrap, "enable.idempotence": True})
    p.produce(topic, value=b"v")
    assert p.flush(30) == 0
    assert producer_id_count(n) == 1


def join_group_v0(group, session_timeout_ms):
    return (kstring(group) + struct.pack(">i", session_timeout_ms) + kstring("") + kstring("consumer")
            + struct.pack(">i", 1) + kstring("range") + struct.pack(">i", 0))


def test_a_session_timeout_outside_the_group_bounds_is_refused(node_factory):
    """group.min|max.session.timeout.ms: a member asking for a session outside them gets
    INVALID_SESSION_TIMEOUT (26), as Kafka answers; one inside joins."""
    n = node_factory(["group.min.session.timeout.ms=6000", "group.max.session.timeout.ms=10000"]).start()
    group = f"g-{uuid.uuid4()}"
    coordinator_not_ready = (14, 15, 16)
    with connect(n) as s:
        s.sendall(frame(10, 0, 1, kstring(group)))  # FindCoordinator: makes the offsets topic
        read_frame(s)

        def join(timeout_ms):
            s.sendall(frame(11, 0, 2, join_group_v0(group, timeout_ms)))
            return struct.unpack(">ih", read_frame(s)[:6])[1]
        codes = []
        wait_until("the coordinator to answer", lambda: codes.append(join(20_000)) or codes[-1] not in coordinator_not_ready,
                   timeout=30, interval=0.2)
        assert codes[-1] == 26, codes
        assert join(5_000) == 26
        assert join(8_000) == 0
