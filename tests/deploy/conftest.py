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
    try:
        compose("up", "-d")
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
