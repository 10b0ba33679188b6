"""librdkafka (confluent-kafka) against a single Strom node: what a Kafka user does first."""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from conftest import wait_until

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
N = 10_000
KEYS = 37


def admin(node):
    return AdminClient({"bootstrap.servers": node.bootstrap})


def create_topic(a, name, partitions=3, config=None):
    fs = a.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=10)
    fs[name].result(15)


def produce(node, topic, codec, n=N, t0=1_700_000_000_000):
    p = Producer({
        "bootstrap.servers": node.bootstrap,
        "acks": "all",
        "compression.type": codec,
        "linger.ms": 5,
        "enable.idempotence": False,
    })
    errors, acked = [], []

    def done(err, msg):
        (errors if err else acked).append(err or (msg.partition(), msg.offset()))

    for i in range(n):
        key = f"key-{i % KEYS}"
        p.produce(topic, key=key, value=f"{codec}:{i}".encode(), headers=[("seq", str(i).encode()), ("codec", codec.encode())],
                  timestamp=t0 + i, on_delivery=done)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0, "records left unsent"
    assert errors == [], errors[:3]
    assert len(acked) == n
    return acked


def consume_all(node, topic, partitions, expect):
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "compat-reader", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < expect and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            assert not m.error(), m.error()
            got.append(m)
    c.close()
    return got


@pytest.mark.parametrize("codec", CODECS)
def test_keyed_records_round_trip_with_every_codec(node, codec):
    a = admin(node)
    topic = f"round-trip-{codec}"
    create_topic(a, topic)
    produce(node, topic, codec)
    got = consume_all(node, topic, 3, N)
    assert len(got) == N, f"consumed {len(got)} of {N}"

    seen = set()
    last_seq_by_key = {}
    partition_of_key = {}
    for m in got:
        headers = dict(m.headers())
        seq = int(headers["seq"])
        assert headers["codec"] == codec.encode()
        key = m.key().decode()
        assert key == f"key-{seq % KEYS}"
        assert m.value() == f"{codec}:{seq}".encode()
        ts_type, ts = m.timestamp()
        assert ts == 1_700_000_000_000 + seq, "timestamp kept"
        # One key, one partition, and its records in the order they were sent.
        assert partition_of_key.setdefault(key, m.partition()) == m.partition()
        assert last_seq_by_key.get(key, -1) < seq, f"{key} out of order"
        last_seq_by_key[key] = seq
        seen.add(seq)
    assert seen == set(range(N)), "every record exactly once"

    # Offsets per partition are dense from 0.
    for p in range(3):
        offsets = sorted(m.offset() for m in got if m.partition() == p)
        assert offsets == list(range(len(offsets)))


def test_list_offsets_earliest_latest_and_by_timestamp(node):
    a = admin(node)
    create_topic(a, "offsets", partitions=1)
    produce(node, "offsets", "lz4", n=500, t0=1_000_000)
    tp = TopicPartition("offsets", 0)
    res = a.list_offsets({tp: OffsetSpec.earliest()})[tp].result(10)
    assert res.offset == 0
    res = a.list_offsets({tp: OffsetSpec.latest()})[tp].result(10)
    assert res.offset == 500
    res = a.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(10)
    assert res.timestamp == 1_000_000 + 499
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "ts"})
    # Record i has timestamp 1_000_000 + i; batches may hold several records, so the answer
    # is at or before the first record with a timestamp >= T, never after it.
    found = c.offsets_for_times([TopicPartition("offsets", 0, 1_000_000 + 250)], timeout=10)[0].offset
    assert 0 <= found <= 250
    lo, hi = c.get_watermark_offsets(tp, timeout=10)
    assert (lo, hi) == (0, 500)
    c.close()


def test_describe_and_alter_topic_config(node):
    a = admin(node)
    create_topic(a, "configured", partitions=1, config={"retention.ms": "3600000"})
    res = ConfigResource(ConfigResource.Type.TOPIC, "configured")
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == 1  # DYNAMIC_TOPIC_CONFIG
    assert configs["cleanup.policy"].value == "delete"
    assert configs["segment.bytes"].value == "1073741824"

    alter = ConfigResource(ConfigResource.Type.TOPIC, "configured", incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    a.incremental_alter_configs([alter])[alter].result(10)
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "7200000"

    bad = ConfigResource(ConfigResource.Type.TOPIC, "configured", incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        a.incremental_alter_configs([bad])[bad].result(10)
    assert e.value.args[0].name() == "INVALID_CONFIG"


def test_create_partitions_and_delete_topic(node):
    a = admin(node)
    create_topic(a, "growing", partitions=2)
    a.create_partitions([NewPartitions("growing", 5)])["growing"].result(10)
    assert len(a.list_topics("growing", timeout=10).topics["growing"].partitions) == 5
    with pytest.raises(KafkaException) as e:
        a.create_partitions([NewPartitions("growing", 3)])["growing"].result(10)
    assert e.value.args[0].name() == "INVALID_PARTITIONS"

    with pytest.raises(KafkaException) as e:
        create_topic(a, "growing")
    assert e.value.args[0].name() == "TOPIC_ALREADY_EXISTS"

    a.delete_topics(["growing"], operation_timeout=10)["growing"].result(10)
    md = a.list_topics(timeout=10)
    assert "growing" not in md.topics
    with pytest.raises(KafkaException) as e:
        a.delete_topics(["growing"], operation_timeout=10)["growing"].result(10)
    assert e.value.args[0].name() == "UNKNOWN_TOPIC_OR_PART"


def test_admin_client_describes_the_cluster_and_refuses_bad_topics(node):
    a = admin(node)
    cluster = a.describe_cluster().result(10)
    assert [n.id for n in cluster.nodes] == [1]
    assert cluster.controller is not None
    for bad_name, err in [("bad name", "TOPIC_EXCEPTION"), ("x" * 250, "TOPIC_EXCEPTION")]:
        with pytest.raises(KafkaException) as e:
            create_topic(a, bad_name)
        assert e.value.args[0].name() == err
    with pytest.raises(KafkaException) as e:
        a.create_topics([NewTopic("too-replicated", 1, 3)])["too-replicated"].result(10)
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"
    with pytest.raises(KafkaException) as e:
        a.create_topics([NewTopic("zero", 0, 1)])["zero"].result(10)
    assert e.value.args[0].name() in ("INVALID_PARTITIONS", "INVALID_REQUEST")


def test_auto_created_topic_on_produce(node):
    p = Producer({"bootstrap.servers": node.bootstrap})
    p.produce("auto-created", value=b"hello")
    assert p.flush(20) == 0
    md = admin(node).list_topics(timeout=10)
    assert "auto-created" in md.topics


def test_a_restart_between_produce_and_consume_loses_nothing(node_factory):
    n = node_factory().start()
    create_topic(admin(n), "durable")
    produce(n, "durable", "snappy", n=3000)
    assert n.stop() == 0, "graceful stop"
    n.start()
    wait_until("the topic's leaders to be back",
                lambda: all(p.leader == 1 for p in admin(n).list_topics("durable", timeout=5).topics["durable"].partitions.values()))
    got = consume_all(n, "durable", 3, 3000)
    assert sorted(int(dict(m.headers())["seq"]) for m in got) == list(range(3000))
