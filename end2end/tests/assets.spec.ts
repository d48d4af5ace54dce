// The console's first load as an operator's browser meets it: the built files under /pkg are
// named after their content, sent brotli- or gzip-compressed as the browser asks, and cached for
// good; pages are revalidated. The load figures are printed (and read by scripts/bench-console-load.sh,
// where the size and time targets live).
import { chromium, expect, test, type Page } from '@playwright/test';
import { createHash, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

const port = Number(process.env.E2E_PORT);
const ca = () => fs.readFileSync(path.join(process.env.E2E_DATA_DIR!, 'ca.pem'));

type Raw = { status: number; headers: IncomingHttpHeaders; body: Buffer };

/// A GET with Node's own client: the body exactly as sent (no decoding), over TLS checked
/// against the instance's CA.
function rawGet(pathname: string, acceptEncoding?: string): Promise<Raw> {
  const headers: Record<string, string> = acceptEncoding ? { 'accept-encoding': acceptEncoding } : {};
  return new Promise((resolve, reject) => {
    https.get({ host: 'localhost', port, path: pathname, ca: ca(), headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    }).on('error', reject);
  });
}

/// The /pkg files a console page names (JS, wasm, CSS).
function assetPaths(html: string): string[] {
  const found = [...html.matchAll(/\/pkg\/onramp(?:_bg)?\.[0-9a-f]{16}\.(?:js|wasm|css)/g)].map((m) => m[0]);
  return [...new Set(found)];
}

test('built files are sent as the browser asks and cached for good; pages are revalidated', async () => {
  const page = await rawGet('/login', 'br, gzip');
  expect(page.status).toBe(200);
  expect(page.headers['cache-control']).toBe('no-cache');
  const assets = assetPaths(page.body.toString());
  expect(assets.map((a) => path.extname(a)).sort()).toEqual(['.css', '.js', '.wasm']);

  for (const asset of assets) {
    const plain = await rawGet(asset);
    expect(plain.status).toBe(200);
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(plain.headers.vary).toContain('accept-encoding');
    // The name carries the content's hash, so a changed file is a new name.
    expect(asset).toContain(`.${createHash('sha256').update(plain.body).digest('hex').slice(0, 16)}.`);
    const contentType = plain.headers['content-type'];

    const cases: [string, string, (b: Buffer) => Buffer][] = [
      ['br', 'br', zlib.brotliDecompressSync],
      ['gzip', 'gzip', zlib.gunzipSync],
      // Chromium's own header: brotli wins.
      ['gzip, deflate, br, zstd', 'br', zlib.brotliDecompressSync],
    ];
    for (const [accept, encoding, decode] of cases) {
      const sent = await rawGet(asset, accept);
      expect(sent.status).toBe(200);
      expect(sent.headers['content-encoding'], `${asset} for ${accept}`).toBe(encoding);
      expect(sent.headers['content-type']).toBe(contentType);
      expect(sent.headers['cache-control']).toBe('public, max-age=31536000, immutable');
      expect(sent.headers.vary).toContain('accept-encoding');
      expect(sent.body.length).toBeLessThan(plain.body.length);
      expect(decode(sent.body).equals(plain.body), `${asset} as ${encoding} decodes to the file`).toBe(true);
    }
    if (asset.endsWith('.wasm')) {
      expect(contentType).toBe('application/wasm');
      const br = await rawGet(asset, 'br');
      console.log(`console wasm: ${plain.body.length} B raw, ${br.body.length} B as sent with brotli`);
    }
  }

  // A name that does not exist is a 404 the browser must not keep.
  const missing = await rawGet('/pkg/onramp.0000000000000000.js', 'br');
  expect(missing.status).toBe(404);
  expect(missing.headers['cache-control'] ?? '').not.toContain('immutable');
});

/// Opens `url` and returns the bytes the wasm took over the wire and when the page was hydrated
/// (ms after navigation started: the `data-hydrated` flag the app sets once its effects run).
async function load(page: Page, url: string) {
  await page.goto(url);
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  return page.evaluate(() => {
    const wasm = performance
      .getEntriesByType('resource')
      .filter((e) => e.name.endsWith('.wasm')) as PerformanceResourceTiming[];
    return {
      hydratedMs: (window as unknown as { hydratedAt: number }).hydratedAt,
      wasmOverWire: wasm.reduce((sum, e) => sum + e.transferSize, 0),
      wasmDecoded: wasm.reduce((sum, e) => sum + e.decodedBodySize, 0),
    };
  });
}

test('first load downloads the compressed wasm once; the second takes it from the cache', async ({ baseURL }) => {
  // Chromium caches nothing from a server whose certificate it was told to ignore, so this
  // browser trusts the instance's CA (by its public key) instead of ignoring certificate errors.
  const caKey = new X509Certificate(ca()).publicKey.export({ type: 'spki', format: 'der' });
  const launchOptions = test.info().project.use.launchOptions ?? {};
  const browser = await chromium.launch({
    ...launchOptions,
    args: [
      ...(launchOptions.args ?? []),
      `--ignore-certificate-errors-spki-list=${createHash('sha256').update(caKey).digest('base64')}`,
    ],
  });
  const context = await browser.newContext({ baseURL, ignoreHTTPSErrors: false });
  const page = await context.newPage();
  await page.addInitScript(() => {
    new MutationObserver((_, observer) => {
      if (document.querySelector('main')?.getAttribute('data-hydrated') === 'true') {
        (window as unknown as { hydratedAt: number }).hydratedAt = performance.now();
        observer.disconnect();
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-hydrated'] });
  });

  const first = await load(page, '/login');
  const second = await load(page, '/login?again');
  console.log(
    `console first load: wasm ${first.wasmOverWire} B over the wire (${first.wasmDecoded} B decoded), ` +
      `hydrated ${first.hydratedMs.toFixed(0)} ms after navigation; ` +
      `second load: wasm ${second.wasmOverWire} B over the wire, hydrated ${second.hydratedMs.toFixed(0)} ms`,
  );
  expect(first.wasmDecoded).toBeGreaterThan(0);
  expect(first.wasmOverWire).toBeGreaterThan(0);
  expect(first.wasmOverWire, 'sent compressed').toBeLessThan(first.wasmDecoded);
  expect(second.wasmOverWire, 'from the cache').toBe(0);
  expect(second.wasmDecoded).toBe(first.wasmDecoded);
  await browser.close();
});
