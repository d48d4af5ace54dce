// Playwright starts a real `onramp serve` (fresh data dir, SQLite, generated TLS) and drives
// Debian's Chromium against it. Build first: scripts/test.sh does (server binary + target/site).
import { defineConfig } from '@playwright/test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { users } from './tests/users';

const root = path.resolve(__dirname, '..');
const bin = process.env.ONRAMP_TEST_BIN ?? path.join(root, 'target/debug/onramp');
const port = Number(process.env.ONRAMP_TEST_E2E_PORT ?? 18443);
// The config is loaded again in each worker: reuse the main process's directory there.
const dataDir = process.env.E2E_DATA_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), 'onramp-e2e-'));
// Tests find the generated CA and the ports here (workers inherit the environment).
process.env.E2E_DATA_DIR = dataDir;
process.env.E2E_PORT = String(port);
process.env.E2E_BIN = bin;
const cli = `${bin} --data-dir ${dataDir} --https-port ${port} --mqtt-port ${port + 1} --amqp-port ${port + 2}`;
// One console user per role, created with the real command line before the server starts.
const createUsers = Object.values(users)
  .map((u) => `printf '%s\\n' '${u.password}' | ${cli} admin user create ${u.username} --role ${u.role} --password-stdin`)
  .join(' && ');

export default defineConfig({
  testDir: './tests',
  timeout: 30_000,
  retries: 0,
  workers: 1,
  reporter: [['list']],
  // Screenshots each test takes (testInfo.outputPath) are kept here as CI artifacts.
  outputDir: './test-results',
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
    command: `${createUsers} && exec ${cli} serve`,
    url: `https://localhost:${port}/healthz`,
    ignoreHTTPSErrors: true,
    reuseExistingServer: false,
    timeout: 60_000,
    env: { ONRAMP_SITE_ROOT: path.join(root, 'target/site') },
    stdout: 'ignore',
    stderr: 'pipe',
  },
});
