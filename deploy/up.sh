#!/usr/bin/env bash
# `just up` (or `bash deploy/up.sh`): builds the image, starts the three-node cluster and waits until it is healthy:
# a controller elected and all three brokers registered and unfenced.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== building strom:latest (deploy/build-image.sh; no registry needed)"
bash deploy/build-image.sh "${STROM_IMAGE_BINARY:-}"
echo "== starting the three nodes (deploy/docker-compose.yml)"
bash deploy/compose.sh up -d
strom=${STROM_IMAGE_BINARY:-target/release/strom}
deadline=$(( $(date +%s) + 90 ))
until "$strom" cluster --bootstrap-server localhost:19092 --expect-brokers 3 >/dev/null 2>&1; do
  if [ "$(date +%s)" -gt "$deadline" ]; then
    echo "the cluster did not become healthy in 90 s" >&2
    bash deploy/compose.sh ps >&2
    bash deploy/compose.sh logs --tail 30 >&2
    exit 1
  fi
  sleep 0.5
done
"$strom" cluster --bootstrap-server localhost:19092 --expect-brokers 3
