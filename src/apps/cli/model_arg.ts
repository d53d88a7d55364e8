/** `--model <dir|org/name[@revision]>` for every command: a local folder, or a Hub download with a progress line. */
import type { ParsedArgs } from './args.js';
import { createProgressReporter } from '../../core/progress.js';
import { WEIGHT_FORMATS, weightFormatHook, type WeightFormat } from '../../core/quantize.js';
import type { GraphBuilder } from '../../core/graph.js';

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
  const { resolveModelDir } = await import('../../core/hub.js');
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

/**
 * Session options from the flags. The first load of a bf16 or quantized checkpoint writes its converted weights
 * to the cache, which takes a while for big models: that shows as a progress line.
 */
export function sessionArgs(parsed: ParsedArgs): {
  threads?: number;
  onProgress: (done: number, total: number) => void;
} {
  let progress: { update(done: number, total?: number): void; finish(): void } | null = null;
  return {
    threads: parsed.threads(),
    onProgress: (done, total) => {
      progress ??= createProgressReporter('converting weights (once)', { quiet: parsed.flag('quiet'), unit: 'items' });
      progress.update(done, total);
      if (done === total) {
        progress.finish();
        progress = null;
      }
    },
  };
}

/**
 * `--<flag> fp32|int8|int4|int4+int8`: the weight format of a model part, as a graph hook (none for fp32).
 * Quantized weights are computed on the first load and cached.
 */
export function weightsArg(
  parsed: ParsedArgs,
  flag: string,
  allowed: readonly WeightFormat[] = WEIGHT_FORMATS,
): ((g: GraphBuilder) => void) | undefined {
  return weightFormatHook(parsed.choice(flag, allowed, 'fp32'));
}
