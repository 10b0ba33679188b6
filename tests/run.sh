#!/usr/bin/env bash
# The whole test suite: README's test command. Installs what it needs (a Python venv with
# real Kafka clients), builds once, runs the Rust tests, then the real-client tests against
# the same debug binary.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# The test build carries the named failpoints (the `failpoints` feature; release builds do
# not): the cluster tests set FAILPOINTS to make a node's disk slow or failing.
features=(--features strom/failpoints)

echo "== building (debug, once, with failpoints)"
cargo build --workspace --all-targets --locked "${features[@]}" 2>&1 | tail -n 3

echo "== rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast -j 2 "${features[@]}"
else
  cargo test --workspace --locked -j 2 "${features[@]}"
fi

shopt -s nullglob
py_tests=(tests/compat/test_*.py tests/cluster/test_*.py tests/deploy/test_*.py)
if (( ${#py_tests[@]} > 0 )); then
  echo "== real-client and cluster tests (python venv: confluent-kafka, kafka-python)"
  venv="$root/tests/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
  # One pytest run per directory: each has its own conftest module.
  # tests/deploy brings up the compose cluster (image built from the same debug binary); it
  # skips itself where no Docker engine runs.
  for dir in tests/compat tests/cluster tests/deploy; do
    STROM_BIN="$root/target/debug/strom" "$venv/bin/python" -m pytest -q "$dir"
  done
fi
echo "== all tests passed"
