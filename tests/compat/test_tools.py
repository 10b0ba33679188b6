"""The CLI tools (`strom topics`, console tools, `strom consumer-groups`, `strom perf`) used
as a Kafka user uses kafka-topics.sh and friends, checked against what real clients see."""

import subprocess

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import STROM, wait_until


def strom(*args, stdin=None, check=True):
    r = subprocess.run([STROM, *args], input=stdin, capture_output=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"strom {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    return r


def test_topics_create_list_describe_alter_delete(node):
    bs = ["--bootstrap-server", node.bootstrap]
    out = strom("topics", *bs, "--create", "--topic", "orders", "--partitions", "3", "--replication-factor", "1",
                "--config", "retention.ms=3600000").stdout.decode()
    assert out.strip() == "Created topic orders."
    # Again: TOPIC_ALREADY_EXISTS, unless --if-not-exists.
    again = strom("topics", *bs, "--create", "--topic", "orders", "--partitions", "3", check=False)
    assert again.returncode != 0 and b"TOPIC_ALREADY_EXISTS" in again.stderr
    strom("topics", *bs, "--create", "--topic", "orders", "--if-not-exists")
    assert "orders" in strom("topics", *bs, "--list").stdout.decode().split()

    desc = strom("topics", *bs, "--describe", "--topic", "orders").stdout.decode().splitlines()
    head = desc[0].split("\t")
    assert head[0] == "Topic: orders" and head[2] == "PartitionCount: 3" and head[3] == "ReplicationFactor: 1"
    assert head[4] == "Configs: retention.ms=3600000"
    parts = [l.strip().split("\t") for l in desc[1:]]
    assert [p[1] for p in parts] == ["Partition: 0", "Partition: 1", "Partition: 2"]
    assert all(p[2] == "Leader: 1" and p[3] == "Replicas: 1" and p[4] == "Isr: 1" for p in parts)
    assert strom("topics", *bs, "--describe", "--under-replicated-partitions").stdout.decode().strip() == ""

    strom("topics", *bs, "--alter", "--topic", "orders", "--partitions", "5")
    shrink = strom("topics", *bs, "--alter", "--topic", "orders", "--partitions", "2", check=False)
    assert shrink.returncode != 0 and b"INVALID_PARTITIONS" in shrink.stderr
    desc = strom("topics", *bs, "--describe", "--topic", "orders").stdout.decode()
    assert "PartitionCount: 5" in desc

    strom("topics", *bs, "--delete", "--topic", "orders")
    wait_until("the topic to go", lambda: "orders" not in strom("topics", *bs, "--list").stdout.decode().split())
    missing = strom("topics", *bs, "--delete", "--topic", "orders", check=False)
    assert missing.returncode != 0
    strom("topics", *bs, "--delete", "--topic", "orders", "--if-exists")
    bad = strom("topics", *bs, "--create", "--topic", "bad name!", check=False)
    assert bad.returncode != 0 and b"INVALID_TOPIC_EXCEPTION" in bad.stderr


def test_console_producer_and_consumer_round_trip_with_keys(node):
    bs = ["--bootstrap-server", node.bootstrap]
    strom("topics", *bs, "--create", "--topic", "lines", "--partitions", "4")
    lines = "".join(f"key{i % 5}\tvalue {i}\n" for i in range(200)).encode()
    strom("console-producer", *bs, "--topic", "lines", "--property", "parse.key=true", stdin=lines)
    out = strom("console-consumer", *bs, "--topic", "lines", "--from-beginning", "--max-messages", "200",
                "--property", "print.key=true", "--property", "print.partition=true").stdout.decode().splitlines()
    assert len(out) == 200
    rows = [l.split("\t") for l in out]
    assert sorted(r[2] for r in rows) == sorted(f"value {i}" for i in range(200))
    # One partition per key, and the same one librdkafka's murmur2 partitioner picks.
    by_key = {}
    for part, key, _ in rows:
        by_key.setdefault(key, set()).add(part)
    assert all(len(ps) == 1 for ps in by_key.values())
    p = Producer({"bootstrap.servers": node.bootstrap, "partitioner": "murmur2_random"})
    placed = {}
    for k in by_key:
        p.produce("lines", key=k.encode(), value=b"probe", on_delivery=lambda e, m: placed.__setitem__(m.key().decode(), m.partition()))
    p.flush(10)
    assert {k: f"Partition:{v}" for k, v in placed.items()} == {k: next(iter(v)) for k, v in by_key.items()}
    # Values are in order within a key.
    for k in by_key:
        vals = [int(r[2].split()[1]) for r in rows if r[1] == k]
        assert vals == sorted(vals)


def test_consumer_groups_describe_lag_reset_and_delete(node):
    bs = ["--bootstrap-server", node.bootstrap]
    strom("topics", *bs, "--create", "--topic", "work", "--partitions", "2")
    p = Producer({"bootstrap.servers": node.bootstrap})
    for i in range(100):
        p.produce("work", value=f"w{i}".encode(), partition=i % 2)
    p.flush(10)
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "workers", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.assign([TopicPartition("work", 0, 0), TopicPartition("work", 1, 0)])
    got = []
    wait_until("30 records", lambda: got.extend(m for m in c.consume(30 - len(got), timeout=0.5) if m.error() is None) or len(got) >= 30)
    c.commit(offsets=[TopicPartition("work", 0, 10), TopicPartition("work", 1, 20)], asynchronous=False)
    c.close()

    assert "workers" in strom("consumer-groups", *bs, "--list").stdout.decode().split()
    rows = [l.split() for l in strom("consumer-groups", *bs, "--describe", "--group", "workers").stdout.decode().splitlines()
            if l.startswith("workers")]
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == [("work", "0", "10", "50", "40"), ("work", "1", "20", "50", "30")]

    dry = strom("consumer-groups", *bs, "--reset-offsets", "--group", "workers", "--topic", "work", "--to-earliest", "--dry-run").stdout.decode()
    assert [l.split()[-1] for l in dry.splitlines() if l.startswith("workers")] == ["0", "0"]
    # A dry run changes nothing.
    rows = [l.split() for l in strom("consumer-groups", *bs, "--describe", "--group", "workers").stdout.decode().splitlines() if l.startswith("workers")]
    assert [r[3] for r in rows] == ["10", "20"]
    strom("consumer-groups", *bs, "--reset-offsets", "--group", "workers", "--topic", "work", "--shift-by", "5", "--execute")
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "workers"})
    assert [tp.offset for tp in c.committed([TopicPartition("work", 0), TopicPartition("work", 1)], timeout=10)] == [15, 25]
    c.close()

    out = strom("consumer-groups", *bs, "--delete", "--group", "workers").stdout.decode()
    assert "successful" in out
    assert "workers" not in strom("consumer-groups", *bs, "--list").stdout.decode().split()


