/**
 * A harness page in headless Chromium: the static server with onnxruntime-web's files under `/ort/` and one page
 * script, the browser platform set up on the chosen onnxruntime-web build. Used by `verify --browser`, the
 * browser tests and the web benchmarks.
 */
import type { Browser, Page } from 'playwright-core';
import { RuntimeError } from '../../core/errors.js';
import type { WebDevice } from '../../web/runtime.js';
import { onnxruntimeWebDist, type PageName, pageScript } from './bundle.js';
import { collectPageErrors, launchChromium } from './chromium.js';
import type { HarnessApi } from './protocol.js';
import { type StaticServer, startStaticServer } from './static_server.js';

export interface HarnessOptions {
  device: WebDevice;
  /** wasm threads (default: the browser's cores; the page is cross-origin isolated). */
  threads?: number;
}

export interface Harness {
  server: StaticServer;
  browser: Browser;
  page: Page;
  /** What the page set up: the device it runs on, its wasm threads. */
  platform: { device: WebDevice; threads: number };
  /** Page errors and console errors so far (for messages). */
  errors: string[];
  /** Calls a function of the page's `globalThis.internvl`. */
  call<K extends keyof HarnessApi>(name: K, ...args: Parameters<HarnessApi[K]>): ReturnType<HarnessApi[K]>;
  close(): Promise<void>;
}

/** onnxruntime-web's build per device: plain wasm, or the WebGPU execution provider (with wasm behind it). */
const ORT_BUILD: Record<WebDevice, string> = { wasm: 'ort.wasm.min.mjs', webgpu: 'ort.webgpu.min.mjs' };

export async function openHarness(script: PageName, options: HarnessOptions): Promise<Harness> {
  const server = await startStaticServer();
  let browser: Browser | undefined;
  try {
    server.mount('/ort', onnxruntimeWebDist());
    server.put(`/${script}.js`, await pageScript(script));
    server.put(
      '/index.html',
      `<!doctype html><meta charset="utf-8"><title>internvl-ts</title><script type="module" src="/${script}.js"></script>`,
    );
    browser = await launchChromium({ webgpu: options.device === 'webgpu' });
    const page = await browser.newPage();
    const errors = collectPageErrors(page);
    await page.goto(`${server.origin}/index.html`);
    await page.waitForFunction(() => 'internvl' in globalThis);
    const call = <K extends keyof HarnessApi>(name: K, ...args: Parameters<HarnessApi[K]>) =>
      page
        .evaluate(
          ([name, args]) => {
            const api = (globalThis as unknown as { internvl: Record<string, (...a: unknown[]) => unknown> }).internvl;
            return api[name](...args);
          },
          [name, args] as [string, unknown[]],
        )
        .catch((error: Error) => {
          const detail = errors.length ? ` (page: ${errors.at(-1)})` : '';
          throw new Error(`the browser failed in ${name}: ${error.message.split('\n')[0]}${detail}`, { cause: error });
        }) as ReturnType<HarnessApi[K]>;
    const platform = await page.evaluate(
      async ({ ortUrl, wasmPaths, device, threads }) => {
        const ort = await import(ortUrl);
        ort.env.wasm.wasmPaths = wasmPaths;
        ort.env.logLevel = 'error';
        const api = (globalThis as unknown as { internvl: HarnessApi }).internvl;
        return api.setup(ort, { device, threads });
      },
      {
        ortUrl: `${server.origin}/ort/${ORT_BUILD[options.device]}`,
        wasmPaths: `${server.origin}/ort/`,
        device: options.device,
        threads: options.threads,
      },
    );
    const b = browser;
    return {
      server,
      browser,
      page,
      platform,
      errors,
      call,
      close: async () => {
        await b.close();
        await server.close();
      },
    };
  } catch (error) {
    await browser?.close();
    await server.close();
    throw new RuntimeError(`the browser harness did not start: ${(error as Error).message.split('\n')[0]}`, {
      cause: error,
    });
  }
}
