#!/usr/bin/env bash
# Benchmark: `onramp enrollments import` of 100,000 enrollments (CSV, symmetric keys given), on a
# fresh SQLite data dir and on a fresh PostgreSQL schema. Prints the seconds each took
# (target < 30 s). Usage: scripts/bench-import.sh [rows=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-100000}
cargo build --release -p server --bin onramp
dir=$(mktemp -d)
python3 - "$dir/fleet.csv" "$rows" <<'PY'
import base64, os, sys
path, rows = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("registrationId,primaryKey,secondaryKey,tags,desired\n")
    for n in range(rows):
        k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
        f.write(f'device-{n:07d},{k1},{k2},"{{""row"":{n}}}","{{""interval"":30}}"\n')
PY
bin=target/release/onramp
source scripts/lib/backends.sh
import_on() {
  local backend=$1; shift
  local db_args=("$@")
  "$bin" --data-dir "$dir/data-$backend" "${db_args[@]}" admin info --json > /dev/null
  summary=$("$bin" --data-dir "$dir/data-$backend" "${db_args[@]}" enrollments import "$dir/fleet.csv" 2>/dev/null)
  seconds=$(echo "$summary" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f s, %d imported, %d failed" % (d["seconds"], d["imported"], d["failed"]))')
  echo "import of $rows enrollments ($backend): $seconds"
}
for_each_backend import import_on
