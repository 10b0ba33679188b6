"""Consumer groups with real clients: committed offsets survive a consumer restart (the
seed scenario), auto.offset.reset for new groups, partitions shared within a group and
redistributed as members come and go, every group gets every message."""

import collections
import threading
import time
import uuid

import pytest

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_until


def create(node, topic, partitions=1):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(10)


def produce(node, topic, values, key=None):
    p = Producer({"bootstrap.servers": node.bootstrap, "linger.ms": 5})
    for i, v in enumerate(values):
        p.produce(topic, key=key(i) if key else None, value=v)
    assert p.flush(30) == 0


def consumer(node, group, **extra):
    conf = {"bootstrap.servers": node.bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    conf.update(extra)
    return Consumer(conf)


def poll_values(c, count, timeout=30):
    """Polls until `count` records arrived (fails at the deadline); returns the messages."""
    got = []

    def enough():
        for m in c.consume(100, timeout=0.2):
            if m.error() is None:
                got.append(m)
            elif m.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(m.error())
        return len(got) >= count
    wait_until(f"{count} records", enough, timeout=timeout)
    return got


def test_restarted_consumer_resumes_after_its_committed_offset(node):
    """The seed scenario: 1,000 produced; 600 consumed and committed; 1,000 more produced while
    the consumer is down; on restart it gets exactly the remaining 1,400."""
    create(node, "seed")
    produce(node, "seed", [f"m{i}".encode() for i in range(1000)])
    c = consumer(node, "seed-group")
    c.subscribe(["seed"])
    first = []
    while len(first) < 600:
        for m in c.consume(600 - len(first), timeout=1):
            assert m.error() is None, m.error()
            first.append(m)
    c.commit(message=first[-1], asynchronous=False)
    c.close()
    assert [m.value() for m in first] == [f"m{i}".encode() for i in range(600)]

    produce(node, "seed", [f"m{i}".encode() for i in range(1000, 2000)])
    c = consumer(node, "seed-group")
    c.subscribe(["seed"])
    rest = poll_values(c, 1400)
    # Nothing more than the 1,400 arrives.
    extra = c.consume(10, timeout=2)
    c.close()
    assert [m.value() for m in rest] == [f"m{i}".encode() for i in range(600, 2000)]
    assert [m for m in extra if m.error() is None] == []


def test_committed_offsets_survive_a_broker_restart(node):
    create(node, "durable")
    produce(node, "durable", [f"d{i}".encode() for i in range(100)])
    c = consumer(node, "durable-group")
    c.subscribe(["durable"])
    got = poll_values(c, 100)
    c.commit(message=got[39], asynchronous=False)  # committed offset 40
    c.close()
    node.stop()
    node.start()
    c = consumer(node, "durable-group")
    committed = wait_until("committed offset", lambda: c.committed([TopicPartition("durable", 0)], timeout=5)[0].offset == 40 or None)
    assert committed
    c.subscribe(["durable"])
    assert poll_values(c, 60)[0].value() == b"d40"
    c.close()


def test_auto_offset_reset_for_a_new_group(node):
    create(node, "reset")
    produce(node, "reset", [b"old"] * 10)
    early = consumer(node, "g-earliest", **{"auto.offset.reset": "earliest"})
    early.subscribe(["reset"])
    assert len(poll_values(early, 10)) == 10
    late = consumer(node, "g-latest", **{"auto.offset.reset": "latest"})
    late.subscribe(["reset"])
    # A "latest" consumer starts at the end: it sees records produced after it joined and
    # never the ten old ones. Produce a new record now and then until some arrive.
    p = Producer({"bootstrap.servers": node.bootstrap})
    got = []

    def some_new():
        p.produce("reset", value=b"new")
        p.flush(5)
        got.extend(m.value() for m in late.consume(10, timeout=0.3) if m.error() is None)
        return len(got) >= 3
    wait_until("new records at the latest consumer", some_new, timeout=40)
    assert set(got) == {b"new"}, got
    early.close()
    late.close()


def test_group_members_share_partitions_and_every_group_gets_everything(node):
    create(node, "shared", partitions=6)
    group = f"g-{uuid.uuid4()}"
    a = consumer(node, group)
    b = consumer(node, group)
    a.subscribe(["shared"])
    b.subscribe(["shared"])

    def balanced(*cs):
        for c in cs:
            c.consume(10, timeout=0.1)
        sizes = [len(c.assignment()) for c in cs]
        parts = [p.partition for c in cs for p in c.assignment()]
        return sorted(parts) == list(range(6)) and len(set(sizes)) == 1
    wait_until("two members with 3 partitions each", lambda: balanced(a, b), timeout=40)

    c3 = consumer(node, group)
    c3.subscribe(["shared"])
    wait_until("three members with 2 partitions each", lambda: balanced(a, b, c3), timeout=40)
    c3.close()
    wait_until("two members again after one left", lambda: balanced(a, b), timeout=40)
    a.close()
    b.close()

    # Another group sees every record, independently.
    produce(node, "shared", [f"s{i}".encode() for i in range(300)], key=lambda i: f"k{i}".encode())
    other = consumer(node, f"other-{uuid.uuid4()}")
    other.subscribe(["shared"])
    assert len({m.value() for m in poll_values(other, 300)}) == 300
    other.close()


def test_cooperative_rebalance_moves_only_the_partitions_that_change_owner(node):
    """KIP-429 with librdkafka's cooperative-sticky assignor: when a second member joins, the
    first gives up only the partitions that move (an incremental revoke), keeps consuming the
    rest throughout, and the two end with 3 partitions each."""
    create(node, "coop", partitions=6)
    group = f"g-{uuid.uuid4()}"
    events = {"a": [], "b": []}

    def listener(name):
        return {"on_assign": lambda c, ps: events[name].append(("assign", sorted(p.partition for p in ps))),
                "on_revoke": lambda c, ps: events[name].append(("revoke", sorted(p.partition for p in ps)))}
    coop = {"partition.assignment.strategy": "cooperative-sticky"}
    a = consumer(node, group, **coop)
    a.subscribe(["coop"], **listener("a"))
    wait_until("the first member to own all 6", lambda: a.consume(10, timeout=0.1) is not None and len(a.assignment()) == 6, timeout=40)
    b = consumer(node, group, **coop)
    b.subscribe(["coop"], **listener("b"))

    def split():
        for c in (a, b):
            c.consume(10, timeout=0.1)
        parts = sorted(p.partition for c in (a, b) for p in c.assignment())
        return parts == list(range(6)) and len(a.assignment()) == 3 and len(b.assignment()) == 3
    wait_until("3 partitions each", split, timeout=40)
    kept = sorted(p.partition for p in a.assignment())
    revoked = [ps for kind, ps in events["a"] if kind == "revoke" and ps]
    # Incremental: the first member revoked exactly the 3 partitions that moved, never all 6.
    assert revoked == [sorted(set(range(6)) - set(kept))], events["a"]
    assert [ps for kind, ps in events["b"] if kind == "assign" and ps] == [sorted(set(range(6)) - set(kept))], events["b"]
    a.close()
    b.close()


def test_group_tools_list_and_describe(node):
    from confluent_kafka import ConsumerGroupState
    create(node, "listed")
    c = consumer(node, "listed-group")
    c.subscribe(["listed"])
    wait_until("an assignment", lambda: c.consume(1, timeout=0.2) == [] and c.assignment())
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    groups = admin.list_consumer_groups().result(10)
    assert "listed-group" in [g.group_id for g in groups.valid]
    desc = admin.describe_consumer_groups(["listed-group"])["listed-group"].result(10)
    assert desc.state == ConsumerGroupState.STABLE
    assert len(desc.members) == 1
    assert [tp.partition for tp in desc.members[0].assignment.topic_partitions] == [0]
    c.close()


MEMBER_SCRIPT = """
import sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 500, "enable.auto.commit": False})
c.subscribe([sys.argv[3]])
while True:
    c.consume(10, timeout=0.2)
    if c.assignment():
        print("assigned", flush=True)
"""


def test_killed_member_partitions_move_after_the_session_timeout(node):
    import subprocess
    import sys
    create(node, "killed", partitions=4)
    group = f"g-{uuid.uuid4()}"
    survivor = consumer(node, group)
    survivor.subscribe(["killed"])
    victim = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, node.bootstrap, group, "killed"],
                              stdout=subprocess.PIPE)
    try:
        def split():
            survivor.consume(10, timeout=0.1)
            return len(survivor.assignment()) == 2
        wait_until("the partitions split between two members", split, timeout=40)
        victim.kill()
        victim.wait()
        started = time.monotonic()

        def all_mine():
            survivor.consume(10, timeout=0.1)
            return len(survivor.assignment()) == 4
        wait_until("the survivor to own every partition", all_mine, timeout=40)
        # Not before the victim's session (6 s) ran out.
        assert time.monotonic() - started > 4
    finally:
        victim.kill()
        survivor.close()


