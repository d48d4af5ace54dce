#!/usr/bin/env bash
# Benchmark: the console's enrollment list with 1,000,000 enrollments seeded, on SQLite and on
# PostgreSQL: first page, prefix searches, filters and a deep page, timed in the server's console
# backend (target: under 100 ms each). Usage: scripts/bench-console.sh [enrollments=1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000000}
cargo build --release -p server --bin onramp --bin onramp-listbench
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
source scripts/lib/backends.sh
bench_on() {
  local backend=$1; shift
  local db_args=("$@")
  seeded=$(target/release/onramp --data-dir "$dir/$backend" "${db_args[@]}" enrollments seed --count "$count" 2>/dev/null)
  echo "seeded $count enrollments on $backend in $(echo "$seeded" | python3 -c 'import json,sys; print("%.1f s" % json.load(sys.stdin)["seconds"])')"
  target/release/onramp-listbench --data-dir "$dir/$backend" "${db_args[@]}"
}
for_each_backend listbench bench_on
