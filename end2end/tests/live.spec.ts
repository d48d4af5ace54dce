// The live diagnostics log: failures with their cause, pause and resume, filters.
import { expect, test } from '@playwright/test';
import { csrfOf, registerDevice, signIn, users } from './users';

test('failures show their code and likely cause; pause holds events back; filters narrow', async ({ page }, testInfo) => {
  await signIn(page, users.operator);
  const scope = (await page.locator('#id-scope').textContent())!.trim();
  const create = await page.request.post('/api/enrollment/save', {
    form: {
      csrf: await csrfOf(page), create: 'true', registration_id: 'live-1', device_id: '',
      provisioning_status: 'enabled', initial_twin: '', reprovision: 'migrate', allocation_policy: '', iot_hubs: '',
    },
  });
  expect(create.status()).toBe(200);
  const detail = await (await page.request.get('/api/enrollment?registration_id=live-1')).json();
  const key = detail.keys[0];

  await page.goto('/console/live');
  await expect(page.locator('.connection')).toHaveAttribute('data-connected', 'true');

  const wrongKey = Buffer.alloc(32, 7).toString('base64');
  expect(registerDevice(scope, 'live-1', wrongKey).ok).toBe(false);
  const failed = page.locator('tr.event.failed[data-registration-id="live-1"]');
  await expect(failed).toBeVisible({ timeout: 1_000 });
  const detailRow = page.locator('tr.failure-detail').first();
  await expect(detailRow).toContainText('401002');
  await expect(detailRow.locator('.hint')).toContainText('Wrong key');
  await page.screenshot({ path: testInfo.outputPath('live-log-failure.png'), fullPage: true });

  // Paused: a new event waits, then appears on resume.
  await page.click('#pause');
  expect(registerDevice(scope, 'live-1', key).ok).toBe(true);
  await expect(page.locator('#pause')).toHaveText('Resume (1 waiting)');
  await expect(page.locator('tr.event.assigned')).toHaveCount(0);
  await page.click('#pause');
  await expect(page.locator('tr.event.assigned[data-registration-id="live-1"]')).toBeVisible();

  // The dashboard lists the failure with its code and cause.
  const dashboard = await page.context().newPage();
  await expect(async () => {
    await dashboard.goto('/');
    const failure = dashboard.locator('table.failures tr', { hasText: 'live-1' }).first();
    await expect(failure).toContainText('401002');
    await expect(failure.locator('.hint')).toContainText('Wrong key');
  }).toPass({ timeout: 5_000 });
  await dashboard.close();

  // Filters: by status, then by a registration ID that matches nothing.
  await page.selectOption('#filter-status', 'failed');
  await expect(page.locator('tr.event.assigned')).toHaveCount(0);
  await expect(failed).toBeVisible();
  await page.selectOption('#filter-status', '');
  await page.fill('#filter-id', 'nobody');
  await expect(page.locator('tr.event')).toHaveCount(0);
});
