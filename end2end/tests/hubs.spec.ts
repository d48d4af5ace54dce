// Linked hubs, allocation settings and the what-if tool: edits show in the tool's answer at once.
import { expect, test, type Page } from '@playwright/test';
import { csrfOf, signIn, users } from './users';

async function whatIf(page: Page, registrationId: string) {
  await page.fill('#wi-id', registrationId);
  const answered = page.waitForResponse((r) => r.url().includes('/api/what-if'));
  await page.click('#ask');
  await answered;
  return {
    hub: (await page.locator('.wi-hub').textContent())!.trim(),
    reason: (await page.locator('.wi-reason').count()) ? (await page.locator('.wi-reason').textContent())!.trim() : '',
  };
}

async function setHub(page: Page, host: string, weight: number) {
  const form = page.locator(`form[id="hub-${host}"]`);
  await form.locator('input[name="allocation_weight"]').fill(String(weight));
  const saved = page.waitForResponse((r) => r.url().includes('/api/hub/save') && r.status() === 200);
  await form.getByRole('button', { name: 'Save' }).click();
  await saved;
  await expect(page.locator(`tr[data-host="${host}"] td.num`).first()).toHaveText(String(weight));
}

test('hub weights and the default policy change what the what-if tool answers', async ({ page }, testInfo) => {
  const crashes: string[] = [];
  page.on('pageerror', (e) => crashes.push(String(e)));
  await signIn(page, users.operator, '/console/hubs');
  const created = await page.request.post('/api/enrollment/save', {
    form: {
      csrf: await csrfOf(page), create: 'true', registration_id: 'whatif-dev', device_id: '',
      provisioning_status: 'enabled', initial_twin: '', reprovision: 'migrate', allocation_policy: '', iot_hubs: '',
    },
  });
  expect(created.status()).toBe(200);

  for (const host of ['hub-a.localhost', 'hub-b.localhost']) {
    await page.fill('#new-host', host);
    const linked = page.waitForResponse((r) => r.url().includes('/api/hub/save') && r.status() === 200);
    await page.click('#add-hub button[type="submit"]');
    await linked;
    await expect(page.locator(`tr[data-host="${host}"]`)).toHaveCount(1);
  }
  const hosts = ['hub.localhost', 'hub-a.localhost', 'hub-b.localhost'];

  const first = await whatIf(page, 'whatif-dev');
  expect(hosts).toContain(first.hub);
  await page.screenshot({ path: testInfo.outputPath('hubs.png'), fullPage: true });

  // Make the chosen hub light and the others heavy: weighted hashing now picks another one.
  for (const host of hosts) await setHub(page, host, host === first.hub ? 1 : 1000);
  const reweighted = await whatIf(page, 'whatif-dev');
  expect(hosts).toContain(reweighted.hub);
  expect(reweighted.hub).not.toBe(first.hub);

  // A static default with three candidate hubs cannot place the device.
  await page.selectOption('#default_policy', 'static');
  await page.click('#save-allocation');
  await expect(page.locator('#allocation').getByRole('status')).toHaveText('Saved.');
  const statically = await whatIf(page, 'whatif-dev');
  expect(statically.hub).toBe('none');
  expect(statically.reason).toContain('exactly one hub');

  // Bad input is answered, not guessed at.
  await page.fill('#wi-client', 'not-an-address');
  const refused = page.waitForResponse((r) => r.url().includes('/api/what-if'));
  await page.click('#ask');
  expect((await refused).status()).toBe(400);
  await expect(page.locator('p.error[role="alert"]')).toContainText('not an IP address');
  await expect(page.locator('.wi-hub')).toHaveCount(0);
  await page.fill('#wi-client', '');

  // Back to the defaults, so other tests see one hub.
  await page.selectOption('#default_policy', 'hashed');
  await page.click('#save-allocation');
  await expect(page.locator('#allocation').getByRole('status')).toHaveText('Saved.');
  for (const host of ['hub-a.localhost', 'hub-b.localhost']) {
    await page.locator(`tr[data-host="${host}"]`).getByRole('button', { name: 'Remove' }).click();
    await expect(page.locator(`tr[data-host="${host}"]`)).toHaveCount(0);
  }
  await setHub(page, 'hub.localhost', 1);
  expect(crashes).toEqual([]);
});
