// An admin registers a CA and proves possession of its key in the console; an operator makes an
// X.509 group that references it; a device (the official Node SDK with azure-iot-security-x509)
// signed by that CA provisions. Individual X.509 and TPM enrollments are made in the editor.
import { expect, test } from '@playwright/test';
import { selfSigned, signedBy } from './certs';
import { registerDevice, signIn, users } from './users';

test('an admin verifies a CA by proof of possession and a device of its group provisions', async ({ page }, testInfo) => {
  const root = selfSigned('console-root', 'Console e2e root', true);
  await signIn(page, users.admin, '/console/certificates');
  await page.fill('#ca-name', 'e2e-root');
  await page.fill('#ca-pem', root.pem);
  await page.click('#upload-ca-button');
  const row = page.locator('tr[data-ca="e2e-root"]');
  await expect(row.locator('.ca-status')).toHaveText('Unverified');
  await expect(row).toContainText('CN=Console e2e root');

  await row.locator('button:text("Generate verification code")').click();
  const code = row.locator('.verification-code');
  await expect(code).toHaveText(/^[0-9A-F]{48}$/);
  const proof = signedBy(root, 'console-proof', (await code.textContent())!.trim());
  await page.screenshot({ path: testInfo.outputPath('ca-code.png'), fullPage: true });
  await row.locator('form.verify-ca textarea').fill(proof.pem);
  await row.locator('form.verify-ca button').click();
  await expect(row.locator('.ca-status')).toHaveText('Verified');
  await page.screenshot({ path: testInfo.outputPath('ca-verified.png'), fullPage: true });

  // The operator's X.509 group trusts devices through the verified CA.
  await signIn(page, users.operator, '/console/enrollments/new?kind=group');
  await page.fill('#registration_id', 'e2e-x509-fleet');
  await page.selectOption('#attestation', 'x509');
  await expect(page.locator('#ca_reference')).toBeVisible();
  await page.fill('#ca_reference', 'e2e-root');
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');

  await page.goto('/');
  const scope = (await page.locator('#id-scope').textContent())!.trim();
  const device = signedBy(root, 'console-device', 'e2e-x509-device-1');
  const outcome = registerDevice(scope, 'e2e-x509-device-1', device.prefix, true);
  expect(outcome.ok, JSON.stringify(outcome)).toBe(true);
  expect(outcome.result.x509.enrollmentGroupId).toBe('e2e-x509-fleet');
});

test('the CA certificates page is for admins only', async ({ page }) => {
  await signIn(page, users.operator, '/console/certificates');
  await expect(page.getByRole('alert')).toContainText('admin');
  await expect(page.locator('#upload-ca-button')).toHaveCount(0);
  expect((await page.request.get('/api/cas')).status()).toBe(403);
});

test('an operator makes X.509 and TPM enrollments and a bad certificate is refused', async ({ page }, testInfo) => {
  await signIn(page, users.operator, '/console/enrollments/new');
  await page.fill('#registration_id', 'e2e-x509-solo');
  await page.selectOption('#attestation', 'x509');
  await page.fill('#primary_certificate', 'not a certificate');
  await page.click('#save');
  await expect(page.getByRole('alert')).toContainText('clientCertificates.primary.certificate');

  // The certificate is uploaded from its file.
  const own = selfSigned('console-solo', 'e2e-x509-solo', false);
  await page.setInputFiles('#primary_certificate_file', `${own.prefix}.pem`);
  await expect(page.locator('#primary_certificate')).toHaveValue(own.pem);
  await page.screenshot({ path: testInfo.outputPath('enrollment-x509.png'), fullPage: true });
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');
  await page.goto('/console/enrollments/e2e-x509-solo');
  await expect(page.locator('dl.facts').first()).toContainText('x509');
  await expect(page.locator('#primary_certificate')).toHaveValue(own.pem.trim());

  await page.goto('/');
  const scope = (await page.locator('#id-scope').textContent())!.trim();
  const outcome = registerDevice(scope, 'e2e-x509-solo', own.prefix, true);
  expect(outcome.ok, JSON.stringify(outcome)).toBe(true);

  await page.goto('/console/enrollments/new');
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  await page.fill('#registration_id', 'e2e-tpm-1');
  await page.selectOption('#attestation', 'tpm');
  await expect(page.locator('#primary_certificate')).toBeHidden();
  // A truncated EK is refused with the reason; a real one (swtpm's, for the SDK's template) saves.
  await page.fill('#endorsement_key', 'AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEA');
  await page.click('#save');
  await expect(page.getByRole('alert')).toContainText('attestation.tpm.endorsementKey');
  await page.fill('#endorsement_key', 'AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEA9H8/o+ksqsrqBBqtlHyjAYeot5Y0F0fzx45U9FXvVNMkDAIkMoEKJh+qJYB4lflHgw/3X0rICngUTbOatiL7cPiCCdGy17aZRrfcV2iVhspzKFIIe6nc26CcNtGhJCCdes59ZfOD82IktCKo8131VyCXsirOIU/eiejheJPhOu5aThbxvG/YrDMC5+d0oH83VIAGDylM50p+UFmUGzthaxoHO7vYJPXcjQdSi1NNXA/0/mc6rsY7JUnd66Q3JumKY0FYmu+Mzlzd0EAGmz9L4rMVqn/I8XMu9/n30HjhBPSZe9sjh9DjV9cPPDvIU3VwT5+z4X7HcwPwbapoKJJLKw==');
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');
  await page.goto('/console/enrollments/e2e-tpm-1');
  await expect(page.locator('dl.facts').first()).toContainText('tpm');
});

test('symmetric keys are copied to the clipboard', async ({ page, context }) => {
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  await signIn(page, users.operator, '/console/enrollments/new');
  await page.fill('#registration_id', 'e2e-copy-1');
  await page.click('#save');
  await expect(page.getByRole('status')).toHaveText('Saved.');
  await page.goto('/console/enrollments/e2e-copy-1');
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
  await page.click('summary:text("Reveal symmetric keys")');
  const key = (await page.locator('.primary-key').textContent())!.trim();
  const copy = page.locator('.primary-key + button.copy');
  await copy.click();
  await expect(copy).toHaveText('Copied');
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(key);
});
