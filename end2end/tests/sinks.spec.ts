// Event sinks: an admin adds a webhook in the console; a change made in the console reaches the
// receiver signed with the secret; with the receiver down the page shows the sink failing and
// its lag; deleting the sink is audited.
import { expect, test, type Page } from '@playwright/test';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { csrfOf, signIn, users } from './users';

const secret = 'e2e-webhook-secret-0123456789';

type Received = { id: string; type: string; resource: { id: string } };

function receiver(got: Received[], badSignatures: string[]): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const expected = 'sha256=' + crypto.createHmac('sha256', secret).update(body).digest('hex');
      if (req.headers['x-onramp-signature'] !== expected) {
        badSignatures.push(String(req.headers['x-onramp-signature']));
        res.writeHead(401).end();
        return;
      }
      got.push(JSON.parse(body.toString()));
      res.writeHead(204).end();
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function createEnrollment(page: Page, id: string) {
  const created = await page.request.post('/api/enrollment/save', {
    form: {
      csrf: await csrfOf(page), create: 'true', registration_id: id, device_id: '',
      provisioning_status: 'enabled', initial_twin: '', reprovision: 'migrate', allocation_policy: '', iot_hubs: '',
    },
  });
  expect(created.status()).toBe(200);
}

test('an admin adds a webhook sink; events arrive signed; an outage shows as failing with its lag', async ({ page }, testInfo) => {
  const got: Received[] = [];
  const badSignatures: string[] = [];
  const server = await receiver(got, badSignatures);
  const port = (server.address() as AddressInfo).port;

  await signIn(page, users.operator, '/console/sinks');
  await expect(page.getByRole('alert')).toContainText('admin role');
  await page.click('#sign-out');

  await signIn(page, users.admin, '/console/sinks');
  await page.fill('#sink-name', 'e2e-hook');
  await page.selectOption('#sink-kind', 'webhook');
  await page.fill('#sink-url', `http://127.0.0.1:${port}/hook`);
  await page.fill('#sink-secret', secret);
  await page.click('#save-sink');
  const row = page.locator('tr[data-sink="e2e-hook"]');
  await expect(row).toContainText('webhook');

  await createEnrollment(page, 'e2e-sink-dev');
  await expect.poll(() => got.map((e) => `${e.type} ${e.resource.id}`), { timeout: 10_000 })
    .toContain('enrollment.created e2e-sink-dev');
  expect(badSignatures).toEqual([]);
  await expect(async () => {
    await page.reload();
    await expect(row.locator('[data-field="lag"]')).toHaveText('0');
    await expect(row.locator('[data-field="status"]')).toHaveText('delivering');
  }).toPass({ timeout: 10_000 });

  // The receiver goes away: the next event waits, and the page says why.
  await new Promise((resolve) => server.close(resolve));
  server.closeAllConnections();
  await createEnrollment(page, 'e2e-sink-dev-2');
  await expect(async () => {
    await page.reload();
    await expect(row.locator('[data-field="status"]')).toContainText('failing');
    await expect(row.locator('[data-field="lag"]')).toHaveText('1');
  }).toPass({ timeout: 15_000 });
  await page.screenshot({ path: testInfo.outputPath('sinks.png'), fullPage: true });

  await row.getByRole('button', { name: 'Delete' }).click();
  await expect(row).toHaveCount(0);
  await page.goto('/console/audit');
  await expect(page.locator('table.audit-list')).toContainText('eventSink.delete');
  expect(got.some((e) => JSON.stringify(e).includes(secret))).toBe(false);
});
