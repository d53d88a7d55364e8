/** `internvl bench accuracy`: each weight format's error on the golden fixture folders (JSON on stdout). */
import { stringifySnakeCase } from '../../core/json.js';
import { parseCommandArgs, QUIET_OPTION, THREADS_OPTION } from './args.js';

export async function runBenchAccuracy(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'bench accuracy',
      synopsis: 'bench accuracy [options] <fixture-dir>...',
      description: `Verifies each fixture folder once per weight configuration (LLM fp32, int8, int4, int4+int8; vision and QLLaMA
fp32, int8) and reports, per configuration: greedy ids / top-1 classes equal to the goldens (or the first
differing step), the max relative error of logits, embeddings and probabilities, and how many linears the format
quantized. float32 matches the goldens (float64) to ~1e-6, so these are the errors against float32.
Prints JSON: {machine, all_linears, records: [{fixture, weights, linears, first_differing_step, max_rel_error,
tensors, within_float32_bounds}], skipped}.`,
      options: {
        'all-linears': {
          type: 'boolean',
          help: 'quantize every linear (blocks of 16) instead of only those with ≥ 64 input columns',
        },
        threads: THREADS_OPTION,
        quiet: QUIET_OPTION,
      },
      positionals: { min: 1, max: Infinity },
    },
    args,
  );
  if (!parsed) return 0;
  const { benchAccuracy } = await import('../bench/accuracy.js');
  const report = await benchAccuracy({
    dirs: parsed.positionals,
    allLinears: parsed.flag('all-linears'),
    threads: parsed.threads(),
    log: parsed.flag('quiet') ? undefined : (m) => process.stderr.write(`${m}\n`),
  });
  process.stdout.write(`${stringifySnakeCase(report, undefined, 2)}\n`);
  return 0;
}
