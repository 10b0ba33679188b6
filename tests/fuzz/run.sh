#!/usr/bin/env bash
# The fuzz targets of tests/fuzz (cargo-fuzz, libFuzzer; nightly Rust): each runs for SECONDS
# (default 10) from its corpus (tests/fuzz/corpus/<target>, kept in git) and the real-world
# seeds (tests/fuzz/seeds/<target>: segments and a Raft log a node wrote). A crash fails the
# run and leaves its input in tests/fuzz/artifacts/<target>/.
#
#   bash tests/fuzz/run.sh [SECONDS] [target…]      # CI: 10 s each; locally: longer
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-10}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(request_decoder record_batch segment_recovery raft_log sasl tls_handshake)
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain (libFuzzer needs it); skipped"
  exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
cargo +nightly fuzz build --fuzz-dir tests/fuzz 2>&1 | tail -n 2
for t in "${targets[@]}"; do
  mkdir -p "tests/fuzz/corpus/$t"
  seeds=()
  [ -d "tests/fuzz/seeds/$t" ] && seeds=("tests/fuzz/seeds/$t")
  echo "== fuzz $t (${seconds} s)"
  cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" "tests/fuzz/corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$seconds" -seed=1 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E '^Done|stat::number_of_executed_units|ERROR|panicked|SUMMARY' || true
  if [ -n "$(ls -A "tests/fuzz/artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz $t found a crash: tests/fuzz/artifacts/$t/"; exit 1
  fi
done
