/** `internvl bench <target>`: benchmarks (JSON on stdout, progress on stderr). */
import { parseCommandArgs, usageError } from './args.js';
import type { Command } from './registry.js';

const USAGE = `Usage: internvl bench <target> [options]

Targets:
  vision   time the InternViT encoder on random weights of a released shape
  chat     time to first token and decoding speed of an InternVL-Chat shape (float32, int8, int4 weights)
  clip     InternVL-C/G image and text embeddings per second (InternVL-14B-224px shape)
  serve    the server under load: one stream vs concurrent streams (continuous batching), soak RSS
  accuracy each weight format's error against float32 on golden fixture folders
  search   search latency and ANN recall (100k/1M vectors), index overhead, 1 vs 2 queue workers

See 'internvl bench <target> --help'.
`;

const VISION_USAGE = `Usage: internvl bench vision [options]

Writes a random-weight checkpoint of a released InternViT shape to a temp folder, loads it like a real model and
times warm forward passes. Prints JSON: {shape, dtype, batch, threads, layersTimed, secondsPerTile, tilesPerSecond,
peakRssMB, sessionCreateSeconds, ...}. Shapes whose float32 weights do not fit in memory are timed on their first
layers and extrapolated ("extrapolated": true).

Options:
  --shape <name>       internvit-300m-448 (default), internvit-6b-224, internvit-6b-448
  --batch <n>          tiles per forward pass (default 1)
  --threads <n>        onnxruntime threads (default: all cores)
  --runs <n>           timed runs after one warm-up (default 3)
  --dtype <t>          checkpoint storage: float32 (default), float16, bfloat16; compute is float32
  --weights <f>        fp32 (default) or int8: the linears as DynamicQuantizeMatMul (int8 weights and activations)
  --layers <n>         build and time only the first n layers, extrapolate to all
  --prepack <m>        onnxruntime weight prepacking: auto (default: on below 2 GiB of weights), on, off
  --profile            also run under onnxruntime's profiler and report kernel time per operator type
  --keep               keep the temp checkpoint (its path is printed)
  --quiet              no progress on stderr
  -h, --help           show this help
`;

export const benchCommand: Command = {
  name: 'bench',
  summary: 'benchmarks: `bench vision` times the vision encoder, `bench chat` a chat model (JSON)',
  async run(args) {
    const [target, ...rest] = args;
    if (target === undefined) throw usageError('bench', 'missing target (vision)');
    if (target === '--help' || target === '-h') {
      process.stdout.write(USAGE);
      return 0;
    }
    if (target === 'chat') return (await import('./bench_chat.js')).runBenchChat(rest);
    if (target === 'clip') return (await import('./bench_clip.js')).runBenchClip(rest);
    if (target === 'serve') return (await import('./bench_serve.js')).runBenchServe(rest);
    if (target === 'accuracy') return (await import('./bench_accuracy.js')).runBenchAccuracy(rest);
    if (target === 'search') return (await import('./bench_search.js')).runBenchSearch(rest);
    if (target !== 'vision')
      throw usageError('bench', `unknown target '${target}' (targets: vision, chat, clip, serve, accuracy, search)`);
    const parsed = parseCommandArgs(
      {
        command: 'bench vision',
        usage: VISION_USAGE,
        options: {
          shape: { type: 'string' },
          batch: { type: 'string' },
          threads: { type: 'string' },
          runs: { type: 'string' },
          dtype: { type: 'string' },
          weights: { type: 'string' },
          layers: { type: 'string' },
          prepack: { type: 'string' },
          keep: { type: 'boolean' },
          quiet: { type: 'boolean' },
          profile: { type: 'boolean' },
        },
      },
      rest,
    );
    if (!parsed) return 0;
    const { benchVision, VISION_SHAPES } = await import('../bench/vision.js');
    const shape = parsed.choice('shape', Object.keys(VISION_SHAPES), 'internvit-300m-448');
    const prepack = parsed.choice('prepack', ['auto', 'on', 'off'] as const, 'auto');
    const quiet = parsed.flag('quiet');
    const result = await benchVision({
      shape,
      dtype: parsed.choice('dtype', ['float32', 'float16', 'bfloat16'] as const, 'float32'),
      weights: parsed.choice('weights', ['fp32', 'int8'] as const, 'fp32'),
      batch: parsed.integer('batch', 1, { min: 1, max: 256 }),
      threads: parsed.threads(),
      runs: parsed.integer('runs', 3, { min: 1 }),
      layers: parsed.integer('layers', undefined, { min: 1 }),
      prepack: prepack === 'auto' ? undefined : prepack === 'on',
      keep: parsed.flag('keep'),
      profile: parsed.flag('profile'),
      log: quiet ? undefined : (message) => process.stderr.write(`${message}\n`),
    });
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    if (result.contention) process.stderr.write(`warning: no extrapolated time: ${result.contention}\n`);
    return 0;
  },
};
