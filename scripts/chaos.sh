#!/usr/bin/env bash
# Crash consistency: the load generator registers N devices over HTTPS and then N over MQTT while
# the server is killed with SIGKILL mid-run and started again; every device retries until it is
# told `assigned`. Afterwards every registration a device was told about must be in the store with
# the same hub and device ID, and no device may have two hub identities. Prints, per backend and
# protocol: acknowledged, found, lost, changed, duplicated. Fails on any loss.
# Uses the release binaries (scripts/run.sh or scripts/bench.sh builds them) on ports of its own.
# Usage: scripts/chaos.sh [devices=10000] [sqlite|postgres|both]
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-10000}
backends=${2:-both}
[ "$backends" = both ] && backends="sqlite postgres"
bin=target/release/onramp
loadgen=target/release/onramp-loadgen
[ -x "$bin" ] && [ -x "$loadgen" ] || cargo build --release -p server --bins

https_port=18443 mqtt_port=18883 amqp_port=15671
dir=$(mktemp -d)
server=
schema=
start_server() {
  ONRAMP_LOG=warn "$bin" --data-dir "$data" "${db_args[@]}" --https-port $https_port \
    --mqtt-port $mqtt_port --amqp-port $amqp_port serve 2>> "$dir/server.log" &
  server=$!
  for _ in $(seq 200); do
    curl -sf --cacert "$data/ca.pem" "https://localhost:$https_port/healthz" > /dev/null && return
    sleep 0.05
  done
  echo "the server did not start:" >&2
  tail -20 "$dir/server.log" >&2
  exit 1
}
cleanup() {
  if [ -n "$server" ]; then kill -9 "$server" 2>/dev/null || true; fi
  if [ -n "$schema" ]; then psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA $schema CASCADE" 2>/dev/null || true; fi
}
trap cleanup EXIT

for backend in $backends; do
  data="$dir/$backend"
  db_args=()
  if [ "$backend" = postgres ]; then
    schema="onramp_chaos_$(date +%s)"
    psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $schema"
    db_args=(--database-url "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$schema")
  fi
  "$bin" --data-dir "$data" "${db_args[@]}" admin info --json > /dev/null
  start_server
  for protocol in https mqtt; do
    acks="$dir/$backend-$protocol.acks"
    "$loadgen" --data-dir "$data" "${db_args[@]}" --protocol $protocol --port $https_port \
      --mqtt-port $mqtt_port --devices "$devices" --concurrency 64 --retry-for 120 \
      --acknowledged "$acks" > "$dir/load.out" &
    load=$!
    # Seeding takes a while: the clock starts when the load generator starts registering.
    until grep -q '^target ' "$dir/load.out"; do kill -0 $load 2>/dev/null || break; sleep 0.02; done
    # Kill while devices are being acknowledged in earnest, then again soon after the restart.
    for pause in 0.25 0.4; do
      sleep $pause
      kill -9 "$server"
      wait "$server" 2>/dev/null || true
      sleep 0.3
      start_server
    done
    wait $load
    cat "$dir/load.out"
    printf '%s over %s, killed twice: ' "$backend" "$protocol"
    "$loadgen" --data-dir "$data" "${db_args[@]}" --verify "$acks"
  done
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=
  if [ -n "$schema" ]; then
    psql -q -h 127.0.0.1 -U postgres -d test -c "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE"
    schema=
  fi
done
