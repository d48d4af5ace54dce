// The console users the Playwright web server is started with (see playwright.config.ts), and a
// sign-in helper that goes through the real login form.
import { expect, type Page } from '@playwright/test';

export const users = {
  admin: { username: 'e2e-admin', password: 'admin-password-1', role: 'admin' },
  operator: { username: 'e2e-operator', password: 'operator-password-1', role: 'operator' },
  viewer: { username: 'e2e-viewer', password: 'viewer-password-1', role: 'viewer' },
} as const;

export type User = (typeof users)[keyof typeof users];

export async function signIn(page: Page, user: User, next = '/') {
  await page.goto(`/login?next=${encodeURIComponent(next)}`);
  await page.fill('#username', user.username);
  await page.fill('#password', user.password);
  await page.click('#sign-in');
  await expect(page.locator('.whoami')).toContainText(user.username);
  await expect(page.locator('main')).toHaveAttribute('data-hydrated', 'true');
}

/// The CSRF token of the page's session, as its forms carry it.
export async function csrfOf(page: Page): Promise<string> {
  return (await page.locator('input[name="csrf"]').first().getAttribute('value')) ?? '';
}
