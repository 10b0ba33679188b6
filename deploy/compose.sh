#!/usr/bin/env bash
# `docker compose` where the plugin exists, else the standalone `docker-compose`, on
# deploy/docker-compose.yml with the project name `strom`. Arguments go to compose.
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
  exec docker compose -p "${STROM_COMPOSE_PROJECT:-strom}" -f deploy/docker-compose.yml "$@"
else
  exec docker-compose -p "${STROM_COMPOSE_PROJECT:-strom}" -f deploy/docker-compose.yml "$@"
fi
