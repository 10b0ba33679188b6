"""Replication on a three-node cluster with real clients: RF=3 topics replicate, acks=all
survives a leader kill with nothing acknowledged lost, a restarted broker catches up and
rejoins the ISR, and the replicas' logs agree byte for byte."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from strom_cluster import wait_until  # noqa: E402


def produce(bootstrap, topic, records, acks="all", extra=None, acked=None):
    """Sends (key, value) pairs; returns {value: (partition, offset)} for acknowledged ones and
    the list of errors. `acked` may be passed in to watch progress from another thread."""
    acked = {} if acked is None else acked
    errors = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            errors.append(err)

    conf = {"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, "message.timeout.ms": 60000}
    conf.update(extra or {})
    p = Producer(conf)
    for k, v in records:
        while True:
            try:
                p.produce(topic, key=k, value=v, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(90) == 0, "producer could not deliver everything in time"
    return acked, errors


def consume_all(bootstrap, topic, partitions, expected_total, timeout=60):
    """Reads every partition from the beginning until `expected_total` records (or the end)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = []
    try:
        def done():
            for m in c.consume(500, timeout=0.5):
                if m.error() is None:
                    seen.append((m.partition(), m.offset(), m.key(), m.value()))
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(m.error())
            return len(seen) >= expected_total
        wait_until(f"{expected_total} records of {topic}", done, timeout=timeout)
    finally:
        c.close()
    return seen


def check_history(acked, seen):
    """Every acknowledged record is read back at the offset it was acknowledged at; offsets of
    each partition are consecutive (no gaps)."""
    by_value = {}
    for p, o, _k, v in seen:
        by_value.setdefault(v, []).append((p, o))
    lost = [v for v in acked if v not in by_value]
    moved = [v for v, at in acked.items() if at not in by_value.get(v, [])]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
    assert not moved, f"{len(moved)} records not at their acknowledged offset, e.g. {moved[:5]}"
    per_partition = {}
    for p, o, _k, _v in seen:
        per_partition.setdefault(p, []).append(o)
    for p, offsets in per_partition.items():
        offsets.sort()
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"gap in partition {p}"


def assert_replicas_agree(cluster, topic, partitions):
    """Once the ISR is full and idle, every replica's log is the same bytes."""
    cluster.wait_full_isr(topic)
    for p in range(partitions):
        def same():
            logs = {n.node_id: n.partition_log_bytes(topic, p) for n in cluster.nodes.values()}
            return len(set(logs.values())) == 1 and logs
        logs = wait_until(f"replicas of {topic}-{p} to hold the same bytes", same, timeout=30)
        assert len(next(iter(logs.values()))) > 0


def test_rf3_topic_is_replicated_to_every_broker(cluster_factory):
    c = cluster_factory(3)
    c.create_topic("rep", partitions=3, rf=3, config={"min.insync.replicas": "2"})
    ps = c.partitions("rep")
    assert sorted({leader for leader, _, _ in ps.values()}) == [1, 2, 3], f"leaders spread: {ps}"
    records = [(f"k{i % 17}".encode(), f"v{i}".encode()) for i in range(3000)]
    acked, errors = produce(c.bootstrap, "rep", records)
    assert not errors and len(acked) == 3000
    check_history(acked, consume_all(c.bootstrap, "rep", 3, 3000))
    assert_replicas_agree(c, "rep", 3)


def test_leader_kill_loses_no_acknowledged_record(cluster_factory):
    c = cluster_factory(3)
    c.create_topic("kill", partitions=2, rf=3, config={"min.insync.replicas": "2"})
    c.wait_full_isr("kill")
    first, errors = produce(c.bootstrap, "kill", [(f"k{i % 10}".encode(), f"before-{i}".encode()) for i in range(2000)])
    assert not errors
    assert {p for p, _ in first.values()} == {0, 1}
    victim = c.leader_of("kill", 0)
    c.node(victim).kill()
    # The surviving brokers take over; acks=all keeps working with 2 of 3 in sync.
    wait_until("a new leader for kill-0", lambda: c.leader_of("kill", 0) not in (-1, victim), timeout=30)
    second, errors = produce(c.bootstrap, "kill", [(f"k{i % 10}".encode(), f"after-{i}".encode()) for i in range(2000)])
    assert not errors, errors[:3]
    acked = {**first, **second}
    check_history(acked, consume_all(c.bootstrap, "kill", 2, len(acked)))
    # The killed broker comes back, truncates where it diverged, catches up and rejoins.
    c.node(victim).start()
    assert_replicas_agree(c, "kill", 2)


