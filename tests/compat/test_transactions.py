"""Transactions (issue #22), from a client's side: librdkafka's transactional producer against
one node. What read_committed and read_uncommitted consumers see after commits and aborts
(several producers interleaved on one partition included), offsets sent to a transaction,
zombie fencing, the coordinator aborting a transaction past its timeout (before and after a
restart), the `strom transactions` tool, and what a client may not write (control batches,
transactional batches outside their transaction)."""

import signal
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

from conftest import STROM, wait_until
from test_bad_input import send_raw

INVALID_TXN_STATE = 48
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
INVALID_RECORD = 87


def transactional_batch(producer_id=1000, epoch=0, control=False):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True,
                                  producer_id=producer_id, producer_epoch=epoch, base_sequence=0,
                                  batch_size=1 << 20)
    b.append(0, timestamp=None, key=b"k", value=b"v", headers=[])
    data = bytearray(b.build())
    if control:
        attrs = struct.unpack(">h", data[21:23])[0] | 0x20
        data[21:23] = struct.pack(">h", attrs)
        data[17:21] = struct.pack(">I", calc_crc32c(bytes(data[21:])))
    return bytes(data)


def control_batch():
    return transactional_batch(control=True)


def produce_v3(bootstrap, topic, records, partition=0, transactional_id=None):
    """A raw Produce v3 (acks=1) of `records` to `partition`; returns its error code."""
    name = topic.encode()
    if transactional_id is None:
        body = struct.pack(">h", -1)
    else:
        body = struct.pack(">h", len(transactional_id)) + transactional_id.encode()
    body += struct.pack(">hi", 1, 5000)  # acks, timeout
    body += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
    body += struct.pack(">ii", 1, partition) + struct.pack(">i", len(records)) + records
    header = struct.pack(">hhih", 0, 3, 7, 1) + b"t"
    resp = send_raw(bootstrap, struct.pack(">i", len(header) + len(body)) + header + body)
    assert resp is not None, "the node closed the connection"
    corr, _topics, name_len = struct.unpack(">iih", resp[:10])
    assert corr == 7
    at = 10 + name_len
    _partitions, _index, error = struct.unpack(">iih", resp[at:at + 10])
    return error


def new_topic(node, partitions=1):
    topic = "txn-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    return topic


def txn_producer(node, txn_id=None, **extra):
    p = Producer({"bootstrap.servers": node.bootstrap, "transactional.id": txn_id or f"tx-{uuid.uuid4()}",
                  "linger.ms": 5, **extra})
    p.init_transactions(30)
    return p


def read_all(node, topic, isolation, partitions=1, expect=None, timeout=20):
    """Every record of `topic` a consumer at `isolation` reads up to the end it can see, in
    partition and offset order: (partition, value) pairs. With `expect`, waits until it has
    that many."""
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": f"r-{uuid.uuid4()}",
                  "isolation.level": isolation, "enable.partition.eof": True, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got, eof = [], set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                eof.add(m.partition())
            else:
                got.append((m.partition(), m.value().decode()))
            if (expect is None and len(eof) == partitions) or (expect is not None and len(got) >= expect):
                break
    finally:
        c.close()
    return got


def test_read_committed_sees_committed_transactions_only_and_read_uncommitted_sees_everything(node):
    topic = new_topic(node)
    p = txn_producer(node)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, value=f"c1-{i}")
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, value=f"ab-{i}")
    assert p.flush(30) == 0  # written, then aborted (librdkafka drops what it has not sent)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, value="c2-0")
    p.commit_transaction(30)

    committed = [v for _, v in read_all(node, topic, "read_committed", expect=11)]
    assert committed == [f"c1-{i}" for i in range(10)] + ["c2-0"]
    everything = [v for _, v in read_all(node, topic, "read_uncommitted", expect=16)]
    assert everything == [f"c1-{i}" for i in range(10)] + [f"ab-{i}" for i in range(5)] + ["c2-0"]


