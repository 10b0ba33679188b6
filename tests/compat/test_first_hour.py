"""A new user's first hour (issue #17), each trap as that user met it: scripts that act the
moment the port opens, three nodes on one host with Kafka's keys only, a TLS listener that is
not TLS, keys that would silently do nothing, a kafka-python admin that commits -2, and the
cluster id that tells clusters apart."""

import os
import socket
import subprocess
import tempfile
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import STROM, free_port, wait_until


def node_env():
    # STROM_* variables are config keys to a node; STROM_BIN is ours, not its.
    return {k: v for k, v in os.environ.items() if k != "STROM_BIN"}


def spawn(data_dir, *overrides, log_name="strom.log"):
    args = [STROM, "server"]
    for o in overrides:
        args += ["--override", o]
    log = open(os.path.join(data_dir, log_name), "ab")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=node_env())


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def single_node_overrides(d, kafka, ctl, *extra):
    return (f"listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{ctl}",
            f"controller.quorum.voters=1@127.0.0.1:{ctl}",
            f"log.dirs={os.path.join(d, 'data')}", "metrics.listener=", *extra)


def test_create_topics_the_moment_the_port_opens_succeeds_every_time():
    """Item 1: start → CreateTopics with librdkafka's admin client and no request before it.
    The old binary answered Metadata with zero brokers in that window and the call timed out."""
    took = []
    for attempt in range(8):
        with tempfile.TemporaryDirectory(prefix="strom-first-hour-") as d:
            kafka, ctl = free_port(), free_port()
            proc = spawn(d, *single_node_overrides(d, kafka, ctl))
            try:
                wait_until("the Kafka port to accept", lambda: proc.poll() is None and port_accepts(kafka), timeout=30,
                           interval=0.005)
                started = time.monotonic()
                admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{kafka}"})
                topic = f"first-{attempt}"
                admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(20)
                took.append(time.monotonic() - started)
                assert topic in admin.list_topics(timeout=5).topics
            finally:
                stop(proc)
    assert max(took) < 5, f"CreateTopics right after start took {took}"


def test_three_nodes_on_one_host_with_kafkas_keys_only_all_start():
    """Item 2: node.id, process.roles, listeners, controller.quorum.voters, log.dirs, nothing
    else. The old binary's nodes 2 and 3 exited on the default metrics.listener."""
    for _ in range(2):
        with tempfile.TemporaryDirectory(prefix="strom-first-hour-") as d:
            ports = [(free_port(), free_port()) for _ in range(3)]
            voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
            procs = [spawn(d, f"node.id={i + 1}", "process.roles=broker,controller",
                           f"listeners=PLAINTEXT://127.0.0.1:{k},CONTROLLER://127.0.0.1:{c}",
                           f"controller.quorum.voters={voters}", f"log.dirs={os.path.join(d, f'n{i + 1}')}",
                           log_name=f"n{i + 1}.log")
                     for i, (k, c) in enumerate(ports)]
            try:
                admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{ports[2][0]}"})

                def three_brokers():
                    dead = [i + 1 for i, p in enumerate(procs) if p.poll() is not None]
                    assert not dead, f"nodes {dead} exited: " + open(os.path.join(d, f"n{dead[0]}.log")).read()[-2000:]
                    return len(admin.list_topics(timeout=2).brokers) == 3
                wait_until("three live brokers", three_brokers, timeout=60)
            finally:
                for p in procs:
                    stop(p)


def test_a_tls_listener_is_refused_not_served_in_plain_text():
    """Item 3: SSL://… with SSL:SSL started and served plain text before; a TLS listener Strom
    cannot serve as asked is refused."""
    with tempfile.TemporaryDirectory(prefix="strom-first-hour-") as d:
        kafka, ctl = free_port(), free_port()
        r = subprocess.run([STROM, "server", "--override",
                            f"listeners=SSL://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{ctl}",
                            "--override", "listener.security.protocol.map=SSL:SSL,CONTROLLER:PLAINTEXT",
                            "--override", "inter.broker.listener.name=SSL",
                            "--override", f"controller.quorum.voters=1@127.0.0.1:{ctl}",
                            "--override", "ssl.keystore.location=/etc/kafka/broker.jks",
                            "--override", f"log.dirs={d}/data", "--override", "metrics.listener="],
                           capture_output=True, timeout=60, env=node_env())
        assert r.returncode == 2, r.stderr
        err = r.stderr.decode()
        # Served now (issue #20), but never from a JKS store (Kafka's default type).
        assert "ssl.keystore.type" in err and "JKS" in err, err
        assert not port_accepts(kafka)


@pytest.mark.parametrize("key", ["sasl.kerberos.service.name=kafka", "principal.builder.class=x.PrincipalBuilder",
                                 "log.cleaner.dedupe.buffer.size=134217728",
                                 "transaction.state.log.load.buffer.size=5242880", "quota.window.num=11"])
def test_a_key_that_would_silently_do_nothing_is_refused_by_name(key):
    """Item 7: a key that changes Kafka's behaviour and that Strom does not implement."""
    with tempfile.TemporaryDirectory(prefix="strom-first-hour-") as d:
        kafka, ctl = free_port(), free_port()
        r = subprocess.run([STROM, "server", *sum((["--override", o] for o in
                                                   single_node_overrides(d, kafka, ctl, key)), [])],
                           capture_output=True, timeout=60, env=node_env())
        assert r.returncode == 2, r.stderr
        assert key.split("=")[0] in r.stderr.decode(), r.stderr


