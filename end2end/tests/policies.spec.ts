// Access policies: admins only; create, reveal, re-key and delete.
import { expect, test } from '@playwright/test';
import { signIn, users } from './users';

test('only admins see policies; an admin creates, re-keys and deletes one', async ({ page }, testInfo) => {
  await signIn(page, users.operator, '/console/policies');
  await expect(page.getByRole('alert')).toContainText('admin role');
  expect((await page.request.get('/api/policies')).status()).toBe(403);
  await page.click('#sign-out');

  await signIn(page, users.admin, '/console/policies');
  await page.fill('#policy-name', 'e2e-reader');
  await page.check('#right-enrollment_read');
  await page.check('#right-registration_status_read');
  await page.click('#save-policy');
  const row = page.locator('tr[data-policy="e2e-reader"]');
  await expect(row).toContainText('EnrollmentRead, RegistrationStatusRead');

  await row.locator('summary').click();
  const connection = row.locator('.connection-string');
  await expect(connection).toContainText('SharedAccessKeyName=e2e-reader;SharedAccessKey=');
  const before = await connection.textContent();
  await page.screenshot({ path: testInfo.outputPath('policies.png'), fullPage: true });

  await row.getByRole('button', { name: 'Re-key primary' }).click();
  await expect(async () => {
    await row.locator('details').evaluate((d) => d.setAttribute('open', ''));
    expect(await row.locator('.connection-string').textContent()).not.toBe(before);
  }).toPass({ timeout: 5_000 });

  await row.getByRole('button', { name: 'Delete' }).click();
  await expect(row).toHaveCount(0);
  await page.goto('/console/audit');
  await expect(page.locator('table.audit-list')).toContainText('policy.rekey-primary');
});
