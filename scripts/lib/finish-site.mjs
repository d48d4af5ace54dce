// The console's files as browsers get them (scripts/build-site.sh): each asset renamed after its
// content (`onramp.<sha256 prefix>.js`, like cargo-leptos's hash-files), so it can be cached for
// good; a brotli (`.br`) and a gzip (`.gz`) sibling beside it, which the server sends by the
// browser's Accept-Encoding; and `assets.json` naming them for the server's HTML shell.
//
//   node scripts/lib/finish-site.mjs <pkg dir>
import { createHash } from 'node:crypto';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const pkg = process.argv[2];
const plain = { js: 'onramp.js', wasm: 'onramp_bg.wasm', css: 'onramp.css' };
const manifest = {};
const sizes = [];
for (const [kind, file] of Object.entries(plain)) {
  const body = readFileSync(`${pkg}/${file}`);
  const hash = createHash('sha256').update(body).digest('hex').slice(0, 16);
  const dot = file.lastIndexOf('.');
  const named = `${file.slice(0, dot)}.${hash}${file.slice(dot)}`;
  const br = brotliCompressSync(body, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
      [constants.BROTLI_PARAM_SIZE_HINT]: body.length,
    },
  });
  const gz = gzipSync(body, { level: 9 });
  writeFileSync(`${pkg}/${named}`, body);
  writeFileSync(`${pkg}/${named}.br`, br);
  writeFileSync(`${pkg}/${named}.gz`, gz);
  unlinkSync(`${pkg}/${file}`);
  manifest[kind] = named;
  sizes.push(`${named}: ${body.length} B, br ${br.length} B, gzip ${gz.length} B`);
}
writeFileSync(`${pkg}/assets.json`, `${JSON.stringify(manifest, null, 2)}\n`);
console.log(sizes.join('\n'));
