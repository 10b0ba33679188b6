"""The compose cluster of deploy/, brought up once for the module (image built from the
binary in STROM_BIN, so no second build), and always torn down with its volumes."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))

from strom_cluster import STROM, wait_until  # noqa: E402

BOOTSTRAP = "localhost:19092,localhost:29092,localhost:39092"
PROJECT = "stromtest"


# The host ports the compose file publishes. 39092 lies in Linux's ephemeral range: any
# outgoing connection on this host may hold it for a moment, and then Docker cannot publish
# it ("address already in use"); one CI run failed so.
PUBLISHED_PORTS = (19092, 29092, 39092, 9090, 19094, 29094, 39094)  # 1909x: the secured compose file


def reserve_published_ports():
    """Keeps the kernel from handing the published ports out as ephemeral ports (root only;
    elsewhere a no-op)."""
    path = "/proc/sys/net/ipv4/ip_local_reserved_ports"
    try:
        with open(path) as f:
            current = {p for p in f.read().strip().split(",") if p}
        wanted = sorted(current | {str(p) for p in PUBLISHED_PORTS}, key=lambda p: int(p.split("-")[0]))
        with open(path, "w") as f:
            f.write(",".join(wanted))
    except OSError:
        pass


def up_with_retries(attempts=3):
    """`compose up -d`, again after a port that was briefly held by another socket."""
    for attempt in range(attempts):
        try:
            compose("up", "-d")
            return
        except AssertionError as e:
            if "address already in use" not in str(e) or attempt + 1 == attempts:
                raise
            compose("down", check=False)


def compose(*args, check=True, timeout=180):
    env = {**os.environ, "STROM_COMPOSE_PROJECT": PROJECT}
    env.pop("STROM_BIN", None)
    r = subprocess.run(["bash", os.path.join(ROOT, "deploy", "compose.sh"), *args], capture_output=True,
                       timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"compose {' '.join(args)}: {r.stderr.decode()}")
    return r.stdout.decode()


def docker(*args, check=True):
    r = subprocess.run(["docker", *args], capture_output=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {r.stderr.decode()}")
    return r.stdout.decode()


def strom(*args, check=True, timeout=60):
    env = {k: v for k, v in os.environ.items() if k != "STROM_BIN"}
    r = subprocess.run([STROM, *args], capture_output=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"strom {' '.join(args)}: {r.stderr.decode()}")
    return r.stdout.decode()


def healthy():
    return subprocess.run([STROM, "cluster", "--bootstrap-server", BOOTSTRAP, "--expect-brokers", "3"],
                          capture_output=True, timeout=30).returncode == 0


def container(service):
    return compose("ps", "-q", service).strip()


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine")
    env = {**os.environ, "STROM_COMPOSE_PROJECT": PROJECT}
    env.pop("STROM_BIN", None)
    subprocess.run(["bash", os.path.join(ROOT, "deploy", "build-image.sh"), STROM], check=True, env=env,
                   capture_output=True, timeout=600)
    compose("--profile", "monitoring", "down", "-v", check=False)
    reserve_published_ports()
    try:
        up_with_retries()
        wait_until("the compose cluster to be healthy", healthy, timeout=120, interval=0.5)
        yield
    finally:
        try:
            logs = compose("logs", "--tail", "40", check=False)
            print(logs[-20000:])
            keep = os.environ.get("STROM_FAILED_LOGS")
            if keep:
                # Every node's whole log, for reading a failure (or a duplicate) afterwards.
                os.makedirs(keep, exist_ok=True)
                with open(os.path.join(keep, "compose.log"), "w") as f:
                    f.write(compose("logs", "--timestamps", check=False))
        finally:
            compose("--profile", "monitoring", "down", "-v", check=False)
