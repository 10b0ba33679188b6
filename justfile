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
    cargo clippy --workspace --all-targets --features strom/failpoints -- -D warnings

# Benchmarks (criterion and perf scripts); figures go into docs/benchmarks.md.
bench:
    cargo bench --workspace

# Three nodes on loopback (each controller + broker), data under ./data/cluster, logs in ./data/cluster/*.log.
cluster:
    bash deploy/local-cluster.sh

# The three-node docker compose cluster: build the image, start, wait until healthy.
up:
    bash deploy/up.sh

# Prometheus beside the compose cluster (the `monitoring` profile), on localhost:9090.
monitoring:
    bash deploy/build-prometheus-image.sh
    bash deploy/compose.sh --profile monitoring up -d prometheus

# Stop the compose cluster (and Prometheus); `just down -v` also removes its data volumes.
down *ARGS:
    bash deploy/compose.sh --profile monitoring down {{ARGS}}

# Fuzz every target (cargo-fuzz, nightly) for SECONDS each from its corpus in tests/fuzz/.
fuzz SECONDS="60" *TARGETS:
    bash tests/fuzz/run.sh {{SECONDS}} {{TARGETS}}
