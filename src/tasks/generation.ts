/**
 * Text generation on a `CausalLM`: one prefill over the prompt, then one decode step per token with the KV cache
 * kept between steps. Greedy or sampled (temperature, top-k, top-p, repetition penalty; seeded), stop tokens,
 * streaming as an async iterator, cancellation through an AbortSignal, and batches with left padding.
 */
import { Tensor } from '../core/session.js';
import type { DecoderStep, KvCache } from '../models/llm.js';
import { UsageError } from '../core/errors.js';

/** What generation needs of a model: `CausalLM`, or a wrapper that adds inputs to its steps (QLLaMA captioning). */
export interface Decoder {
  readonly config: { vocabSize: number; hiddenSize: number };
  embedTokens(ids: readonly number[]): Float32Array;
  emptyCache(batch: number): KvCache;
  step(step: DecoderStep): Promise<{ logits: Float32Array; cache: KvCache }>;
}

export interface GenerationOptions {
  maxNewTokens?: number;
  /** Sample instead of taking the argmax (default false: greedy, as the official chat examples). */
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  /** > 1 discourages tokens already generated (transformers' rule: divide positive logits, multiply negative). */
  repetitionPenalty?: number;
  seed?: number;
  /** Generation ends after any of these (the template's separator, EOS). */
  stopTokenIds?: number[];
  /** Never chosen (e.g. `<IMG_CONTEXT>`). */
  suppressTokenIds?: number[];
  /** The stop tokens are not chosen before this many new tokens. */
  minNewTokens?: number;
  signal?: AbortSignal;
  /** Sees each prompt's raw logits before every choice (verification, debugging). */
  onLogits?: (prompt: number, step: number, logits: Float32Array) => void;
}

/** A prompt: its token ids and their embeddings ([ids.length, hidden]; image features already spliced in). */
export interface Prompt {
  ids: number[];
  embeds: Float32Array;
}

export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface GenerationResult {
  ids: number[];
  finishReason: FinishReason;
  promptTokens: number;
}

/** A small seeded PRNG (mulberry32): reproducible sampling across runs and machines. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Chooses the next token from one row of logits. */
export class TokenChooser {
  private readonly random: () => number;

  constructor(private readonly options: GenerationOptions) {
    if (options.temperature !== undefined && options.temperature <= 0 && options.doSample)
      throw new UsageError('temperature must be > 0 when sampling');
    if (options.topP !== undefined && !(options.topP > 0 && options.topP <= 1))
      throw new UsageError('top_p must be in (0, 1]');
    this.random = seededRandom(options.seed ?? 0);
  }

