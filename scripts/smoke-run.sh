#!/usr/bin/env bash
# Runs the README's run command as a new user would (scripts/run.sh: default ports, embedded
# defaults) in a fresh data directory, and checks that https://localhost:8443/healthz answers 200
# with the generated CA trusted and nothing else; then stops it with SIGTERM and expects a clean exit.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(mktemp -d)/data
log=$(mktemp)
setsid scripts/run.sh --data-dir "$data" > "$log" 2>&1 &
runner=$!
stop() { kill -TERM -- -"$runner" 2>/dev/null || true; }
trap stop EXIT
# run.sh may build first; the build has its own pace, the server then starts in a second.
for _ in $(seq 1800); do
  status=000
  if [ -f "$data/ca.pem" ]; then
    status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$data/ca.pem" https://localhost:8443/healthz || true)
  fi
  if [ "$status" = 200 ]; then
    echo "healthz: 200 with the generated CA ($data/ca.pem)"
    stop
    trap - EXIT
    wait "$runner" && echo "stopped cleanly" && exit 0
    echo "onramp did not exit cleanly on SIGTERM"; tail -20 "$log"; exit 1
  fi
  if ! kill -0 "$runner" 2>/dev/null; then
    echo "scripts/run.sh exited before serving:"; tail -40 "$log"; exit 1
  fi
  sleep 1
done
echo "no healthz answer after 30 minutes"; tail -40 "$log"; exit 1
