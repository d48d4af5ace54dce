#!/usr/bin/env bash
# Benchmarks: they print figures (targets are in the issues and notes, not asserted here).
#  1. one registration end to end with the official Node SDK over HTTPS, process already started:
#     median of 20 (target < 100 ms);
#  2. the load generator: N devices, C concurrent clients, fresh TLS per device, registrations/s and
#     p50/p99, against a bare TLS-handshake baseline measured in the same run; over HTTPS (target
#     >= 2,000/s and >= 50% of the baseline), over MQTT (target >= 2,000/s) and over AMQP (target
#     >= 50% of the baseline); TPM devices beside symmetric-key ones (target >= 50%); devices
#     sending a P-256 CSR and getting a certificate beside plain ones (issue 21's line, no target);
#  3. overload: devices arriving at a quarter of the sustainable rate and at twice it (open loop, the
#     server on core 0 and the generator on core 1), the admitted registrations' p99 of each
#     (target: at twice, within 2x of the other) and how the rest were refused;
#  4. metrics on vs off: registrations/s and server CPU per registration over HTTPS with /metrics
#     scraped every second, against a server with metrics off, six rounds in the same run, and
#     what recording the metrics costs a registration (benches/metrics_cost.rs) as a share of that
#     CPU (target < 2%); then the same with every lifecycle event delivered to a NATS sink
#     (127.0.0.1:4222) as well, four rounds;
#  5. the server's resident memory with 10,000 idle MQTT provisioning connections (target < 200 MB),
#     and with 10,000 connected built-in hub devices (target < 250 MB); with 2,000 AMQP connections
#     logged in and linked, no reply yet (target <= 100 KB each).
# Starts its own release build of Onramp on port 443 (the Node SDK's HTTP port) in a fresh data dir.
# Usage: scripts/bench.sh [devices=20000] [concurrency=64] [sqlite|postgres]
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-20000}
concurrency=${2:-64}
backend=${3:-sqlite}

scripts/setup.sh --test
# 10,000 idle connections need as many descriptors in the server and in the load generator.
ulimit -n 65536 2>/dev/null || true
cargo build --release -p server --bins
dir=$(mktemp -d)
data="$dir/data"
db_args=()
if [ "$backend" = postgres ]; then
  schema="onramp_bench_$(date +%s)"
  psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $schema"
  db_args=(--database-url "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$schema")
fi
bin=target/release/onramp
"$bin" --data-dir "$data" "${db_args[@]}" admin info --json > /dev/null
server=
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
}
# A fresh server process on the data dir: the memory figures are taken on one that has served
# nothing else, so the allocator's leftovers from earlier sections do not count.
# `start_server CORE` pins it to one core.
start_server() {
  stop_server
  local pin=()
  [ -n "${1:-}" ] && pin=(taskset -c "$1")
  ONRAMP_LOG=warn "${pin[@]}" "$bin" --data-dir "$data" "${db_args[@]}" --https-port 443 serve 2>> "$dir/server.log" &
  server=$!
  for _ in $(seq 100); do
    curl -sf --cacert "$data/ca.pem" https://localhost/healthz > /dev/null && return
    sleep 0.1
  done
}
cleanup() {
  stop_server
  if [ -n "${schema:-}" ]; then psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA $schema CASCADE" 2>/dev/null; fi
}
trap cleanup EXIT
start_server

echo "== Node SDK over HTTPS ($backend)"
read -r scope group_key < <(target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --seed-only)
(cd end2end && NODE_EXTRA_CA_CERTS="$data/ca.pem" node sdk/bench-http.js localhost "$scope" "$group_key" 20)

echo "== load generator, HTTPS ($backend)"
target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --devices "$devices" --concurrency "$concurrency"

echo "== load generator, MQTT ($backend)"
target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --protocol mqtt --devices "$devices" --concurrency "$concurrency"

echo "== load generator, AMQP ($backend)"
target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --protocol amqp --devices "$devices" --concurrency "$concurrency"

echo "== load generator, TPM over HTTPS beside symmetric keys ($backend)"
target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --protocol tpm --devices "$devices" --concurrency "$concurrency" --server-pid "$server"

echo "== load generator, certificates issued for P-256 CSRs beside plain symmetric keys ($backend)"
target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --protocol csr --devices "$devices" --concurrency "$concurrency" --server-pid "$server"

echo "== overload, HTTPS ($backend; fresh server on core 0, generator on core 1)"
# The door refuses connections once the runtime lags its timers by 2 ms (off by default).
export ONRAMP_LIMITS__SHED_QUEUE_DELAY_MS=2
start_server 0
unset ONRAMP_LIMITS__SHED_QUEUE_DELAY_MS
taskset -c 1 target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --devices 5000 --concurrency "$concurrency" --overload 10

# A service API call signed by the owner policy (the key from `admin info`).
service_call() {
  local token
  token=$(python3 - "$("$bin" --data-dir "$data" "${db_args[@]}" admin info --json)" <<'PY'
import base64, hashlib, hmac, json, sys, time, urllib.parse
info = json.loads(sys.argv[1])
key = info["serviceConnectionString"].rsplit("SharedAccessKey=", 1)[1]
expiry = int(time.time()) + 3600
sig = base64.b64encode(hmac.new(base64.b64decode(key), f"localhost\n{expiry}".encode(), hashlib.sha256).digest())
print(f"SharedAccessSignature sr=localhost&sig={urllib.parse.quote(sig, safe='')}&se={expiry}&skn=provisioningserviceowner")
PY
)
  curl -sf --cacert "$data/ca.pem" -X "$1" -H "Authorization: $token" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "https://localhost$2?api-version=2021-10-01"
}

