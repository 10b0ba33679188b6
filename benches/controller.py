"""The controller under admin load and failover (issue: controller benchmarks), on three local
nodes (each controller + broker), release binary:

1. create 1,000 topics of 3 partitions (RF=3), one CreateTopics request each, 8 in flight,
   through librdkafka's admin client: operations per second, p50/p99/max latency;
2. controller failover: SIGKILL the active controller, then time until a CreateTopics through
   the survivors commits (kill to next committed change), repeated N times.

    STROM_BIN=target/release/strom python benches/controller.py [topics] [failovers]
"""

import os
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))

from confluent_kafka import KafkaError, KafkaException  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from strom_cluster import Cluster, wait_until  # noqa: E402


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def is_active_controller(node):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("kafka_controller_kafkacontroller_activecontrollercount "):
                    return float(line.split()[1]) == 1
    except OSError:
        pass
    return False


def create(admin, name, rf=3):
    t0 = time.monotonic()
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=rf)],
                        operation_timeout=30)[name].result(60)
    return time.monotonic() - t0


def main():
    topics = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    failovers = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        c = Cluster(d, 3).start()
        try:
            admin = AdminClient({"bootstrap.servers": c.bootstrap})
            start = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                lat = list(pool.map(lambda i: create(admin, f"bench-{i}"), range(topics)))
            secs = time.monotonic() - start
            print(f"create {topics} topics x 3 partitions, RF=3, 8 in flight: {topics / secs:.0f} ops/s, "
                  f"p50 {pct(lat, 0.5) * 1000:.1f} ms, p99 {pct(lat, 0.99) * 1000:.1f} ms, "
                  f"max {max(lat) * 1000:.1f} ms")

            times = []
            for run in range(failovers):
                active = wait_until("an active controller", lambda: next(
                    (n for n in c.nodes.values() if n.is_running() and is_active_controller(n)), None), timeout=30)
                survivors = [n for n in c.nodes.values() if n is not active]
                a = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in survivors)})
                killed = time.monotonic()
                active.kill()

                def committed():
                    try:
                        # RF=1: two brokers are left, and this measures the controller only.
                        create(a, f"failover-{run}", rf=1)
                    except KafkaException as e:
                        # An earlier attempt committed but its answer was lost in the failover.
                        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                            raise
                    return True
                wait_until("a change committed after the controller died", committed, timeout=60, interval=0.01)
                times.append(time.monotonic() - killed)
                print(f"run {run + 1}: {times[-1]:.2f} s", flush=True)
                active.start()
                wait_until("three live brokers", lambda: len(c.metadata().brokers) == 3, timeout=60)
            print(f"controller failover over {failovers} kills (kill to next committed CreateTopics): "
                  f"median {statistics.median(times):.2f} s, max {max(times):.2f} s")
        finally:
            c.stop()


if __name__ == "__main__":
    main()
