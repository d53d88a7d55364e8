/**
 * Chat benchmark on random weights of a released InternVL-Chat shape: time to first token for one 448 px tile plus
 * a short question (vision encoder + projector, prefill of 256 image + N text tokens, first logits), then greedy
 * decoding with the KV cache, and peak memory, for float32 and quantized weights.
 *
 * The checkpoint (chat_checkpoint.ts) is really written and loaded through the user path: `InternVLChatModel.load` with
 * `useQuantizedLinears` installed by `configureLlmGraph` / `configureVisionGraph`. Converted and quantized weights
 * go to a weight cache in the work folder; the first load of each configuration fills it (reported separately as
 * `firstLoadSeconds`), and every configuration is then measured in a fresh process whose peak RSS is its own.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../../core/errors.js';
import { WEIGHT_FORMATS, weightFormatHook, type WeightFormat } from '../../core/quantize/formats.js';
import type { CausalLM } from '../../models/llm.js';
import { CHAT_SHAPES, ensureRandomChatCheckpoint, type ChatShape } from './chat_checkpoint.js';
import { runChild } from './chat_child.js';
import { readOnnxProfile, type OnnxProfile, type OpTime } from './profile.js';
import { randomFiller, type StorageDtype } from './random_checkpoint.js';
import { cpuModel, machineInfo, median, quantile } from './stats.js';

export interface ChatBenchOptions {
  shape?: string;
  llm?: WeightFormat;
  vision?: WeightFormat;
  /** Checkpoint storage (default bfloat16, as released). */
  dtype?: StorageDtype;
  /** Text tokens of the question besides the 256 image tokens (default 20). */
  questionTokens?: number;
  /** Greedy tokens timed after the first (default 32). */
  decodeTokens?: number;
  /** Time-to-first-token repetitions after one warm-up (default 5). */
  runs?: number;
  /** Times the `decodeTokens` greedy tokens are decoded from the prompt's cache (default 3). */
  decodeRepeats?: number;
  threads?: number;
  /** Folder holding the random checkpoint and the weight cache; reused when it already has them. */
  workDir?: string;
  /** Only load (fills the weight cache) and report the load time. */
  loadOnly?: boolean;
  /** Run the LLM under onnxruntime's profiler and account for the decode steps' time (`decodeProfile`). */
  profile?: boolean;
  log?: (message: string) => void;
}

/**
 * Where a decode step's time goes, means per step over all decode steps: onnxruntime's kernels; onnxruntime's own
 * time between them (`model_run` − kernels); the Node binding around it (`session.run` in JavaScript − `model_run`:
 * wrapping feeds, copying outputs out, the thread hop); the embedding look-up; and the decoder's JavaScript
 * (feeds, KV write-back, bookkeeping: the step − all of the above). Timed with the profiler on, which adds a little
 * to every node.
 */
export interface DecodeProfile {
  steps: number;
  msPerStep: number;
  ms: { kernels: number; onnxruntime: number; binding: number; embedding: number; decoderJs: number };
  shares: { kernels: number; onnxruntime: number; binding: number; embedding: number; decoderJs: number };
  /** Kernel time per operator type per step. */
  ops: OpTime[];
}

