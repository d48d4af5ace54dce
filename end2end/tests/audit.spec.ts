// The audit trail shows changes from every front end: the command line (the users this server was
// started with are created by `onramp admin user create`), the service API (an enrollment PUT
// signed with the owner policy) and the console (a policy created in the browser), each with its actor
// and front end, and never a key.
import { expect, test } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { sasToken, signIn, users } from './users';

const dataDir = process.env.E2E_DATA_DIR!;

/// The owner policy's connection string, from `onramp admin info --json`.
function serviceConnection(): { name: string; key: string } {
  const out = execFileSync(process.env.E2E_BIN!, ['--data-dir', dataDir, 'admin', 'info', '--json']);
  const fields = Object.fromEntries(
    JSON.parse(out.toString()).serviceConnectionString.split(';').map((f: string) => {
      const at = f.indexOf('=');
      return [f.slice(0, at), f.slice(at + 1)];
    }),
  );
  return { name: fields.SharedAccessKeyName, key: fields.SharedAccessKey };
}

test('the audit page shows changes from the console, the service API and the command line', async ({ page }, testInfo) => {
  const policy = serviceConnection();
  const key = randomBytes(32).toString('base64');
  const put = await page.request.put('/enrollments/e2e-audited?api-version=2021-10-01', {
    headers: { Authorization: sasToken('localhost', policy) },
    data: {
      registrationId: 'e2e-audited',
      attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: key } },
    },
  });
  expect(put.status(), await put.text()).toBe(200);

  await signIn(page, users.admin, '/console/policies');
  await page.fill('#policy-name', 'e2e-audit');
  await page.check('#right-enrollment_read');
  await page.click('#save-policy');
  await expect(page.locator('tr[data-policy="e2e-audit"]')).toHaveCount(1);

  await page.goto('/console/audit');
  const table = page.locator('table.audit-list');
  const row = (action: string, target: string) =>
    table.locator('tr', { has: page.getByText(action, { exact: true }) }).filter({ hasText: target });
  const fromConsole = row('policy.create', 'policy/e2e-audit');
  await expect(fromConsole).toContainText(users.admin.username);
  await expect(fromConsole.locator('td.via')).toHaveText('console');
  const service = row('enrollment.create', 'enrollment/e2e-audited');
  await expect(service).toContainText(policy.name);
  await expect(service.locator('td.via')).toHaveText('service-api');
  await expect(service).toContainText(/127\.0\.0\.1|::1/);
  const cli = row('user.create', `user/${users.viewer.username}`);
  await expect(cli.locator('td.via')).toHaveText('cli');
  await expect(table).not.toContainText(key);
  await page.screenshot({ path: testInfo.outputPath('audit.png'), fullPage: true });
});
