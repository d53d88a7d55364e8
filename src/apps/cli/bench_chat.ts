/** `internvl bench chat`: time to first token and decoding speed of InternVL-Chat shapes (JSON on stdout). */
import { stringifySnakeCase } from '../../core/json.js';
import type { WeightFormat } from '../../core/quantize/formats.js';
import { parseCommandArgs, QUIET_OPTION, THREADS_OPTION, type ParsedArgs } from './args.js';

/** Runs `internvl bench chat` with the arguments after `chat`; resolves to the exit code. */
export async function runBenchChat(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'bench chat',
      synopsis: 'bench chat [options]',
      description: `Writes a random-weight checkpoint of a released InternVL-Chat shape (bf16, as released) to a work folder and, for
each configuration, loads it in a fresh process (peak RSS is per configuration) and measures: time to first token
for one 448 px tile and a short question (vision encoder + projector, prefill of 256 image + N text tokens, first
logits), greedy decoding speed with the KV cache, and peak memory. Converted and quantized weights are cached in
the work folder; the first load of each configuration fills the cache and is reported as first_load_seconds.
Prints JSON: {machine, results: [{llm, vision, time_to_first_token_seconds, decode_tokens_per_second, peak_rss_mb, ...}]}.
"clean_*" fields keep only the runs during which this process had all its threads' worth of CPU (the machine was
not shared at that moment).`,
      options: {
        shape: {
          type: 'string',
          value: 'name',
          help: 'internvl2-1b (InternViT-300M + Qwen2-0.5B), internvl2-2b (+ InternLM2-1.8B)',
          default: 'internvl2-1b',
        },
        configs: {
          type: 'string',
          value: 'list',
          help: 'comma-separated llm/vision formats, each of fp32, int8, int4, int4+int8. int4+int8: 4-bit weights for decoding plus int8 ones for prefill; int8 vision: DynamicQuantizeMatMul',
          default: 'fp32/fp32,int4/fp32,int4/int8,int4+int8/int8',
        },
        dtype: { type: 'string', value: 't', help: 'checkpoint storage: bfloat16 or float32', default: 'bfloat16' },
        threads: THREADS_OPTION,
        runs: { type: 'string', value: 'n', help: 'time-to-first-token runs after one cold run', default: 5 },
        'question-tokens': { type: 'string', value: 'n', help: "text tokens besides the image's", default: 20 },
        'decode-tokens': { type: 'string', value: 'n', help: 'greedy tokens per decoding run', default: 32 },
        'decode-repeats': { type: 'string', value: 'n', help: 'decoding runs from the same prompt', default: 3 },
        'work-dir': {
          type: 'string',
          value: 'dir',
          help: 'keep the checkpoint and weight cache here and reuse them (default: a temp folder, deleted afterwards)',
        },
        profile: {
          type: 'boolean',
          help: "run the LLM under onnxruntime's profiler and account for a decode step's time: kernels per operator type, onnxruntime, the Node binding, embedding look-up, the decoder's JavaScript (decodeProfile; all timings then include the profiler's cost)",
        },
        quiet: QUIET_OPTION,
      },
    },
    args,
  );
  if (!parsed) return 0;
  const [{ runChatMatrix }, { CHAT_SHAPES }] = await Promise.all([
    import('../bench/chat.js'),
    import('../bench/chat_checkpoint.js'),
  ]);
  const shape = parsed.choice('shape', Object.keys(CHAT_SHAPES));
  const configs = await configsArg(parsed);
  const quiet = parsed.flag('quiet');
  const report = await runChatMatrix({
    shape,
    configs,
    dtype: parsed.choice('dtype', ['bfloat16', 'float32'] as const),
    threads: parsed.threads(),
    runs: parsed.integer('runs', { min: 1 }),
    questionTokens: parsed.integer('question-tokens', { min: 0 }),
    decodeTokens: parsed.integer('decode-tokens', { min: 1 }),
    decodeRepeats: parsed.integer('decode-repeats', { min: 1 }),
    workDir: parsed.string('work-dir'),
    profile: parsed.flag('profile'),
    log: quiet ? undefined : (message) => process.stderr.write(`${message}\n`),
  });
  process.stdout.write(`${stringifySnakeCase(report, undefined, 2)}\n`);
  return 0;
}

/** `--configs llm/vision,…` (bench chat, bench web): the weight configurations to measure. */
export async function configsArg(parsed: ParsedArgs): Promise<Array<{ llm: WeightFormat; vision: WeightFormat }>> {
  const { parseConfigs } = await import('../bench/chat.js');
  try {
    return parseConfigs(parsed.string('configs') ?? '');
  } catch (error) {
    return parsed.fail(`--configs: ${(error as Error).message}`);
  }
}
