#!/usr/bin/env bash
# Builds librdkafka's `rdkafka_performance` (the client of DESIGN.md §5's reference figures)
# from the librdkafka sources that the `rdkafka-sys` crate vendors: crates.io is the only
# download. The tool lands in target/rdkafka-perf/rdkafka_performance; benches/throughput.py
# runs it when it is there.
#
#   bash benches/build-rdkafka-performance.sh          # plain TCP only
#   bash benches/build-rdkafka-performance.sh --ssl    # with TLS and SASL PLAIN/SCRAM (needs
#                                                      # Debian's libssl-dev), in target/rdkafka-perf-ssl
set -euo pipefail
cd "$(dirname "$0")/.."
ssl=0
[ "${1:-}" = "--ssl" ] && ssl=1
out="$(pwd)/target/rdkafka-perf"
[ "$ssl" = 1 ] && out="$(pwd)/target/rdkafka-perf-ssl"
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
  # No external compression libraries are needed (librdkafka carries its own lz4 and
  # snappy); plain TCP only unless --ssl (OpenSSL: TLS, and SASL PLAIN/SCRAM on top).
  if [ "$ssl" = 1 ]; then
    ./configure --enable-ssl --disable-gssapi --disable-sasl --disable-zstd --disable-zlib \
      --disable-curl --disable-lz4-ext --disable-regex-ext >/dev/null
    libs="-lssl -lcrypto"
  else
    ./configure --disable-ssl --disable-gssapi --disable-sasl --disable-zstd --disable-zlib \
      --disable-curl --disable-lz4-ext --disable-regex-ext >/dev/null
    libs=""
  fi
  make -j2 -C src lib >/dev/null
  # shellcheck disable=SC2086
  gcc -O2 -I src examples/rdkafka_performance.c src/librdkafka.a $libs -lpthread -lm -ldl -lrt \
    -o "$out/rdkafka_performance"
fi
echo "built: $out/rdkafka_performance"