def test_interleaved_transactions_hold_read_committed_at_the_first_open_one(node):
    topic = new_topic(node)
    a, b = txn_producer(node), txn_producer(node)
    a.begin_transaction()
    a.produce(topic, value="a1")
    assert a.flush(30) == 0
    b.begin_transaction()
    b.produce(topic, value="b1")
    assert b.flush(30) == 0
    a.produce(topic, value="a2")
    assert a.flush(30) == 0
    a.commit_transaction(30)
    # A committed, but B's open transaction starts before a2: read_committed stops there.
    assert [v for _, v in read_all(node, topic, "read_committed")] == ["a1"]
    b.produce(topic, value="b2")
    assert b.flush(30) == 0
    b.abort_transaction(30)
    assert [v for _, v in read_all(node, topic, "read_committed", expect=2)] == ["a1", "a2"]
    assert [v for _, v in read_all(node, topic, "read_uncommitted", expect=4)] == ["a1", "b1", "a2", "b2"]


def consume_n(c, n, timeout=30):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    assert len(got) == n, f"consumed {len(got)} of {n}"
    return got


def committed_offset(node, group, topic):
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=15)[0].offset
    finally:
        c.close()


def test_offsets_sent_to_a_transaction_are_committed_with_it_and_only_then(node):
    source, sink = new_topic(node), new_topic(node)
    plain = Producer({"bootstrap.servers": node.bootstrap})
    for i in range(20):
        plain.produce(source, value=f"in-{i}")
    assert plain.flush(30) == 0
    group = f"ctp-{uuid.uuid4()}"
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.subscribe([source])
    p = txn_producer(node)
    try:
        # Consume-transform-produce: 10 in, 10 out, the offsets in the same transaction.
        msgs = consume_n(c, 10)
        p.begin_transaction()
        for m in msgs:
            p.produce(sink, value=m.value().decode().replace("in", "out"))
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        assert committed_offset(node, group, source) == 10
        # The next 10, aborted: neither the output nor the offsets count.
        msgs = consume_n(c, 10)
        p.begin_transaction()
        for m in msgs:
            p.produce(sink, value="aborted")
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
        assert p.flush(30) == 0
        p.abort_transaction(30)
        assert committed_offset(node, group, source) == 10
    finally:
        c.close()
    out = [v for _, v in read_all(node, sink, "read_committed", expect=10)]
    assert out == [f"out-{i}" for i in range(10)]


def test_a_newer_producer_with_the_same_id_fences_the_older_one(node):
    topic = new_topic(node)
    txn_id = f"zombie-{uuid.uuid4()}"
    old = txn_producer(node, txn_id)
    old.begin_transaction()
    old.produce(topic, value="zombie-1")
    assert old.flush(30) == 0
    new = txn_producer(node, txn_id)  # aborts the old producer's open transaction
    with pytest.raises(KafkaException) as e:
        old.produce(topic, value="zombie-2")
        old.flush(10)
        old.commit_transaction(10)
    assert e.value.args[0].fatal() or "fenced" in str(e.value).lower(), e.value
    new.begin_transaction()
    new.produce(topic, value="new-1")
    new.commit_transaction(30)
    assert [v for _, v in read_all(node, topic, "read_committed", expect=1)] == ["new-1"]
    assert "zombie-2" not in [v for _, v in read_all(node, topic, "read_uncommitted")]


def test_a_zombies_offsets_are_refused(node):
    source = new_topic(node)
    group = f"zg-{uuid.uuid4()}"
    plain = Producer({"bootstrap.servers": node.bootstrap})
    plain.produce(source, value="x")
    assert plain.flush(30) == 0
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([source])
    try:
        consume_n(c, 1)
        txn_id = f"zombie-offsets-{uuid.uuid4()}"
        old = txn_producer(node, txn_id)
        old.begin_transaction()
        txn_producer(node, txn_id)
        with pytest.raises(KafkaException):
            old.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 10)
            old.commit_transaction(10)
    finally:
        c.close()
    assert committed_offset(node, group, source) < 0


def strom_tool(node, *args, check=True):
    return subprocess.run([STROM, "transactions", "--bootstrap-server", node.bootstrap, *args],
                          capture_output=True, timeout=60, check=check)


