#!/usr/bin/env bash
# Benchmark: `onramp enrollments import` of 100,000 enrollments (CSV, symmetric keys given), on a
# fresh SQLite data dir and on a fresh PostgreSQL schema, then as many rows without keys (looked up
# to keep stored ones, else generated). Prints the seconds each took (target < 30 s).
# Usage: scripts/bench-import.sh [rows=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-100000}
cargo build --release -p server --bin onramp
dir=$(mktemp -d)
python3 - "$dir" "$rows" <<'PY'
import base64, os, sys
dir, rows = sys.argv[1], int(sys.argv[2])
with open(f"{dir}/fleet.csv", "w") as f, open(f"{dir}/keyless.csv", "w") as g:
    f.write("registrationId,primaryKey,secondaryKey,tags,desired\n")
    g.write("registrationId,tags,desired\n")
    for n in range(rows):
        k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
        f.write(f'device-{n:07d},{k1},{k2},"{{""row"":{n}}}","{{""interval"":30}}"\n')
        g.write(f'keyless-{n:07d},"{{""row"":{n}}}","{{""interval"":30}}"\n')
PY
bin=target/release/onramp
source scripts/lib/backends.sh
import_on() {
  local backend=$1; shift
  local db_args=("$@")
  "$bin" --data-dir "$dir/data-$backend" "${db_args[@]}" admin info --json > /dev/null
  for file in fleet keyless; do
    summary=$("$bin" --data-dir "$dir/data-$backend" "${db_args[@]}" enrollments import "$dir/$file.csv" 2>/dev/null)
    seconds=$(echo "$summary" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f s, %d imported, %d failed" % (d["seconds"], d["imported"], d["failed"]))')
    echo "import of $rows enrollments ($backend, $file.csv): $seconds (target < 30 s)"
  done
}
for_each_backend import import_on
