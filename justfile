# Strom developer recipes. `just --list` shows them.

# Run the embedded single-node cluster on 127.0.0.1:9092 (data in ./data).
run *ARGS:
    cargo run --release -p strom -- server {{ARGS}}

# The whole test suite (Rust and real-client tests), as README says.
test:
    bash tests/run.sh

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks (criterion and perf scripts); figures go into docs/benchmarks.md.
bench:
    cargo bench --workspace

# Three nodes on loopback (each controller + broker), data under ./data/cluster, logs in ./data/cluster/*.log.
cluster:
    bash deploy/local-cluster.sh

# The three-node docker compose cluster (filled in by the deploy issue).
up:
    @echo "the compose cluster arrives with the deploy issue (#8); see deploy/" && exit 1

down *ARGS:
    @echo "the compose cluster arrives with the deploy issue (#8); see deploy/" && exit 1
