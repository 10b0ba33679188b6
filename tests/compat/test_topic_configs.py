"""Topic settings that change what is stored (issue #19), as a librdkafka user sees them:
a LogAppendTime topic hands consumers the broker's clock with the LogAppendTime type; the
CreateTime bounds refuse a record stamped too far from now with INVALID_TIMESTAMP; a topic
codec (`compression.type`) is what the log holds whatever the producer sent; a bad setting is
refused by name, on create and on alter."""

import os
import struct
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic


def create(node, name, config):
    """Creates a topic; returns the KafkaError it was refused with, or None."""
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=config)])
    try:
        fs[name].result(15)
        return None
    except Exception as e:  # confluent-kafka raises KafkaException(KafkaError)
        return e.args[0]


def produce(node, topic, timestamp_ms):
    """One record with the given CreateTime; returns the delivery error (None: written)."""
    p = Producer({"bootstrap.servers": node.bootstrap, "acks": "all", "retries": 0})
    outcome = {}
    p.produce(topic, value=b"v", key=b"k", timestamp=timestamp_ms,
              on_delivery=lambda err, msg: outcome.update(err=err, msg=msg))
    p.flush(20)
    assert "err" in outcome, "no delivery report within 20 s"
    return outcome["err"]


def consume_one(node, topic):
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": f"ts-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                return m
        raise AssertionError("no record within 30 s")
    finally:
        c.close()


def test_a_log_append_time_topic_gives_consumers_the_brokers_clock(node):
    topic = "lat-" + uuid.uuid4().hex[:8]
    assert create(node, topic, {"message.timestamp.type": "LogAppendTime"}) is None
    before = int(time.time() * 1000)
    assert produce(node, topic, timestamp_ms=1_000) is None
    after = int(time.time() * 1000)
    kind, ts = consume_one(node, topic).timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= ts <= after + 1000, (before, ts, after)


def test_a_create_time_topic_keeps_the_producers_timestamp(node):
    topic = "ct-" + uuid.uuid4().hex[:8]
    assert create(node, topic, {}) is None
    assert produce(node, topic, timestamp_ms=1_000) is None
    assert consume_one(node, topic).timestamp() == (TIMESTAMP_CREATE_TIME, 1_000)


def test_timestamps_outside_the_topics_bounds_are_refused(node):
    topic = "bounds-" + uuid.uuid4().hex[:8]
    assert create(node, topic, {"message.timestamp.before.max.ms": "3600000",
                                "message.timestamp.after.max.ms": "3600000"}) is None
    now = int(time.time() * 1000)
    old = produce(node, topic, timestamp_ms=now - 2 * 3_600_000)
    assert old is not None and old.code() == KafkaError.INVALID_TIMESTAMP, old
    future = produce(node, topic, timestamp_ms=now + 2 * 3_600_000)
    assert future is not None and future.code() == KafkaError.INVALID_TIMESTAMP, future
    assert produce(node, topic, timestamp_ms=now) is None


def test_the_broker_default_bounds_apply_to_every_topic(node_factory):
    n = node_factory(["log.message.timestamp.before.max.ms=60000"]).start()
    topic = "bdefault-" + uuid.uuid4().hex[:8]
    assert create(n, topic, {}) is None
    err = produce(n, topic, timestamp_ms=int(time.time() * 1000) - 3_600_000)
    assert err is not None and err.code() == KafkaError.INVALID_TIMESTAMP, err
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entry = admin.describe_configs([res])[res].result(15)["message.timestamp.before.max.ms"]
    assert entry.value == "60000"
    assert entry.source == 4, "STATIC_BROKER_CONFIG: the broker's setting, not a default"


def stored_codecs(node, topic):
    """The codec of every batch in the partition's first segment, read from disk."""
    path = os.path.join(node.data_dir, "data", f"{topic}-0", "00000000000000000000.log")
    with open(path, "rb") as f:
        data = f.read()
    codecs, pos = [], 0
    while pos + 23 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        (attributes,) = struct.unpack_from(">h", data, pos + 21)
        codecs.append(attributes & 0x07)
        pos += 12 + length
    return codecs


def recompressed_total(node):
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("strom_broker_recompressed_batches_total"))
    return float(line.split()[-1])


def produce_many(node, topic, n, codec):
    p = Producer({"bootstrap.servers": node.bootstrap, "acks": "all", "compression.type": codec, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"value-{i}".encode() * 8)
    assert p.flush(30) == 0


def consume_values(node, topic, n):
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": f"codec-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
    finally:
        c.close()
    return got


@pytest.mark.parametrize("producer_codec,topic_codec,stored", [("none", "gzip", 1), ("lz4", "zstd", 4),
                                                               ("snappy", "uncompressed", 0), ("gzip", "gzip", 1)])
def test_the_topic_codec_is_what_the_log_holds(node, producer_codec, topic_codec, stored):
    topic = "codec-" + uuid.uuid4().hex[:8]
    assert create(node, topic, {"compression.type": topic_codec}) is None
    before = recompressed_total(node)
    produce_many(node, topic, 200, producer_codec)
    assert consume_values(node, topic, 200) == [f"value-{i}".encode() * 8 for i in range(200)]
    codecs = stored_codecs(node, topic)
    assert codecs and set(codecs) == {stored}, codecs
    if producer_codec == topic_codec:
        assert recompressed_total(node) == before, "a batch already in the topic's codec is stored as sent"
    else:
        assert recompressed_total(node) >= before + len(codecs)


def test_the_broker_codec_is_every_topics_default(node_factory):
    n = node_factory(["compression.type=zstd"]).start()
    topic = "bcodec-" + uuid.uuid4().hex[:8]
    assert create(n, topic, {}) is None
    produce_many(n, topic, 50, "none")
    assert set(stored_codecs(n, topic)) == {4}
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entry = admin.describe_configs([res])[res].result(15)["compression.type"]
    assert (entry.value, entry.source) == ("zstd", 4)


@pytest.mark.parametrize("key,value", [("cleanup.policy", "forever"), ("compression.type", "brotli"),
                                       ("min.cleanable.dirty.ratio", "2")])
def test_a_bad_topic_setting_is_refused_by_name(node, key, value):
    topic = "refused-" + uuid.uuid4().hex[:8]
    refused = create(node, topic, {key: value})
    assert refused is not None and refused.code() == KafkaError.INVALID_CONFIG, refused
    assert key in refused.str()
    # Nor may an existing topic be switched to it.
    assert create(node, topic, {}) is None
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={key: value})
    with pytest.raises(Exception) as e:
        admin.alter_configs([res])[res].result(15)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