  choose(logits: Float32Array, generated: readonly number[]): number {
    const scores = Float32Array.from(logits);
    for (const id of this.options.suppressTokenIds ?? []) scores[id] = -Infinity;
    if (generated.length < (this.options.minNewTokens ?? 0))
      for (const id of this.options.stopTokenIds ?? []) scores[id] = -Infinity;
    const penalty = this.options.repetitionPenalty ?? 1;
    if (penalty !== 1) {
      for (const id of new Set(generated)) scores[id] = scores[id] < 0 ? scores[id] * penalty : scores[id] / penalty;
    }
    if (!this.options.doSample) return argmax(scores);
    const temperature = this.options.temperature ?? 1;
    let candidates = Array.from(scores.keys())
      .filter((i) => scores[i] > -Infinity)
      .sort((a, b) => scores[b] - scores[a]);
    if (this.options.topK && this.options.topK > 0) candidates = candidates.slice(0, this.options.topK);
    const max = scores[candidates[0]];
    let probabilities = candidates.map((i) => Math.exp((scores[i] - max) / temperature));
    let total = probabilities.reduce((a, b) => a + b, 0);
    probabilities = probabilities.map((p) => p / total);
    const topP = this.options.topP ?? 1;
    if (topP < 1) {
      let cumulative = 0;
      let keep = 0;
      // Keep the smallest prefix whose mass reaches top_p (at least one token).
      while (keep < probabilities.length && (keep === 0 || cumulative < topP)) cumulative += probabilities[keep++];
      candidates = candidates.slice(0, keep);
      probabilities = probabilities.slice(0, keep);
      total = probabilities.reduce((a, b) => a + b, 0);
      probabilities = probabilities.map((p) => p / total);
    }
    let r = this.random();
    for (let i = 0; i < candidates.length; i++) {
      r -= probabilities[i];
      if (r <= 0) return candidates[i];
    }
    return candidates[candidates.length - 1];
  }
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * Streams generated token ids as they come. The returned generator's `return` value is the finish reason.
 */
export async function* streamTokens(
  lm: Decoder,
  prompt: Prompt,
  options: GenerationOptions = {},
): AsyncGenerator<number, FinishReason> {
  const reasons: FinishReason[] = [];
  for await (const tokens of streamBatch(lm, [prompt], options, reasons)) yield tokens[0];
  return reasons[0] ?? 'length';
}

export async function generate(
  lm: Decoder,
  prompt: Prompt,
  options: GenerationOptions = {},
): Promise<GenerationResult> {
  const [result] = await generateBatch(lm, [prompt], options);
  return result;
}

/** Generates for several prompts at once (left padding), each stopping on its own. */
export async function generateBatch(
  lm: Decoder,
  prompts: Prompt[],
  options: GenerationOptions = {},
): Promise<GenerationResult[]> {
  const ids: number[][] = prompts.map(() => []);
  const reasons: FinishReason[] = [];
  for await (const tokens of streamBatch(lm, prompts, options, reasons)) {
    tokens.forEach((token, b) => {
      if (token >= 0) ids[b].push(token);
    });
  }
  return prompts.map((p, b) => ({ ids: ids[b], finishReason: reasons[b] ?? 'length', promptTokens: p.ids.length }));
}

/**
 * The decoding loop. Yields one token per prompt per step (−1 for prompts already finished) and fills
 * `reasons` with each prompt's finish reason.
 */
async function* streamBatch(
  lm: Decoder,
  prompts: Prompt[],
  options: GenerationOptions,
  reasons: FinishReason[],
): AsyncGenerator<number[]> {
  if (prompts.length === 0) return;
  const H = lm.config.hiddenSize;
  const B = prompts.length;
  const longest = Math.max(...prompts.map((p) => p.ids.length));
  if (longest === 0) throw new UsageError('cannot generate from an empty prompt');
  for (const p of prompts)
    if (p.embeds.length !== p.ids.length * H)
      throw new UsageError(`prompt embeddings hold ${p.embeds.length / H} rows for ${p.ids.length} ids`);
  const maxNewTokens = options.maxNewTokens ?? 256;
  if (maxNewTokens <= 0) {
    prompts.forEach((_, b) => {
      reasons[b] = 'length';
    });
    return;
  }
  const stop = new Set(options.stopTokenIds ?? []);
  const chooser = new TokenChooser(options);

  // Left padding: row b starts at longest − length; pads are masked out and never attended to.
  const embeds = new Float32Array(B * longest * H);
  const mask: number[][] = [];
  const positions = new Int32Array(B * longest);
  prompts.forEach((p, b) => {
    const offset = longest - p.ids.length;
    embeds.set(p.embeds, (b * longest + offset) * H);
    mask.push([...new Array(offset).fill(0), ...new Array(p.ids.length).fill(1)]);
    for (let s = 0; s < longest; s++) positions[b * longest + s] = Math.max(s - offset, 0);
  });
  const nextPosition = prompts.map((p) => p.ids.length);
  const generated: number[][] = prompts.map(() => []);
  const finished = new Array<boolean>(B).fill(false);

  let cache: KvCache = lm.emptyCache(B);
  let { logits, cache: next } = await lm.step({
    embeds,
    batch: B,
    seq: longest,
    positions,
    attentionMask: Uint8Array.from(mask.flat()),
    logitIndices: prompts.map((_, b) => b * longest + longest - 1),
    cache,
  });
  cache = next;
  const V = lm.config.vocabSize;
  for (let step = 0; ; step++) {
    if (options.signal?.aborted) {
      finished.forEach((done, b) => {
        if (!done) reasons[b] = 'cancelled';
      });
      return;
    }
    const tokens = prompts.map((_, b) => {
      if (finished[b]) return -1;
      const row = logits.subarray(b * V, (b + 1) * V);
      options.onLogits?.(b, step, row);
      const token = chooser.choose(row, generated[b]);
      generated[b].push(token);
      if (stop.has(token)) {
        finished[b] = true;
        reasons[b] = 'stop';
      } else if (generated[b].length >= maxNewTokens) {
        finished[b] = true;
        reasons[b] = 'length';
      }
      return token;
    });
    yield tokens;
    if (finished.every(Boolean)) return;
    const feed = tokens.map((t) => (t < 0 ? 0 : t));
    mask.forEach((row) => row.push(1));
    const stepPositions = Int32Array.from(nextPosition.map((p) => p));
    nextPosition.forEach((_, b) => nextPosition[b]++);
    ({ logits, cache } = await lm.step({
      embeds: lm.embedTokens(feed),
      batch: B,
      seq: 1,
      positions: stepPositions,
      attentionMask: Uint8Array.from(mask.flat()),
      logitIndices: prompts.map((_, b) => b),
      cache,
    }));
  }
}

export interface BeamSearchOptions {
  numBeams?: number;
  maxNewTokens?: number;
  /** EOS is forbidden before this many new tokens. */
  minNewTokens?: number;
  /** Hypothesis score = sum of log-probabilities / length^lengthPenalty (transformers' default 1). */
  lengthPenalty?: number;
  stopTokenIds?: number[];
  suppressTokenIds?: number[];
  signal?: AbortSignal;
}

/** Rows of every cache tensor picked by `rows` (beam reordering). */
export function reorderCache(cache: KvCache, rows: readonly number[]): KvCache {
  const pick = (tensor: Tensor) => {
    const [batch, ...rest] = tensor.dims as number[];
    const stride = rest.reduce((a, b) => a * b, 1);
    const data = tensor.data as Float32Array;
    const out = new Float32Array(rows.length * stride);
    rows.forEach((row, i) => {
      if (row >= batch) throw new UsageError(`cache row ${row} out of ${batch}`);
      out.set(data.subarray(row * stride, (row + 1) * stride), i * stride);
    });
    return new Tensor('float32', out, [rows.length, ...rest]);
  };
  return { keys: cache.keys.map(pick), values: cache.values.map(pick), length: cache.length };
}

function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  const logSum = max + Math.log(sum);
  return Float64Array.from(row, (v) => v - logSum);
}

