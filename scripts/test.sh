#!/usr/bin/env bash
# Installs what is missing and runs every test: formatting and lints, unit tests, the storage suite
# on SQLite and on the local PostgreSQL, the binary's integration tests, the Playwright browser
# tests of the console in Debian's Chromium, the README's run command itself, a short crash-consistency run
# and a rolling restart behind HAProxy.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints how long the one before took, and the end prints every step's time: the
# cold-run budget (45 min on a fresh machine) is kept by these figures.
timings=""
step_name=""
step_start=$SECONDS
end_step() {
  [ -n "$step_name" ] && timings="$timings$(printf '%6ss  %s' $((SECONDS - step_start)) "$step_name")\n"
  step_start=$SECONDS
}
step() {
  end_step
  step_name="$*"
  printf '\n\033[1m== %s\033[0m (at %ss)\n' "$*" "$SECONDS"
}
report() { end_step; step_name=""; printf '\n\033[1m== step times\033[0m\n%b%6ss  in all\n' "$timings" "$SECONDS"; }
trap report EXIT

# A clean clone builds once: incremental caches would only double the disk a cold build needs.
if [[ "${CI:-}" == "true" ]]; then export CARGO_INCREMENTAL=0; fi

step "setup ($(df -h --output=avail . | tail -1 | tr -d ' ') free on disk)"
scripts/setup.sh --test

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

step "debug build of the tests"
cargo test --workspace --no-run

step "unit and integration tests (SQLite and PostgreSQL)"
cargo test --workspace

step "console build"
scripts/build-site.sh

step "browser tests (Playwright, Chromium)"
(cd end2end && ONRAMP_TEST_BIN="$PWD/../target/debug/onramp" npx playwright test)

step "the README's run command (release build, default ports, a fresh data dir)"
scripts/smoke-run.sh

step "crash consistency (SIGKILL mid-run, SQLite and PostgreSQL, HTTPS and MQTT; short form)"
scripts/chaos.sh 2000 both

step "rolling restart (3 instances on PostgreSQL behind HAProxy, each drained and restarted under load)"
scripts/rolling-restart.sh 10000
