// Console users (admins only): add one, sign in as them, disable them.
import { expect, test } from '@playwright/test';
import { signIn, users } from './users';

test('an admin adds a user who can sign in, and disabling them ends their access', async ({ page, browser }, testInfo) => {
  await signIn(page, users.admin, '/console/users');
  await page.fill('#user-name', 'e2e-newcomer');
  await page.fill('#user-password', 'short');
  await page.click('#save-user');
  await expect(page.locator('#user-form').getByRole('alert')).toContainText('at least 10 characters');

  await page.fill('#user-password', 'newcomer-password-1');
  await page.selectOption('#user-role', 'operator');
  await page.click('#save-user');
  await expect(page.locator('tr[data-user="e2e-newcomer"]')).toContainText('operator');
  await page.screenshot({ path: testInfo.outputPath('users.png'), fullPage: true });

  const other = await browser.newContext({ ignoreHTTPSErrors: true });
  const newcomer = await other.newPage();
  await signIn(newcomer, { username: 'e2e-newcomer', password: 'newcomer-password-1' });
  expect((await newcomer.request.get('/api/users')).status()).toBe(403);

  await page.locator('tr[data-user="e2e-newcomer"]').getByRole('button', { name: 'Disable' }).click();
  await expect(page.locator('tr[data-user="e2e-newcomer"]')).toContainText('disabled');
  // The newcomer's open session stops working at its next request.
  await newcomer.goto('/console/enrollments');
  await expect(newcomer).toHaveURL(/\/login\?next=/);
  await other.close();

  // An admin cannot lock themselves out.
  await page.locator(`tr[data-user="${users.admin.username}"]`).getByRole('button', { name: 'Disable' }).click();
  await expect(page.getByRole('alert').first()).toContainText('your own account');
});