def test_a_transaction_past_its_timeout_is_aborted_and_survives_a_restart_as_open(node_factory):
    n = node_factory(["transaction.abort.timed.out.transaction.cleanup.interval.ms=200"]).start()
    topic = new_topic(n)
    txn_id = f"slow-{uuid.uuid4()}"
    p = txn_producer(n, txn_id, **{"transaction.timeout.ms": 4000})
    p.begin_transaction()
    p.produce(topic, value="never-committed")
    assert p.flush(30) == 0
    out = strom_tool(n, "describe", "--transactional-id", txn_id).stdout.decode()
    assert "\tOngoing\t4000\t" in out and f"{topic}-0" in out, out
    assert txn_id in strom_tool(n, "list").stdout.decode()

    # The node restarts with the transaction open; the new coordinator loads it as open.
    n.stop(signal.SIGKILL)
    n.start()
    plain = Producer({"bootstrap.servers": n.bootstrap})
    plain.produce(topic, value="after")
    assert plain.flush(30) == 0
    # read_committed is held at the open transaction until its timeout aborts it.
    assert read_all(n, topic, "read_committed", timeout=5) == []
    got = read_all(n, topic, "read_committed", expect=1, timeout=30)
    assert [v for _, v in got] == ["after"]
    wait_until("the id to show CompleteAbort",
               lambda: "\tCompleteAbort\t" in strom_tool(n, "describe", "--transactional-id", txn_id).stdout.decode(),
               timeout=10)
    # Its producer was fenced (the abort bumped its epoch).
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def test_an_open_transaction_can_be_aborted_with_the_tool(node):
    topic = new_topic(node)
    p = txn_producer(node, **{"transaction.timeout.ms": 600000})
    p.begin_transaction()
    p.produce(topic, value="hanging")
    assert p.flush(30) == 0
    out = strom_tool(node, "describe-producers", "--topic", topic, "--partition", "0").stdout.decode()
    start = [line.split("\t")[5] for line in out.splitlines()[1:]]
    assert start == ["0"], out
    r = strom_tool(node, "abort", "--topic", topic, "--partition", "0", "--start-offset", "0")
    assert r.returncode == 0, r.stderr
    plain = Producer({"bootstrap.servers": node.bootstrap})
    plain.produce(topic, value="after")
    assert plain.flush(30) == 0
    assert [v for _, v in read_all(node, topic, "read_committed", expect=1)] == ["after"]
    r = strom_tool(node, "abort", "--topic", topic, "--partition", "0", "--start-offset", "5", check=False)
    assert r.returncode != 0 and b"no open transaction starts at offset 5" in r.stderr


def test_clients_may_not_write_control_batches(node):
    topic = new_topic(node)
    assert produce_v3(node.bootstrap, topic, control_batch()) == INVALID_RECORD
    p = Producer({"bootstrap.servers": node.bootstrap})
    p.produce(topic, b"after")
    assert p.flush(10) == 0
    assert [v for _, v in read_all(node, topic, "read_committed", expect=1)] == ["after"]


def test_a_transactional_batch_outside_its_transaction_is_refused(node):
    """KIP-890 verification: the leader asks the coordinator before the first batch of a
    transaction on a partition; a partition the transaction did not add is refused, and
    nothing is written there (no transaction opened that no marker would end)."""
    topic = new_topic(node, partitions=2)
    txn_id = f"verified-{uuid.uuid4()}"
    p = txn_producer(node, txn_id)
    p.begin_transaction()
    p.produce(topic, value="inside", partition=0)
    assert p.flush(30) == 0
    row = strom_tool(node, "describe", "--transactional-id", txn_id).stdout.decode().splitlines()[1].split("\t")
    pid, epoch = int(row[2]), int(row[3])
    # The producer's own id and epoch, on the partition its transaction did not add.
    assert produce_v3(node.bootstrap, topic, transactional_batch(pid, epoch), 1, txn_id) == INVALID_TXN_STATE
    # An id no coordinator knows; a transactional batch without an id (Kafka's answer: it
    # may not write transactionally under no id).
    assert produce_v3(node.bootstrap, topic, transactional_batch(), 1, "nobody") == INVALID_TXN_STATE
    assert produce_v3(node.bootstrap, topic, transactional_batch(), 1) == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    p.commit_transaction(30)
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "probe"})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 1), timeout=10)[1] == 0, "nothing was written"
    finally:
        c.close()
    assert [v for _, v in read_all(node, topic, "read_committed", partitions=2, expect=1)] == ["inside"]