def test_acks_all_refused_below_min_insync_replicas(cluster_factory):
    from kafka import KafkaProducer
    from kafka.errors import NotEnoughReplicasAfterAppendError, NotEnoughReplicasError
    c = cluster_factory(3)
    c.create_topic("strict", partitions=1, rf=3, config={"min.insync.replicas": "3"})
    c.wait_full_isr("strict")
    leader = c.leader_of("strict", 0)
    follower = next(i for i in c.nodes if i != leader)
    c.node(follower).kill()
    wait_until("the ISR to shrink", lambda: len(c.partitions("strict")[0][2]) == 2, timeout=30)
    p = KafkaProducer(bootstrap_servers=c.node(leader).bootstrap, acks="all", retries=0)
    try:
        err = None
        try:
            p.send("strict", b"x").get(timeout=20)
        # The leader refuses the batch, or (if it learned of the smaller ISR only while the
        # batch waited for the HW) says it was committed by too few replicas: both as Kafka.
        except (NotEnoughReplicasError, NotEnoughReplicasAfterAppendError) as e:
            err = e
        assert err is not None, "acks=all with ISR 2 < min.insync.replicas 3 must be refused"
        # acks=1 does not need the ISR.
        p1 = KafkaProducer(bootstrap_servers=c.node(leader).bootstrap, acks=1, retries=0)
        assert p1.send("strict", b"y").get(timeout=20).offset >= 0
        p1.close()
    finally:
        p.close()
    # A follower asked to take an acks=all batch says it is not the leader (so the client
    # refreshes its metadata), even while the ISR is below min.insync.replicas, as Kafka.
    other = next(i for i in c.nodes if i not in (leader, follower))
    assert raw_produce_error(c.node(other).bootstrap, "strict", 0, acks=-1) == NOT_LEADER_OR_FOLLOWER
    c.node(follower).start()
    c.wait_full_isr("strict")


NOT_LEADER_OR_FOLLOWER = 6


def raw_produce_error(bootstrap, topic, partition, acks):
    """The error code of a one-record Produce sent straight to the broker at `bootstrap`."""
    return raw_produce(bootstrap, topic, partition, acks)[0]


