import { expect, test } from '@playwright/test';

test('the dashboard is rendered on the server', async ({ request }) => {
  const response = await request.get('/');
  expect(response.status()).toBe(200);
  const html = await response.text();
  expect(html).toContain('Dashboard');
  expect(html).toMatch(/0ne[0-9A-F]{8}/);
  expect(html).toContain('/pkg/onramp');
});

test('the dashboard hydrates and calls its server function', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));

  await page.goto('/');
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
  expect(errors).toEqual([]);
});

test('health endpoints answer', async ({ request }) => {
  expect((await request.get('/healthz')).status()).toBe(200);
  const ready = await request.get('/readyz');
  expect(ready.status()).toBe(200);
  expect(await ready.text()).toBe('ready');
});