/**
 * Beam search with transformers' rules: each step keeps the 2·beams best continuations of all beams; a
 * continuation ending in a stop token becomes a finished hypothesis (scored sum-logprob / length^penalty) when it
 * ranks among the first `beams`; search ends when `beams` hypotheses are finished and no open beam can beat the
 * worst of them, or at `maxNewTokens`. Returns the best hypothesis (stop token included).
 */
export async function beamSearch(
  lm: Decoder,
  prompt: Prompt,
  options: BeamSearchOptions = {},
): Promise<GenerationResult> {
  const beams = options.numBeams ?? 5;
  const maxNewTokens = options.maxNewTokens ?? 30;
  const minNewTokens = options.minNewTokens ?? 0;
  const lengthPenalty = options.lengthPenalty ?? 1;
  const stop = new Set(options.stopTokenIds ?? []);
  const V = lm.config.vocabSize;
  const S = prompt.ids.length;
  const finished: Array<{ ids: number[]; score: number }> = [];
  const addFinished = (ids: number[], logProb: number) => {
    const score = logProb / ids.length ** lengthPenalty;
    if (finished.length < beams || score > finished[finished.length - 1].score) {
      finished.push({ ids, score });
      finished.sort((a, b) => b.score - a.score);
      if (finished.length > beams) finished.pop();
    }
  };

  // One prefill; the single live beam is copied into the first step's continuations by the cache reorder.
  let { logits, cache } = await lm.step({
    embeds: prompt.embeds,
    batch: 1,
    seq: S,
    positions: Int32Array.from({ length: S }, (_, i) => i),
    attentionMask: new Uint8Array(S).fill(1),
    logitIndices: [S - 1],
    cache: lm.emptyCache(1),
  });
  let open = [{ ids: [] as number[], logProb: 0 }];
  let rowLogits = [logits];
  for (let step = 0; step < maxNewTokens; step++) {
    if (options.signal?.aborted)
      return { ids: finished[0]?.ids ?? open[0].ids, finishReason: 'cancelled', promptTokens: S };
    const candidates: Array<{ beam: number; token: number; logProb: number }> = [];
    open.forEach((beam, b) => {
      const scores = logSoftmax(rowLogits[b]);
      for (const id of options.suppressTokenIds ?? []) scores[id] = -Infinity;
      if (step < minNewTokens) for (const id of stop) scores[id] = -Infinity;
      // Keep this beam's best 2·beams tokens; the global best 2·beams are among them.
      const best = topIndices(scores, 2 * beams);
      for (const token of best) candidates.push({ beam: b, token, logProb: beam.logProb + scores[token] });
    });
    candidates.sort((a, b) => b.logProb - a.logProb);
    const next: Array<{ ids: number[]; logProb: number; beam: number }> = [];
    for (const [rank, c] of candidates.slice(0, 2 * beams).entries()) {
      const ids = [...open[c.beam].ids, c.token];
      if (stop.has(c.token)) {
        if (rank < beams) addFinished(ids, c.logProb);
      } else if (next.length < beams) {
        next.push({ ids, logProb: c.logProb, beam: c.beam });
      }
    }
    const bestOpen = next[0]?.logProb ?? -Infinity;
    const done =
      finished.length >= beams && finished[finished.length - 1].score >= bestOpen / (step + 1) ** lengthPenalty;
    if (done || next.length === 0 || step === maxNewTokens - 1) {
      for (const beam of next) addFinished(beam.ids, beam.logProb);
      const best = finished[0];
      return {
        ids: best.ids,
        finishReason: stop.has(best.ids[best.ids.length - 1]) ? 'stop' : 'length',
        promptTokens: S,
      };
    }
    cache = reorderCache(
      cache,
      next.map((n) => n.beam),
    );
    open = next;
    const tokens = next.map((n) => n.ids[n.ids.length - 1]);
    const total = S + step + 1;
    ({ logits, cache } = await lm.step({
      embeds: lm.embedTokens(tokens),
      batch: next.length,
      seq: 1,
      positions: new Int32Array(next.length).fill(S + step),
      attentionMask: new Uint8Array(next.length * total).fill(1),
      logitIndices: next.map((_, i) => i),
      cache,
    }));
    rowLogits = next.map((_, i) => logits.subarray(i * V, (i + 1) * V));
  }
  return { ids: finished[0]?.ids ?? [], finishReason: 'length', promptTokens: S };
}

function topIndices(values: Float64Array, k: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < values.length; i++) {
    if (values[i] === -Infinity) continue;
    if (out.length < k) {
      out.push(i);
      out.sort((a, b) => values[b] - values[a]);
      continue;
    }
    if (values[i] > values[out[k - 1]]) {
      out[k - 1] = i;
      out.sort((a, b) => values[b] - values[a]);
    }
  }
  return out;
}
