// An operator's day: create an enrollment in the console, watch a real device (the official Node
// SDK) register with it, and see the counts and records move.
import { expect, test } from '@playwright/test';
import { registerDevice, signIn, users } from './users';

async function enrollmentCount(page: import('@playwright/test').Page) {
  await page.goto('/');
  const card = page.locator('.card', { hasText: 'Enrollments' }).first().locator('.card-value');
  return Number(await card.textContent());
}

test('an operator creates an enrollment and a device provisions with it', async ({ page }, testInfo) => {
  await signIn(page, users.operator);
  const before = await enrollmentCount(page);
  const scope = (await page.locator('#id-scope').textContent())!.trim();

  await page.goto('/console/enrollments/new');
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  await page.fill('#registration_id', 'e2e-device-1');
  await page.fill('#initial_twin', '{"tags": {"site": "lab"}, "properties": {"desired": {"interval": 30}}}');
  await page.screenshot({ path: testInfo.outputPath('enrollment-new.png'), fullPage: true });
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');

  expect(await enrollmentCount(page)).toBe(before + 1);
  await page.screenshot({ path: testInfo.outputPath('dashboard-after.png'), fullPage: true });

  await page.goto('/console/enrollments?q=e2e-device');
  await expect(page.locator('tr[data-id="e2e-device-1"]')).toHaveCount(1);
  await page.screenshot({ path: testInfo.outputPath('enrollments.png'), fullPage: true });
  await page.click('a:text("e2e-device-1")');
  await page.click('summary:text("Reveal symmetric keys")');
  const key = (await page.locator('.primary-key').textContent())!.trim();
  expect(key.length).toBeGreaterThan(40);

  // The live log is open in a second tab while the device registers.
  const live = await page.context().newPage();
  await live.goto('/console/live');
  await expect(live.locator('.connection')).toHaveAttribute('data-connected', 'true');

  const outcome = registerDevice(scope, 'e2e-device-1', key);
  expect(outcome.ok).toBe(true);
  expect(outcome.result.deviceId).toBe('e2e-device-1');
  const row = live.locator('tr.event[data-registration-id="e2e-device-1"]');
  await expect(row).toBeVisible({ timeout: 1_000 });
  await expect(row.locator('.status')).toHaveText('assigned');
  await expect(row).toContainText('mqtt');
  await live.screenshot({ path: testInfo.outputPath('live-log.png'), fullPage: true });
  await live.close();

  await page.reload();
  await expect(page.locator('.reg-status')).toHaveText('assigned');
  await page.screenshot({ path: testInfo.outputPath('enrollment-detail.png'), fullPage: true });

  // The dashboard's counts and chart moved (events are recorded within a quarter second).
  await expect(async () => {
    await page.goto('/');
    await expect(page.locator('.card', { hasText: 'Registrations' }).locator('.card-value')).not.toHaveText('0');
    expect(Number(await page.locator('figure.chart').getAttribute('data-assigned'))).toBeGreaterThanOrEqual(1);
  }).toPass({ timeout: 5_000 });
  await page.screenshot({ path: testInfo.outputPath('dashboard-chart.png'), fullPage: true });

  // The registration record is listed, shows its hub, and can be deleted.
  await page.goto('/console/registrations?q=e2e-device');
  const record = page.locator('tr[data-id="e2e-device-1"]');
  await expect(record).toContainText('individual/e2e-device-1');
  await expect(record.locator('.status')).toHaveText('assigned');
  await page.screenshot({ path: testInfo.outputPath('registrations.png'), fullPage: true });
  await record.locator('a').click();
  await expect(page.locator('.reg-status')).toHaveText('assigned');
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  await page.screenshot({ path: testInfo.outputPath('registration-detail.png'), fullPage: true });
  await page.click('#delete-registration');
  await expect(page.getByRole('status')).toContainText('starts fresh');
  expect(await (await page.request.get('/api/registration?registration_id=e2e-device-1')).json()).toBeNull();

  await page.goto('/console/audit');
  await expect(page.locator('table.audit-list')).toContainText('enrollment.create');
  await page.screenshot({ path: testInfo.outputPath('audit.png'), fullPage: true });
});

test('an initial twin with invalid JSON shows an error and saves nothing', async ({ page }) => {
  await signIn(page, users.operator, '/console/enrollments/new');
  await page.fill('#registration_id', 'e2e-bad-twin');
  await page.fill('#initial_twin', '{"tags": {"site": ');
  await page.click('#save');
  await expect(page.getByRole('alert')).toContainText('not valid JSON');
  const response = await page.request.get('/api/enrollment?registration_id=e2e-bad-twin');
  expect(await response.json()).toBeNull();
});