COMMITTING_MEMBER_SCRIPT = """
import sys, time
from confluent_kafka import Consumer, KafkaException, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 500, "enable.auto.commit": False, "auto.offset.reset": "earliest"})
c.subscribe([sys.argv[3]])
while True:
    for m in c.consume(10, timeout=0.2):
        if m.error() is not None:
            continue
        time.sleep(0.02)  # the work a record costs: this member is slow
        try:
            c.commit(message=m, asynchronous=False)
        except KafkaException:
            break  # not committed: not consumed; whoever owns the partition reads it again
        print(m.value().decode(), flush=True)
"""


class CommittingMember:
    """A group member in this process that counts a record as consumed only once its
    offset commit (synchronous) succeeded, as an application that must not lose work does."""

    def __init__(self, node, group, topic, consumed):
        self.c = consumer(node, group)
        self.c.subscribe([topic])
        self.consumed = consumed

    def poll(self):
        from confluent_kafka import KafkaException
        for m in self.c.consume(500, timeout=0.05):
            if m.error() is not None:
                continue
            try:
                self.c.commit(message=m, asynchronous=False)
            except KafkaException:
                try:  # still ours: read it again rather than skip it
                    self.c.seek(TopicPartition(m.topic(), m.partition(), m.offset()))
                except KafkaException:
                    pass
                # And stop here: committing a later record of the batch would pass this one.
                return
            self.consumed.append(m.value().decode())

    def partitions(self):
        return len(self.c.assignment())