def test_an_admin_commits_the_earliest_sentinel_and_reads_it_back(node):
    """Item 4: kafkajs's admin.resetOffsets({earliest: true}) commits -2 (OffsetCommit v5) and a
    later OffsetFetch reads -2 back, as against Kafka 3.9; the old binary answered
    INVALID_REQUEST and kafkajs hung. Here kafka-python's admin client sends the same commit."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import NoError
    from kafka.structs import OffsetAndMetadata
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic("resets", num_partitions=2, replication_factor=1)])["resets"].result(10)
    ka = KafkaAdminClient(bootstrap_servers=node.bootstrap)
    try:
        tps = [TopicPartition("resets", 0), TopicPartition("resets", 1)]
        errors = ka.alter_group_offsets("reset-me", {tps[0]: OffsetAndMetadata(-2, "", -1),
                                                     tps[1]: OffsetAndMetadata(-1, "", -1)})
        assert all(e is NoError for e in errors.values()), errors
        got = ka.list_group_offsets({"reset-me": tps})["reset-me"]
    finally:
        ka.close()
    assert {tp.partition: om.offset for tp, om in got.items()} == {0: -2, 1: -1}


def cluster_id_of(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_cluster(request_timeout=10).result(20).cluster_id


def meta_properties(data_dir):
    with open(os.path.join(data_dir, "meta.properties")) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line and not line.startswith("#"))


def test_each_cluster_gets_its_own_id_kept_in_meta_properties():
    """Item 5: a generated id, stored once, the same after a restart, different per cluster,
    and the one `strom storage format -t` gave when the dirs were formatted."""
    ids = []
    with tempfile.TemporaryDirectory(prefix="strom-first-hour-") as d:
        for name in ("a", "b"):
            kafka, ctl = free_port(), free_port()
            data = os.path.join(d, name)
            overrides = (f"listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{ctl}",
                         f"controller.quorum.voters=1@127.0.0.1:{ctl}", f"log.dirs={data}", "metrics.listener=")
            for run in range(2):
                proc = spawn(d, *overrides, log_name=f"{name}.log")
                try:
                    cid = wait_until("a cluster id", lambda: cluster_id_of(f"127.0.0.1:{kafka}"), timeout=30)
                    wait_until("meta.properties to hold it",
                               lambda: meta_properties(data).get("cluster.id") == cid, timeout=10)
                finally:
                    stop(proc)
                if run == 0:
                    ids.append(cid)
                else:
                    assert cid == ids[-1], "the cluster id changed across a restart"
        assert len(ids[0]) == 22 and ids[0] != ids[1], ids

        # Formatted first, as with kafka-storage.sh format -t.
        new_id = subprocess.run([STROM, "storage", "random-uuid"], capture_output=True, check=True,
                                env=node_env()).stdout.decode().strip()
        kafka, ctl = free_port(), free_port()
        data = os.path.join(d, "formatted")
        overrides = (f"listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{ctl}",
                     f"controller.quorum.voters=1@127.0.0.1:{ctl}", f"log.dirs={data}", "metrics.listener=")
        fmt = subprocess.run([STROM, "storage", "format", "-t", new_id, *sum((["--override", o] for o in overrides), [])],
                             capture_output=True, env=node_env())
        assert fmt.returncode == 0, fmt.stderr
        again = subprocess.run([STROM, "storage", "format", "-t", new_id, *sum((["--override", o] for o in overrides), [])],
                               capture_output=True, env=node_env())
        assert again.returncode != 0 and b"already formatted" in again.stderr
        proc = spawn(d, *overrides, log_name="formatted.log")
        try:
            assert wait_until("a cluster id", lambda: cluster_id_of(f"127.0.0.1:{kafka}"), timeout=30) == new_id
        finally:
            stop(proc)


def test_a_node_with_another_clusters_data_refuses_to_join():
    """Item 5: a broker whose log dirs belong to cluster A, pointed at cluster B's quorum,
    exits naming both ids (Kafka: INCONSISTENT_CLUSTER_ID) and B does not list it."""
    with tempfile.TemporaryDirectory(prefix="strom-first-hour-") as d:
        kafka, ctl = free_port(), free_port()
        b = spawn(d, *single_node_overrides(d, kafka, ctl), log_name="b.log")
        try:
            b_id = wait_until("cluster B's id", lambda: cluster_id_of(f"127.0.0.1:{kafka}"), timeout=30)
            a_id = subprocess.run([STROM, "storage", "random-uuid"], capture_output=True, check=True,
                                  env=node_env()).stdout.decode().strip()
            kafka2 = free_port()
            joiner = (f"node.id=2", "process.roles=broker", f"listeners=PLAINTEXT://127.0.0.1:{kafka2}",
                      f"controller.quorum.voters=1@127.0.0.1:{ctl}", f"log.dirs={os.path.join(d, 'a2')}",
                      "metrics.listener=")
            subprocess.run([STROM, "storage", "format", "-t", a_id, *sum((["--override", o] for o in joiner), [])],
                           capture_output=True, check=True, env=node_env())
            r = subprocess.run([STROM, "server", *sum((["--override", o] for o in joiner), [])],
                               capture_output=True, timeout=60, env=node_env())
            assert r.returncode == 2, r.stderr
            err = r.stderr.decode(errors="replace")
            assert a_id in err and b_id in err, err
            admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{kafka}"})
            assert list(admin.list_topics(timeout=5).brokers) == [1]
        finally:
            stop(b)
