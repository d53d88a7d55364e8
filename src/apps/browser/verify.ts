/**
 * `internvl verify --browser`: the same fixture runners, inside headless Chromium on onnxruntime-web. Each fixture
 * folder is served on 127.0.0.1 and read by the page over HTTP (range requests for the weights); the reports come
 * back to Node and are printed as `internvl verify` prints them, with the same bounds.
 */
import fs from 'node:fs';
import path from 'node:path';
import { InternVLError, ModelLoadError } from '../../core/errors.js';
import type { WebDevice } from '../../web/runtime.js';
import { runVerify, type VerifyCommandOptions } from '../verify/index.js';
import { openHarness } from './harness.js';

export interface BrowserVerifyOptions extends VerifyCommandOptions {
  device: WebDevice;
}

export async function runBrowserVerify(dirs: string[], options: BrowserVerifyOptions): Promise<number> {
  const harness = await openHarness('harness_page', { device: options.device, threads: options.threads });
  try {
    let served = 0;
    return await runVerify(dirs, options, async (dir, runOptions) => {
      const stat = fs.statSync(dir, { throwIfNoEntry: false });
      if (!stat) throw new ModelLoadError(`${dir}: no such fixture folder`);
      if (!stat.isDirectory())
        throw new ModelLoadError(`${dir}: not a folder (give the fixture folder, not a file in it)`);
      // The folder keeps its own name as the last URL segment: reports are named by it.
      const url = harness.server.mount(`/fixtures/${served++}/${path.basename(path.resolve(dir))}`, dir);
      const outcome = await harness.call('verify', url, runOptions);
      if ('error' in outcome)
        throw Object.assign(new InternVLError(outcome.error.message.replaceAll(url, dir)), {
          name: outcome.error.name,
        });
      return { ...outcome.report, dir };
    });
  } finally {
    await harness.close();
  }
}
