#!/usr/bin/env bash
# Builds the console's browser half into target/site: the hydrate build of app/ for wasm32,
# wasm-bindgen's JS glue, wasm-opt -Oz (binaryen 132 from npm: Debian's 108 breaks hydration),
# the CSS and the public files; then content-hashed names and brotli/gzip siblings
# (scripts/lib/finish-site.mjs). This is what cargo-leptos does, without its downloads (see
# ../shared notes: it fetches tools from outside the package registries).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=wasm-release
site=target/site
wasm_opt=scripts/tools/node_modules/.bin/wasm-opt
cargo build -p app --lib --target wasm32-unknown-unknown --no-default-features --features hydrate --profile "$profile"
rm -rf "$site/pkg"
mkdir -p "$site/pkg"
wasm-bindgen --target web --no-typescript --out-dir "$site/pkg" --out-name onramp \
  "target/wasm32-unknown-unknown/$profile/app.wasm"
"$wasm_opt" -Oz --strip-debug --strip-producers "$site/pkg/onramp_bg.wasm" -o "$site/pkg/onramp_bg.wasm"
cp style/main.css "$site/pkg/onramp.css"
cp -r public/. "$site/"
node scripts/lib/finish-site.mjs "$site/pkg"
echo "console built in $site"