def test_transaction_timeouts_beyond_the_brokers_maximum_are_refused(node_factory):
    n = node_factory(["transaction.max.timeout.ms=5000"]).start()
    p = Producer({"bootstrap.servers": n.bootstrap, "transactional.id": "too-long",
                  "transaction.timeout.ms": 10000})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(15)
    assert "INVALID_TRANSACTION_TIMEOUT" in str(e.value) or "timeout" in str(e.value).lower(), e.value


def test_kafka_python_transactions_commit_abort_and_read_committed(node):
    """The same protocol from a second client (kafka-python: the Java client's request
    versions): commit, abort, and what its read_committed and read_uncommitted consumers see."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition
    topic = new_topic(node)
    p = KafkaProducer(bootstrap_servers=node.bootstrap, transactional_id=f"kp-{uuid.uuid4()}")
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(5):
            p.send(topic, f"kc-{i}".encode(), partition=0)
        p.commit_transaction()
        p.begin_transaction()
        p.send(topic, b"kp-aborted", partition=0)
        p.flush()
        p.abort_transaction()
        p.begin_transaction()
        p.send(topic, b"kc-last", partition=0)
        p.commit_transaction()
    finally:
        p.close()

    def read(isolation, expect):
        c = KafkaConsumer(bootstrap_servers=node.bootstrap, isolation_level=isolation, enable_auto_commit=False,
                          group_id=None)
        c.assign([KTopicPartition(topic, 0)])
        c.seek_to_beginning()
        got = []
        deadline = time.monotonic() + 20
        try:
            while len(got) < expect and time.monotonic() < deadline:
                for records in c.poll(timeout_ms=500).values():
                    got.extend(r.value.decode() for r in records)
        finally:
            c.close()
        return got

    committed = [f"kc-{i}" for i in range(5)] + ["kc-last"]
    assert read("read_committed", 6) == committed
    assert read("read_uncommitted", 7) == committed[:5] + ["kp-aborted", "kc-last"]


def test_an_idle_transactional_id_expires(node_factory):
    n = node_factory(["transactional.id.expiration.ms=1500",
                      "transaction.remove.expired.transaction.cleanup.interval.ms=200"]).start()
    topic = new_topic(n)
    txn_id = f"expiring-{uuid.uuid4()}"
    p = txn_producer(n, txn_id)
    p.begin_transaction()
    p.produce(topic, value="x")
    p.commit_transaction(30)
    assert "\tCompleteCommit\t" in strom_tool(n, "describe", "--transactional-id", txn_id).stdout.decode()

    def gone():
        r = strom_tool(n, "describe", "--transactional-id", txn_id, check=False)
        return r.returncode != 0 and b"TRANSACTIONAL_ID_NOT_FOUND" in r.stderr
    wait_until("the idle id to expire", gone, timeout=20)
    # Forgotten for good: a restarted coordinator (which would not expire it again for ten
    # minutes) loads the tombstone.
    n.stop(signal.SIGKILL)
    n.extra = ["transactional.id.expiration.ms=600000"]
    n.start()
    assert gone()


def test_a_transaction_decided_but_not_ended_is_ended_by_the_next_coordinator(node_factory, monkeypatch):
    """The coordinator writes PrepareCommit and fails before any marker (the `txn_markers`
    failpoint): read_committed consumers wait at the transaction. The node restarts without
    it; the coordinator that loads the state writes the markers and CompleteCommit."""
    monkeypatch.setenv("FAILPOINTS", "txn_markers=return")
    n = node_factory().start()
    topic = new_topic(n)
    txn_id = f"resumed-{uuid.uuid4()}"
    p = txn_producer(n, txn_id)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, value=f"r-{i}")
    p.commit_transaction(30)  # answered at PrepareCommit
    assert "\tPrepareCommit\t" in strom_tool(n, "describe", "--transactional-id", txn_id).stdout.decode()
    assert read_all(n, topic, "read_committed", timeout=3) == [], "no marker yet: nothing is stable"
    n.stop(signal.SIGKILL)
    monkeypatch.delenv("FAILPOINTS")
    n.start()
    assert [v for _, v in read_all(n, topic, "read_committed", expect=3)] == ["r-0", "r-1", "r-2"]
    wait_until("the id to show CompleteCommit",
               lambda: "\tCompleteCommit\t" in strom_tool(n, "describe", "--transactional-id", txn_id).stdout.decode(),
               timeout=10)
