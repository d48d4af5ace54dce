// Certificates issued at provisioning in the console: an admin uploads an intermediate CA as an
// issuer and makes a credential policy on it; an operator names the policy in an enrollment; a
// device sends a CSR and gets its certificate; the operator revokes it on the device's page, and
// the revocation is in the audit trail and on the issuer's CRL.
import { expect, test } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { csrFor, selfSigned } from './certs';
import { sasToken, signIn, users } from './users';

test('an admin sets up issuance, a device gets a certificate, an operator revokes it', async ({ page, request }, testInfo) => {
  await signIn(page, users.admin, '/console/credentials');
  // The instance's own issuer and default policy exist from the first start; the own one stays.
  await expect(page.locator('tr[data-credential-policy="default"]')).toContainText('onramp');
  const own = page.locator('tr[data-issuer="onramp"]');
  await expect(own).toContainText("this instance's own");
  await expect(own.locator('button')).toHaveCount(0);

  const ca = selfSigned('e2e-issuer', 'E2E issuing CA', true);
  await page.fill('#issuer-name', 'e2e-issuer');
  await page.fill('#issuer-chain', ca.pem);
  await page.fill('#issuer-key', ca.pem);
  await page.click('#upload-issuer-button');
  await expect(page.getByRole('alert')).toContainText('cannot sign');
  await page.fill('#issuer-key', fs.readFileSync(`${ca.prefix}-key.pem`, 'utf8'));
  await page.click('#upload-issuer-button');
  await expect(page.locator('tr[data-issuer="e2e-issuer"]')).toContainText('CN=E2E issuing CA');

  await page.fill('#credential-policy-name', 'e2e-p256');
  await page.fill('#credential-policy-issuer', 'e2e-issuer');
  await page.fill('#credential-policy-validity', '30');
  await page.fill('#credential-policy-window', '30');
  for (const other of ['ec_p384', 'rsa2048', 'rsa3072']) await page.uncheck(`#key-${other}`);
  await page.click('#save-credential-policy');
  await expect(page.getByRole('alert')).toContainText('renewalWindowDays');
  await page.fill('#credential-policy-window', '10');
  await page.click('#save-credential-policy');
  const policy = page.locator('tr[data-credential-policy="e2e-p256"]');
  await expect(policy.locator('.key-types')).toHaveText('ecP256');
  await expect(policy.locator('.validity')).toHaveText('30 days');
  await page.screenshot({ path: testInfo.outputPath('credentials.png'), fullPage: true });
  // An issuer a policy uses cannot be deleted.
  await page.locator('tr[data-issuer="e2e-issuer"] button:text("Delete")').click();
  await expect(page.getByRole('alert')).toContainText('e2e-p256');

  // The operator names the policy in an enrollment.
  await signIn(page, users.operator, '/console/enrollments/new');
  await page.fill('#registration_id', 'e2e-issued');
  await page.fill('#credential_policy', 'e2e-p256');
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');
  await page.goto('/console/enrollments/e2e-issued');
  await expect(page.locator('#credential_policy')).toHaveValue('e2e-p256');
  await page.click('summary:text("Reveal symmetric keys")');
  const key = (await page.locator('.primary-key').textContent())!.trim();
  await page.goto('/');
  const scope = (await page.locator('#id-scope').textContent())!.trim();

  // The device (a client written here: the official SDKs send CSRs only in preview) registers.
  const device = csrFor('e2e-issued-device', 'e2e-issued');
  const put = await request.put(`/${scope}/registrations/e2e-issued/register?api-version=2025-07-01-preview`, {
    headers: { Authorization: sasToken(`${scope}/registrations/e2e-issued`, { name: 'registration', key }) },
    data: { registrationId: 'e2e-issued', csr: device.csr },
  });
  const reply = await put.json();
  expect(reply.status, JSON.stringify(reply)).toBe('assigned');
  const chain: string[] = reply.registrationState.issuedCertificateChain;
  expect(chain.length).toBe(2);
  const leaf = `${device.prefix}.der`;
  fs.writeFileSync(leaf, Buffer.from(chain[0], 'base64'));
  const serial = execFileSync('openssl', ['x509', '-inform', 'DER', '-in', leaf, '-noout', '-serial'])
    .toString().trim().replace(/^serial=/, '').toLowerCase();

  // The device's page lists it; the operator revokes it there.
  await page.goto('/console/registrations/e2e-issued');
  const row = page.locator(`tr[data-serial="${serial}"]`);
  await expect(row).toContainText('e2e-p256');
  await expect(row).toContainText('ecP256');
  await row.locator('button:text("Revoke")').click();
  await expect(row.locator('.revoked')).toContainText('revoked');
  await expect(page.locator('button:text("Revoke all")')).toHaveCount(0);
  await page.screenshot({ path: testInfo.outputPath('issued-revoked.png'), fullPage: true });

  await page.goto('/console/audit');
  const audited = page.locator('tr', { hasText: 'certificate.revoke' }).first();
  await expect(audited).toContainText('device/e2e-issued');
  await expect(audited).toContainText(users.operator.username);

  // The issuer's CRL lists the serial (public, at the certificates' distribution point).
  const crl = await request.get('/crl/e2e-issuer.crl');
  expect(crl.status()).toBe(200);
  const crlFile = `${device.prefix}.crl`;
  fs.writeFileSync(crlFile, await crl.body());
  const listed = execFileSync('openssl', ['crl', '-inform', 'DER', '-in', crlFile, '-noout', '-text']).toString();
  expect(listed.toLowerCase().replace(/:/g, '')).toContain(serial);
});

test('the issued-certificates page is for admins only', async ({ page }) => {
  await signIn(page, users.operator, '/console/credentials');
  await expect(page.getByRole('alert')).toContainText('admin');
  await expect(page.locator('#save-credential-policy')).toHaveCount(0);
  expect((await page.request.get('/api/credentials')).status()).toBe(403);
});
