// Enrollment groups in the console: create one, derive a member's key, and provision that member
// with the official Node SDK.
import { expect, test } from '@playwright/test';
import * as crypto from 'node:crypto';
import { registerDevice, signIn, users } from './users';

test('an operator creates a group and derives a device key that provisions', async ({ page }, testInfo) => {
  await signIn(page, users.operator);
  const scope = (await page.locator('#id-scope').textContent())!.trim();

  await page.goto('/console/enrollments/new?kind=group');
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  await expect(page.locator('h1')).toHaveText('New enrollment group');
  await page.fill('#registration_id', 'e2e-fleet');
  await page.fill('#initial_twin', '{"tags": {"fleet": "e2e"}}');
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');

  await page.goto('/console/enrollments?kind=group&q=e2e-fleet');
  await expect(page.locator('h1')).toHaveText('Enrollment groups');
  await page.screenshot({ path: testInfo.outputPath('groups.png'), fullPage: true });
  await page.click('a:text("e2e-fleet")');
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  await page.click('summary:text("Reveal symmetric keys")');
  const groupKey = (await page.locator('.primary-key').textContent())!.trim();

  await page.fill('#derive-id', 'fleet-member-7');
  await page.click('#derive');
  const derived = (await page.locator('.derived-key').textContent())!.trim();
  const expected = crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update('fleet-member-7').digest('base64');
  expect(derived).toBe(expected);
  await page.screenshot({ path: testInfo.outputPath('group-detail.png'), fullPage: true });

  const outcome = registerDevice(scope, 'fleet-member-7', derived);
  expect(outcome.ok).toBe(true);
  expect(outcome.result.deviceId).toBe('fleet-member-7');

  await page.goto('/console/registrations?q=fleet-member');
  await expect(page.locator('tr[data-id="fleet-member-7"]')).toContainText('group/e2e-fleet');
});