export interface ChatBenchResult {
  shape: string;
  llm: WeightFormat;
  vision: WeightFormat;
  dtype: StorageDtype;
  threads: number;
  /** Model load with a warm weight cache (a fresh process; `firstLoadSeconds` includes converting/quantizing). */
  loadSeconds: number;
  firstLoadSeconds?: number;
  promptTokens: number;
  imageTokens: number;
  /** Medians over `runs` warm runs: vision + embedding + prefill + first logits. */
  timeToFirstTokenSeconds: number;
  visionSeconds: number;
  prefillSeconds: number;
  prefillTokensPerSecond: number;
  /** The first request after loading (first-run allocations included). */
  coldTimeToFirstTokenSeconds: number;
  timeToFirstTokenBestSeconds: number;
  /**
   * Medians over the runs during which this process had all its threads' worth of CPU (share ≥ 0.85): what an
   * unshared machine gives. Null when every run competed with other processes.
   */
  cleanTimeToFirstToken: { runs: number; seconds: number; visionSeconds: number; prefillSeconds: number } | null;
  decodeTokens: number;
  decodeRepeats: number;
  /** `decodeTokens` / wall time, median over the repeats. */
  decodeTokensPerSecond: number;
  decodeMsPerTokenMedian: number;
  decodeMsPerTokenP90: number;
  decodeMsPerTokenMin: number;
  /** As `cleanTimeToFirstToken`, per decoding step. */
  cleanDecode: { steps: number; msPerToken: number; tokensPerSecond: number } | null;
  peakRssMB: number;
  /** Bytes of the LLM's matmul weights held for execution (int4+int8 holds both copies; decoding streams the 4-bit one). */
  llmMatmulWeightsMB: number;
  cpu: string;
  /** CPU seconds / (wall seconds × threads), medians: well below 1 means other processes took the cores. */
  cpuShareTimeToFirstToken: number;
  cpuShareDecode: number;
  /** 1-minute load average after the run. */
  loadAverage: number;
  /** With `profile`: the decode steps' time, accounted (timings of the whole run then include the profiler's). */
  decodeProfile?: DecodeProfile;
}

// ---- one measured configuration ------------------------------------------------------------------------------

function argmax(values: Float32Array, offset: number, width: number): number {
  let best = 0;
  for (let j = 1; j < width; j++) if (values[offset + j] > values[offset + best]) best = j;
  return best;
}

/** Fixed decimals (the profile's `round` keeps significant digits instead). */
const toDigits = (x: number, digits = 4) => Number(x.toFixed(digits));

/** CPU share above which a sample counts as measured on an unshared machine. */
const CLEAN_SHARE = 0.85;

/** Bytes per matmul weight as executed: float32, or the quantized codes plus scales and zero points. */
function llmMatmulBytes(shape: ChatShape, format: WeightFormat): number {
  const l = shape.llm;
  const q = l.heads * l.headDim;
  const kv = l.kvHeads * l.headDim;
  const perLayer = l.hidden * (q + 2 * kv) + q * l.hidden + 3 * l.hidden * l.intermediate;
  const values = l.layers * perLayer + l.vocab * l.hidden;
  // int4 block 32: 16 bytes of codes + 4 of scale + ½ of zero point; int8 per channel: 1 byte per value.
  const perValue = { fp32: 4, int4: 20.5 / 32, int8: 1, 'int4+int8': 1 + 20.5 / 32 }[format];
  return values * perValue;
}

/**
 * Measures one configuration in this process. Call it in a fresh process per configuration for a meaningful
 * `peakRssMB` (`main` does).
 */