def test_group_consumes_every_record_exactly_once_across_joins_and_a_killed_member(node):
    """Two members share a 6-partition topic 3 and 3; a third joins and each gets 2; one is
    SIGKILLed mid-work and its partitions move to the others. With a synchronous commit per
    record, every record is consumed exactly once by the group: none missed, none twice."""
    import subprocess
    import sys
    create(node, "once", partitions=6)
    group = f"g-{uuid.uuid4()}"
    consumed = []  # by the members in this process
    victim_consumed = []
    survivor = CommittingMember(node, group, "once", consumed)
    victim = subprocess.Popen([sys.executable, "-c", COMMITTING_MEMBER_SCRIPT, node.bootstrap, group, "once"],
                              stdout=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: victim_consumed.extend(line.strip() for line in victim.stdout),
                              daemon=True)
    reader.start()
    try:
        def shares(sizes, *members):
            for m in members:
                m.poll()
            return sorted(m.partitions() for m in members) == sizes
        wait_until("3 partitions each for two members",
                   lambda: shares([3], survivor) and victim.poll() is None, timeout=40)
        produce(node, "once", [f"a{i}".encode() for i in range(3000)], key=lambda i: f"k{i % 97}".encode())
        third = CommittingMember(node, group, "once", consumed)
        wait_until("2 partitions each for three members", lambda: shares([2, 2], survivor, third), timeout=40)
        wait_until("the slow member to be mid-work", lambda: shares([2, 2], survivor, third) and len(victim_consumed) >= 50,
                   timeout=40)
        victim.kill()
        victim.wait()
        produce(node, "once", [f"b{i}".encode() for i in range(3000)], key=lambda i: f"k{i % 97}".encode())
        wait_until("the others to own all 6 partitions", lambda: shares([3, 3], survivor, third), timeout=40)
        reader.join(timeout=10)
        expected = {f"a{i}" for i in range(3000)} | {f"b{i}" for i in range(3000)}
        try:
            wait_until("every record consumed",
                       lambda: shares([3, 3], survivor, third) is not None
                       and len(consumed) + len(victim_consumed) >= len(expected), timeout=60)
        except AssertionError:
            missing = expected - set(consumed + victim_consumed)
            print(f"consumed {len(consumed)} here and {len(victim_consumed)} by the victim; partitions "
                  f"{survivor.c.assignment()} / {third.c.assignment()}; missing {len(missing)}: {sorted(missing)[:20]}; "
                  f"node log:\n{node.log_tail(60)}", flush=True)
            raise
        # A moment more of polling: anything consumed twice would show up now.
        for _ in range(20):
            shares([3, 3], survivor, third)
        everything = consumed + victim_consumed
        twice = sorted(v for v, n in collections.Counter(everything).items() if n > 1)
        assert twice == [], f"consumed more than once: {twice[:20]} ({len(twice)})"
        assert set(everything) == expected, f"missed: {sorted(expected - set(everything))[:20]}"
        assert 0 < len(victim_consumed) < 3000
        third.c.close()
    finally:
        victim.kill()
        survivor.c.close()


