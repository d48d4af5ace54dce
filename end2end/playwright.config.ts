// Playwright starts a real `onramp serve` (fresh data dir, SQLite, generated TLS) and drives
// Debian's Chromium against it. Build first: scripts/test.sh does (server binary + target/site).
import { defineConfig } from '@playwright/test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const bin = process.env.ONRAMP_TEST_BIN ?? path.join(root, 'target/debug/onramp');
const port = Number(process.env.ONRAMP_TEST_E2E_PORT ?? 18443);
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'onramp-e2e-'));

export default defineConfig({
  testDir: './tests',
  timeout: 30_000,
  retries: 0,
  workers: 1,
  reporter: [['list']],
  use: {
    baseURL: `https://localhost:${port}`,
    // The server presents a certificate from the CA it generated in `dataDir`; TLS verification
    // against that CA is covered by the Rust tests, so the browser is told to accept it here.
    ignoreHTTPSErrors: true,
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    },
  },
  webServer: {
    command: `${bin} --data-dir ${dataDir} --https-port ${port} --mqtt-port ${port + 1} --amqp-port ${port + 2} serve`,
    url: `https://localhost:${port}/healthz`,
    ignoreHTTPSErrors: true,
    reuseExistingServer: false,
    timeout: 60_000,
    env: { ONRAMP_SITE_ROOT: path.join(root, 'target/site') },
    stdout: 'ignore',
    stderr: 'pipe',
  },
});
