"""The secured compose cluster (deploy/docker-compose.secure.yml, issue #20): certificates from
deploy/make-certs.sh, SASL_SSL for clients and between brokers, the authorizer on. The example
app's SCRAM users and ACLs (deploy/secure/example-app.sh) let its producer write `orders` and its
consumer read it in `billing`; a wrong password and a plaintext client are refused."""

import os
import shutil
import subprocess
import tempfile
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from conftest import ROOT, STROM, reserve_published_ports, wait_until

BOOTSTRAP = "localhost:19094,localhost:29094,localhost:39094"
PROJECT = "stromsecure"


def compose(*args, check=True, env_extra=None):
    env = {**os.environ, "STROM_COMPOSE_PROJECT": PROJECT, "STROM_COMPOSE_FILE": "deploy/docker-compose.secure.yml",
           **(env_extra or {})}
    env.pop("STROM_BIN", None)
    r = subprocess.run(["bash", os.path.join(ROOT, "deploy", "compose.sh"), *args], capture_output=True, timeout=180,
                       env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"compose {' '.join(args)}: {r.stderr.decode()}")
    return r.stdout.decode()


@pytest.fixture(scope="module")
def secure_cluster():
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine")
    certs = tempfile.mkdtemp(prefix="strom-certs-")
    os.chmod(certs, 0o755)  # the container's user reads them
    subprocess.run(["bash", os.path.join(ROOT, "deploy", "make-certs.sh"), certs], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "STROM_BIN"}
    subprocess.run(["bash", os.path.join(ROOT, "deploy", "build-image.sh"), STROM], check=True, env=env,
                   capture_output=True, timeout=600)
    extra = {"STROM_CERTS_DIR": certs}
    compose("down", "-v", check=False, env_extra=extra)
    reserve_published_ports()
    admin_props = os.path.join(certs, "admin.properties")
    with open(admin_props, "w") as f:
        f.write("security.protocol=SASL_SSL\nssl.truststore.type=PEM\n"
                f"ssl.truststore.location={certs}/ca.pem\nsasl.mechanism=PLAIN\n"
                "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
                'username="admin" password="admin-secret";\n')
    try:
        compose("up", "-d", env_extra=extra)
        conf = client(certs, "PLAIN", "admin", "admin-secret")

        def three_brokers():
            return len(AdminClient(conf).list_topics(timeout=3).brokers) == 3
        wait_until("the secured cluster to serve three brokers over SASL_SSL", three_brokers, timeout=120,
                   interval=0.5)
        yield certs, admin_props
    finally:
        print(compose("logs", "--tail", "30", check=False, env_extra=extra)[-10000:])
        compose("down", "-v", check=False, env_extra=extra)
        shutil.rmtree(certs, ignore_errors=True)


def client(certs, mechanism, user, password):
    return {"bootstrap.servers": BOOTSTRAP, "security.protocol": "SASL_SSL", "ssl.ca.location": f"{certs}/ca.pem",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}


def test_the_example_app_produces_and_consumes_with_its_own_users_and_acls(secure_cluster):
    certs, admin_props = secure_cluster
    env = {**{k: v for k, v in os.environ.items() if k != "STROM_BIN"}, "STROM_ADMIN_PROPERTIES": admin_props,
           "STROM_BOOTSTRAP": BOOTSTRAP}
    r = subprocess.run(["bash", os.path.join(ROOT, "deploy", "secure", "example-app.sh"), STROM], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "User:orders-producer" in r.stdout and "User:orders-consumer" in r.stdout, r.stdout
    values = [uuid.uuid4().hex.encode() for _ in range(20)]
    p = Producer({**client(certs, "SCRAM-SHA-512", "orders-producer", "producer-secret"), "acks": "all",
                  "enable.idempotence": True})
    errors = []
    for v in values:
        p.produce("orders", value=v, on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(60) == 0 and not errors, errors[:3]
    c = Consumer({**client(certs, "SCRAM-SHA-512", "orders-consumer", "consumer-secret"), "group.id": "billing",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["orders"])
    seen = []
    try:
        def all_read():
            for m in c.consume(100, timeout=0.5):
                if m.error() is None:
                    seen.append(m.value())
            return set(values) <= set(seen)
        wait_until("the consumer to read what the producer wrote", all_read, timeout=60)
    finally:
        c.close()
    # The consumer may not write; a wrong password and a plaintext client get nowhere.
    bad = Producer({**client(certs, "SCRAM-SHA-512", "orders-consumer", "consumer-secret"),
                    "message.timeout.ms": 5000})
    errs = []
    bad.produce("orders", value=b"x", on_delivery=lambda err, msg: err and errs.append(err))
    bad.flush(15)
    assert errs, "the consumer's user wrote to orders"
    assert refused(client(certs, "SCRAM-SHA-512", "orders-producer", "wrong"))
    assert refused({"bootstrap.servers": BOOTSTRAP})


def refused(conf):
    """True when a client with `conf` gets no metadata (its login or handshake refused)."""
    try:
        return len(AdminClient({**conf, "socket.timeout.ms": 3000}).list_topics(timeout=5).brokers) == 0
    except Exception:
        return True
