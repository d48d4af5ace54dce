import { expect, test } from '@playwright/test';
import { signIn, users } from './users';

test('the dashboard is rendered on the server and hydrates', async ({ page }, testInfo) => {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));

  await signIn(page, users.viewer);
  // The server-rendered HTML already holds the instance's ID scope.
  const html = await (await page.request.get('/')).text();
  expect(html).toContain('Dashboard');
  expect(html).toMatch(/0ne[0-9A-F]{8}/);
  expect(html).toContain('/pkg/onramp');

  await expect(page.locator('section.dashboard')).toHaveAttribute('data-hydrated', 'true');
  const scope = (await page.locator('#id-scope').textContent())?.trim() ?? '';
  expect(scope).toMatch(/^0ne[0-9A-F]{8}$/);
  await expect(page.locator('table.hubs tbody tr')).toHaveCount(1);

  // A click changes reactive state and refetches through the server function.
  const refetch = page.waitForResponse((r) => r.url().includes('/api/summary') && r.status() === 200);
  await page.click('#refresh');
  await refetch;
  await expect(page.locator('.refreshes')).toHaveAttribute('data-refreshes', '1');
  await expect(page.locator('#id-scope')).toHaveText(scope);
  await page.screenshot({ path: testInfo.outputPath('dashboard.png'), fullPage: true });
  expect(errors).toEqual([]);
});

test('health endpoints answer without signing in', async ({ request }) => {
  expect((await request.get('/healthz')).status()).toBe(200);
  const ready = await request.get('/readyz');
  expect(ready.status()).toBe(200);
  expect(await ready.text()).toBe('ready');
});
