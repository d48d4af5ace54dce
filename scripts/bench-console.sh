#!/usr/bin/env bash
# Benchmark: the console's enrollment list with 1,000,000 enrollments seeded, on SQLite and on
# PostgreSQL: first page, prefix searches, filters and a deep page, timed in the server's console
# backend (target: under 100 ms each). Usage: scripts/bench-console.sh [enrollments=1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000000}
cargo build --release -p server --bin onramp --bin onramp-listbench
dir=$(mktemp -d)
schema=""
cleanup_schema() { [ -n "$schema" ] && psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true; }
trap 'cleanup_schema; rm -rf "$dir"' EXIT
for backend in sqlite postgres; do
  db_args=()
  if [ "$backend" = postgres ]; then
    schema="onramp_listbench_$(date +%s)"
    psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $schema"
    db_args=(--database-url "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$schema")
  fi
  seeded=$(target/release/onramp --data-dir "$dir/$backend" "${db_args[@]}" enrollments seed --count "$count" 2>/dev/null)
  echo "seeded $count enrollments on $backend in $(echo "$seeded" | python3 -c 'import json,sys; print("%.1f s" % json.load(sys.stdin)["seconds"])')"
  target/release/onramp-listbench --data-dir "$dir/$backend" "${db_args[@]}"
done
