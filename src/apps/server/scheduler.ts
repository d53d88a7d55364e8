/**
 * Who generates when. A chat request holds a place in its model's queue (`reserve`, refused with 429 when the
 * queue is full) while its media is fetched, then hands the scheduler a job: `prepare` (the CPU work: tiling,
 * image encoding, prompt embeddings) and the generation options. Tokens come back through the generation's async
 * iterator; aborting the options' signal ends the job within one step.
 *
 * `BatchScheduler` runs the jobs of one model together (continuous batching): their sequences share one
 * `BatchDecoder` and decode in one batched step per token; a job joins between steps once its `prepare` (run
 * alongside the decoding) is done and its prompt is prefilled, a chunk per step, and leaves as soon as it ends.
 */
import type { BatchDecoder, Sequence } from '../../models/decoder.js';
import {
  newTokenBudget,
  SequenceGeneration,
  TokenChooser,
  tokenInput,
  type DecoderSource,
  type FinishReason,
  type GenerationOptions,
  type Prompt,
} from '../../tasks/generation.js';
import { ApiError } from './errors.js';

export interface GenerationJob {
  prepare(): Promise<Prompt>;
  options: GenerationOptions;
}

export interface GenerationOutcome {
  finishReason: FinishReason;
  promptTokens: number;
  /** Seconds between `start` and the beginning of the job's prefill. */
  queueSeconds: number;
}

export interface Generation {
  /** The generated ids; ends when the job is done (or throws its error). */
  tokens: AsyncIterable<number>;
  /** Settles after the last token. */
  outcome: Promise<GenerationOutcome>;
}

export interface Ticket {
  /** Queues the job (once). */
  start(job: GenerationJob): Generation;
  /** Gives the place back without running anything (a failed media fetch). Harmless after `start`. */
  release(): void;
}

export interface Scheduler {
  /** Holds a place for a job; throws a 429 ApiError (with Retry-After) when the queue is full. */
  reserve(): Ticket;
  /** Jobs generating now. */
  readonly running: number;
  /** Jobs holding a place but not generating yet. */
  readonly waiting: number;
  /** Positions one job's prompt and answer may take together. */
  readonly contextLength: number;
  /** Ends every job (their generations finish as cancelled) and accepts no more. */
  close(): void;
}

/** A single-consumer async queue of values, then an end value or an error. */
export class Channel<T> implements AsyncIterable<T> {
  private readonly values: T[] = [];
  private ended = false;
  private error: unknown = null;
  private wake: (() => void) | null = null;

  push(value: T): void {
    this.values.push(value);
    this.notify();
  }

  end(error: unknown = null): void {
    this.ended = true;
    this.error = error;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.values.length > 0) {
        yield this.values.shift()!;
        continue;
      }
      if (this.ended) {
        if (this.error) throw this.error;
        return;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }
}

export interface BatchLimits {
  /** Jobs that may wait (beyond those running) before new ones are refused. */
  maxQueue: number;
  /** Suggested wait for refused clients, seconds. */
  retryAfterSeconds?: number;
  /** Sequences decoding together. */
  maxBatch: number;
  /**
   * Positions per sequence (prompt + answer), capped by the model's context; it sizes the preallocated caches
   * (default 8192).
   */
  maxLength?: number;
  /** Prompt positions prefilled between two decode steps (default 512). */
  prefillChunk?: number;
}

export const DEFAULT_MAX_LENGTH = 8192;
export const DEFAULT_PREFILL_CHUNK = 512;
/** Positions per sequence the caches hold before they first grow. */
const INITIAL_CACHE_LENGTH = 1024;

/** A queued job with its channel and bookkeeping. */
interface Entry {
  job: GenerationJob;
  channel: Channel<number>;
  startedAt: number;
  settle: (outcome: GenerationOutcome) => void;
  fail: (error: unknown) => void;
}

/** A job from its `prepare` to its last token. */
interface Job {
  entry: Entry;
  queueSeconds: number;
  prompt: Prompt | null;
  sequence: Sequence | null;
  /** Prompt positions already in the cache. */
  prefilled: number;
  state: SequenceGeneration | null;
  /** Logits for the next choice; null while the prompt is being prefilled. */
  logits: Float32Array | null;
  /** Removes the job's listener from its signal. */
  detach: () => void;
}

