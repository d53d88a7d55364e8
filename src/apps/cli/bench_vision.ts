/** `internvl bench vision`: the InternViT encoder on random weights of a released shape (JSON on stdout). */
import { stringifySnakeCase } from '../../core/json.js';
import { parseCommandArgs, QUIET_OPTION, THREADS_OPTION } from './args.js';

/** Runs `internvl bench vision` with the arguments after `vision`; resolves to the exit code. */
export async function runBenchVision(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'bench vision',
      synopsis: 'bench vision [options]',
      description: `Writes a random-weight checkpoint of a released InternViT shape to a temp folder, loads it like a real model and
times warm forward passes. Prints JSON: {shape, dtype, batch, threads, layers_timed, seconds_per_tile, tiles_per_second,
peak_rss_mb, session_create_seconds, ...}. Shapes whose float32 weights do not fit in memory are timed on their first
layers and extrapolated ("extrapolated": true).`,
      options: {
        shape: {
          type: 'string',
          value: 'name',
          help: 'internvit-300m-448, internvit-6b-224, internvit-6b-448',
          default: 'internvit-300m-448',
        },
        batch: { type: 'string', value: 'n', help: 'tiles per forward pass', default: 1 },
        threads: THREADS_OPTION,
        runs: { type: 'string', value: 'n', help: 'timed runs after one warm-up', default: 3 },
        dtype: {
          type: 'string',
          value: 't',
          help: 'checkpoint storage: float32, float16, bfloat16; compute is float32',
          default: 'float32',
        },
        weights: {
          type: 'string',
          value: 'f',
          help: 'fp32 or int8: the linears as DynamicQuantizeMatMul (int8 weights and activations)',
          default: 'fp32',
        },
        layers: { type: 'string', value: 'n', help: 'build and time only the first n layers, extrapolate to all' },
        prepack: {
          type: 'string',
          value: 'm',
          help: 'onnxruntime weight prepacking: auto (on below 2 GiB of weights), on, off',
          default: 'auto',
        },
        profile: {
          type: 'boolean',
          help: "also run under onnxruntime's profiler and report kernel time per operator type",
        },
        keep: { type: 'boolean', help: 'keep the temp checkpoint (its path is printed)' },
        quiet: QUIET_OPTION,
      },
    },
    args,
  );
  if (!parsed) return 0;
  const { benchVision, VISION_SHAPES } = await import('../bench/vision.js');
  const shape = parsed.choice('shape', Object.keys(VISION_SHAPES));
  const prepack = parsed.choice('prepack', ['auto', 'on', 'off'] as const);
  const quiet = parsed.flag('quiet');
  const result = await benchVision({
    shape,
    dtype: parsed.choice('dtype', ['float32', 'float16', 'bfloat16'] as const),
    weights: parsed.choice('weights', ['fp32', 'int8'] as const),
    batch: parsed.integer('batch', { min: 1, max: 256 }),
    threads: parsed.threads(),
    runs: parsed.integer('runs', { min: 1 }),
    layers: parsed.integer('layers', { min: 1 }),
    prepack: prepack === 'auto' ? undefined : prepack === 'on',
    keep: parsed.flag('keep'),
    profile: parsed.flag('profile'),
    log: quiet ? undefined : (message) => process.stderr.write(`${message}\n`),
  });
  process.stdout.write(`${stringifySnakeCase(result, undefined, 2)}\n`);
  if (result.contention) process.stderr.write(`warning: no extrapolated time: ${result.contention}\n`);
  return 0;
}
