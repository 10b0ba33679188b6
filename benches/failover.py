"""Leader failover, measured as a user feels it (DESIGN.md §5): the time from SIGKILL of a
partition leader to the first acks=all produce that succeeds on the new leader, on three
local nodes with default settings. Repeated N times, killing the active controller (which
also leads a partition) in every other run; prints median and max for both kinds.

    STROM_BIN=target/release/strom python benches/failover.py [runs]
"""

import os
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))

from confluent_kafka import Producer  # noqa: E402
from strom_cluster import Cluster, wait_until  # noqa: E402


def is_active_controller(node):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("kafka_controller_kafkacontroller_activecontrollercount "):
                return float(line.split()[1]) == 1
    return False


def produce_one(p, results, partition):
    results.clear()
    p.produce("failover", value=b"x", partition=partition, on_delivery=lambda e, m: results.append(e))
    p.flush(0.2)
    return results and results[0] is None


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with tempfile.TemporaryDirectory() as d:
        c = Cluster(d, 3).start()
        try:
            c.create_topic("failover", partitions=3, rf=3, config={"min.insync.replicas": "2"})
            c.wait_full_isr("failover")
            results = []
            times = {True: [], False: []}
            for i in range(runs):
                # A producer per run, warmed up on every partition: a long-running healthy
                # client. Reusing one across runs would carry librdkafka's reconnect backoff
                # (up to reconnect.backoff.max.ms, 10 s) toward the node the previous run
                # killed and restarted, and that node is often the next new leader.
                p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 0,
                              "message.timeout.ms": 30000})
                for part in range(3):
                    wait_until("a first produce", lambda: produce_one(p, results, part))
                want_controller = i % 2 == 0
                led = {}
                for part, (leader, _, _) in c.partitions("failover").items():
                    led.setdefault(leader, part)
                candidates = [n for n in led if is_active_controller(c.node(n)) == want_controller]
                if not candidates:
                    continue
                victim = candidates[0]
                part = led[victim]
                killed = time.monotonic()
                c.node(victim).kill()
                # Send until one is acknowledged by the new leader.
                results.clear()
                p.produce("failover", value=b"after", partition=part, on_delivery=lambda e, m: results.append(e))
                while not results:
                    p.poll(0.005)
                took = time.monotonic() - killed
                assert results[0] is None, results[0]
                times[want_controller].append(took)
                kind = "leader + active controller" if want_controller else "leader"
                print(f"run {i + 1}: killed {kind}: {took:.2f} s", flush=True)
                c.node(victim).start()
                c.wait_full_isr("failover", timeout=60)
            every = times[True] + times[False]
            print(f"failover over {len(every)} kills: median {statistics.median(every):.2f} s, max {max(every):.2f} s")
            for k, label in ((False, "leader only"), (True, "leader that was also the active controller")):
                if times[k]:
                    print(f"  {label}: {len(times[k])} kills, median {statistics.median(times[k]):.2f} s, "
                          f"max {max(times[k]):.2f} s")
        finally:
            c.stop()


if __name__ == "__main__":
    main()
