/** `--model <dir|org/name[@revision]>` for every command: a local folder, or a Hub download with a progress line. */
import type { ParsedArgs } from './args.js';

export const MODEL_OPTIONS = {
  model: { type: 'string' },
  offline: { type: 'boolean' },
  threads: { type: 'string' },
  quiet: { type: 'boolean' },
} as const;

export const MODEL_USAGE = `  --model <dir|id>     model folder or Hugging Face repo id (org/name[@revision])   (required)
  --offline            never download (also HF_HUB_OFFLINE=1)
  --threads <n>        onnxruntime threads (default: all cores)
  --quiet              no progress on stderr`;

export async function resolveModelArg(parsed: ParsedArgs): Promise<string> {
  const [{ resolveModelDir }, { createProgressReporter }] = await Promise.all([import('../../core/hub.js'), import('../../core/progress.js')]);
  const progress = createProgressReporter('download', { quiet: parsed.flag('quiet') });
  let downloading = false;
  const dir = await resolveModelDir(parsed.required('model'), {
    offline: parsed.flag('offline') || undefined,
    onProgress: (e) => {
      downloading = true;
      progress.update(e.overallBytesDone, e.overallTotalBytes, e.file);
    },
  });
  if (downloading) progress.finish();
  return dir;
}

export function sessionArgs(parsed: ParsedArgs): { threads?: number } {
  return { threads: parsed.integer('threads', undefined, { min: 1 }) };
}