# on_vs_off NAME ROUNDS SINK: registrations/s over HTTPS against fresh servers with `/metrics`
# on (scraped every second) and, with SINK=nats, every lifecycle event delivered to a NATS sink,
# against a server with metrics off and no sink. The order alternates so the growing store favours
# neither; the change is the mean of the rounds' paired differences, with its standard error.
on_vs_off() {
  local name=$1 rounds=$2 sink=$3 rounds_file="$dir/$1-rounds.txt"
  for round in $(seq "$rounds"); do
    local order="off on"
    [ $((round % 2)) = 0 ] && order="on off"
    for metrics in $order; do
      if [ "$metrics" = off ]; then export ONRAMP_METRICS_ADDRESS=; fi
      start_server
      unset ONRAMP_METRICS_ADDRESS
      local scraper=
      if [ "$metrics" = on ]; then
        if [ "$sink" = nats ]; then
          service_call PUT /eventSinks/bench '{"kind": "nats", "url": "nats://127.0.0.1:4222", "subject": "onramp.bench"}' > /dev/null
        fi
        (while sleep 1; do curl -sf http://127.0.0.1:9464/metrics > /dev/null || exit 1; done) &
        scraper=$!
      fi
      target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --devices "$devices" --concurrency "$concurrency" --handshakes 1 --server-pid "$server" |
        grep -A1 '^registrations' | paste -sd ' ' | sed "s/^/$metrics $round /" | tee -a "$rounds_file"
      if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null || true; fi
      if [ "$metrics" = on ] && [ "$sink" = nats ]; then
        # How far delivery kept up: events written during the round and not yet published.
        service_call GET /eventSinks/bench | python3 -c 'import json, sys; s = json.load(sys.stdin)["status"]; print("  NATS sink at the end of the round: delivered up to %s, lag %s events" % (s["deliveredSequence"], s["lag"]))'
        service_call DELETE /eventSinks/bench > /dev/null
      fi
    done
  done
  python3 - "$name" "$rounds_file" <<'PY'
import re, statistics, sys
name, path = sys.argv[1], sys.argv[2]
runs = {}
for line in open(path):
    side, round_, rest = line.split(" ", 2)
    rate = float(re.search(r"= (\d+)/s", rest).group(1))
    cpu = float(re.search(r"server CPU: ([\d.]+) ms", rest).group(1))
    runs.setdefault(side, {})[round_] = (rate, cpu)
rounds = sorted(runs["on"])
def change(i):
    diffs = [100 * (runs["on"][r][i] - runs["off"][r][i]) / runs["off"][r][i] for r in rounds]
    return statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
mean = lambda side, i: statistics.mean(runs[side][r][i] for r in rounds)
print(f"{name} on: {mean('on', 0):.0f}/s, {mean('on', 1):.3f} ms server CPU each; "
      f"off: {mean('off', 0):.0f}/s, {mean('off', 1):.3f} ms (means of {len(rounds)} rounds)")
(rate, rate_se), (cpu, cpu_se) = change(0), change(1)
print(f"{name} on vs off: throughput {rate:+.1f}% (standard error {rate_se:.1f}), "
      f"server CPU per registration {cpu:+.1f}% (standard error {cpu_se:.1f})")
with open(path + ".off-cpu", "w") as out:
    out.write(f"{mean('off', 1)} {mean('off', 0)}\n")
PY
}

echo "== metrics on vs off, HTTPS ($backend; fresh servers, six alternating rounds)"
on_vs_off metrics 6 none
read -r off_cpu_ms off_rate < "$dir/metrics-rounds.txt.off-cpu"
# The rounds' spread on two shared cores is a few percent, more than the cost it looks for; the
# recording itself, measured on the real `Metrics`, is the precise figure.
cargo bench -q -p server --bench metrics_cost -- "$off_rate" | tee "$dir/metrics-cost.txt"
python3 - "$off_cpu_ms" "$(sed -n 's/^metrics cost per registration: \([0-9]*\) ns$/\1/p' "$dir/metrics-cost.txt")" <<'PY'
import sys
cpu_ms, cost_ns = float(sys.argv[1]), float(sys.argv[2])
share = 100 * cost_ns / (cpu_ms * 1e6)
print(f"metrics: {cost_ns:.0f} ns of the {cpu_ms:.3f} ms server CPU a registration takes with metrics off = {share:.2f}% "
      f"(target < 2%: {'met' if share < 2 else 'NOT met'})")
PY

echo "== metrics and a NATS event sink on vs off, HTTPS ($backend; fresh servers, four alternating rounds)"
on_vs_off "metrics and NATS sink" 4 nats

echo "== idle MQTT connections (fresh server)"
start_server
target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --protocol mqtt --idle-connections 10000 --concurrency 64 --server-pid "$server"

echo "== idle built-in hub connections (fresh server, provisioning listener idle)"
start_server
target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --protocol mqtt --idle-connections 10000 --hub-sessions --concurrency 64 --server-pid "$server"

echo "== AMQP connections in flight (fresh server)"
start_server
target/release/onramp-loadgen --data-dir "$data" "${db_args[@]}" --protocol amqp --idle-connections 2000 --concurrency 64 --server-pid "$server"
