#!/usr/bin/env bash
# Builds the console's browser half into target/site: the hydrate build of app/ for wasm32,
# wasm-bindgen's JS glue, the CSS and the public files. This is what cargo-leptos does, without
# its downloads (see ../shared notes: it fetches tools from outside the package registries).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=wasm-release
site=target/site
cargo build -p app --lib --target wasm32-unknown-unknown --no-default-features --features hydrate --profile "$profile"
mkdir -p "$site/pkg"
wasm-bindgen --target web --no-typescript --out-dir "$site/pkg" --out-name onramp \
  "target/wasm32-unknown-unknown/$profile/app.wasm"
cp style/main.css "$site/pkg/onramp.css"
cp -r public/. "$site/"
echo "console built in $site ($(du -h "$site/pkg/onramp_bg.wasm" | cut -f1) wasm)"
