/**
 * Text generation on a `CausalLM`: one prefill over the prompt, then one decode step per token with the KV cache
 * kept between steps. Greedy or sampled (temperature, top-k, top-p, repetition penalty; seeded), stop tokens,
 * streaming as an async iterator, cancellation through an AbortSignal, and batches with left padding.
 */
import type { CausalLM, KvCache } from '../models/llm.js';
import { UsageError } from '../core/errors.js';

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
  signal?: AbortSignal;
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
    if (options.temperature !== undefined && options.temperature <= 0 && options.doSample) throw new UsageError('temperature must be > 0 when sampling');
    if (options.topP !== undefined && !(options.topP > 0 && options.topP <= 1)) throw new UsageError('top_p must be in (0, 1]');
    this.random = seededRandom(options.seed ?? 0);
  }

  choose(logits: Float32Array, generated: readonly number[]): number {
    const scores = Float32Array.from(logits);
    for (const id of this.options.suppressTokenIds ?? []) scores[id] = -Infinity;
    const penalty = this.options.repetitionPenalty ?? 1;
    if (penalty !== 1) {
      for (const id of new Set(generated)) scores[id] = scores[id] < 0 ? scores[id] * penalty : scores[id] / penalty;
    }
    if (!this.options.doSample) return argmax(scores);
    const temperature = this.options.temperature ?? 1;
    let candidates = Array.from(scores.keys()).filter((i) => scores[i] > -Infinity).sort((a, b) => scores[b] - scores[a]);
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
export async function* streamTokens(lm: CausalLM, prompt: Prompt, options: GenerationOptions = {}): AsyncGenerator<number, FinishReason> {
  const reasons: FinishReason[] = [];
  for await (const tokens of streamBatch(lm, [prompt], options, reasons)) yield tokens[0];
  return reasons[0] ?? 'length';
}

export async function generate(lm: CausalLM, prompt: Prompt, options: GenerationOptions = {}): Promise<GenerationResult> {
  const [result] = await generateBatch(lm, [prompt], options);
  return result;
}

/** Generates for several prompts at once (left padding), each stopping on its own. */
export async function generateBatch(lm: CausalLM, prompts: Prompt[], options: GenerationOptions = {}): Promise<GenerationResult[]> {
  const ids: number[][] = prompts.map(() => []);
  const reasons: FinishReason[] = [];
  for await (const tokens of streamBatch(lm, prompts, options, reasons)) {
    tokens.forEach((token, b) => { if (token >= 0) ids[b].push(token); });
  }
  return prompts.map((p, b) => ({ ids: ids[b], finishReason: reasons[b] ?? 'length', promptTokens: p.ids.length }));
}

/**
 * The decoding loop. Yields one token per prompt per step (−1 for prompts already finished) and fills
 * `reasons` with each prompt's finish reason.
 */
async function* streamBatch(lm: CausalLM, prompts: Prompt[], options: GenerationOptions, reasons: FinishReason[]): AsyncGenerator<number[]> {
  if (prompts.length === 0) return;
  const H = lm.config.hiddenSize;
  const B = prompts.length;
  const longest = Math.max(...prompts.map((p) => p.ids.length));
  if (longest === 0) throw new UsageError('cannot generate from an empty prompt');
  for (const p of prompts) if (p.embeds.length !== p.ids.length * H) throw new UsageError(`prompt embeddings hold ${p.embeds.length / H} rows for ${p.ids.length} ids`);
  const maxNewTokens = options.maxNewTokens ?? 256;
  if (maxNewTokens <= 0) {
    prompts.forEach((_, b) => { reasons[b] = 'length'; });
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
    embeds, batch: B, seq: longest, positions, attentionMask: Uint8Array.from(mask.flat()),
    logitIndices: prompts.map((_, b) => b * longest + longest - 1), cache,
  });
  cache = next;
  const V = lm.config.vocabSize;
  for (let step = 0; ; step++) {
    if (options.signal?.aborted) {
      finished.forEach((done, b) => { if (!done) reasons[b] = 'cancelled'; });
      return;
    }
    const tokens = prompts.map((_, b) => {
      if (finished[b]) return -1;
      const token = chooser.choose(logits.subarray(b * V, (b + 1) * V), generated[b]);
      generated[b].push(token);
      if (stop.has(token)) { finished[b] = true; reasons[b] = 'stop'; }
      else if (generated[b].length >= maxNewTokens) { finished[b] = true; reasons[b] = 'length'; }
      return token;
    });
    yield tokens;
    if (finished.every(Boolean)) return;
    const feed = tokens.map((t) => (t < 0 ? 0 : t));
    mask.forEach((row) => row.push(1));
    const stepPositions = Int32Array.from(nextPosition.map((p) => p));
    nextPosition.forEach((_, b) => nextPosition[b]++);
    ({ logits, cache } = await lm.step({
      embeds: lm.embedTokens(feed), batch: B, seq: 1, positions: stepPositions,
      attentionMask: Uint8Array.from(mask.flat()), logitIndices: prompts.map((_, b) => b), cache,
    }));
  }
}
