#!/usr/bin/env bash
# Rolling restart under load: three instances on one PostgreSQL behind HAProxy
# (docs/deploy/haproxy.cfg, TCP mode, health checks on /readyz), each restarted in turn with
# SIGTERM (limits.drain_secs = 3: /readyz fails first, the listeners close after) while the load
# generator registers devices through HAProxy without pause. Every device retries whatever fails
# until it is told `assigned`; a failed attempt is any refusal, reset, 5xx or timeout it saw.
# Prints attempted, assigned, failed attempts and the throughput meanwhile; fails unless every
# device was assigned with 0 failed attempts and the store holds what each was told.
# All on loopback: the instances on 127.0.0.11-13 (one port set each), HAProxy on 127.0.0.1.
# Usage: [DRAIN_SECS=3] scripts/rolling-restart.sh [devices per round=10000] [concurrency=64]
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-10000}
concurrency=${2:-64}
# DRAIN_SECS=0 shows what the drain is for: without it, devices are refused during restarts.
drain=${DRAIN_SECS:-3}
bin=target/release/onramp
loadgen=target/release/onramp-loadgen
[ -x "$bin" ] && [ -x "$loadgen" ] || cargo build --release -p server --bins
command -v haproxy > /dev/null || { echo "haproxy is missing: run scripts/setup.sh --test" >&2; exit 1; }

https_port=18443 mqtt_port=18883 amqp_port=15671 lb_https=19443
dir=$(mktemp -d)
schema="onramp_rolling_$(date +%s)"
database_url="postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$schema"
declare -A pids
haproxy_pid=

address() { echo "127.0.0.1$((1 + $1))"; }  # instance 0, 1, 2 -> 127.0.0.11, .12, .13

start_instance() {
  local n=$1 ip
  ip=$(address "$n")
  ONRAMP_LOG=warn ONRAMP_LISTEN_ADDRESS=$ip ONRAMP_LIMITS__DRAIN_SECS=$drain "$bin" \
    --data-dir "$dir/$n" --database-url "$database_url" --https-port $https_port \
    --mqtt-port $mqtt_port --amqp-port $amqp_port --metrics-address "$ip:9464" \
    serve 2>> "$dir/$n.log" &
  pids[$n]=$!
  for _ in $(seq 300); do
    curl -sf --cacert "$dir/0/ca.pem" --resolve "localhost:$https_port:$ip" \
      "https://localhost:$https_port/readyz" > /dev/null && return
    sleep 0.05
  done
  echo "instance $n did not become ready:" >&2
  tail -20 "$dir/$n.log" >&2
  exit 1
}

# Which servers HAProxy has in rotation now, from its stats socket.
in_rotation() {
  python3 - "$dir/haproxy.sock" <<'PY' 2>"$dir/rotation" || echo 0
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
out = b""
while chunk := s.recv(65536):
    out += chunk
rows = [line.split(",") for line in out.decode().splitlines()]
servers = [r for r in rows if len(r) > 36 and r[0] == "onramp_https" and r[1] in "abc"]
print(sum(1 for r in servers if r[17] == "UP"))
print(" ".join(f"{r[1]}={r[17]}({r[36]})" for r in servers), file=sys.stderr)
PY
}
# Waits (at most 30 s) until HAProxy has all three instances in rotation.
wait_in_rotation() {
  for _ in $(seq 300); do
    [ "$(in_rotation)" = 3 ] && return
    kill -0 "$haproxy_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "HAProxy did not put all three instances in rotation: $(cat "$dir/rotation")" >&2
  tail -n 5 "$dir/haproxy.log" "$dir"/?.log >&2
  exit 1
}
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }

cleanup() {
  for pid in "${pids[@]}" $haproxy_pid; do kill -9 "$pid" 2>/dev/null || true; done
  psql -q -h 127.0.0.1 -U postgres -d test \
    -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $schema CASCADE" || true
}
trap cleanup EXIT

psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $schema"
# One CA for the fleet: the first instance generates it, the others start with a copy.
start_instance 0
for n in 1 2; do
  mkdir -p "$dir/$n"
  cp "$dir/0/ca.pem" "$dir/0/ca-key.pem" "$dir/$n/"
  start_instance $n
done

cp docs/deploy/haproxy.cfg "$dir/haproxy.cfg"
printf 'global\n    stats socket %s mode 600\n' "$dir/haproxy.sock" > "$dir/stats.cfg"
ONRAMP_LB_HTTPS=127.0.0.1:$lb_https ONRAMP_LB_MQTT=127.0.0.1:19883 ONRAMP_LB_AMQP=127.0.0.1:15672 \
  ONRAMP_A=$(address 0) ONRAMP_B=$(address 1) ONRAMP_C=$(address 2) \
  ONRAMP_HTTPS_PORT=$https_port ONRAMP_MQTT_PORT=$mqtt_port ONRAMP_AMQP_PORT=$amqp_port \
  ONRAMP_CA="$dir/0/ca.pem" ONRAMP_HOSTNAME=localhost ONRAMP_LB_MAXCONN=4000 \
  haproxy -f "$dir/haproxy.cfg" -f "$dir/stats.cfg" 2> "$dir/haproxy.log" &
haproxy_pid=$!
wait_in_rotation

# Rounds of $devices until the restarts are done, so the load outlasts them on any machine.
load_rounds() {
  local round=0
  while [ $round = 0 ] || [ ! -e "$dir/restarted" ]; do
    round=$((round + 1))
    "$loadgen" --data-dir "$dir/0" --database-url "$database_url" --protocol https \
      --port $lb_https --devices "$devices" --concurrency "$concurrency" --retry-for 300 \
      --acknowledged "$dir/acks.$round" >> "$dir/load.out" || return 1
  done
}
load_rounds &
load=$!
until grep -q '^target ' "$dir/load.out" 2>/dev/null; do kill -0 $load 2>/dev/null || break; sleep 0.02; done
started=$(now)
sleep 2
for n in 0 1 2; do
  kill -TERM "${pids[$n]}"
  wait "${pids[$n]}" || { echo "instance $n exited with a failure:" >&2; tail -20 "$dir/$n.log" >&2; exit 1; }
  start_instance "$n"
  # Back in rotation (two good checks) before the next one goes.
  wait_in_rotation
  printf 'instance %s restarted, %.1f s into the load\n' "$n" "$(calc "$(now) - $started")"
done
restarted=$(now)
touch "$dir/restarted"
wait $load || { cat "$dir/load.out"; echo "FAILED: the load generator gave up" >&2; exit 1; }
cat "$dir/load.out"
read -r rounds assigned seconds failed < <(awk '/ devices acknowledged in / { r++; a += $1; s += $5; f += $8 }
  END { print r, a, s, f }' "$dir/load.out")
attempted=$((rounds * devices))
printf 'rolling restart of 3 instances on PostgreSQL behind HAProxy: attempted %s, assigned %s, failed %s attempts; %.0f registrations/s over %.1f s (%s rounds; the restarts took %.1f s)\n' \
  "$attempted" "$assigned" "$failed" "$(calc "$assigned / $seconds")" "$seconds" "$rounds" \
  "$(calc "$restarted - $started")"
printf 'the store against what the devices were told: '
cat "$dir"/acks.* > "$dir/acks"
"$loadgen" --data-dir "$dir/0" --database-url "$database_url" --verify "$dir/acks"
[ "$assigned" = "$attempted" ] && [ "$failed" = 0 ] || { echo "FAILED: registrations were lost or refused" >&2; exit 1; }