export async function runChatBenchmark(options: ChatBenchOptions): Promise<ChatBenchResult | { loadSeconds: number }> {
  const shape = CHAT_SHAPES[options.shape ?? 'internvl2-1b'];
  if (!shape) throw new UsageError(`unknown shape '${options.shape}'; known: ${Object.keys(CHAT_SHAPES).join(', ')}`);
  const log = options.log ?? (() => {});
  const llm = options.llm ?? 'int4';
  const vision = options.vision ?? 'int8';
  const dtype = options.dtype ?? 'bfloat16';
  const threads = options.threads ?? os.availableParallelism();
  const questionTokens = options.questionTokens ?? 20;
  const decodeTokens = options.decodeTokens ?? 32;
  const runs = options.runs ?? 5;
  const decodeRepeats = options.decodeRepeats ?? 3;
  const workDir = options.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `internvl-bench-chat-${shape.name}-`));
  const modelDir = path.join(workDir, `model-${dtype}`);
  ensureRandomChatCheckpoint(modelDir, shape, dtype, log);
  const cacheDir = path.join(workDir, 'cache');

  const { InternVLChatModel } = await import('../../models/internvl_chat.js');
  log(`loading ${shape.name}: LLM ${llm}, vision ${vision}, ${threads} threads`);
  const start = performance.now();
  const profilePrefix = `ort-profile-decode-${process.pid}`;
  const model = await InternVLChatModel.load(modelDir, {
    session: { threads, cacheDir },
    llmSession: {
      threads,
      cacheDir,
      ...(options.profile ? { profileFilePrefix: path.join(workDir, profilePrefix) } : {}),
    },
    configureLlmGraph: weightFormatHook(llm),
    configureVisionGraph: weightFormatHook(vision),
  });
  const loadSeconds = (performance.now() - start) / 1000;
  const accounting = options.profile ? accountDecodeSteps(model.language) : null;
  if (options.loadOnly) {
    await model.release();
    return { loadSeconds: toDigits(loadSeconds, 3) };
  }
  try {
    const size = shape.vision.imageSize;
    const pixels = new Float32Array(3 * size * size);
    randomFiller(7)(pixels, 1);
    const vocab = shape.llm.vocab;
    const imageTokenId = vocab - 1;
    const _H = shape.llm.hidden;
    // Question text around the image block, ids away from the special tokens at the end of the vocabulary.
    const text = Array.from({ length: questionTokens }, (_, i) => 1000 + ((i * 7919) % (vocab - 2000)));
    const half = questionTokens >> 1;
    const ids = [...text.slice(0, half), ...Array(model.tokensPerTile).fill(imageTokenId), ...text.slice(half)];
    const S = ids.length;

    /** Wall time and the CPU share this process got over it: below ~0.85 of all threads, others took cores. */
    const measure = async <T>(work: () => Promise<T>): Promise<{ value: T; seconds: number; utilization: number }> => {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const value = await work();
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      return { value, seconds, utilization: (cpu.user + cpu.system) / 1e6 / (seconds * threads) };
    };
    // One decoder for the whole benchmark: slot 0 holds the prompt, slot 1 each decode repeat's copy of it.
    const decoder = model.language.batchDecoder({ maxSequences: 2, maxLength: S + decodeTokens });
    let promptSequence = decoder.addSequence();
    const decodeSequence = decoder.addSequence();
    const firstToken = async () => {
      decoder.removeSequence(promptSequence);
      promptSequence = decoder.addSequence();
      const t0 = performance.now();
      const features = await model.extractFeature(pixels, 1);
      const t1 = performance.now();
      const embeds = await model.embedWithImages(ids, imageTokenId, features);
      const logits = await decoder.prefill(promptSequence, { embeds });
      const token = argmax(logits, 0, vocab);
      const t2 = performance.now();
      return { token, vision: (t1 - t0) / 1000, prefill: (t2 - t1) / 1000 };
    };
    log('time to first token: cold run');
    const cold = await measure(firstToken);
    const warm: Array<Awaited<ReturnType<typeof measure<Awaited<ReturnType<typeof firstToken>>>>>> = [];
    for (let r = 0; r < runs; r++) {
      const run = await measure(firstToken);
      warm.push(run);
      log(
        `  run ${r + 1}/${runs}: ${run.seconds.toFixed(3)} s (vision ${run.value.vision.toFixed(3)}, prefill ${run.value.prefill.toFixed(3)}; CPU share ${run.utilization.toFixed(2)})`,
      );
    }

    // Decoding restarts from the prompt's cache each repeat, so every repeat times the same positions.
    const prompt = warm[warm.length - 1].value;
    if (accounting) accounting.from = accounting.runs;
    const steps: Array<{ seconds: number; utilization: number }> = [];
    const repeatSeconds: number[] = [];
    for (let repeat = 0; repeat < decodeRepeats; repeat++) {
      let { token } = prompt;
      decoder.copySequence(promptSequence, decodeSequence);
      const started = performance.now();
      for (let i = 0; i < decodeTokens; i++) {
        const step = await measure(() => decoder.decode([decodeSequence], [token]));
        token = argmax(step.value[0], 0, vocab);
        steps.push({ seconds: step.seconds, utilization: step.utilization });
      }
      repeatSeconds.push((performance.now() - started) / 1000);
      log(`  decode ${repeat + 1}/${decodeRepeats}: ${(decodeTokens / repeatSeconds[repeat]).toFixed(1)} tokens/s`);
    }
    const stepMs = steps.map((st) => st.seconds * 1000);
    let decodeProfile: DecodeProfile | undefined;
    if (accounting) {
      model.language.endProfiling();
      const profile = readOnnxProfile(workDir, profilePrefix, accounting.from!);
      decodeProfile = decodeProfileOf(stepMs, accounting, profile);
    }
    const cleanSteps = steps.filter((st) => st.utilization >= CLEAN_SHARE).map((st) => st.seconds * 1000);
    const cleanRuns = warm.filter((w) => w.utilization >= CLEAN_SHARE);
    const decodeSeconds = median(repeatSeconds);
    return {
      shape: shape.name,
      llm,
      vision,
      dtype,
      threads,
      loadSeconds: toDigits(loadSeconds, 3),
      promptTokens: S,
      imageTokens: model.tokensPerTile,
      timeToFirstTokenSeconds: toDigits(median(warm.map((w) => w.seconds))),
      visionSeconds: toDigits(median(warm.map((w) => w.value.vision))),
      prefillSeconds: toDigits(median(warm.map((w) => w.value.prefill))),
      prefillTokensPerSecond: toDigits(S / median(warm.map((w) => w.value.prefill)), 1),
      coldTimeToFirstTokenSeconds: toDigits(cold.seconds),
      timeToFirstTokenBestSeconds: toDigits(Math.min(...warm.map((w) => w.seconds))),
      cleanTimeToFirstToken: cleanRuns.length
        ? {
            runs: cleanRuns.length,
            seconds: toDigits(median(cleanRuns.map((w) => w.seconds))),
            visionSeconds: toDigits(median(cleanRuns.map((w) => w.value.vision))),
            prefillSeconds: toDigits(median(cleanRuns.map((w) => w.value.prefill))),
          }
        : null,
      decodeTokens,
      decodeRepeats,
      decodeTokensPerSecond: toDigits(decodeTokens / decodeSeconds, 2),
      decodeMsPerTokenMedian: toDigits(median(stepMs), 2),
      decodeMsPerTokenP90: toDigits(quantile(stepMs, 0.9), 2),
      decodeMsPerTokenMin: toDigits(Math.min(...stepMs), 2),
      cleanDecode: cleanSteps.length
        ? {
            steps: cleanSteps.length,
            msPerToken: toDigits(median(cleanSteps), 2),
            tokensPerSecond: toDigits(1000 / median(cleanSteps), 2),
          }
        : null,
      peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
      llmMatmulWeightsMB: Math.round(llmMatmulBytes(shape, llm) / 2 ** 20),
      cpu: cpuModel(),
      cpuShareTimeToFirstToken: toDigits(median(warm.map((w) => w.utilization)), 3),
      cpuShareDecode: toDigits(median(steps.map((st) => st.utilization)), 3),
      loadAverage: toDigits(os.loadavg()[0], 2),
      ...(decodeProfile ? { decodeProfile } : {}),
    };
  } finally {
    await model.release();
  }
}

