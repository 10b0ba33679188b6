"""Committed offsets outlive log retention (issue #19): `__consumer_offsets` is a compacted
topic, so a group's last commit stays however long the group is quiet, through a restart; a
cluster whose offsets topic was made with the delete policy is switched to compact."""

import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import committed, wait_until

# Retention that would delete a commit within a second if it applied to the offsets topic.
TINY_RETENTION = ["log.retention.ms=1000", "log.retention.check.interval.ms=100", "offsets.topic.num.partitions=1"]


def topic_config(node, topic, key):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin.describe_configs([res])[res].result(15)[key].value




def test_a_quiet_groups_last_commit_survives_retention_and_a_restart(node_factory):
    n = node_factory(TINY_RETENTION).start()
    topic, group = "data-" + uuid.uuid4().hex[:8], "quiet-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": n.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(15)
    p = Producer({"bootstrap.servers": n.bootstrap})
    for i in range(100):
        p.produce(topic, value=b"x" * 100)
    assert p.flush(15) == 0
    c = Consumer({"bootstrap.servers": n.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 42)], asynchronous=False)
    c.close()
    assert topic_config(n, "__consumer_offsets", "cleanup.policy") == "compact"
    # Retention has run over the data topic (its records are deleted); it must not have run
    # over the commit.
    probe = Consumer({"bootstrap.servers": n.bootstrap, "group.id": "probe"})
    wait_until("retention to delete the data topic's records",
               lambda: probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)[0] > 0, timeout=30)
    probe.close()
    assert committed(n, group, topic) == 42
    n.stop()
    n.start()
    assert committed(n, group, topic) == 42, "the commit is read back from the log after a restart"


def test_an_offsets_topic_made_with_the_delete_policy_is_switched_to_compact(node):
    # What a cluster from before this change has: __consumer_offsets with no compaction.
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    name = "__consumer_offsets"
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1,
                                  config={"cleanup.policy": "delete"})])[name].result(15)
    wait_until("the offsets topic to be switched to compact",
               lambda: topic_config(node, name, "cleanup.policy") == "compact", timeout=30)


def test_clients_cannot_write_to_the_offsets_topic(node):
    """As Kafka: only the broker writes `__consumer_offsets` (a client's records there could
    rewrite any group's offsets); a produce is INVALID_TOPIC_EXCEPTION."""
    from confluent_kafka import KafkaError
    topic = "data-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(15)
    assert committed(node, "any-group", topic) < 0  # makes the offsets topic
    errors = []
    p = Producer({"bootstrap.servers": node.bootstrap})
    p.produce("__consumer_offsets", key=b"k", value=b"forged", partition=0, on_delivery=lambda e, m: errors.append(e))
    assert p.flush(15) == 0
    assert [e.code() if e else None for e in errors] == [KafkaError.TOPIC_EXCEPTION]
