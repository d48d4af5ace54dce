#!/usr/bin/env bash
# Coverage-guided fuzzing campaigns of every target in fuzz/fuzz_targets on the stable toolchain
# (cargo-fuzz with RUSTC_BOOTSTRAP=1; no sanitizer: the code under test is safe Rust, and the
# ASan build takes over half an hour here, against about 10 minutes for this one). Each target
# runs RUNS executions (default 10,000,000) on its corpus in fuzz/corpus/<target>, which grows
# with what the run finds; crashes land in fuzz/artifacts/<target>/. Prints a line per target.
# FUZZ_SECONDS caps each target's time (0: no cap); FUZZ_BUILD_ONLY=1 only builds.
#   scripts/fuzz.sh [RUNS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-10000000}
shift || true
cargo_fuzz_version=0.13.2
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]]; then
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
build=(-s none -O -a)
cargo fuzz build "${build[@]}"
if [[ "${FUZZ_BUILD_ONLY:-}" == 1 ]]; then exit 0; fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then mapfile -t targets < <(cargo fuzz list); fi
for target in "${targets[@]}"; do
  log=$(mktemp)
  started=$(date +%s)
  status=ok
  # The binary itself, not `cargo fuzz run`: that would rebuild after any edit to the server.
  mkdir -p "artifacts/$target"
  "target/x86_64-unknown-linux-gnu/release/$target" -artifact_prefix="artifacts/$target/" \
    -runs="$runs" -max_total_time="${FUZZ_SECONDS:-0}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "corpus/$target" >"$log" 2>&1 || status="FAILED (see fuzz/artifacts/$target)"
  seconds=$(( $(date +%s) - started ))
  execs=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$log" || echo 0)
  rate=$(grep -oP 'stat::average_exec_per_sec:\s*\K\d+' "$log" || echo 0)
  printf '%-20s %s executions in %s s (%s/s), corpus %s files, %s\n' "$target" "$execs" "$seconds" \
    "$rate" "$(ls "corpus/$target" | wc -l)" "$status"
  if [[ $status != ok ]]; then grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5; fi
  rm -f "$log"
done
