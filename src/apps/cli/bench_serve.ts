/** `internvl bench serve`: continuous batching under load, a load generator against `internvl serve` (JSON). */
import { WEIGHT_FORMATS } from '../../core/quantize/formats.js';
import { parseCommandArgs } from './args.js';

export const SERVE_USAGE = `Usage: internvl bench serve [options]

Writes a random-weight checkpoint of a released InternVL-Chat shape (bf16, with the real InternVL2-1B tokenizer),
starts 'internvl serve' on it in a child process and drives it on loopback with streaming chat requests, each with
one 448 px image (one tile), a short question and a fixed answer length. Measured side by side in one run: one
stream, then --concurrency streams (requests keep arriving while others decode), the same with text-only requests
(no image encoding beside the decoding), then an optional soak with the server's RSS sampled along it. Prints
JSON: {machine, single, batched, batchedText: {decodeTokensPerSecond (the server's decode steps),
streamedTokensPerSecond (as the clients see it), requestsPerSecond, timeToFirstTokenSeconds {p50,p95},
interTokenLatencyMs {p50,p95}, meanDecodeBatch, ...}, decodeThroughputRatio, textDecodeThroughputRatio,
interTokenLatencyP95Ratio, soak, serverPeakRssMB}.

Options:
  --shape <name>          internvl2-1b (default)
  --weights <f>           the server's --weights: int4 (default; int8 vision), int4+int8, int8, fp32
  --concurrency <n>       streams of the batched scenario (default 4)
  --requests <n>          requests per stream in each scenario (default 4)
  --answer-tokens <n>     tokens per answer (default 64)
  --soak <n>              requests of the soak, at --concurrency streams with 8-token answers (default 0: none)
  --max-batch <n>         the server's --max-batch (default: max(4, --concurrency))
  --threads <n>           onnxruntime threads of the server (default: all cores)
  --work-dir <dir>        keep the checkpoint and weight cache here and reuse them (default: a temp folder)
  --quiet                 no progress on stderr
  -h, --help              show this help
`;

export async function runBenchServe(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'bench serve',
      usage: SERVE_USAGE,
      options: {
        shape: { type: 'string' },
        weights: { type: 'string' },
        concurrency: { type: 'string' },
        requests: { type: 'string' },
        'answer-tokens': { type: 'string' },
        soak: { type: 'string' },
        'max-batch': { type: 'string' },
        threads: { type: 'string' },
        'work-dir': { type: 'string' },
        quiet: { type: 'boolean' },
      },
    },
    args,
  );
  if (!parsed) return 0;
  const { runServeBenchmark } = await import('../bench/serve.js');
  const quiet = parsed.flag('quiet');
  const report = await runServeBenchmark({
    shape: parsed.choice('shape', ['internvl2-1b'], 'internvl2-1b'),
    weights: parsed.choice('weights', WEIGHT_FORMATS, 'int4'),
    concurrency: parsed.integer('concurrency', 4, { min: 1, max: 64 }),
    requests: parsed.integer('requests', 4, { min: 1 }),
    answerTokens: parsed.integer('answer-tokens', 64, { min: 2 }),
    soak: parsed.integer('soak', 0, { min: 0 }),
    maxBatch: parsed.integer('max-batch', undefined, { min: 1, max: 64 }),
    threads: parsed.threads(),
    workDir: parsed.string('work-dir'),
    log: quiet ? undefined : (message) => process.stderr.write(`${message}\n`),
  });
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  return 0;
}
