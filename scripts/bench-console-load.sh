#!/usr/bin/env bash
# Benchmark: the console's first load in Debian's Chromium against a release server. Prints the
# wasm's size raw and as sent with brotli, what the first and the second (cached) load took over
# the wire, and when the page was hydrated (median of the runs), each beside its target:
# wasm < 600 KB raw and < 200 KB with brotli, hydrated < 300 ms after navigation.
# Usage: scripts/bench-console-load.sh [runs=5]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
scripts/setup.sh --test >/dev/null
scripts/build-site.sh >/dev/null
cargo build --release -p server --bin onramp
out=$(cd end2end && ONRAMP_TEST_BIN="$PWD/../target/release/onramp" \
  npx playwright test assets.spec.ts --repeat-each "$runs" --reporter=list 2>&1) || { echo "$out"; exit 1; }
python3 - "$out" <<'PY'
import re, statistics, sys
out = sys.argv[1]
raw, br = map(int, re.search(r"console wasm: (\d+) B raw, (\d+) B as sent with brotli", out).groups())
loads = re.findall(r"console first load: wasm (\d+) B over the wire \((\d+) B decoded\), hydrated (\d+) ms "
                   r"after navigation; second load: wasm (\d+) B over the wire, hydrated (\d+) ms", out)
first = statistics.median(int(l[2]) for l in loads)
second = statistics.median(int(l[4]) for l in loads)
wire = max(int(l[0]) for l in loads)
cached = max(int(l[3]) for l in loads)
print(f"wasm: {raw / 1000:.0f} KB raw, {br / 1000:.0f} KB with brotli; first load {wire / 1000:.0f} KB over the wire, "
      f"second load {cached} B")
print(f"hydrated after navigation: first load {first:.0f} ms, second load {second:.0f} ms (median of {len(loads)})")
met = lambda ok: "met" if ok else "NOT met"
print(f"targets: raw < 600 KB {met(raw < 600_000)}; brotli < 200 KB {met(br < 200_000)}; "
      f"hydrated < 300 ms {met(first < 300)}; cached second load 0 B {met(cached == 0)}")
PY
