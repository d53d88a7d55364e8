/**
 * Who generates when. A chat request holds a place in its model's queue (`reserve`, refused with 429 when the
 * queue is full) while its media is fetched, then hands the scheduler a job: `prepare` (the CPU work: tiling,
 * image encoding, prompt embeddings) and the generation options. Tokens come back through the generation's async
 * iterator; aborting the options' signal ends the job within one step.
 *
 * `SerialScheduler` runs one job at a time, to the end. It is the reference the batched scheduler must match.
 */
import {
  streamTokens,
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

export interface QueueLimits {
  /** Jobs that may wait (beyond those running) before new ones are refused. */
  maxQueue: number;
  /** Suggested wait for refused clients, seconds. */
  retryAfterSeconds?: number;
}

/** A queued job with its channel and bookkeeping, shared by the schedulers. */
export interface Entry {
  job: GenerationJob;
  channel: Channel<number>;
  startedAt: number;
  settle: (outcome: GenerationOutcome) => void;
  fail: (error: unknown) => void;
}

/** The admission and queue bookkeeping both schedulers share; `pump` is theirs. */
export abstract class QueueingScheduler implements Scheduler {
  protected readonly queue: Entry[] = [];
  private reserved = 0;
  protected closed = false;

  constructor(protected readonly limits: QueueLimits) {}

  abstract get running(): number;

  get waiting(): number {
    return this.reserved + this.queue.length;
  }

  reserve(): Ticket {
    if (this.closed) throw new ApiError(503, 'server_error', 'the server is shutting down', null, 'shutting_down');
    if (this.waiting >= this.limits.maxQueue) {
      const retry = String(this.limits.retryAfterSeconds ?? 1);
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
    for (const entry of this.queue.splice(0)) entry.settle(this.cancelled(entry, 0));
  }

  protected cancelled(entry: Entry, promptTokens: number): GenerationOutcome {
    entry.channel.end();
    return { finishReason: 'cancelled', promptTokens, queueSeconds: (performance.now() - entry.startedAt) / 1000 };
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

  /** Runs queued jobs; called whenever one is queued. */
  protected abstract pump(): void;
}

/** One job at a time, each from prefill to its last token. */
export class SerialScheduler extends QueueingScheduler {
  private active = false;

  constructor(
    private readonly lm: DecoderSource,
    limits: QueueLimits,
  ) {
    super(limits);
  }

  get running(): number {
    return this.active ? 1 : 0;
  }

  protected pump(): void {
    if (this.active) return;
    const entry = this.queue.shift();
    if (!entry) return;
    this.active = true;
    this.run(entry).finally(() => {
      this.active = false;
      this.pump();
    });
  }

  private async run(entry: Entry): Promise<void> {
    const { job, channel } = entry;
    if (job.options.signal?.aborted) return entry.settle(this.cancelled(entry, 0));
    const queueSeconds = (performance.now() - entry.startedAt) / 1000;
    try {
      const prompt = await job.prepare();
      const stream = streamTokens(this.lm, prompt, job.options);
      for (;;) {
        const next = await stream.next();
        if (next.done) {
          channel.end();
          entry.settle({ finishReason: next.value, promptTokens: prompt.ids.length, queueSeconds });
          return;
        }
        channel.push(next.value);
      }
    } catch (error) {
      entry.fail(error);
    }
  }
}
