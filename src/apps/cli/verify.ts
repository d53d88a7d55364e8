/** `internvl verify <fixture-dir…>` */
import { UsageError } from '../../core/errors.js';
import { parseCommandArgs, THREADS_OPTION } from './args.js';
import type { Command } from './registry.js';

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'compare this implementation with golden fixture folders',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'verify',
        synopsis: 'verify [options] <fixture-dir>...',
        description: `Runs golden fixture folders (config.json, weights, io.safetensors with in.* inputs and out.* goldens, meta.json;
or a checkpoint folder with golden/) through this implementation and compares every out.* tensor it can compute.
Prints one row per tensor: shape, max abs error, max relative error (max|a-b| / max|b|).

Bounds: model outputs 1e-4 relative, pixel tensors 0.04 absolute, integer tensors exact.
Exit: 0 all compared tensors within bound, 1 a mismatch, 2 the fixture could not be run or nothing was compared
(with several folders: the worst).`,
        options: {
          json: { type: 'boolean', help: 'print the reports as JSON' },
          threads: THREADS_OPTION,
          browser: {
            type: 'boolean',
            help: 'run the verification inside headless Chromium on onnxruntime-web (the folders are served on 127.0.0.1; needs Chromium, or INTERNVL_CHROMIUM, and playwright-core)',
          },
          device: { type: 'string', value: 'd', help: 'with --browser: wasm (default) or webgpu' },
        },
        positionals: { min: 1, max: Infinity },
      },
      args,
    );
    if (!parsed) return 0;
    const threads = parsed.threads();
    const device = parsed.string('device');
    if (device !== undefined && !parsed.flag('browser')) throw new UsageError('--device needs --browser');
    if (device !== undefined && device !== 'wasm' && device !== 'webgpu')
      throw new UsageError(`--device must be wasm or webgpu, got '${device}'`);
    if (parsed.flag('browser')) {
      const { runBrowserVerify } = await import('../browser/verify.js');
      return runBrowserVerify(parsed.positionals, { json: parsed.flag('json'), threads, device: device ?? 'wasm' });
    }
    const { runVerify } = await import('../verify/index.js');
    return runVerify(parsed.positionals, { json: parsed.flag('json'), threads });
  },
};
