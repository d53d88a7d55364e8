/**
 * Headless Chromium through playwright-core (no browser download: the system's Chromium, e.g. Debian's
 * `chromium`, or `INTERNVL_CHROMIUM`).
 *
 * WebGPU: headless Chromium gives an adapter when it may use the GPU process (no `--disable-gpu`) and unsafe WebGPU
 * is enabled; on a machine without a GPU that adapter is SwiftShader's software Vulkan.
 */
import fs from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { UsageError } from '../../core/errors.js';

const CANDIDATES = [
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome',
  '/usr/bin/google-chrome-stable',
];

export function chromiumExecutable(): string {
  const fromEnv = process.env.INTERNVL_CHROMIUM;
  if (fromEnv) {
    if (!fs.existsSync(fromEnv)) throw new UsageError(`INTERNVL_CHROMIUM=${fromEnv}: no such file`);
    return fromEnv;
  }
  const found = CANDIDATES.find((c) => fs.existsSync(c));
  if (!found)
    throw new UsageError(
      `no Chromium found (looked for ${CANDIDATES.join(', ')}); install it (apt-get install chromium) or set INTERNVL_CHROMIUM`,
    );
  return found;
}

export interface ChromiumOptions {
  /** Flags that give headless Chromium a WebGPU adapter (software on a machine without a GPU). */
  webgpu?: boolean;
}

export async function launchChromium(options: ChromiumOptions = {}): Promise<Browser> {
  let playwright: typeof import('playwright-core');
  try {
    playwright = await import('playwright-core');
  } catch {
    throw new UsageError('the browser harness needs the playwright-core package (npm install playwright-core)');
  }
  const args = options.webgpu ? ['--enable-unsafe-webgpu'] : [];
  return playwright.chromium.launch({ executablePath: chromiumExecutable(), headless: true, args });
}

/** Page errors and console errors, kept for the message when something in the page fails. */
export function collectPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  return errors;
}