def test_perf_produce_and_consume_report_what_they_did(node):
    bs = ["--bootstrap-server", node.bootstrap]
    strom("topics", *bs, "--create", "--topic", "perf", "--partitions", "2")
    out = strom("perf", "produce", *bs, "--topic", "perf", "--num-records", "20000", "--record-size", "100",
                "--batch-size", "100000").stdout.decode()
    assert out.startswith("20000 records sent,") and "ms 99.9th" in out
    out = strom("perf", "consume", *bs, "--topic", "perf", "--messages", "20000").stdout.decode()
    assert out.startswith("20000 records consumed,")


def test_console_consumer_in_a_group_resumes_after_its_commits(node):
    bs = ["--bootstrap-server", node.bootstrap]
    strom("topics", *bs, "--create", "--topic", "grouped", "--partitions", "2")
    strom("console-producer", *bs, "--topic", "grouped", stdin="".join(f"m{i}\n" for i in range(40)).encode())
    first = strom("console-consumer", *bs, "--topic", "grouped", "--group", "console-g", "--from-beginning",
                  "--max-messages", "25").stdout.decode().split()
    assert len(first) == 25
    strom("console-producer", *bs, "--topic", "grouped", stdin="".join(f"n{i}\n" for i in range(10)).encode())
    # The group resumes where it committed: the other 15 and the 10 new ones, nothing twice.
    rest = strom("console-consumer", *bs, "--topic", "grouped", "--group", "console-g",
                 "--timeout-ms", "3000").stdout.decode().split()
    assert sorted(first + rest) == sorted([f"m{i}" for i in range(40)] + [f"n{i}" for i in range(10)])
    rows = [l.split() for l in strom("consumer-groups", *bs, "--describe", "--group", "console-g").stdout.decode().splitlines()
            if l.startswith("console-g")]
    assert sum(int(r[5]) for r in rows) == 0, rows  # no lag left


