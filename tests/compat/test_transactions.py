"""Transactions (issue #22), from a client's side. So far: what a client may not write.

A control batch (a transaction marker) is the transaction coordinator's to write: Kafka
refuses one from a client with INVALID_RECORD. A transactional batch must belong to a
transaction that added the partition; Strom has no transaction coordinator yet, so none
does: INVALID_TXN_STATE, as Kafka's transaction verification (KIP-890) answers. Either way
nothing is written, and ordinary records go on."""

import struct

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

from test_bad_input import send_raw

INVALID_TXN_STATE = 48
INVALID_RECORD = 87


def batch(transactional=False, control=False):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=transactional,
                                  producer_id=1000, producer_epoch=0, base_sequence=0, batch_size=1 << 20)
    b.append(0, timestamp=None, key=b"k", value=b"v", headers=[])
    data = bytearray(b.build())
    if control:
        attrs = struct.unpack(">h", data[21:23])[0] | 0x20
        data[21:23] = struct.pack(">h", attrs)
        data[17:21] = struct.pack(">I", calc_crc32c(bytes(data[21:])))
    return bytes(data)


def produce_v3(bootstrap, topic, records):
    """A raw Produce v3 (acks=1) of `records` to partition 0; returns its error code."""
    name = topic.encode()
    body = struct.pack(">hhi", -1, 1, 5000)  # transactional id: null, acks, timeout
    body += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
    body += struct.pack(">ii", 1, 0) + struct.pack(">i", len(records)) + records
    header = struct.pack(">hhih", 0, 3, 7, 1) + b"t"
    resp = send_raw(bootstrap, struct.pack(">i", len(header) + len(body)) + header + body)
    assert resp is not None, "the node closed the connection"
    corr, _topics, name_len = struct.unpack(">iih", resp[:10])
    assert corr == 7
    at = 10 + name_len
    _partitions, _index, error = struct.unpack(">iih", resp[at:at + 10])
    return error


def end_offset(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def test_clients_may_not_write_control_or_transactional_batches(node):
    topic = "txn-refused"
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    assert produce_v3(node.bootstrap, topic, batch()) == 0, "an ordinary batch is written"
    assert produce_v3(node.bootstrap, topic, batch(control=True)) == INVALID_RECORD
    assert produce_v3(node.bootstrap, topic, batch(transactional=True)) == INVALID_TXN_STATE
    # A request mixing an ordinary batch with a refused one writes neither.
    assert produce_v3(node.bootstrap, topic, batch() + batch(control=True)) == INVALID_RECORD
    assert end_offset(node.bootstrap, topic) == 1, "only the first ordinary batch was written"

    # Producers and read_committed consumers (librdkafka's default) carry on.
    p = Producer({"bootstrap.servers": node.bootstrap})
    p.produce(topic, b"after")
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "txn-reader", "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed"})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    while len(got) < 2:
        m = c.poll(10)
        assert m is not None, f"read_committed consumer got {got}"
        if not m.error():
            got.append(m.value())
    c.close()
    assert got == [b"v", b"after"]
