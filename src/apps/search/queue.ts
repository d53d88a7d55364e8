/**
 * Scale-out indexing on BullMQ over Redis. `internvl index --queue` plans as usual (hashes, skips, moves) but
 * enqueues the batches to embed; `internvl worker` processes, on any number of machines that see the same files
 * and the same table URI, embed them and merge-insert the rows (LanceDB's optimistic commits, retried).
 *
 * A job's id is the hash of its batch's (id, content hash) pairs, so a batch is queued once however often it is
 * planned. A killed worker's lock expires and its job goes back to the queue for the others; since rows are
 * merge-inserted on `id`, a batch written twice (the worker died after its commit) still leaves one row per image.
 */
import { createHash } from 'node:crypto';
import { Queue, QueueEvents, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { IndexError, UsageError } from '../../core/errors.js';
import type { SessionOptions } from '../../core/session.js';
import type { ClipMode } from '../../models/internvl_clip.js';
import { ClipEmbedder, modelStamp, type IndexWeights } from './embedder.js';
import { SearchIndex, type EmbedSink, type PendingItem } from './search_index.js';
import { Store, type Stamp, type StoreOptions } from './store.js';

const QUEUE_NAME = 'internvl-index';
/** Images per job: small enough that a killed worker loses little, big enough that Redis round trips vanish. */
export const DEFAULT_JOB_IMAGES = 16;

interface JobData {
  table: string;
  stamp: Stamp;
  items: Omit<PendingItem, 'bytes'>[];
}

interface JobResult {
  embedded: number;
  warnings: string[];
}

/** `redis://[user:password@]host:port[/db]` → BullMQ connection options. */
export function redisConnection(url: string): Record<string, unknown> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--queue ${url}: not a URL (expected redis://host:port)`);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:')
    throw new UsageError(`--queue ${url}: expected a redis:// or rediss:// URL`);
  return {
    host: parsed.hostname || '127.0.0.1',
    port: Number(parsed.port || 6379),
    username: parsed.username ? decodeURIComponent(parsed.username) : undefined,
    password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
    db: parsed.pathname.length > 1 ? Number(parsed.pathname.slice(1)) : undefined,
    tls: parsed.protocol === 'rediss:' ? {} : undefined,
    maxRetriesPerRequest: null,
  };
}

/**
 * Fails fast, in one line, when nothing answers at `url`: BullMQ's own clients would retry the connection forever,
 * printing every failure. Once connected, they ride out a Redis restart by reconnecting.
 */
async function reachRedis(url: string, connection: Record<string, unknown>): Promise<void> {
  const client = new Redis({
    ...connection,
    lazyConnect: true,
    connectTimeout: 5000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  // The socket's error (ECONNREFUSED, ENOTFOUND…) says more than the "Connection is closed" connect() rejects with.
  let socketError: NodeJS.ErrnoException | undefined;
  client.on('error', (error) => {
    socketError ??= error;
  });
  try {
    await client.connect();
    await client.ping();
  } catch (error) {
    const cause = socketError ?? (error as NodeJS.ErrnoException);
    const reason = cause.code ?? cause.message;
    throw new IndexError(`--queue ${url}: cannot reach Redis (${reason})`, { cause: error });
  } finally {
    client.disconnect();
  }
}

/** Reports a BullMQ client's connection errors once each (they repeat at every reconnection attempt). */
function reportErrors(
  emitter: { on(event: 'error', listener: (error: Error) => void): unknown },
  log?: (m: string) => void,
) {
  let last = '';
  emitter.on('error', (error) => {
    if (error.message === last) return;
    last = error.message;
    log?.(`queue: ${error.message}`);
  });
}

/** The coordinator's side: enqueues batches and follows them to the end across all workers. */
export class QueueSink implements EmbedSink {
  private readonly pending = new Map<string, number>();
  private readonly finished = new Map<string, JobResult | Error>();
  private submitted = 0;
  private done = 0;
  private wake: (() => void) | null = null;

  private constructor(
    private readonly queue: Queue,
    private readonly events: QueueEvents,
    private readonly store: Store,
    private readonly options: QueueSinkOptions,
  ) {
    events.on('completed', ({ jobId, returnvalue }) =>
      this.settle(jobId, (typeof returnvalue === 'string' ? JSON.parse(returnvalue) : returnvalue) as JobResult),
    );
    events.on('failed', ({ jobId, failedReason }) => {
      void this.queue.getJob(jobId).then((job) => {
        // A failure with attempts left is retried: only the last one counts.
        if (job && job.attemptsMade < (job.opts.attempts ?? 1)) return;
        this.settle(jobId, new Error(failedReason));
      });
    });
  }

  /**
   * Records a job's end once: the queue's events and the polling in `drain` may both see it (a completion event
   * can arrive while a poll of the same job is between its reads).
   */
  private settle(jobId: string, result: JobResult | Error): void {
    if (!this.pending.has(jobId) || this.finished.has(jobId)) return;
    this.finished.set(jobId, result);
    this.done += this.pending.get(jobId)!;
    this.options.onProgress?.(this.done, this.submitted);
    this.wake?.();
  }

  static async connect(url: string, store: Store, options: QueueSinkOptions = {}): Promise<QueueSink> {
    const connection = redisConnection(url);
    await reachRedis(url, connection);
    const queue = new Queue(QUEUE_NAME, { connection });
    const events = new QueueEvents(QUEUE_NAME, { connection });
    reportErrors(queue, options.onWarning);
    reportErrors(events, options.onWarning);
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
    return new QueueSink(queue, events, store, options);
  }

  async submit(items: PendingItem[]): Promise<void> {
    const size = this.options.jobImages ?? DEFAULT_JOB_IMAGES;
    for (let i = 0; i < items.length; i += size) {
      const batch = items.slice(i, i + size).map(({ bytes: _, ...item }) => item);
      const jobId = createHash('sha256')
        .update(`${this.store.uri}\0${this.store.name}\0`)
        .update(batch.map((b) => `${b.id}:${b.sha256}`).join('\n'))
        .digest('hex');
      // A finished job of an earlier run whose rows are not in the table (or the planner would not ask) is redone.
      const old = await this.queue.getJob(jobId);
      if (old && ((await old.isCompleted()) || (await old.isFailed()))) await old.remove();
      const data: JobData = { table: this.store.name, stamp: this.store.stamp, items: batch };
      await this.queue.add('embed', data, {
        jobId,
        attempts: 5,
        backoff: { type: 'exponential', delay: 500 },
        removeOnComplete: { age: 24 * 3600 },
        removeOnFail: { age: 7 * 24 * 3600 },
      });
      this.pending.set(jobId, batch.length);
      this.submitted += batch.length;
      this.options.onProgress?.(this.done, this.submitted);
    }
  }

  async drain(): Promise<{ embedded: number; unreadable: number }> {
    while (this.finished.size < this.pending.size) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        // Events can be missed (a reconnect): look at the remaining jobs now and then.
        setTimeout(resolve, 2000);
      });
      this.wake = null;
      for (const jobId of this.pending.keys()) {
        if (this.finished.has(jobId)) continue;
        // The state first, then the job: a job read before it completes has no return value yet, even once
        // its state says completed.
        const state = await this.queue.getJobState(jobId);
        if (state !== 'completed' && state !== 'failed') continue;
        const job = await this.queue.getJob(jobId);
        if (!job) continue;
        if (state === 'completed') this.settle(jobId, job.returnvalue as JobResult);
        else if (job.attemptsMade >= (job.opts.attempts ?? 1)) this.settle(jobId, new Error(job.failedReason));
      }
    }
    let embedded = 0;
    let unreadable = 0;
    for (const [jobId, result] of this.finished) {
      if (result instanceof Error) {
        unreadable += this.pending.get(jobId)!;
        this.options.onWarning?.(`queue job ${jobId.slice(0, 12)} failed: ${result.message}`);
        continue;
      }
      embedded += result.embedded;
      unreadable += result.warnings.length;
      for (const warning of result.warnings) this.options.onWarning?.(warning);
    }
    return { embedded, unreadable };
  }

  async close(): Promise<void> {
    await this.events.close();
    await this.queue.close();
  }
}

