#!/usr/bin/env bash
# Three Strom nodes on loopback, each controller + broker. Ctrl-C stops all three.
# Kafka listeners: 127.0.0.1:19092, :29092, :39092; controllers: :19093, :29093, :39093.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p strom
root=./data/cluster
mkdir -p "$root"
voters="1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093"
pids=()
for n in 1 2 3; do
  ./target/release/strom server \
    --override node.id=$n \
    --override "listeners=PLAINTEXT://127.0.0.1:${n}9092,CONTROLLER://127.0.0.1:${n}9093" \
    --override "controller.quorum.voters=$voters" \
    --override "log.dirs=$root/node$n" \
    --override "metrics.listener=127.0.0.1:${n}9464" \
    2>"$root/node$n.log" &
  pids+=($!)
done
echo "three nodes started (pids ${pids[*]}); logs in $root/node*.log"
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM
wait
