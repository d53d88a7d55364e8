/**
 * The browser benchmark: the same random-weight InternVL-Chat checkpoint (bf16, as released) measured in headless
 * Chromium on onnxruntime-web and in Node on onnxruntime-node, one configuration after the other in the same run,
 * so that the two can be compared on a shared machine as a ratio. In the browser the checkpoint is served over
 * HTTP on 127.0.0.1 (range requests, as from the Hub) and converted/quantized in the page; each configuration gets
 * a fresh browser, whose renderer's peak RSS is its peak memory.
 *
 * Also reported: the size of the `internvl-ts/web` bundle (minified, gzip), onnxruntime-web not included.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { WeightFormat } from '../../core/quantize/formats.js';
import type { WebDevice } from '../../web/runtime.js';
import { bundle } from '../browser/bundle.js';
import { openHarness } from '../browser/harness.js';
import type { ChatBenchRequest, ChatBenchTimings } from '../browser/protocol.js';
import type { ChatBenchResult } from './chat.js';
import { CHAT_SHAPES, ensureRandomChatCheckpoint } from './chat_checkpoint.js';
import { runChild } from './chat_child.js';
import { machineInfo, median } from './stats.js';

export interface WebBenchOptions {
  shape?: string;
  configs: Array<{ llm: WeightFormat; vision: WeightFormat }>;
  device?: WebDevice;
  threads?: number;
  runs?: number;
  questionTokens?: number;
  decodeTokens?: number;
  /** Skip the Node measurement of each configuration. */
  browserOnly?: boolean;
  workDir?: string;
  log?: (message: string) => void;
}

export interface WebBenchResult {
  llm: WeightFormat;
  vision: WeightFormat;
  browser:
    | {
        device: WebDevice;
        threads: number;
        /** Load from the served checkpoint: range reads, bf16 conversion and quantization in the page. */
        loadSeconds: number;
        coldTimeToFirstTokenSeconds: number;
        /** One 448 px tile through InternViT-300M and the projector (median of the warm runs). */
        visionSecondsPerTile: number;
        prefillSeconds: number;
        promptTokens: number;
        decodeTokensPerSecond: number;
        decodeMsPerTokenMedian: number;
        /** The renderer process's peak resident memory (onnxruntime-web's wasm heap lives there). */
        rendererPeakRssMB: number;
      }
    | { error: string };
  node?: Pick<
    ChatBenchResult,
    | 'loadSeconds'
    | 'firstLoadSeconds'
    | 'visionSeconds'
    | 'prefillSeconds'
    | 'decodeTokensPerSecond'
    | 'decodeMsPerTokenMedian'
    | 'peakRssMB'
    | 'threads'
  >;
}

export async function runWebBench(options: WebBenchOptions): Promise<Record<string, unknown>> {
  const log = options.log ?? (() => {});
  const shape = CHAT_SHAPES[options.shape ?? 'internvl2-1b'];
  const workDir = options.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'internvl-bench-web-'));
  const modelDir = path.join(workDir, 'model-bfloat16');
  const threads = options.threads ?? os.availableParallelism();
  const request = {
    runs: options.runs ?? 3,
    questionTokens: options.questionTokens ?? 20,
    decodeTokens: options.decodeTokens ?? 16,
  };
  try {
    ensureRandomChatCheckpoint(modelDir, shape, 'bfloat16', log);
    const results: WebBenchResult[] = [];
    for (const config of options.configs) {
      log(`${shape.name} LLM ${config.llm} / vision ${config.vision}: browser (${options.device ?? 'wasm'})`);
      const browser = await measureInBrowser(modelDir, { ...request, ...config }, options.device ?? 'wasm', threads);
      log(`  ${JSON.stringify(browser)}`);
      let node: WebBenchResult['node'];
      if (!options.browserOnly) {
        log('  node');
        const nodeOptions = { ...request, ...config, shape: shape.name, threads, workDir, decodeRepeats: 1 };
        const first = await runChild({ ...nodeOptions, loadOnly: true });
        const full = (await runChild(nodeOptions)) as ChatBenchResult;
        node = {
          threads: full.threads,
          loadSeconds: full.loadSeconds,
          firstLoadSeconds: first.loadSeconds,
          visionSeconds: full.visionSeconds,
          prefillSeconds: full.prefillSeconds,
          decodeTokensPerSecond: full.decodeTokensPerSecond,
          decodeMsPerTokenMedian: full.decodeMsPerTokenMedian,
          peakRssMB: full.peakRssMB,
        };
        log(`  ${JSON.stringify(node)}`);
      }
      results.push({ ...config, browser, node });
    }
    return {
      machine: { ...(await machineInfo()), loadAverage: os.loadavg()[0] },
      shape: shape.name,
      bundle: await bundleSize(),
      results,
    };
  } finally {
    if (!options.workDir) fs.rmSync(workDir, { recursive: true, force: true });
  }
}

async function measureInBrowser(
  modelDir: string,
  request: ChatBenchRequest,
  device: WebDevice,
  threads: number,
): Promise<WebBenchResult['browser']> {
  const harness = await openHarness('harness_page', { device, threads });
  try {
    const url = harness.server.mount('/model', modelDir);
    let timings: ChatBenchTimings;
    try {
      timings = await harness.call('benchChat', url, request);
    } catch (error) {
      return { error: (error as Error).message.split('\n')[0] };
    }
    return {
      device: harness.platform.device,
      threads: harness.platform.threads,
      loadSeconds: round(timings.loadSeconds, 2),
      coldTimeToFirstTokenSeconds: round(timings.coldSeconds, 3),
      visionSecondsPerTile: round(median(timings.visionSeconds), 3),
      prefillSeconds: round(median(timings.prefillSeconds), 3),
      promptTokens: timings.promptTokens,
      decodeTokensPerSecond: round(1000 / median(timings.decodeStepMs), 2),
      decodeMsPerTokenMedian: round(median(timings.decodeStepMs), 1),
      rendererPeakRssMB: rendererPeakRssMB(),
    };
  } finally {
    await harness.close();
  }
}

/** The largest peak RSS (VmHWM) among this process's Chromium renderer descendants, in MB. */
function rendererPeakRssMB(): number {
  const parents = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readOr(`/proc/${entry}/stat`);
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid) parents.set(Number(entry), ppid);
  }
  const descends = (pid: number): boolean => {
    for (let p = parents.get(pid); p !== undefined; p = parents.get(p)) if (p === process.pid) return true;
    return false;
  };
  let peakKb = 0;
  for (const pid of parents.keys()) {
    if (!descends(pid) || !readOr(`/proc/${pid}/cmdline`).includes('--type=renderer')) continue;
    const hwm = /VmHWM:\s+(\d+) kB/.exec(readOr(`/proc/${pid}/status`));
    if (hwm) peakKb = Math.max(peakKb, Number(hwm[1]));
  }
  return Math.round(peakKb / 1024);
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** `internvl-ts/web` minified, and gzip -9 of it (onnxruntime-web and its .wasm are the app's, not counted). */
async function bundleSize(): Promise<{ minifiedKB: number; gzipKB: number }> {
  const entry = fileURLToPath(new URL('../../web/index.ts', import.meta.url));
  const code = fs.existsSync(entry)
    ? await bundle(entry, { minify: true })
    : fs.readFileSync(fileURLToPath(new URL('../../web/internvl-web.js', import.meta.url)));
  return {
    minifiedKB: Math.round(code.byteLength / 1024),
    gzipKB: Math.round(gzipSync(code, { level: 9 }).byteLength / 1024),
  };
}

const round = (x: number, digits: number) => Number(x.toFixed(digits));
