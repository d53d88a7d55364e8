/** `--model <dir|org/name[@revision]>` for every command: a local folder, or a Hub download with a progress line. */
import { QUIET_OPTION, THREADS_OPTION, type OptionSpec, type Options, type ParsedArgs } from './args.js';
import { createProgressReporter } from '../../core/progress.js';
import { WEIGHT_FORMATS, weightFormatHook, type WeightFormat } from '../../core/quantize/formats.js';
import type { GraphBuilder } from '../../core/graph.js';

export const MODEL_OPTIONS = {
  model: {
    type: 'string',
    value: 'dir|id',
    help: 'model folder or Hugging Face repo id (org/name[@revision])',
    required: true,
  },
  offline: { type: 'boolean', help: 'never download (also HF_HUB_OFFLINE=1)' },
  'hub-timeout': {
    type: 'string',
    value: 's',
    help: 'give up on a Hub request silent this long (default HF_HUB_DOWNLOAD_TIMEOUT, else 60)',
  },
  'hub-retries': {
    type: 'string',
    value: 'n',
    help: 'attempts after the first on network failures (default INTERNVL_HUB_RETRIES, else 5)',
  },
  threads: THREADS_OPTION,
  quiet: QUIET_OPTION,
} as const satisfies Options;

export async function resolveModelArg(parsed: ParsedArgs): Promise<string> {
  const { resolveModelDir } = await import('../../core/hub.js');
  const progress = createProgressReporter('download', { quiet: parsed.flag('quiet') });
  const timeout = parsed.integer('hub-timeout', { min: 1 });
  let downloading = false;
  const dir = await resolveModelDir(parsed.required('model'), {
    offline: parsed.flag('offline') || undefined,
    timeoutMs: timeout === undefined ? undefined : timeout * 1000,
    retries: parsed.integer('hub-retries', { min: 0 }),
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

/** Weights stay float32 unless a weights flag says otherwise. */
const DEFAULT_WEIGHTS = 'fp32';

/** A `--…weights <f>` flag of a model part; `help` names the formats it takes. */
export function weightsOption(help: string) {
  return { type: 'string', value: 'f', help, default: DEFAULT_WEIGHTS } as const satisfies OptionSpec;
}

/**
 * `--<flag> fp32|int8|int4|int4+int8` (declared with {@link weightsOption}): the weight format of a model part, as
 * a graph hook (none for fp32). Quantized weights are computed on the first load and cached.
 */
export function weightsArg(
  parsed: ParsedArgs,
  flag: string,
  allowed: readonly WeightFormat[] = WEIGHT_FORMATS,
): ((g: GraphBuilder) => void) | undefined {
  return weightFormatHook(parsed.choice(flag, allowed) ?? DEFAULT_WEIGHTS);
}