test('an operator disables and deletes an enrollment from the list', async ({ page }) => {
  await signIn(page, users.operator, '/console/enrollments/new');
  await page.fill('#registration_id', 'e2e-short-lived');
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');
  await page.goto('/console/enrollments?q=e2e-short');
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  const row = page.locator('tr[data-id="e2e-short-lived"]');
  await row.getByRole('button', { name: 'Disable' }).click();
  await expect(row.locator('.status')).toHaveText('disabled');
  await row.getByRole('button', { name: 'Delete' }).click();
  await expect(row).toHaveCount(0);
});

test('an operator regenerates a key: the old one stops working, the new one works', async ({ page }) => {
  await signIn(page, users.operator, '/console/enrollments/new');
  const scope = (await (await page.request.get('/api/summary')).json()).id_scope;
  await page.fill('#registration_id', 'e2e-rolled');
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');
  await page.goto('/console/enrollments/e2e-rolled');
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  await page.click('summary:text("Reveal symmetric keys")');
  const old = (await page.locator('.primary-key').textContent())!.trim();
  expect(registerDevice(scope, 'e2e-rolled', old).ok).toBe(true);

  await page.getByRole('button', { name: 'Regenerate primary' }).click();
  await expect(page.locator('.primary-key')).not.toHaveText(old);
  const fresh = (await page.locator('.primary-key').textContent())!.trim();
  const refused = registerDevice(scope, 'e2e-rolled', old);
  expect(refused.ok).toBe(false);
  expect(registerDevice(scope, 'e2e-rolled', fresh).ok).toBe(true);
});

test('a custom allocation policy needs its webhook URL', async ({ page }) => {
  await signIn(page, users.operator, '/console/enrollments/new');
  await page.fill('#registration_id', 'e2e-custom');
  await page.selectOption('#allocation_policy', 'custom');
  await page.click('#save');
  await expect(page.getByRole('alert')).toContainText('customAllocationDefinition');
  await page.fill('#webhook_url', 'https://allocator.example/api/allocate');
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');
  await page.goto('/console/enrollments/e2e-custom');
  await expect(page.locator('#webhook_url')).toHaveValue('https://allocator.example/api/allocate');
  await expect(page.locator('#allocation_policy')).toHaveValue('custom');
});

test('test mode: a fault set in the console answers the device, whose official SDK waits it out', async ({ page }) => {
  // A page that fails to hydrate still works through plain form posts; only its errors show it.
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await signIn(page, users.operator, '/console/enrollments/new');
  const scope = (await (await page.request.get('/api/summary')).json()).id_scope;
  await page.fill('#registration_id', 'e2e-faulty');
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');
  await page.goto('/console/enrollments/e2e-faulty');
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  await expect(page.locator('.test-fault')).toHaveText('No test fault set.');

  await page.fill('#fault_remaining', '2');
  await page.fill('#fault_error_code', '503001');
  await page.fill('#fault_retry_after', '1');
  await page.click('#set-fault');
  await expect(page.locator('.test-fault')).toHaveText('test mode: injected error 503001 (2 left)');

  // The SDK (MQTT) is told 503 with retry-after 1 twice, waits each time, then provisions.
  await page.click('summary:text("Reveal symmetric keys")');
  const key = (await page.locator('.primary-key').textContent())!.trim();
  const started = Date.now();
  const result = registerDevice(scope, 'e2e-faulty', key);
  expect(result.ok, JSON.stringify(result)).toBe(true);
  expect(Date.now() - started).toBeGreaterThan(2_000);
  await page.reload();
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  await expect(page.locator('.test-fault')).toHaveText('test mode: injected error 503001 (0 left)');

  await page.getByRole('button', { name: 'Clear test fault' }).click();
  await expect(page.locator('.test-fault')).toHaveText('No test fault set.');
  // The server's rules apply: a code outside Azure's is refused with its reason.
  await page.fill('#fault_error_code', '12');
  await page.click('#set-fault');
  await expect(page.locator('#test-fault-form [role=alert]')).toContainText('Azure error code');
  await expect(page.locator('.test-fault')).toHaveText('No test fault set.');
  expect(pageErrors).toEqual([]);
});
