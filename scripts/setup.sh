#!/usr/bin/env bash
# Installs what building (and, with --test, testing) Onramp needs. Idempotent: a warm machine pays nothing.
# Only package registries are used (crates.io, npm, PyPI, Debian); nothing is downloaded from elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=false
[ "${1:-}" = "--test" ] && want_test=true

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# Packages from npm, PyPI and Debian download while cargo compiles wasm-bindgen-cli: on a fresh
# machine the two together take about as long as the compile alone.
packages() {
  # wasm-opt for the console build: binaryen 132 from npm (Debian's 108 breaks hydration).
  if [ ! -x scripts/tools/node_modules/.bin/wasm-opt ] || [ scripts/tools/package-lock.json -nt scripts/tools/node_modules/.package-lock.json ]; then
    log "installing the console build tools (npm ci in scripts/tools: binaryen)"
    (cd scripts/tools && npm ci --no-audit --no-fund)
  fi

  if $want_test; then
    # Chromium for Playwright; openssl for the console tests' certificates; swtpm, the software
    # TPM the official SDK's TPM client provisions with, and tpm2-tools to drive it directly;
    # the deployment guide's tools (sqlite3 and pg_dump backups, systemd-analyze, HAProxy).
    missing=""
    command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
    command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
    command -v swtpm >/dev/null 2>&1 || missing="$missing swtpm"
    command -v tpm2_activatecredential >/dev/null 2>&1 || missing="$missing tpm2-tools"
    command -v sqlite3 >/dev/null 2>&1 || missing="$missing sqlite3"
    command -v pg_dump >/dev/null 2>&1 || missing="$missing postgresql-client"
    command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
    command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy"
    if [ -n "$missing" ]; then
      log "installing Debian's$missing"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
    if [ ! -d end2end/node_modules/@playwright/test ] || [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
      log "installing end-to-end test packages (npm ci)"
      (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
    fi
    # The official Python device SDK, in a virtualenv of the project's own.
    if [ ! -x end2end/.venv/bin/python ] || [ end2end/sdk/requirements.txt -nt end2end/.venv/installed ]; then
      log "installing the Python device SDK (pip, end2end/.venv)"
      python3 -m venv end2end/.venv
      end2end/.venv/bin/pip install -q --disable-pip-version-check -r end2end/sdk/requirements.txt
      touch end2end/.venv/installed
    fi
    # The SDK tests' devices connect to the default built-in hub, hub.localhost: *.localhost names
    # resolve to loopback (RFC 6761) with nss-myhostname, which Debian's systemd installs bring.
    if ! getent hosts hub.localhost >/dev/null; then
      log "installing Debian's libnss-myhostname (resolves *.localhost to loopback)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnss-myhostname >/dev/null
      grep -q '^hosts:.*myhostname' /etc/nsswitch.conf ||
        sed -i 's/^hosts:\([[:space:]]*\)files/hosts:\1files myhostname/' /etc/nsswitch.conf
      getent hosts hub.localhost >/dev/null || { log "hub.localhost still does not resolve"; exit 1; }
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
      log "starting the local PostgreSQL"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
    fi
  fi
}
packages &
packages_pid=$!

# The console compiles to WebAssembly.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# wasm-bindgen's CLI must match the wasm-bindgen crate in Cargo.lock exactly.
wb_version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  log "installing wasm-bindgen-cli $wb_version"
  # Not --locked: the CLI's own lock file pins a yanked crate.
  cargo install wasm-bindgen-cli --version "$wb_version" --force
fi

wait "$packages_pid"
