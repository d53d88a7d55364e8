/**
 * Server benchmark: a load generator on loopback against `internvl serve` (a child process, so that its peak RSS
 * is its own) with a random-weight InternVL-Chat checkpoint of a released shape and a real tokenizer. Each request
 * is a stream with one 448 px image (one tile) and a short question, and a fixed answer length (`min_tokens` =
 * `max_tokens`, so random weights cannot stop early). Scenarios run side by side in one run: one stream, then C
 * concurrent streams, then an optional soak of many requests with the server's RSS sampled after each.
 *
 * Two throughputs per scenario: `decodeTokensPerSecond`, the tokens the server's batched decode steps produced per
 * second spent in them (from its metrics: what batching buys), and `streamedTokensPerSecond`, the tokens after each
 * request's first per second during which at least one request was between its first and last token (the union of
 * their decode intervals, seen by the clients: prefills and image encodings of requests arriving meanwhile count
 * against it, as they do for users).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../../core/errors.js';
import type { WeightFormat } from '../../core/quantize/formats.js';
import { CHAT_SHAPES, ensureRandomChatCheckpoint } from './chat_checkpoint.js';
import { machineInfo, median, quantile } from './stats.js';

export interface ServeBenchOptions {
  shape?: string;
  /** The server's --weights (default int4: 4-bit LLM, int8 vision, as `bench chat`'s int4/int8). */
  weights?: WeightFormat;
  /** Concurrent streams of the batched scenario (default 4). */
  concurrency?: number;
  /** Requests per stream in each scenario (default 4). */
  requests?: number;
  /** Answer tokens per request (default 64). */
  answerTokens?: number;
  /** Requests of the soak (at the batched concurrency, short answers); 0 = none (default). */
  soak?: number;
  maxBatch?: number;
  threads?: number;
  /** The server's `--vision-threads` (default: the server's). */
  visionThreads?: number;
  /**
   * The server's `--vision-cache-mb` (default 0: every request's image is encoded, as the requests all carry the
   * same image and a cache would skip all but the first encoding).
   */
  visionCacheMB?: number;
  /** Folder holding the random checkpoint and the weight cache; reused when it already has them. */
  workDir?: string;
  log?: (message: string) => void;
}

export interface ScenarioResult {
  concurrency: number;
  requests: number;
  completionTokens: number;
  wallSeconds: number;
  requestsPerSecond: number;
  /** See the module comment. */
  decodeTokensPerSecond: number | null;
  streamedTokensPerSecond: number;
  timeToFirstTokenSeconds: { p50: number; p95: number };
  interTokenLatencyMs: { p50: number; p95: number };
  /** Mean sequences per batched decode step on the server (from its metrics). */
  meanDecodeBatch: number | null;
}

export interface ServeBenchReport {
  machine: Record<string, unknown>;
  shape: string;
  weights: WeightFormat;
  answerTokens: number;
  single: ScenarioResult;
  batched: ScenarioResult;
  /** `batched` with text-only requests: what batching gives when no image encoding competes for the cores. */
  batchedText: ScenarioResult;
  /** batched.decodeTokensPerSecond / single.decodeTokensPerSecond (target ≥ 2.5 at 4 streams). */
  decodeThroughputRatio: number | null;
  /** The same for streamedTokensPerSecond. */
  streamedThroughputRatio: number;
  /** batchedText.decodeTokensPerSecond / single.decodeTokensPerSecond. */
  textDecodeThroughputRatio: number | null;
  /** batched p95 inter-token latency / single p95 (target ≤ 3). */
  interTokenLatencyP95Ratio: number;
  /** The server's RSS after the first request of the soak and after each further fifth of it. */
  soak: { requests: number; rssMB: number[] } | null;
  /** The server process's peak RSS over the whole run. */
  serverPeakRssMB: number;
}