export interface QueueSinkOptions {
  /** Images per job (default 16). */
  jobImages?: number;
  /** Images embedded by all workers so far, of those enqueued. */
  onProgress?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}

export interface WorkerOptions {
  /** The database URI (a folder, or s3://… with storageOptions). */
  db: string;
  /** This machine's copy of the model (its fingerprint must match the table's). */
  model: string;
  weights?: IndexWeights;
  storageOptions?: StoreOptions['storageOptions'];
  session?: SessionOptions;
  batchSize?: number;
  /** How long a job stays claimed without a heartbeat before other workers take it (default 30 s). */
  lockMs?: number;
  onLog?: (message: string) => void;
}

/** Starts a worker; it runs until `close()`. */
export async function startWorker(url: string, options: WorkerOptions): Promise<{ close(): Promise<void> }> {
  const connection = redisConnection(url);
  await reachRedis(url, connection);
  const embedders = new Map<ClipMode, Promise<ClipEmbedder>>();
  const indexes = new Map<string, Promise<SearchIndex>>();
  const indexFor = (data: JobData) => {
    const key = `${data.table}\0${data.stamp.mode}`;
    let index = indexes.get(key);
    if (!index) {
      index = (async () => {
        const mine = await modelStamp(options.model, { mode: data.stamp.mode, weights: options.weights });
        if (mine.fingerprint !== data.stamp.fingerprint || mine.weights !== data.stamp.weights)
          throw new UnrecoverableError(
            `this worker's model ${mine.model} (${mine.weights}) is not the table's ${data.stamp.model} (${data.stamp.weights})`,
          );
        let embedder = embedders.get(mine.mode);
        if (!embedder) {
          embedder = ClipEmbedder.load(mine, options.session);
          embedders.set(mine.mode, embedder);
        }
        const store = await Store.open(options.db, data.table, data.stamp, { storageOptions: options.storageOptions });
        return new SearchIndex(store, options.session, await embedder);
      })();
      indexes.set(key, index);
      index.catch(() => indexes.delete(key));
    }
    return index;
  };
  const lockDuration = options.lockMs ?? 30_000;
  const worker = new Worker<JobData, JobResult>(
    QUEUE_NAME,
    async (job: Job<JobData, JobResult>) => {
      const index = await indexFor(job.data);
      const warnings: string[] = [];
      const rows = await index.embedItems(job.data.items, (w) => warnings.push(w), options.batchSize);
      await index.store.upsert(rows);
      options.onLog?.(`job ${job.id?.slice(0, 12)}: ${rows.length} embedded, ${warnings.length} unreadable`);
      return { embedded: rows.length, warnings };
    },
    {
      connection,
      concurrency: 1,
      lockDuration,
      stalledInterval: lockDuration,
      maxStalledCount: 10,
    },
  );
  worker.on('failed', (job, error) => options.onLog?.(`job ${job?.id?.slice(0, 12)} failed: ${error.message}`));
  reportErrors(worker, options.onLog);
  await worker.waitUntilReady();
  return {
    close: async () => {
      await worker.close();
      for (const embedder of embedders.values()) await (await embedder).release();
    },
  };
}
