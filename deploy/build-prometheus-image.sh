#!/usr/bin/env bash
# Builds `strom-prometheus:latest` for the compose `monitoring` profile with no base image
# (none can be pulled here): the host's Prometheus binary (Debian: `apt-get install
# prometheus`), the shared libraries `ldd` lists, and a `nobody` user. With a registry, use
# the official `prom/prometheus` image instead (see docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(command -v prometheus || true)
if [ -z "$bin" ]; then
  echo "prometheus is not installed on this host (apt-get install prometheus)" >&2
  exit 1
fi
ctx=target/docker-context-prometheus
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc/prometheus" "$ctx/rootfs/tmp" "$ctx/data"
cp -L "$bin" "$ctx/rootfs/bin/prometheus"
for lib in $(ldd "$bin" | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp deploy/prometheus.yml "$ctx/rootfs/etc/prometheus/prometheus.yml"
printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/prometheus:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ctx/rootfs/etc/group"
chmod 1777 "$ctx/rootfs/tmp"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
# The storage directory is created by this COPY, so it (not only its contents) is nobody's.
COPY --chown=65534:65534 data/ /prometheus/
USER 65534:65534
EXPOSE 9090
VOLUME ["/prometheus"]
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=0.0.0.0:9090"]
DOCKERFILE
docker build -q -t strom-prometheus:latest "$ctx"