def test_consumer_groups_delete_offsets(node):
    """kafka-consumer-groups.sh --delete-offsets: refused for a topic a live member subscribes
    to, then (member gone) the offsets of that topic are gone and the other topic's stay."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient
    bs = ["--bootstrap-server", node.bootstrap]
    for t in ("keep", "drop"):
        strom("topics", *bs, "--create", "--topic", t, "--partitions", "2", "--replication-factor", "1")
    p = Producer({"bootstrap.servers": node.bootstrap})
    for i in range(20):
        p.produce("keep", value=b"k", partition=i % 2)
        p.produce("drop", value=b"d", partition=i % 2)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "pruned", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe(["keep", "drop"])
    got = []
    wait_until("40 records", lambda: got.extend(m for m in c.consume(100, timeout=0.2) if m.error() is None)
               or len(got) >= 40, timeout=30)
    c.commit(asynchronous=False)

    live = strom("consumer-groups", *bs, "--delete-offsets", "--group", "pruned", "--topic", "drop", check=False)
    assert live.returncode != 0
    assert "GROUP_SUBSCRIBED_TO_TOPIC" in live.stdout.decode()
    c.close()

    out = strom("consumer-groups", *bs, "--delete-offsets", "--group", "pruned", "--topic", "drop").stdout.decode()
    assert "Request succeed for deleting offsets with topic drop group pruned" in out
    assert [l.split()[2] for l in out.splitlines() if l.startswith("drop")] == ["Successful", "Successful"]

    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    asked = [TopicPartition(t, p) for t in ("keep", "drop") for p in (0, 1)]
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("pruned", asked)])["pruned"].result(10)
    offsets = {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}
    assert offsets[("keep", 0)] == 10 and offsets[("keep", 1)] == 10
    assert offsets[("drop", 0)] < 0 and offsets[("drop", 1)] < 0  # no committed offset any more


def test_transactions_describe_producers_lists_each_idempotent_producer(node):
    bs = ["--bootstrap-server", node.bootstrap]
    strom("topics", *bs, "--create", "--topic", "described", "--partitions", "1", "--replication-factor", "1")
    for _ in range(2):  # two producers, two ids
        p = Producer({"bootstrap.servers": node.bootstrap, "enable.idempotence": True, "linger.ms": 0})
        for i in range(3):
            p.produce("described", b"v%d" % i)
            p.flush(10)  # one batch each: sequences 0, 1, 2
    out = strom("transactions", *bs, "describe-producers", "--topic", "described", "--partition", "0").stdout.decode()
    lines = out.strip().splitlines()
    assert lines[0].split("\t") == ["ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch", "LastSequence",
                                    "LastTimestamp", "CurrentTransactionStartOffset"], out
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 2 and len({r[0] for r in rows}) == 2, out
    for pid, epoch, coordinator_epoch, last_seq, ts, txn_start in rows:
        assert int(pid) >= 0 and epoch == "0" and coordinator_epoch == "-1" and txn_start == "-1", out
        assert last_seq == "2", out
        assert int(ts) > 1_600_000_000_000, out
    r = strom("transactions", *bs, "describe-producers", "--topic", "nope", "--partition", "0", check=False)
    assert r.returncode != 0 and b"nope" in r.stderr, r.stderr
