// Sign-in, roles and CSRF: every refusal here is made by the server, not by hidden buttons.
import { expect, test } from '@playwright/test';
import { csrfOf, signIn, users } from './users';

const saveForm = (csrf: string | null, registrationId: string) => {
  const form: Record<string, string> = {
    create: 'true', registration_id: registrationId, device_id: '', provisioning_status: 'enabled',
    initial_twin: '', reprovision: 'migrate', allocation_policy: '', iot_hubs: '',
  };
  if (csrf !== null) form.csrf = csrf;
  return form;
};

async function enrollmentExists(page: import('@playwright/test').Page, id: string) {
  const response = await page.request.get(`/api/enrollment?registration_id=${id}`);
  expect(response.status()).toBe(200);
  return (await response.json()) !== null;
}

test('pages redirect to the login page until signed in', async ({ page }, testInfo) => {
  for (const path of ['/', '/console/enrollments', '/console/audit']) {
    await page.goto(path);
    await expect(page).toHaveURL(new RegExp(`/login\\?next=${encodeURIComponent(path).replace(/[/]/g, '%2F')}$`));
  }
  const api = await page.request.get('/api/enrollments');
  expect(api.status()).toBe(401);
  await page.screenshot({ path: testInfo.outputPath('login.png'), fullPage: true });
});

test('a wrong password is refused', async ({ page }) => {
  await page.goto('/login');
  await page.fill('#username', users.operator.username);
  await page.fill('#password', 'not-the-password');
  await page.click('#sign-in');
  await expect(page).toHaveURL(/\/login\?error=1/);
  await expect(page.getByRole('alert')).toHaveText('Wrong username or password.');
  await expect(page.locator('.whoami')).toHaveCount(0);
  expect((await page.request.get('/api/summary')).status()).toBe(401);
});

test('signing in lands on the page asked for, and signing out ends the session', async ({ page }) => {
  await signIn(page, users.viewer, '/console/audit');
  await expect(page).toHaveURL(/\/console\/audit$/);
  await page.click('#sign-out');
  await expect(page).toHaveURL(/\/login$/);
  await page.goto('/console/enrollments');
  await expect(page).toHaveURL(/\/login\?next=/);
});

test('a viewer cannot change anything, even with a valid CSRF token', async ({ page }) => {
  await signIn(page, users.viewer, '/console/enrollments');
  await expect(page.getByRole('link', { name: 'New enrollment' })).toHaveCount(0);
  const response = await page.request.post('/api/enrollment/save', { form: saveForm(await csrfOf(page), 'viewer-made') });
  expect(response.status()).toBe(403);
  expect(await response.text()).toContain('operator');
  expect(await enrollmentExists(page, 'viewer-made')).toBe(false);
});

test('a forged request without the CSRF token is refused', async ({ page }) => {
  await signIn(page, users.operator, '/console/enrollments');
  const csrf = await csrfOf(page);
  for (const form of [saveForm(null, 'forged-1'), saveForm('guessed-token', 'forged-2')]) {
    const response = await page.request.post('/api/enrollment/save', { form });
    expect(response.status()).toBe(403);
  }
  // The right token from another site is refused too.
  const crossSite = await page.request.post('/api/enrollment/save', {
    form: saveForm(csrf, 'forged-3'), headers: { Origin: 'https://evil.example' },
  });
  expect(crossSite.status()).toBe(403);
  // Logging in needs the token as well (no login CSRF).
  const login = await page.request.post('/login', {
    form: { username: users.admin.username, password: users.admin.password }, maxRedirects: 0,
  });
  expect(login.status()).toBe(403);
  for (const id of ['forged-1', 'forged-2', 'forged-3']) expect(await enrollmentExists(page, id)).toBe(false);
  // The same request with the token goes through: the refusals above were about the token.
  const honest = await page.request.post('/api/enrollment/save', { form: saveForm(csrf, 'honest-1') });
  expect(honest.status()).toBe(200);
  expect(await enrollmentExists(page, 'honest-1')).toBe(true);
});

test('pages hydrate under their Content Security Policy without a single violation', async ({ page }) => {
  const violations: string[] = [];
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
  });
  await signIn(page, users.operator, '/console/enrollments');
  for (const path of ['/console/enrollments', '/', '/console/live', '/console/hubs']) {
    await page.goto(path);
    await expect(page.locator('main[data-hydrated="true"]')).toBeVisible();
  }
  const response = await page.request.get('/');
  expect(response.headers()['content-security-policy']).toMatch(/script-src 'self' 'nonce-[^']+' 'wasm-unsafe-eval'/);
  expect(violations).toEqual([]);
});