export class BatchScheduler implements Scheduler {
  private readonly queue: Entry[] = [];
  private reserved = 0;
  private closed = false;
  private decoder: BatchDecoder | null = null;
  /** Prepared (or preparing) and generating jobs, in arrival order. */
  private readonly jobs: Job[] = [];
  private preparing = false;
  private looping = false;
  private wake: (() => void) | null = null;
  readonly contextLength: number;
  /**
   * Batched decode steps run, the tokens they decoded (÷ steps = the mean batch size) and the seconds they took
   * (tokens ÷ seconds = the decoding throughput, whatever else the process did meanwhile).
   */
  readonly stats = { decodeSteps: 0, decodedTokens: 0, decodeSeconds: 0 };
  private readonly prefillChunkSize: number;

  constructor(
    private readonly lm: DecoderSource,
    private readonly batch: BatchLimits,
  ) {
    this.contextLength = Math.min(batch.maxLength ?? DEFAULT_MAX_LENGTH, lm.contextLength);
    this.prefillChunkSize = batch.prefillChunk ?? DEFAULT_PREFILL_CHUNK;
  }

  get running(): number {
    return this.jobs.length;
  }

  /** Sequences holding a KV cache now (equals `running` minus those still preparing or queued for a slot). */
  get cachedSequences(): number {
    return this.decoder?.size ?? 0;
  }

  get waiting(): number {
    return this.reserved + this.queue.length;
  }

  reserve(): Ticket {
    if (this.closed) throw new ApiError(503, 'server_error', 'the server is shutting down', null, 'shutting_down');
    if (this.waiting >= this.batch.maxQueue) {
      const retry = String(this.batch.retryAfterSeconds ?? 1);
      throw new ApiError(429, 'rate_limit_error', 'the request queue is full; retry later', null, 'queue_full', {
        'retry-after': retry,
      });
    }
    this.reserved++;
    let held = true;
    const release = () => {
      if (held) this.reserved--;
      held = false;
    };
    return {
      release,
      start: (job) => {
        if (!held) throw new Error('ticket already used');
        release();
        return this.enqueue(job);
      },
    };
  }

  close(): void {
    this.closed = true;
    for (const entry of this.queue.splice(0)) {
      entry.channel.end();
      entry.settle({
        finishReason: 'cancelled',
        promptTokens: 0,
        queueSeconds: (performance.now() - entry.startedAt) / 1000,
      });
    }
    this.notify();
  }

  private enqueue(job: GenerationJob): Generation {
    const channel = new Channel<number>();
    let settle!: (o: GenerationOutcome) => void;
    let fail!: (e: unknown) => void;
    const outcome = new Promise<GenerationOutcome>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    // The outcome's rejection is also delivered through the tokens; never leave it unhandled.
    outcome.catch(() => {});
    this.queue.push({
      job,
      channel,
      startedAt: performance.now(),
      settle,
      fail: (error) => {
        channel.end(error);
        fail(error);
      },
    });
    this.pump();
    return { tokens: channel, outcome };
  }

