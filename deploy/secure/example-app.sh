#!/usr/bin/env bash
# The example app's users and ACLs on the secured compose cluster: `orders-producer` may write
# `orders`, `orders-consumer` may read it in the group `billing`; both log in with
# SCRAM-SHA-512 over TLS. Run from the repository root once the cluster is healthy.
#
#   bash deploy/secure/example-app.sh [strom binary]
set -euo pipefail
strom="${1:-target/release/strom}"
bootstrap="${STROM_BOOTSTRAP:-localhost:19094}"
admin=(--bootstrap-server "$bootstrap" --command-config "${STROM_ADMIN_PROPERTIES:-deploy/secure/admin.properties}")
"$strom" configs "${admin[@]}" --alter --entity-type users --entity-name orders-producer \
  --add-config 'SCRAM-SHA-512=[iterations=8192,password=producer-secret]'
"$strom" configs "${admin[@]}" --alter --entity-type users --entity-name orders-consumer \
  --add-config 'SCRAM-SHA-512=[iterations=8192,password=consumer-secret]'
"$strom" acls "${admin[@]}" --add --producer --idempotent --allow-principal User:orders-producer --topic orders
"$strom" acls "${admin[@]}" --add --consumer --allow-principal User:orders-consumer --topic orders --group billing
"$strom" acls "${admin[@]}" --list --topic orders