def raw_produce(bootstrap, topic, partition, acks, producer=None, timeout_ms=10000):
    """Sends one Produce v3 request of one record straight to the broker at `bootstrap` (no
    client routing, no retries) and returns the partition's (error code, base offset).
    `producer` = (producer id, epoch, base sequence) makes it an idempotent batch."""
    import socket
    import struct
    from kafka.record.memory_records import MemoryRecordsBuilder
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 16)
    if producer:
        b.set_producer_state(*producer, False)
    b.append(timestamp=None, key=None, value=b"raw")
    b.close()
    records = bytes(b.buffer())

    def string(v):
        return struct.pack(">h", len(v)) + v.encode()
    body = (struct.pack(">h", -1) + struct.pack(">hi", acks, timeout_ms) + struct.pack(">i", 1) + string(topic)
            + struct.pack(">i", 1) + struct.pack(">i", partition) + struct.pack(">i", len(records)) + records)
    header = struct.pack(">hhi", 0, 3, 7) + string("raw-produce")  # Produce, v3, correlation id 7
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout_ms / 1000 + 20) as s:
        frame = header + body
        s.sendall(struct.pack(">i", len(frame)) + frame)

        def exactly(n):
            out = b""
            while len(out) < n:
                chunk = s.recv(n - len(out))
                assert chunk, "connection closed before the response"
                out += chunk
            return out
        (size,) = struct.unpack(">i", exactly(4))
        resp = exactly(size)
    # correlation id, topics[1]: name, partitions[1]: index, error code, base offset, ...
    (correlation,) = struct.unpack_from(">i", resp, 0)
    assert correlation == 7
    pos = 4 + 4
    (name_len,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + name_len + 4
    index, error, base_offset = struct.unpack_from(">ihq", resp, pos)
    assert index == partition
    return error, base_offset


NOT_ENOUGH_REPLICAS = 19


def test_a_retried_batch_waits_for_the_isr_instead_of_being_refused(cluster_factory):
    """An idempotent producer's retry of a batch the leader already holds is not a new write:
    while the ISR is below min.insync.replicas it waits for the ISR to grow back and is then
    answered with the batch's original offset. Refusing it (NOT_ENOUGH_REPLICAS) would tell
    librdkafka the batch was not written; after an epoch bump it writes it again (the chaos
    test saw that duplicate). A new batch is still refused, as Kafka refuses it."""
    import threading
    c = cluster_factory(3, extra=["replica.lag.time.max.ms=2000"])
    c.create_topic("retry", partitions=1, rf=3, config={"min.insync.replicas": "3"})
    c.wait_full_isr("retry")
    leader = c.leader_of("retry", 0)
    at = c.node(leader).bootstrap
    pid = 1 << 40
    error, first = raw_produce(at, "retry", 0, -1, producer=(pid, 0, 0))
    assert error == 0 and first >= 0
    follower = next(i for i in c.nodes if i != leader)
    c.node(follower).pause()
    try:
        wait_until("the paused follower to leave the ISR", lambda: follower not in c.partitions("retry")[0][2], timeout=30)
        # The next batch is a new write: refused while the ISR is short.
        assert raw_produce(at, "retry", 0, -1, producer=(pid, 0, 1))[0] == NOT_ENOUGH_REPLICAS
        answer = []
        retry = threading.Thread(target=lambda: answer.append(raw_produce(at, "retry", 0, -1, producer=(pid, 0, 0),
                                                                          timeout_ms=60000)))
        retry.start()
        retry.join(3)
        assert retry.is_alive(), f"the retry was answered while the ISR was short: {answer}"
    finally:
        c.node(follower).resume()
    retry.join(60)
    assert answer == [(0, first)], answer
    c.wait_full_isr("retry")
    # Written once: the log holds the first batch only (the refused one was never written).
    now_at = c.node(c.leader_of("retry", 0)).bootstrap
    assert raw_produce(now_at, "retry", 0, -1, producer=(pid, 0, 1)) == (0, first + 1)


def test_paused_follower_leaves_and_rejoins_the_isr(cluster_factory):
    c = cluster_factory(3, extra=["replica.lag.time.max.ms=2000"])
    c.create_topic("lag", partitions=1, rf=3, config={"min.insync.replicas": "2"})
    c.wait_full_isr("lag")
    leader = c.leader_of("lag", 0)
    follower = next(i for i in c.nodes if i != leader)
    c.node(follower).pause()
    wait_until("the paused follower to leave the ISR", lambda: follower not in c.partitions("lag")[0][2], timeout=30)
    acked, errors = produce(c.bootstrap, "lag", [(None, f"m{i}".encode()) for i in range(500)])
    assert not errors and len(acked) == 500
    c.node(follower).resume()
    c.wait_full_isr("lag")
    assert_replicas_agree(c, "lag", 1)


def test_isr_changes_complete_when_every_alter_partition_reply_is_lost(cluster_factory):
    """Every AlterPartition reply is lost (failpoint): a leader must learn from its resent
    proposal's refusal that the change was committed. Until it does, a follower it is adding
    counts in its HW (the controller may already have elected it), so a leader that never
    learned would stall acks=all; one that forgot the proposal could lose acknowledged records."""
    c = cluster_factory(3, extra=["replica.lag.time.max.ms=2000"], start=False)
    for n in c.nodes.values():
        n.env = {"FAILPOINTS": "alter_partition_reply_lost=return"}
    c.start()
    assert "failpoint configured" in c.node(1).log_tail(200), "a build without failpoints (tests/run.sh builds one)"
    c.create_topic("lost", partitions=1, rf=3, config={"min.insync.replicas": "2"})
    c.wait_full_isr("lost")
    leader = c.leader_of("lost", 0)
    follower = next(i for i in c.nodes if i != leader)
    c.node(follower).pause()
    wait_until("the paused follower to leave the ISR", lambda: follower not in c.partitions("lost")[0][2], timeout=30)
    acked, errors = produce(c.bootstrap, "lost", [(None, f"a{i}".encode()) for i in range(300)])
    assert not errors and len(acked) == 300, errors[:3]
    c.node(follower).resume()
    c.wait_full_isr("lost")
    more, errors = produce(c.bootstrap, "lost", [(None, f"b{i}".encode()) for i in range(300)])
    assert not errors and len(more) == 300, errors[:3]
    assert_replicas_agree(c, "lost", 1)
    seen = consume_all(c.bootstrap, "lost", 1, 600)
    check_history({**acked, **more}, seen)


def test_idempotent_producer_through_a_leader_kill_neither_loses_nor_duplicates(cluster_factory):
    import threading
    c = cluster_factory(3)
    c.create_topic("idem", partitions=3, rf=3, config={"min.insync.replicas": "2"})
    c.wait_full_isr("idem")
    total = 40000
    result = {"acked": {}}

    def run():
        _, result["errors"] = produce(
            c.bootstrap, "idem", [(f"k{i % 31}".encode(), f"r{i}".encode()) for i in range(total)],
            extra={"enable.idempotence": True, "linger.ms": 2, "batch.num.messages": 200}, acked=result["acked"])
    t = threading.Thread(target=run)
    t.start()
    # Kill the leader of partition 0 while the producer is busy, then bring it back.
    wait_until("the producer to be under way", lambda: len(result["acked"]) >= total // 4, timeout=60)
    victim = c.leader_of("idem", 0)
    c.node(victim).kill()
    assert len(result["acked"]) < total, "the kill must land while records are in flight"
    wait_until("a new leader for idem-0", lambda: c.leader_of("idem", 0) not in (-1, victim), timeout=30)
    c.node(victim).start()
    t.join(120)
    assert not t.is_alive(), "the producer did not finish"
    acked, errors = result["acked"], result["errors"]
    assert not errors, errors[:3]
    assert len(acked) == total
    seen = consume_all(c.bootstrap, "idem", 3, total)
    values = [v for _, _, _, v in seen]
    dups = len(values) - len(set(values))
    assert dups == 0, f"{dups} duplicated records"
    check_history(acked, seen)
    assert_replicas_agree(c, "idem", 3)


def test_paused_leader_is_replaced_and_rejoins_as_follower(cluster_factory):
    import threading
    c = cluster_factory(3)
    c.create_topic("stall", partitions=1, rf=3, config={"min.insync.replicas": "2"})
    c.wait_full_isr("stall")
    total = 20000
    result = {"acked": {}}

    def run():
        _, result["errors"] = produce(
            c.bootstrap, "stall", [(None, f"s{i}".encode()) for i in range(total)],
            extra={"enable.idempotence": True, "linger.ms": 2, "batch.num.messages": 100}, acked=result["acked"])
    t = threading.Thread(target=run)
    t.start()
    wait_until("the producer to be under way", lambda: len(result["acked"]) >= total // 5, timeout=60)
    victim = c.leader_of("stall", 0)
    c.node(victim).pause()  # SIGSTOP: alive to the kernel, silent to everyone
    wait_until("a new leader for stall-0", lambda: c.leader_of("stall", 0) not in (-1, victim), timeout=30)
    c.node(victim).resume()
    t.join(120)
    assert not t.is_alive()
    assert not result["errors"], result["errors"][:3]
    seen = consume_all(c.bootstrap, "stall", 1, total)
    values = [v for _, _, _, v in seen]
    assert len(values) == len(set(values)) == total
    check_history(result["acked"], seen)
    assert_replicas_agree(c, "stall", 1)


def test_a_broker_without_a_replica_answers_not_leader_or_follower(cluster_factory):
    """A produce for a partition the cluster has but this broker holds no replica of (stale
    client metadata, or a partition that moved): NOT_LEADER_OR_FOLLOWER, so the client
    refreshes its metadata and retries, as Kafka answers; UNKNOWN_TOPIC_OR_PARTITION only for
    a partition the cluster does not have."""
    c = cluster_factory(3)
    c.create_topic("single", partitions=1, rf=1)
    wait_until("a leader", lambda: c.leader_of("single", 0) in c.nodes, timeout=30)
    leader = c.leader_of("single", 0)
    other = next(i for i in c.nodes if i != leader)
    # Each broker learns of the topic when its own metadata image has it: wait for that.
    wait_until("the leader to take a produce",
               lambda: raw_produce_error(c.node(leader).bootstrap, "single", 0, acks=1) == 0, timeout=30)
    wait_until("the other broker to answer NOT_LEADER_OR_FOLLOWER",
               lambda: raw_produce_error(c.node(other).bootstrap, "single", 0, acks=1) == NOT_LEADER_OR_FOLLOWER,
               timeout=30)
    assert raw_produce_error(c.node(other).bootstrap, "single", 7, acks=1) == UNKNOWN_TOPIC_OR_PARTITION
    # acks=0 has no response to carry the error: as Kafka, the broker closes the connection so
    # the producer refreshes its metadata; a produce that worked leaves it open.
    assert acks_zero_then_api_versions(c.node(other).bootstrap, "single", 0) == "closed"
    assert acks_zero_then_api_versions(c.node(leader).bootstrap, "single", 0) == "open"


UNKNOWN_TOPIC_OR_PARTITION = 3


def acks_zero_then_api_versions(bootstrap, topic, partition):
    """Sends an acks=0 Produce v3 of one record, then ApiVersions v0 on the same connection:
    "open" when the ApiVersions is answered, "closed" when the broker closed the connection."""
    import socket
    import struct
    from kafka.record.memory_records import MemoryRecordsBuilder
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 16)
    b.append(timestamp=None, key=None, value=b"raw")
    b.close()
    records = bytes(b.buffer())

    def string(v):
        return struct.pack(">h", len(v)) + v.encode()
    body = (struct.pack(">h", -1) + struct.pack(">hi", 0, 10000) + struct.pack(">i", 1) + string(topic)
            + struct.pack(">i", 1) + struct.pack(">i", partition) + struct.pack(">i", len(records)) + records)
    produce = struct.pack(">hhi", 0, 3, 7) + string("raw-produce") + body
    versions = struct.pack(">hhi", 18, 0, 8) + string("raw-produce")
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(struct.pack(">i", len(produce)) + produce + struct.pack(">i", len(versions)) + versions)
        try:
            head = s.recv(8)
        except ConnectionResetError:
            return "closed"
        if not head:
            return "closed"
        (correlation,) = struct.unpack_from(">i", head, 4)
        assert correlation == 8, "only the ApiVersions is answered"
        return "open"


def test_a_leader_stopped_under_acks_all_load_exits_promptly_and_loses_nothing(cluster_factory):
    """SIGTERM to a partition leader while an acks=all producer keeps it busy: the controlled
    shutdown moves its leadership, the node exits within seconds (not held by the produce
    requests in flight), the producer goes on with the new leader, and nothing acknowledged
    is lost or reordered."""
    import threading
    import time
    c = cluster_factory(3)
    c.create_topic("stop", partitions=1, rf=3, config={"min.insync.replicas": "2"})
    c.wait_full_isr("stop")
    acked = {}
    stop = threading.Event()

    def load():
        i = 0
        while not stop.is_set():
            produce(c.bootstrap, "stop", [(b"k", f"v-{i + j}".encode()) for j in range(200)], acked=acked,
                    extra={"enable.idempotence": True})
            i += 200
    t = threading.Thread(target=load)
    t.start()
    try:
        wait_until("the load to run", lambda: len(acked) > 2000, timeout=30)
        victim = c.node(c.leader_of("stop", 0))
        started = time.monotonic()
        code = victim.stop(timeout=60)
        took = time.monotonic() - started
        before = len(acked)
        wait_until("acks=all to go on with the new leader", lambda: len(acked) > before + 1000, timeout=30)
    finally:
        stop.set()
        t.join(60)
    print(f"stopped leader exited {code} in {took:.1f} s")
    assert code == 0, code
    assert took < 10, f"the stopping leader took {took:.1f} s to exit"
    check_history(acked, consume_all(c.bootstrap, "stop", 1, len(acked)))