/** JavaScript-side times of the decode steps: the embedding look-ups and the graph runs from run `from` on. */
interface StepAccounting {
  /** Graph runs so far. */
  runs: number;
  /** The first decode step's run (the profile's runs before it are skipped); null while not decoding. */
  from: number | null;
  embeddingMs: number;
  sessionRunMs: number;
}

/**
 * Wraps the model's embedding look-up and graph run to count and time them (the decoder calls each once per
 * step). For benchmarks only: the model object stays changed for the rest of its life.
 */
function accountDecodeSteps(lm: CausalLM): StepAccounting {
  const accounting: StepAccounting = { runs: 0, from: null, embeddingMs: 0, sessionRunMs: 0 };
  const timed =
    <A extends unknown[], R>(work: (...args: A) => Promise<R>, field: 'embeddingMs' | 'sessionRunMs') =>
    async (...args: A): Promise<R> => {
      const t0 = performance.now();
      try {
        return await work(...args);
      } finally {
        if (accounting.from !== null) accounting[field] += performance.now() - t0;
        if (field === 'sessionRunMs') accounting.runs++;
      }
    };
  lm.embedTokens = timed(lm.embedTokens.bind(lm), 'embeddingMs');
  lm.run = timed(lm.run.bind(lm), 'sessionRunMs');
  return accounting;
}

