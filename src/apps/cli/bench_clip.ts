/** `internvl bench clip`: InternVL-C/G image and text embeddings per second (JSON on stdout). */
import { stringifySnakeCase } from '../../core/json.js';
import { parseCommandArgs, QUIET_OPTION, THREADS_OPTION } from './args.js';

const FORMATS = ['float32', 'int8', 'int8-block', 'int8-weights'] as const;

export async function runBenchClip(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'bench clip',
      synopsis: 'bench clip [options]',
      description: `Writes random-weight InternVL-14B-224px-shaped checkpoints (InternViT-6B-224 + QLLaMA-7B, bf16 as released) with
their first blocks only, times image embeddings (mode C; mode G adds QLLaMA over the 96 queries) and text
embeddings at two depths, and extrapolates each stage to the full 48 + 32 blocks. Each weight format's embeddings
are compared with float32's on the same truncated model (max |a − b| / max |b|).
Prints JSON: [{weights, image_c, image_g, text: {seconds, per_second}, relative_error_vs_float32, peak_rss_mb, ...}].`,
      options: {
        weights: {
          type: 'string',
          value: 'list',
          help: 'comma-separated: float32, int8 (DynamicQuantizeMatMul), int8-block (8-bit blocks, int8 activations), int8-weights (8-bit blocks, float activations)',
          default: 'float32,int8',
        },
        'vision-layers': { type: 'string', value: 'n', help: 'ViT blocks built (also timed at half)', default: 4 },
        'qllama-layers': {
          type: 'string',
          value: 'n',
          help: 'QLLaMA blocks built, even, ≥ 4 (also timed at half)',
          default: 4,
        },
        batch: { type: 'string', value: 'n', help: 'images / texts per call', default: 1 },
        threads: THREADS_OPTION,
        runs: { type: 'string', value: 'n', help: 'timed runs per stage', default: 2 },
        quiet: QUIET_OPTION,
      },
    },
    args,
  );
  if (!parsed) return 0;
  const weights = parsed
    .string('weights')
    .split(',')
    .map((w) => w.trim());
  const unknown = weights.find((w) => !(FORMATS as readonly string[]).includes(w));
  if (unknown) parsed.fail(`--weights: '${unknown}' is not one of ${FORMATS.join(', ')}`);
  if (weights[0] !== 'float32')
    parsed.fail('--weights must start with float32 (the reference the others are compared with)');
  const { benchClip } = await import('../bench/clip.js');
  const results = await benchClip({
    weights: weights as Array<(typeof FORMATS)[number]>,
    visionLayers: parsed.integer('vision-layers', { min: 2, max: 48 }),
    qllamaLayers: parsed.integer('qllama-layers', { min: 4, max: 32 }),
    batch: parsed.integer('batch', { min: 1, max: 64 }),
    threads: parsed.threads(),
    runs: parsed.integer('runs', { min: 1 }),
    log: parsed.flag('quiet') ? undefined : (m) => process.stderr.write(`${m}\n`),
  });
  process.stdout.write(`${stringifySnakeCase(results, undefined, 2)}\n`);
  for (const { weights, contention } of results)
    if (contention) process.stderr.write(`warning: ${weights}: no extrapolated time: ${contention}\n`);
  return 0;
}
