#!/usr/bin/env bash
# Builds the `strom:latest` image from a strom binary, with no base image: the binary, the
# shared libraries `ldd` lists, /etc/passwd with the `strom` user (uid 10001), and an empty
# data directory. Usage: deploy/build-image.sh [path/to/strom] (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
  cargo build --release -p strom
  bin=target/release/strom
fi
ctx=target/docker-context
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/data"
cp "$bin" "$ctx/rootfs/usr/local/bin/strom"
strip "$ctx/rootfs/usr/local/bin/strom" 2>/dev/null || true
# Every shared library the binary needs, at the path the loader looks for it.
for lib in $(ldd "$bin" | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
printf 'root:x:0:0:root:/:/sbin/nologin\nstrom:x:10001:10001:strom:/var/lib/strom:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nstrom:x:10001:\n' > "$ctx/rootfs/etc/group"
chmod 1777 "$ctx/rootfs/tmp"
docker build -q -f deploy/Dockerfile -t strom:latest "$ctx"
