#!/usr/bin/env bash
# Installs what is missing, builds, and runs Onramp on its embedded defaults: SQLite and generated
# TLS in ./data, one built-in hub. Extra arguments go to `onramp serve` (e.g. --https-port 9443).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-site.sh
cargo build --release -p server
exec target/release/onramp serve "$@"