interface RequestTiming {
  start: number;
  /** Arrival of each chunk with content (a token, or several whose bytes completed a character together). */
  chunkTimes: number[];
  completionTokens: number;
}

const TOKENIZER_FILES = [
  'vocab.json',
  'merges.txt',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
];
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The random checkpoint plus the real InternVL2-1B tokenizer of the bundled chat_e2e fixture. */
function prepareCheckpoint(workDir: string, shapeName: string, log: (m: string) => void): string {
  const shape = CHAT_SHAPES[shapeName];
  if (!shape) throw new UsageError(`unknown shape '${shapeName}'; known: ${Object.keys(CHAT_SHAPES).join(', ')}`);
  if (shape.llm.family !== 'qwen2') throw new UsageError(`bench serve has a tokenizer for Qwen2 shapes only`);
  const dir = path.join(workDir, 'model-bfloat16');
  ensureRandomChatCheckpoint(dir, shape, 'bfloat16', log);
  const tokenizer = path.join(REPO, 'test', 'data', 'fixtures', 'chat_e2e');
  for (const file of TOKENIZER_FILES) fs.copyFileSync(path.join(tokenizer, file), path.join(dir, file));
  return dir;
}

class ServerProcess {
  readonly url: Promise<string>;
  private stderr = '';

  private constructor(private readonly child: ChildProcess) {
    this.url = new Promise((resolve, reject) => {
      child.stderr!.setEncoding('utf8').on('data', (d: string) => {
        this.stderr += d;
        const listening = /listening on (http:\/\/\S+)/.exec(this.stderr);
        if (listening && /ready \(/.test(this.stderr)) resolve(listening[1]);
      });
      child.on('exit', (code) => reject(new Error(`the server exited with ${code}: ${this.stderr.slice(-2000)}`)));
    });
  }

  /** `internvl serve` through the same entry point (and loader flags) as this process. */
  static start(args: string[], env: NodeJS.ProcessEnv): ServerProcess {
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1], 'serve', ...args], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    return new ServerProcess(child);
  }

  /** Resident and peak memory from /proc (Linux), MB. */
  memory(): { rssMB: number; peakMB: number } {
    const status = fs.readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
    return { rssMB: Math.round(kb('VmRSS') / 1024), peakMB: Math.round(kb('VmHWM') / 1024) };
  }

  async stop(): Promise<void> {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }
}

/** One streaming request; returns when its stream ends, with the arrival time of every content chunk. */
/** `image` null: a text-only request (no vision encoding competing with the decoding). */
async function streamRequest(
  url: string,
  image: string | null,
  question: string,
  tokens: number,
): Promise<RequestTiming> {
  const start = performance.now();
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'bench',
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: tokens,
      min_tokens: tokens,
      messages: [
        {
          role: 'user',
          content: [
            ...(image ? [{ type: 'image_url', image_url: { url: image } }] : []),
            { type: 'text', text: question },
          ],
        },
      ],
    }),
  });
  if (response.status !== 200) throw new Error(`the server answered ${response.status}: ${await response.text()}`);
  const chunkTimes: number[] = [];
  let completionTokens = 0;
  const decoder = new TextDecoder();
  let pending = '';
  for await (const bytes of response.body!) {
    const now = performance.now();
    pending += decoder.decode(bytes as Uint8Array, { stream: true });
    const events = pending.split('\n\n');
    pending = events.pop()!;
    for (const event of events) {
      const data = event.replace(/^data: /, '');
      if (data === '[DONE]') continue;
      const chunk = JSON.parse(data) as { choices: Array<{ delta: { content?: string } }>; usage?: unknown };
      if (chunk.choices[0]?.delta.content) chunkTimes.push(now);
      const usage = chunk.usage as { completion_tokens: number } | null | undefined;
      if (usage) completionTokens = usage.completion_tokens;
    }
  }
  if (completionTokens !== tokens) throw new Error(`a request got ${completionTokens} tokens, not ${tokens}`);
  return { start, chunkTimes, completionTokens };
}

