/** `internvl bench serve`: continuous batching under load, a load generator against `internvl serve` (JSON). */
import { stringifySnakeCase } from '../../core/json.js';
import { WEIGHT_FORMATS } from '../../core/quantize/formats.js';
import { parseCommandArgs, QUIET_OPTION, THREADS_OPTION } from './args.js';

export async function runBenchServe(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'bench serve',
      synopsis: 'bench serve [options]',
      description: `Writes a random-weight checkpoint of a released InternVL-Chat shape (bf16, with the real InternVL2-1B tokenizer),
starts 'internvl serve' on it in a child process and drives it on loopback with streaming chat requests, each with
one 448 px image (one tile), a short question and a fixed answer length. Measured side by side in one run: one
stream, then --concurrency streams (requests keep arriving while others decode), the same with text-only requests
(no image encoding beside the decoding), then an optional soak with the server's RSS sampled along it. Prints JSON:
{machine, single, batched, batched_text: {decode_tokens_per_second (the server's decode steps),
streamed_tokens_per_second (as the clients see it), requests_per_second, time_to_first_token_seconds {p50,p95},
inter_token_latency_ms {p50,p95}, mean_decode_batch, ...}, decode_throughput_ratio, text_decode_throughput_ratio,
inter_token_latency_p95_ratio, soak, server_peak_rss_mb}.`,
      options: {
        shape: { type: 'string', value: 'name', help: 'the checkpoint shape', default: 'internvl2-1b' },
        weights: {
          type: 'string',
          value: 'f',
          help: "the server's --weights: int4 (int8 vision), int4+int8, int8, fp32",
          default: 'int4',
        },
        concurrency: { type: 'string', value: 'n', help: 'streams of the batched scenario', default: 4 },
        requests: { type: 'string', value: 'n', help: 'requests per stream in each scenario', default: 4 },
        'answer-tokens': { type: 'string', value: 'n', help: 'tokens per answer', default: 64 },
        soak: {
          type: 'string',
          value: 'n',
          help: 'requests of the soak, at --concurrency streams with 8-token answers (0: none)',
          default: 0,
        },
        'max-batch': {
          type: 'string',
          value: 'n',
          help: "the server's --max-batch (default: max(4, --concurrency))",
        },
        threads: { ...THREADS_OPTION, help: 'onnxruntime threads of the server (default: all cores)' },
        'vision-threads': { type: 'string', value: 'n', help: "the server's --vision-threads (default: the server's)" },
        'vision-cache-mb': {
          type: 'string',
          value: 'n',
          help: "the server's --vision-cache-mb: 0 (default) encodes every request's image, which is always the same one",
          default: 0,
        },
        'work-dir': {
          type: 'string',
          value: 'dir',
          help: 'keep the checkpoint and weight cache here and reuse them (default: a temp folder)',
        },
        quiet: QUIET_OPTION,
      },
    },
    args,
  );
  if (!parsed) return 0;
  const { runServeBenchmark } = await import('../bench/serve.js');
  const quiet = parsed.flag('quiet');
  const report = await runServeBenchmark({
    shape: parsed.choice('shape', ['internvl2-1b']),
    weights: parsed.choice('weights', WEIGHT_FORMATS),
    concurrency: parsed.integer('concurrency', { min: 1, max: 64 }),
    requests: parsed.integer('requests', { min: 1 }),
    answerTokens: parsed.integer('answer-tokens', { min: 2 }),
    soak: parsed.integer('soak', { min: 0 }),
    maxBatch: parsed.integer('max-batch', { min: 1, max: 64 }),
    threads: parsed.threads(),
    visionThreads: parsed.integer('vision-threads', { min: 1 }),
    visionCacheMB: parsed.integer('vision-cache-mb', { min: 0 }),
    workDir: parsed.string('work-dir'),
    log: quiet ? undefined : (message) => process.stderr.write(`${message}\n`),
  });
  process.stdout.write(`${stringifySnakeCase(report, undefined, 2)}\n`);
  return 0;
}
