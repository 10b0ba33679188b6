#!/usr/bin/env bash
# `docker compose` where the plugin exists, else the standalone `docker-compose`, on
# deploy/docker-compose.yml (or $STROM_COMPOSE_FILE) with the project name `strom`. Arguments
# go to compose.
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
  exec docker compose -p "${STROM_COMPOSE_PROJECT:-strom}" -f "${STROM_COMPOSE_FILE:-deploy/docker-compose.yml}" "$@"
else
  exec docker-compose -p "${STROM_COMPOSE_PROJECT:-strom}" -f "${STROM_COMPOSE_FILE:-deploy/docker-compose.yml}" "$@"
fi
