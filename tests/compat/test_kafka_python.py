"""kafka-python 3.x against a single Strom node."""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import InvalidPartitionsError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
N = 10_000
KEYS = 29


def admin(node):
    return KafkaAdminClient(bootstrap_servers=node.bootstrap, request_timeout_ms=15000)


def consume_all(node, topic, partitions, expect):
    c = KafkaConsumer(bootstrap_servers=node.bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = []
    deadline = time.monotonic() + 60
    while len(got) < expect and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500, max_records=2000).values():
            got.extend(recs)
    c.close()
    return got


@pytest.mark.parametrize("codec", CODECS)
def test_keyed_records_round_trip_with_every_codec(node, codec):
    a = admin(node)
    topic = f"kp-{codec or 'none'}"
    a.create_topics([NewTopic(topic, 3, 1)])
    p = KafkaProducer(bootstrap_servers=node.bootstrap, acks="all", compression_type=codec, linger_ms=5)
    futures = [
        p.send(topic, key=f"k{i % KEYS}".encode(), value=str(i).encode(), headers=[("seq", str(i).encode())],
               timestamp_ms=1_600_000_000_000 + i)
        for i in range(N)
    ]
    p.flush(30)
    metas = [f.get(timeout=10) for f in futures]
    assert len(metas) == N
    p.close()

    got = consume_all(node, topic, 3, N)
    assert len(got) == N
    last = {}
    part_of = {}
    for r in got:
        seq = int(dict(r.headers)["seq"])
        assert r.key == f"k{seq % KEYS}".encode() and r.value == str(seq).encode()
        assert r.timestamp == 1_600_000_000_000 + seq
        assert part_of.setdefault(r.key, r.partition) == r.partition
        assert last.get(r.key, -1) < seq
        last[r.key] = seq
    assert sorted(int(dict(r.headers)["seq"]) for r in got) == list(range(N))


def test_offsets_configs_partitions_and_deletion(node):
    a = admin(node)
    a.create_topics([NewTopic("kp-admin", 2, 1, topic_configs={"retention.ms": "60000"})])
    with pytest.raises(TopicAlreadyExistsError):
        a.create_topics([NewTopic("kp-admin", 2, 1)])

    p = KafkaProducer(bootstrap_servers=node.bootstrap, acks=1)
    for i in range(100):
        p.send("kp-admin", value=b"x", partition=i % 2)
    p.flush(10)
    p.close()
    c = KafkaConsumer(bootstrap_servers=node.bootstrap)
    tps = [TopicPartition("kp-admin", 0), TopicPartition("kp-admin", 1)]
    assert c.beginning_offsets(tps) == {tps[0]: 0, tps[1]: 0}
    assert c.end_offsets(tps) == {tps[0]: 50, tps[1]: 50}
    c.close()

    def retention():
        res = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin")])
        return res["topic"]["kp-admin"]["retention.ms"]

    assert retention()["value"] == "60000"
    assert retention()["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin", configs={"retention.ms": "120000"})])
    assert retention()["value"] == "120000"

    a.create_partitions({"kp-admin": NewPartitions(4)})
    with pytest.raises(InvalidPartitionsError):
        a.create_partitions({"kp-admin": NewPartitions(2)})
    assert len(a.describe_topics(["kp-admin"])[0]["partitions"]) == 4

    a.delete_topics(["kp-admin"])
    assert "kp-admin" not in a.list_topics()
    with pytest.raises(UnknownTopicOrPartitionError):
        a.delete_topics(["kp-admin"])
