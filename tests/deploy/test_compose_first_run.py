"""`docker compose -f deploy/docker-compose.yml up` before the image exists, as every Kafka
tutorial starts: it must say what to run, not fail on a registry pull."""

import os
import shutil
import subprocess
import uuid

import pytest

from conftest import ROOT


def test_compose_up_without_the_image_says_to_build_it():
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine")
    project = f"stromhint{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "STROM_COMPOSE_PROJECT": project, "STROM_IMAGE": f"strom-missing-{project}:latest"}
    env.pop("STROM_BIN", None)
    compose = ["bash", os.path.join(ROOT, "deploy", "compose.sh")]
    try:
        r = subprocess.run([*compose, "up", "-d", "strom-1"], capture_output=True, timeout=300, env=env)
        out = (r.stdout + r.stderr).decode(errors="replace")
        assert r.returncode != 0, out
        assert "run-bash-deploy-build-image.sh-first" in out, out
        assert subprocess.run(["docker", "image", "inspect", env["STROM_IMAGE"]], capture_output=True).returncode != 0
    finally:
        subprocess.run([*compose, "down", "-v"], capture_output=True, timeout=120, env=env)