  /** Starts what can start and makes sure the loop runs; called whenever a job is queued. */
  private pump(): void {
    this.admit();
    this.notify();
    if (this.looping) return;
    this.looping = true;
    void this.loop();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** Starts the next queued job's `prepare` when the batch has room and no other prepare is running. */
  private admit(): void {
    if (this.closed || this.preparing || this.jobs.length >= this.batch.maxBatch) return;
    const entry = this.queue.shift();
    if (!entry) return;
    const job: Job = {
      entry,
      queueSeconds: (performance.now() - entry.startedAt) / 1000,
      prompt: null,
      sequence: null,
      prefilled: 0,
      state: null,
      logits: null,
      detach: () => {},
    };
    this.jobs.push(job);
    // Removed when the job ends: a request's signal can outlive it (AbortSignal.any keeps composites alive), and
    // a listener left on it would keep the job, its prompt embeddings and logits with it.
    const { signal } = entry.job.options;
    const wake = () => this.notify();
    signal?.addEventListener('abort', wake, { once: true });
    job.detach = () => signal?.removeEventListener('abort', wake);
    if (signal?.aborted) return;
    this.preparing = true;
    // The CPU work of a new job runs while the running ones keep decoding.
    entry.job
      .prepare()
      .then((prompt) => {
        const { options } = entry.job;
        const maxNewTokens = newTokenBudget(this.contextLength, prompt.ids.length, options.maxNewTokens);
        job.state = new SequenceGeneration(new TokenChooser(options), options, maxNewTokens);
        job.prompt = prompt;
      })
      .catch((error) => this.finish(job, error))
      .finally(() => {
        this.preparing = false;
        this.admit();
        this.notify();
      });
  }

  private async loop(): Promise<void> {
    for (;;) {
      // A cancelled job leaves at once (one still preparing is dropped; its prepare's result is ignored).
      for (const job of [...this.jobs])
        if (this.closed || job.entry.job.options.signal?.aborted) this.finish(job, 'cancelled');
      const prefilling = this.jobs.find((j) => j.prompt && !j.logits);
      const decoding = this.jobs.filter((j) => j.logits);
      if (!prefilling && decoding.length === 0) {
        if (this.jobs.length === 0 && this.queue.length === 0) {
          // Synchronously with the check, so that a job queued from now on starts a new loop.
          this.looping = false;
          return;
        }
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        continue;
      }
      try {
        if (prefilling) await this.prefillChunk(prefilling);
        await this.decodeStep(decoding);
      } catch (error) {
        // A failed run leaves the caches in an unknown state: every job in the batch ends with the error.
        for (const job of [...this.jobs]) if (job.sequence) this.finish(job, error);
        this.decoder = null;
      }
    }
  }

  private async prefillChunk(job: Job): Promise<void> {
    // The caches start small and grow with the longest request, up to contextLength.
    this.decoder ??= this.lm.batchDecoder({
      maxSequences: this.batch.maxBatch,
      maxLength: this.contextLength,
      initialLength: Math.min(this.contextLength, INITIAL_CACHE_LENGTH),
    });
    job.sequence ??= this.decoder.addSequence();
    const prompt = job.prompt!;
    const input = tokenInput(prompt);
    const count = prompt.ids.length;
    const end = Math.min(count, job.prefilled + this.prefillChunkSize);
    const width = 'embeds' in input ? input.embeds.length / count : 0;
    const chunk =
      'ids' in input
        ? { ids: input.ids.slice(job.prefilled, end) }
        : { embeds: input.embeds.subarray(job.prefilled * width, end * width) };
    const logits = await this.decoder.prefill(job.sequence, chunk);
    job.prefilled = end;
    if (end === count) job.logits = logits;
  }

  /** Each decoding job takes its next token; those still running decode it together. */
  private async decodeStep(decoding: Job[]): Promise<void> {
    const next: Job[] = [];
    const tokens: number[] = [];
    for (const job of decoding) {
      if (!this.jobs.includes(job)) continue;
      const token = job.state!.next(job.logits!);
      job.entry.channel.push(token);
      if (job.state!.finished) this.finish(job, job.state!.finishReason!);
      else {
        next.push(job);
        tokens.push(token);
      }
    }
    if (next.length === 0) return;
    const started = performance.now();
    const rows = await this.decoder!.decode(
      next.map((j) => j.sequence!),
      tokens,
    );
    next.forEach((job, i) => {
      job.logits = rows[i];
    });
    this.stats.decodeSteps++;
    this.stats.decodedTokens += next.length;
    this.stats.decodeSeconds += (performance.now() - started) / 1000;
  }

  /** Ends a job (a finish reason or an error) and frees its place in the batch. */
  private finish(job: Job, end: FinishReason | unknown): void {
    const at = this.jobs.indexOf(job);
    if (at < 0) return;
    this.jobs.splice(at, 1);
    if (job.sequence && this.decoder) this.decoder.removeSequence(job.sequence);
    const promptTokens = job.prompt?.ids.length ?? 0;
    job.detach();
    job.prompt = null;
    job.logits = null;
    if (end === 'stop' || end === 'length' || end === 'cancelled') {
      job.entry.channel.end();
      job.entry.settle({ finishReason: end, promptTokens, queueSeconds: job.queueSeconds });
    } else job.entry.fail(end);
    this.admit();
  }
}
