#!/usr/bin/env bash
# Builds librdkafka's `rdkafka_performance` (the client of DESIGN.md §5's reference figures)
# from the librdkafka sources that the `rdkafka-sys` crate vendors: crates.io is the only
# download. The tool lands in target/rdkafka-perf/rdkafka_performance; benches/throughput.py
# runs it when it is there.
#
#   bash benches/build-rdkafka-performance.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(pwd)/target/rdkafka-perf"
mkdir -p "$out/fetch/src"
if [ ! -x "$out/rdkafka_performance" ]; then
  # A throwaway package whose only dependency is rdkafka-sys: `cargo fetch` brings its
  # sources into the registry cache, `cargo metadata` says where.
  cat > "$out/fetch/Cargo.toml" <<'TOML'
[package]
name = "rdkafka-sources"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
rdkafka-sys = "=4.10.0"
[workspace]
TOML
  echo 'fn main() {}' > "$out/fetch/src/main.rs"
  (cd "$out/fetch" && cargo fetch -q)
  manifest=$(cd "$out/fetch" && cargo metadata -q --format-version 1 \
    | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="rdkafka-sys"))')
  rm -rf "$out/librdkafka"
  cp -r "$(dirname "$manifest")/librdkafka" "$out/librdkafka"
  cd "$out/librdkafka"
  # Plain TCP only: no SSL, SASL or external compression libraries are needed here
  # (librdkafka carries its own lz4 and snappy).
  ./configure --disable-ssl --disable-gssapi --disable-sasl --disable-zstd --disable-zlib \
    --disable-curl --disable-lz4-ext --disable-regex-ext >/dev/null
  make -j2 -C src lib >/dev/null
  gcc -O2 -I src examples/rdkafka_performance.c src/librdkafka.a -lpthread -lm -ldl -lrt \
    -o "$out/rdkafka_performance"
fi
echo "built: $out/rdkafka_performance"