function decodeProfileOf(stepMs: number[], accounting: StepAccounting, profile: OnnxProfile): DecodeProfile {
  const steps = stepMs.length;
  const perStep = (total: number) => toDigits(total / steps, 3);
  const total = stepMs.reduce((a, b) => a + b, 0);
  const modelRun = profile.modelRunMs.reduce((a, b) => a + b, 0);
  const kernels = profile.kernelMs * profile.runs;
  const ms = {
    kernels: perStep(kernels),
    onnxruntime: perStep(modelRun - kernels),
    binding: perStep(accounting.sessionRunMs - modelRun),
    embedding: perStep(accounting.embeddingMs),
    decoderJs: perStep(total - accounting.sessionRunMs - accounting.embeddingMs),
  };
  const share = (x: number) => toDigits((x * steps) / total, 3);
  return {
    steps,
    msPerStep: perStep(total),
    ms,
    shares: {
      kernels: share(ms.kernels),
      onnxruntime: share(ms.onnxruntime),
      binding: share(ms.binding),
      embedding: share(ms.embedding),
      decoderJs: share(ms.decoderJs),
    },
    ops: profile.ops,
  };
}

// ---- the matrix of configurations, one process each ------------------------------------------------------------

export interface ChatMatrixOptions extends Omit<ChatBenchOptions, 'llm' | 'vision' | 'loadOnly'> {
  /** Configurations as `llm/vision` pairs, e.g. `fp32/fp32`, `int4/int8`. */
  configs: Array<{ llm: WeightFormat; vision: WeightFormat }>;
  /** Keep the work folder (checkpoint and weight cache) for later runs. */
  keep?: boolean;
}

export async function runChatMatrix(
  options: ChatMatrixOptions,
): Promise<{ machine: Record<string, unknown>; results: ChatBenchResult[] }> {
  const log = options.log ?? (() => {});
  const shape = CHAT_SHAPES[options.shape ?? 'internvl2-1b'];
  if (!shape) throw new UsageError(`unknown shape '${options.shape}'; known: ${Object.keys(CHAT_SHAPES).join(', ')}`);
  const workDir = options.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `internvl-bench-chat-${shape.name}-`));
  const dtype = options.dtype ?? 'bfloat16';
  try {
    // Written here once, so that no child's peak RSS includes generating it.
    ensureRandomChatCheckpoint(path.join(workDir, `model-${dtype}`), shape, dtype, log);
    const results: ChatBenchResult[] = [];
    for (const config of options.configs) {
      const base = { ...options, ...config, workDir, log: undefined };
      log(`${shape.name} LLM ${config.llm} / vision ${config.vision}: first load (fills the weight cache when cold)`);
      const first = await runChild({ ...base, loadOnly: true });
      log(`  first load ${first.loadSeconds.toFixed(1)} s; measuring in a fresh process`);
      const result = (await runChild(base)) as ChatBenchResult;
      result.firstLoadSeconds = first.loadSeconds;
      results.push(result);
      log(
        `  TTFT ${result.timeToFirstTokenSeconds.toFixed(3)} s (clean: ${result.cleanTimeToFirstToken?.seconds.toFixed(3) ?? 'none'}), ` +
          `decode ${result.decodeTokensPerSecond.toFixed(1)} tokens/s (clean: ${result.cleanDecode?.tokensPerSecond.toFixed(1) ?? 'none'}), peak RSS ${result.peakRssMB} MB`,
      );
    }
    return { machine: await machineInfo(), results };
  } finally {
    if (!options.keep && !options.workDir) fs.rmSync(workDir, { recursive: true, force: true });
    else log(`work folder kept: ${workDir}`);
  }
}

export function parseConfigs(text: string): Array<{ llm: WeightFormat; vision: WeightFormat }> {
  return text.split(',').map((pair) => {
    const [llm, vision = 'fp32'] = pair.trim().split('/');
    if (
      !(WEIGHT_FORMATS as readonly string[]).includes(llm) ||
      !(WEIGHT_FORMATS as readonly string[]).includes(vision)
    ) {
      throw new UsageError(`configuration '${pair}' is not llm/vision with each of ${WEIGHT_FORMATS.join(', ')}`);
    }
    return { llm: llm as WeightFormat, vision: vision as WeightFormat };
  });
}
