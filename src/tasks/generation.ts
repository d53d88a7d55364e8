/**
 * Text generation on a `CausalLM` through its batch decoder: one prefill per prompt, then one batched decode step
 * per token over the prompts still running, each with its own KV cache. Greedy or sampled (temperature, top-k, top-p,
 * repetition penalty; seeded), stop tokens, streaming as an async iterator, cancellation through an AbortSignal,
 * beam search, and a check of prompt + new tokens against the model's context before any work.
 */
import type { BatchDecoder, BatchDecoderOptions, TokenInput } from '../models/decoder.js';
import { UsageError } from '../core/errors.js';

/** What generation needs of a model: `CausalLM`, or a source whose sequences start with a prefix (QLLaMA captions). */
export interface DecoderSource {
  readonly config: { vocabSize: number };
  /** Positions a prompt and its new tokens may take together. */
  readonly contextLength: number;
  batchDecoder(options: BatchDecoderOptions): BatchDecoder;
}

/** New tokens when `maxNewTokens` is not given (capped by the context). */
export const DEFAULT_MAX_NEW_TOKENS = 1024;

export interface GenerationOptions {
  maxNewTokens?: number;
  /** Sample instead of taking the argmax (default false: greedy, as the official chat examples). */
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  /** > 1 discourages tokens already generated (transformers' rule: divide positive logits, multiply negative). */
  repetitionPenalty?: number;
  /** OpenAI's rule, in [-2, 2]: each generated token's logit is lowered by this times its count so far. */
  frequencyPenalty?: number;
  /** OpenAI's rule, in [-2, 2]: each token generated at least once has its logit lowered by this. */
  presencePenalty?: number;
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

/**
 * A prompt: its token ids and, where they are not the plain token embeddings, its embeddings ([ids.length, hidden];
 * image features already spliced in).
 */
export interface Prompt {
  ids: number[];
  embeds?: Float32Array;
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
    checkGenerationOptions(options);
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
    const frequency = this.options.frequencyPenalty ?? 0;
    const presence = this.options.presencePenalty ?? 0;
    if (frequency !== 0 || presence !== 0) {
      const counts = new Map<number, number>();
      for (const id of generated) counts.set(id, (counts.get(id) ?? 0) + 1);
      for (const [id, count] of counts) scores[id] -= count * frequency + presence;
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

/** Refuses option values that would sample nonsense or never end, naming the option. */
export function checkGenerationOptions(options: GenerationOptions & BeamSearchOptions): void {
  const count = (name: keyof GenerationOptions | 'numBeams', min: number) => {
    const value = (options as Record<string, unknown>)[name];
    if (value !== undefined && !(typeof value === 'number' && Number.isInteger(value) && value >= min))
      throw new UsageError(`${name} must be an integer ≥ ${min}, not ${JSON.stringify(value) ?? String(value)}`);
  };
  const real = (name: keyof GenerationOptions, ok: (v: number) => boolean, rule: string) => {
    const value = options[name];
    if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && ok(value)))
      throw new UsageError(`${name} must be ${rule}, not ${JSON.stringify(value) ?? String(value)}`);
  };
  count('maxNewTokens', 0);
  count('minNewTokens', 0);
  count('topK', 0);
  count('numBeams', 1);
  real('temperature', (v) => (options.doSample ? v > 0 : v >= 0), options.doSample ? '> 0 when sampling' : '≥ 0');
  real('topP', (v) => v > 0 && v <= 1, 'in (0, 1]');
  real('repetitionPenalty', (v) => v > 0, '> 0');
  real('frequencyPenalty', (v) => v >= -2 && v <= 2, 'in [-2, 2]');
  real('presencePenalty', (v) => v >= -2 && v <= 2, 'in [-2, 2]');
  real('seed', () => true, 'a finite number');
  if (options.lengthPenalty !== undefined && !Number.isFinite(options.lengthPenalty))
    throw new UsageError(`lengthPenalty must be a finite number, not ${String(options.lengthPenalty)}`);
}

/**
 * The new tokens a prompt gets: `maxNewTokens` (default: up to DEFAULT_MAX_NEW_TOKENS, ending where the context
 * ends), checked against the context so that nothing runs for a request that cannot fit.
 */
export function newTokenBudget(
  contextLength: number,
  promptTokens: number,
  maxNewTokens: number | undefined,
  detail: { imageTokens?: number } = {},
): number {
  const images = detail.imageTokens ? ` (${detail.imageTokens} of them image tokens)` : '';
  const shorter = detail.imageTokens
    ? 'use fewer tiles or frames (--max-tiles, --frames) or a shorter text'
    : 'use a shorter text';
  if (promptTokens >= contextLength)
    throw new UsageError(
      `the prompt takes ${promptTokens} tokens${images} but the model's context holds ${contextLength} ` +
        `(max_position_embeddings), with room for at least one new token needed: ${shorter}`,
    );
  if (maxNewTokens === undefined) return Math.min(DEFAULT_MAX_NEW_TOKENS, contextLength - promptTokens);
  if (promptTokens + maxNewTokens > contextLength)
    throw new UsageError(
      `the prompt takes ${promptTokens} tokens${images} and ${maxNewTokens} new tokens were asked for, but the ` +
        `model's context holds ${contextLength} (max_position_embeddings): ask for at most ` +
        `${contextLength - promptTokens} new tokens (--max-new-tokens), or ${shorter}`,
    );
  return maxNewTokens;
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
  lm: DecoderSource,
  prompt: Prompt,
  options: GenerationOptions = {},
): AsyncGenerator<number, FinishReason> {
  const reasons: FinishReason[] = [];
  for await (const tokens of streamBatch(lm, [prompt], options, reasons)) yield tokens[0];
  return reasons[0] ?? 'length';
}

export async function generate(
  lm: DecoderSource,
  prompt: Prompt,
  options: GenerationOptions = {},
): Promise<GenerationResult> {
  const [result] = await generateBatch(lm, [prompt], options);
  return result;
}

/** Generates for several prompts at once (left padding), each stopping on its own. */
export async function generateBatch(
  lm: DecoderSource,
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

export function tokenInput(prompt: Prompt): TokenInput {
  return prompt.embeds ? { embeds: prompt.embeds } : { ids: prompt.ids };
}

/**
 * One sequence's side of generation: chooses its next token from its logits and says when it is done (a stop
 * token, or its budget of new tokens). The batch loop here and the server's scheduler both step sequences with it.
 */
export class SequenceGeneration {
  readonly generated: number[] = [];
  finishReason: FinishReason | null = null;
  private readonly stop: Set<number>;

  constructor(
    private readonly chooser: TokenChooser,
    private readonly options: GenerationOptions,
    /** New tokens allowed (see `newTokenBudget`). */
    readonly maxNewTokens: number,
    /** The prompt's index, as `onLogits` reports it. */
    private readonly index = 0,
  ) {
    this.stop = new Set(options.stopTokenIds ?? []);
  }

  get finished(): boolean {
    return this.finishReason !== null;
  }

  /** The next token, chosen from the logits that followed the previous one. */
  next(logits: Float32Array): number {
    this.options.onLogits?.(this.index, this.generated.length, logits);
    const token = this.chooser.choose(logits, this.generated);
    this.generated.push(token);
    if (this.stop.has(token)) this.finishReason = 'stop';
    else if (this.generated.length >= this.maxNewTokens) this.finishReason = 'length';
    return token;
  }
}

/**
 * The decoding loop. Yields one token per prompt per step (−1 for prompts already finished) and fills
 * `reasons` with each prompt's finish reason.
 */
async function* streamBatch(
  lm: DecoderSource,
  prompts: Prompt[],
  options: GenerationOptions,
  reasons: FinishReason[],
): AsyncGenerator<number[]> {
  const chooser = new TokenChooser(options);
  if (prompts.length === 0) return;
  if (prompts.some((p) => p.ids.length === 0)) throw new UsageError('cannot generate from an empty prompt');
  const longest = Math.max(...prompts.map((p) => p.ids.length));
  const maxNewTokens = newTokenBudget(lm.contextLength, longest, options.maxNewTokens);
  if (maxNewTokens === 0) {
    prompts.forEach((_, b) => {
      reasons[b] = 'length';
    });
    return;
  }
  const decoder = lm.batchDecoder({ maxSequences: prompts.length, maxLength: longest + maxNewTokens });
  const sequences = prompts.map(() => decoder.addSequence());
  const states = prompts.map((_, b) => new SequenceGeneration(chooser, options, maxNewTokens, b));
  const logits: Float32Array[] = [];
  for (const [b, prompt] of prompts.entries()) logits[b] = await decoder.prefill(sequences[b], tokenInput(prompt));
  for (;;) {
    if (options.signal?.aborted) {
      states.forEach((state, b) => {
        if (!state.finished) reasons[b] = 'cancelled';
      });
      return;
    }
    const running = states.flatMap((state, b) => (state.finished ? [] : [b]));
    const tokens = states.map((state, b) => (state.finished ? -1 : state.next(logits[b])));
    for (const b of running) if (states[b].finished) reasons[b] = states[b].finishReason!;
    yield tokens;
    const decoding = running.filter((b) => !states[b].finished);
    if (decoding.length === 0) return;
    const rows = await decoder.decode(
      decoding.map((b) => sequences[b]),
      decoding.map((b) => tokens[b]),
    );
    decoding.forEach((b, i) => {
      logits[b] = rows[i];
    });
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
  lm: DecoderSource,
  prompt: Prompt,
  options: BeamSearchOptions = {},
): Promise<GenerationResult> {
  checkGenerationOptions(options);
  const beams = options.numBeams ?? 5;
  const S = prompt.ids.length;
  if (S === 0) throw new UsageError('cannot generate from an empty prompt');
  const maxNewTokens = newTokenBudget(lm.contextLength, S, options.maxNewTokens ?? 30);
  const minNewTokens = options.minNewTokens ?? 0;
  const lengthPenalty = options.lengthPenalty ?? 1;
  const stop = new Set(options.stopTokenIds ?? []);
  const finished: Array<{ ids: number[]; score: number }> = [];
  const addFinished = (ids: number[], logProb: number) => {
    const score = logProb / ids.length ** lengthPenalty;
    if (finished.length < beams || score > finished[finished.length - 1].score) {
      finished.push({ ids, score });
      finished.sort((a, b) => b.score - a.score);
      if (finished.length > beams) finished.pop();
    }
  };

  // Two sets of beam caches: each step's continuations are copied from their parents into the other set.
  const decoder = lm.batchDecoder({ maxSequences: 2 * beams, maxLength: S + maxNewTokens });
  let current = Array.from({ length: beams }, () => decoder.addSequence());
  let spare = Array.from({ length: beams }, () => decoder.addSequence());
  let rowLogits = [await decoder.prefill(current[0], tokenInput(prompt))];
  let open = [{ ids: [] as number[], logProb: 0 }];
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
    next.forEach((n, i) => decoder.copySequence(current[n.beam], spare[i]));
    [current, spare] = [spare, current];
    open = next;
    rowLogits = await decoder.decode(
      current.slice(0, next.length),
      next.map((n) => n.ids[n.ids.length - 1]),
    );
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
