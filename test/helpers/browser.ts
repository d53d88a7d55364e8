/** What the headless-Chromium tests share: whether there is a Chromium to run, and their watchdog. */
import { chromiumExecutable } from '../../src/apps/browser/chromium.js';

/** false, or why the browser tests are skipped (no Chromium found). */
export const noChromium: string | false = (() => {
  try {
    chromiumExecutable();
    return false;
  } catch (error) {
    return (error as Error).message;
  }
})();

/** A hung page fails its test (by name) instead of hanging the suite; not a speed bound (runs take seconds). */
export const WATCHDOG = 10 * 60_000;