async function scrapeBatching(url: string): Promise<{ steps: number; tokens: number; seconds: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)`, 'm').exec(text)?.[1] ?? Number.NaN);
  return {
    steps: value('internvl:decode_steps_total'),
    tokens: value('internvl:decode_step_sequences_total'),
    seconds: value('internvl:decode_step_seconds_total'),
  };
}

async function runScenario(
  url: string,
  image: string | null,
  concurrency: number,
  perStream: number,
  tokens: number,
): Promise<ScenarioResult> {
  const before = await scrapeBatching(url);
  const timings: RequestTiming[] = [];
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, stream) => {
      for (let i = 0; i < perStream; i++)
        timings.push(await streamRequest(url, image, `Question ${stream}.${i}: what is in this picture?`, tokens));
    }),
  );
  const wallSeconds = (performance.now() - start) / 1000;
  const after = await scrapeBatching(url);
  const intervals = timings
    .filter((t) => t.chunkTimes.length > 1)
    .map((t) => [t.chunkTimes[0], t.chunkTimes[t.chunkTimes.length - 1]] as const)
    .sort((a, b) => a[0] - b[0]);
  let decodingMs = 0;
  let end = Number.NEGATIVE_INFINITY;
  for (const [from, to] of intervals) {
    decodingMs += Math.max(0, to - Math.max(from, end));
    end = Math.max(end, to);
  }
  const decoded = timings.reduce((n, t) => n + t.completionTokens - 1, 0);
  const gaps = timings.flatMap((t) => t.chunkTimes.slice(1).map((time, i) => time - t.chunkTimes[i]));
  const ttft = timings.map((t) => (t.chunkTimes[0] - t.start) / 1000);
  const completionTokens = timings.reduce((n, t) => n + t.completionTokens, 0);
  const round = (x: number, digits = 3) => Number(x.toFixed(digits));
  const steps = after.steps - before.steps;
  const seconds = after.seconds - before.seconds;
  return {
    concurrency,
    requests: timings.length,
    completionTokens,
    wallSeconds: round(wallSeconds),
    requestsPerSecond: round(timings.length / wallSeconds),
    decodeTokensPerSecond: seconds > 0 ? round((after.tokens - before.tokens) / seconds, 2) : null,
    streamedTokensPerSecond: round(decoded / (decodingMs / 1000), 2),
    timeToFirstTokenSeconds: { p50: round(median(ttft)), p95: round(quantile(ttft, 0.95)) },
    interTokenLatencyMs: { p50: round(median(gaps), 2), p95: round(quantile(gaps, 0.95), 2) },
    meanDecodeBatch: Number.isFinite(steps) && steps > 0 ? round((after.tokens - before.tokens) / steps, 2) : null,
  };
}

export async function runServeBenchmark(options: ServeBenchOptions = {}): Promise<ServeBenchReport> {
  const log = options.log ?? (() => {});
  const shapeName = options.shape ?? 'internvl2-1b';
  const weights = options.weights ?? 'int4';
  const concurrency = options.concurrency ?? 4;
  const perStream = options.requests ?? 4;
  const answerTokens = options.answerTokens ?? 64;
  const workDir = options.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `internvl-bench-serve-${shapeName}-`));
  try {
    const model = prepareCheckpoint(workDir, shapeName, log);
    const sharp = (await import('sharp')).default;
    const photo = path.join(REPO, 'test', 'data', 'images', 'chelsea.png');
    const png = await sharp(photo).resize(448, 448, { fit: 'fill' }).png().toBuffer();
    const image = `data:image/png;base64,${png.toString('base64')}`;
    const args = ['--model', `${model}=bench`, '--port', '0', '--weights', weights, '--log-format', 'none'];
    args.push('--max-batch', String(options.maxBatch ?? Math.max(concurrency, 4)));
    args.push('--max-queue', String(Math.max(16, concurrency * 2)), '--max-model-len', '2048');
    if (options.threads) args.push('--threads', String(options.threads));
    if (options.visionThreads) args.push('--vision-threads', String(options.visionThreads));
    args.push('--vision-cache-mb', String(options.visionCacheMB ?? 0));
    log(`starting the server (${weights} weights; the first start fills the weight cache in ${workDir})`);
    const server = ServerProcess.start(args, { ...process.env, INTERNVL_CACHE: path.join(workDir, 'cache') });
    try {
      const url = await server.url;
      log('warm-up request');
      await streamRequest(url, image, 'Warm up.', 8);
      log(`one stream × ${perStream} requests of ${answerTokens} tokens`);
      const single = await runScenario(url, image, 1, perStream, answerTokens);
      log(
        `  decode steps ${single.decodeTokensPerSecond} tokens/s, streamed ${single.streamedTokensPerSecond} tokens/s, ITL p95 ${single.interTokenLatencyMs.p95} ms`,
      );
      log(`${concurrency} streams × ${perStream} requests of ${answerTokens} tokens`);
      const batched = await runScenario(url, image, concurrency, perStream, answerTokens);
      log(
        `  decode steps ${batched.decodeTokensPerSecond} tokens/s, streamed ${batched.streamedTokensPerSecond} tokens/s in all, ITL p95 ${batched.interTokenLatencyMs.p95} ms, mean batch ${batched.meanDecodeBatch}`,
      );
      log(`the same without images (${concurrency} streams, text only: no vision encoding beside the decoding)`);
      const batchedText = await runScenario(url, null, concurrency, perStream, answerTokens);
      log(
        `  decode steps ${batchedText.decodeTokensPerSecond} tokens/s, ITL p95 ${batchedText.interTokenLatencyMs.p95} ms, mean batch ${batchedText.meanDecodeBatch}`,
      );
      let soak: ServeBenchReport['soak'] = null;
      if (options.soak) {
        log(`soak: ${options.soak} requests at ${concurrency} streams`);
        const rss: number[] = [];
        let next = 0;
        await Promise.all(
          Array.from({ length: concurrency }, async () => {
            while (next < options.soak!) {
              next++;
              await streamRequest(url, image, `Soak ${next}: describe it.`, 8);
              rss.push(server.memory().rssMB);
            }
          }),
        );
        const fifths = [0, 1, 2, 3, 4, 5].map((k) => rss[Math.max(0, Math.round((k * rss.length) / 5) - 1)]);
        soak = { requests: rss.length, rssMB: fifths };
        log(`  RSS after 1, then each fifth of the requests: ${fifths.join(', ')} MB`);
      }
      const serverPeakRssMB = server.memory().peakMB;
      return {
        machine: await machineInfo(),
        shape: shapeName,
        weights,
        answerTokens,
        single,
        batched,
        batchedText,
        decodeThroughputRatio:
          batched.decodeTokensPerSecond && single.decodeTokensPerSecond
            ? Number((batched.decodeTokensPerSecond / single.decodeTokensPerSecond).toFixed(2))
            : null,
        streamedThroughputRatio: Number((batched.streamedTokensPerSecond / single.streamedTokensPerSecond).toFixed(2)),
        textDecodeThroughputRatio:
          batchedText.decodeTokensPerSecond && single.decodeTokensPerSecond
            ? Number((batchedText.decodeTokensPerSecond / single.decodeTokensPerSecond).toFixed(2))
            : null,
        interTokenLatencyP95Ratio: Number(
          (batched.interTokenLatencyMs.p95 / single.interTokenLatencyMs.p95).toFixed(2),
        ),
        soak,
        serverPeakRssMB,
      };
    } finally {
      await server.stop();
    }
  } finally {
    if (!options.workDir) fs.rmSync(workDir, { recursive: true, force: true });
  }
}
