// The console users the Playwright web server is started with (see playwright.config.ts), and a
// sign-in helper that goes through the real login form.
import { expect, type Page } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import * as path from 'node:path';

export const users = {
  admin: { username: 'e2e-admin', password: 'admin-password-1', role: 'admin' },
  operator: { username: 'e2e-operator', password: 'operator-password-1', role: 'operator' },
  viewer: { username: 'e2e-viewer', password: 'viewer-password-1', role: 'viewer' },
} as const;


export async function signIn(page: Page, user: { username: string; password: string }, next = '/') {
  await page.goto(`/login?next=${encodeURIComponent(next)}`);
  await page.fill('#username', user.username);
  await page.fill('#password', user.password);
  await page.click('#sign-in');
  await expect(page.locator('.whoami')).toContainText(user.username);
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
}

/// The CSRF token of the page's session, as its forms carry it.
export async function csrfOf(page: Page): Promise<string> {
  return (await page.locator('input[name="csrf"]').first().getAttribute('value')) ?? '';
}

const dataDir = process.env.E2E_DATA_DIR!;
const port = Number(process.env.E2E_PORT);

/// Registers with the official Node SDK over MQTT (its HTTP transport only speaks to port 443).
/// With `x509`, `key` is a certificate prefix (see certs.ts) instead of a symmetric key.
export function registerDevice(idScope: string, registrationId: string, key: string, x509 = false) {
  const out = execFileSync('node', [
    path.join(__dirname, '../sdk/register.js'), 'mqtt', `localhost:${port + 1}`, idScope, registrationId, key,
    ...(x509 ? ['--x509'] : []),
  ], { env: { ...process.env, NODE_EXTRA_CA_CERTS: path.join(dataDir, 'ca.pem') }, timeout: 20_000 });
  return JSON.parse(out.toString().trim().split('\n').pop()!);
}


/// A SAS token as the Azure SDKs sign it: a service policy's, or a device's (`name` "registration").
export function sasToken(resource: string, policy: { name: string; key: string }): string {
  const expiry = Math.floor(Date.now() / 1000) + 600;
  const sr = encodeURIComponent(resource);
  const sig = createHmac('sha256', Buffer.from(policy.key, 'base64')).update(`${sr}\n${expiry}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${expiry}&skn=${policy.name}`;
}
