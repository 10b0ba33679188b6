"""Compacted topics (issue #19) as a librdkafka user sees them: read from the beginning, a
compacted topic ends with the latest value of every key, in per-key order, at the offsets the
records were written at; a deleted key (a tombstone) is gone once delete.retention.ms has
passed; a record without a key is refused with INVALID_RECORD."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_until

KEYS = 10


@pytest.fixture
def cleaner_node(node_factory):
    # The cleaner looks often, so the test waits seconds, not log.cleaner.backoff.ms's 15 s.
    return node_factory(["log.cleaner.backoff.ms=100"]).start()


def create_compacted(node, name, **extra):
    config = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01",
              **extra}
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=config)])[name].result(15)


def produce(node, topic, records):
    p = Producer({"bootstrap.servers": node.bootstrap, "acks": "all", "linger.ms": 2})
    errors = []
    for key, value in records:
        p.produce(topic, key=key, value=value, on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0
    return errors


def read_all(node, topic):
    """Every record from the beginning: [(offset, key, value)], until the end is reached."""
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": f"compact-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "enable.partition.eof": True})
    c.subscribe([topic])
    out = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                continue
            out.append((m.offset(), m.key(), m.value()))
        raise AssertionError("the end of the partition was not reached within 30 s")
    finally:
        c.close()


def test_a_compacted_topic_keeps_the_latest_value_of_every_key(cleaner_node):
    topic = "compacted-" + uuid.uuid4().hex[:8]
    create_compacted(cleaner_node, topic)
    rounds = 30
    written = [(f"k{k}".encode(), f"k{k}-round{r}".encode() + b"." * 100) for r in range(rounds) for k in range(KEYS)]
    # One batch (about 1.2 KB) per round: the 4 KB segments roll every few rounds.
    for r in range(rounds):
        assert produce(cleaner_node, topic, written[r * KEYS:(r + 1) * KEYS]) == []

    def compacted():
        seen = read_all(cleaner_node, topic)
        return seen if len(seen) < len(written) // 2 else None
    seen = wait_until("the cleaner to compact the sealed segments", compacted, timeout=30)
    # Offsets are those the records were written at, in order; per key the values are in
    # the order written, and the last one is the latest.
    offsets = [o for o, _, _ in seen]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    by_key = {}
    for offset, key, value in seen:
        assert written[offset] == (key, value), f"offset {offset} holds another record"
        by_key.setdefault(key, []).append(int(value.split(b"round")[1].split(b".")[0]))
    assert sorted(by_key) == [f"k{k}".encode() for k in range(KEYS)], "no key is lost"
    for key, rounds_seen in by_key.items():
        assert rounds_seen == sorted(rounds_seen) and rounds_seen[-1] == rounds - 1, (key, rounds_seen)


def test_a_tombstone_removes_its_key_once_delete_retention_has_passed(cleaner_node):
    topic = "tombstone-" + uuid.uuid4().hex[:8]
    create_compacted(cleaner_node, topic, **{"delete.retention.ms": "0"})
    assert produce(cleaner_node, topic, [(b"gone", b"v" * 100), (b"kept", b"v" * 100), (b"gone", None)]) == []
    # Enough other writes to roll the segments that hold them.
    filler = [(f"f{i % 5}".encode(), b"x" * 200) for i in range(200)]
    assert produce(cleaner_node, topic, filler) == []

    def gone():
        keys = {k for _, k, _ in read_all(cleaner_node, topic)}
        return b"kept" in keys and b"gone" not in keys
    wait_until("the deleted key to disappear while the kept one stays", gone, timeout=30)


def test_a_record_without_a_key_is_refused(cleaner_node):
    topic = "keyless-" + uuid.uuid4().hex[:8]
    create_compacted(cleaner_node, topic)
    errors = produce(cleaner_node, topic, [(None, b"no key")])
    assert [e.code() for e in errors] == [KafkaError.INVALID_RECORD], errors
    # The batch is refused, not the connection: a keyed record goes through afterwards.
    assert produce(cleaner_node, topic, [(b"k", b"v")]) == []


def test_kafka_python_reads_the_latest_value_per_key_and_is_refused_a_keyless_record(cleaner_node):
    """The same as a kafka-python user sees it (its own client code, not librdkafka)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KpTopicPartition
    from kafka.errors import KafkaError as KpKafkaError
    topic = "compacted-kp-" + uuid.uuid4().hex[:8]
    create_compacted(cleaner_node, topic)
    p = KafkaProducer(bootstrap_servers=cleaner_node.bootstrap, acks="all", linger_ms=2)
    rounds = 30
    for r in range(rounds):
        for k in range(KEYS):
            p.send(topic, key=f"k{k}".encode(), value=f"k{k}-round{r}".encode() + b"." * 100)
        p.flush(30)
    with pytest.raises(KpKafkaError) as refused:
        p.send(topic, value=b"no key").get(timeout=30)
    assert "InvalidRecord" in type(refused.value).__name__ or "CorruptRecord" in type(refused.value).__name__, refused.value
    p.close()
    tp = KpTopicPartition(topic, 0)

    def read_kp():
        c = KafkaConsumer(bootstrap_servers=cleaner_node.bootstrap, enable_auto_commit=False,
                          consumer_timeout_ms=3000)
        c.assign([tp])
        c.seek_to_beginning(tp)
        end = c.end_offsets([tp])[tp]
        out = []
        for m in c:
            out.append((m.offset, m.key, m.value))
            if m.offset + 1 >= end:
                break
        c.close()
        return out

    seen = wait_until("the cleaner to compact what kafka-python wrote",
                      lambda: (s := read_kp()) and len(s) < rounds * KEYS // 2 and s, timeout=30)
    latest = {}
    for offset, key, value in seen:
        latest[key] = value
    assert latest == {f"k{k}".encode(): f"k{k}-round{rounds - 1}".encode() + b"." * 100 for k in range(KEYS)}
    offsets = [o for o, _, _ in seen]
    assert offsets == sorted(offsets) and offsets[-1] == rounds * KEYS - 1


def test_delete_records_is_refused_on_a_compact_only_topic(cleaner_node):
    """As Kafka: DeleteRecords needs `delete` in cleanup.policy (POLICY_VIOLATION otherwise);
    on `compact,delete` it moves the log start as on any topic."""
    from confluent_kafka import TopicPartition
    admin = AdminClient({"bootstrap.servers": cleaner_node.bootstrap})
    for policy, allowed in (("compact", False), ("compact,delete", True)):
        topic = f"delete-records-{policy.replace(',', '-')}-" + uuid.uuid4().hex[:8]
        create_compacted(cleaner_node, topic, **{"cleanup.policy": policy})
        assert produce(cleaner_node, topic, [(b"k%d" % i, b"v") for i in range(5)]) == []
        fut = admin.delete_records([TopicPartition(topic, 0, 2)])[TopicPartition(topic, 0, 2)]
        if allowed:
            assert fut.result(15).low_watermark == 2
        else:
            with pytest.raises(Exception) as refused:
                fut.result(15)
            assert refused.value.args[0].code() == KafkaError.POLICY_VIOLATION, refused.value