def test_static_member_rejoins_without_a_rebalance(node):
    create(node, "static", partitions=4)
    group = f"g-{uuid.uuid4()}"
    revokes = []
    other = consumer(node, group)
    other.subscribe(["static"], on_revoke=lambda c, ps: revokes.append(list(ps)))
    first = consumer(node, group, **{"group.instance.id": "instance-1"})
    first.subscribe(["static"])

    def split(*cs):
        for c in cs:
            c.consume(10, timeout=0.1)
        return all(len(c.assignment()) == 2 for c in cs)
    wait_until("two members with 2 partitions each", lambda: split(other, first), timeout=40)
    mine = sorted(p.partition for p in first.assignment())
    revokes_before = len(revokes)
    first.close()  # a static member does not leave the group on close
    again = consumer(node, group, **{"group.instance.id": "instance-1"})
    again.subscribe(["static"])
    wait_until("the static member's partitions back", lambda: split(again, other), timeout=40)
    assert sorted(p.partition for p in again.assignment()) == mine
    # The other member kept its partitions throughout: no rebalance happened.
    for _ in range(10):
        other.consume(10, timeout=0.1)
    assert len(revokes) == revokes_before
    again.close()
    other.close()


def test_kafka_python_group_commits_and_resumes(node):
    from kafka import KafkaConsumer
    create(node, "kp-groups")
    produce(node, "kp-groups", [f"p{i}".encode() for i in range(50)])

    def make():
        return KafkaConsumer("kp-groups", bootstrap_servers=node.bootstrap, group_id="kp-group",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             consumer_timeout_ms=10000)
    c = make()
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == 20:
            break
    c.commit()
    c.close()
    assert got == [f"p{i}".encode() for i in range(20)]
    c = make()
    rest = []
    for m in c:
        rest.append(m.value)
        if len(rest) == 30:
            break
    c.close()
    assert rest == [f"p{i}".encode() for i in range(20, 50)]


def test_a_static_member_replaced_by_a_new_instance_is_fenced(node):
    """A process restarted with the same group.instance.id while the old one still runs: the
    broker answers the old one FENCED_INSTANCE_ID (librdkafka: "Static consumer fenced by
    other consumer with same group.instance.id", fatal), so the old one drops its partitions
    and does not rejoin; the new one keeps them. (Before, the old one got UNKNOWN_MEMBER_ID,
    rejoined with the same instance id and fenced the new one in turn.)"""
    create(node, "fenced", partitions=2)
    produce(node, "fenced", [b"%d" % i for i in range(10)])
    group = f"g-{uuid.uuid4()}"
    old = consumer(node, group, **{"group.instance.id": "instance-1"})
    old.subscribe(["fenced"])
    poll_values(old, 10)
    old.commit(asynchronous=False)
    new = consumer(node, group, **{"group.instance.id": "instance-1"})
    new.subscribe(["fenced"])

    def serve_both():
        new.consume(10, timeout=0.1)
        try:
            old.consume(10, timeout=0.1)
        except KafkaException:
            pass  # a fenced consumer may fail its calls
    wait_until("the new instance to own both partitions and the old none",
               lambda: serve_both() or (len(new.assignment()) == 2 and not old.assignment()), timeout=40)
    # For several heartbeat intervals, the old instance never takes them back.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        serve_both()
        assert len(new.assignment()) == 2 and not old.assignment()
    with pytest.raises(KafkaException):
        old.commit(offsets=[TopicPartition("fenced", 0, 3)], asynchronous=False)
    committed = new.committed([TopicPartition("fenced", 0), TopicPartition("fenced", 1)], timeout=10)
    # The 10 records may all sit in one partition (librdkafka's sticky partitioner); the other
    # then has no commit (OFFSET_INVALID, -1001).
    assert sum(max(tp.offset, 0) for tp in committed) == 10, committed
    old.close()
    new.close()


def test_a_busy_member_keeps_its_partition_until_its_max_poll_interval(node):
    """Two members on one partition; the first stops polling for longer than
    max.poll.interval.ms. As with Kafka, the second gets the partition's records only once the
    first has exceeded max.poll.interval.ms and left, never while the first may still be
    processing them (the rebalance waits up to the rebalance timeout for every member)."""
    create(node, "busy", partitions=1)
    produce(node, "busy", [b"%d" % i for i in range(50)])
    group = f"g-{uuid.uuid4()}"
    conf = {"max.poll.interval.ms": 10000, "session.timeout.ms": 6000}
    first = consumer(node, group, **conf)
    first.subscribe(["busy"])
    poll_values(first, 1)
    took = time.monotonic()  # the first member's last poll: it is busy from here
    second = consumer(node, group, **conf)
    second.subscribe(["busy"])
    got = []

    def second_has_records():
        got.extend(m for m in second.consume(10, timeout=0.2) if m.error() is None)
        return got
    wait_until("the second member to get the partition's records", second_has_records, timeout=40)
    waited = time.monotonic() - took
    assert waited >= 9, f"the second member got the busy member's partition after {waited:.1f} s"
    first.close()
    second.close()
