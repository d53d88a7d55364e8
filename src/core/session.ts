/**
 * onnxruntime sessions for graphs built with GraphBuilder: the one module that speaks to onnxruntime. Tensor types
 * and the `Tensor` class come from `onnxruntime-common`, which every onnxruntime build shares; the build itself (its
 * `InferenceSession` and where it can read weights from) is a {@link RuntimeBackend}: `onnxruntime-node` in Node
 * (`core/node/runtime.ts`, loaded on first use), `onnxruntime-web` plugged in by a browser entry with
 * `runtimeBackend.set(...)`.
 *
 * All sessions of a process share one thread budget ({@link setThreadBudget}): a session runs with at most that many
 * intra-op threads, and runs of different sessions wait until their threads are free, so concurrent requests do not
 * oversubscribe the cores. One run at a time, as the CLI does, runs exactly as without the budget.
 */
import type { Env, InferenceSession, Tensor as OrtTensor } from 'onnxruntime-common';
import { Tensor } from 'onnxruntime-common';
import { InternalError, RuntimeError, UsageError } from './errors.js';
import { ELEM_BYTES, type GraphBuilder, type GraphTarget, type WeightLocation, type WeightRequest } from './graph.js';
import { Seam } from './platform.js';
import { floatTensor, type FloatTensor } from './tensor.js';

export { Tensor };
export type TensorData = OrtTensor.DataType;
export type TensorType = OrtTensor.Type;

export interface SessionOptions {
  /** Intra-op threads (default and upper bound: the process's thread budget, see {@link setThreadBudget}). */
  threads?: number;
  /**
   * Let onnxruntime repack matmul weights for speed (costs a second copy of the weights in memory).
   * Default: on when the graph's float weights are below 2 GiB (quantized weights do not count: see createSession).
   */
  prepack?: boolean;
  /** Execution providers in order of preference (default: the backend's; `webgpu` / `cuda` where the build has them). */
  executionProviders?: string[];
  /** Where converted/quantized weights are cached (Node default `$INTERNVL_CACHE` or `~/.cache/internvl-ts`). */
  cacheDir?: string;
  /** Called while a weight cache file is written (first load of a converted model). */
  onProgress?: (done: number, total: number) => void;
  /** onnxruntime's profiler on, writing `<prefix>_<date>.json` when the session ends profiling (benchmarks). */
  profileFilePrefix?: string;
  /**
   * Run the session in a thread of its own (Node: a worker thread), where the backend offers it: its runs leave
   * the JavaScript thread free and overlap with other sessions' runs. Its threads are not drawn from the thread
   * budget, and they do not spin-wait between operators.
   */
  offThread?: boolean;
}

/** A created session as ModelSession uses it (onnxruntime's `InferenceSession`, or one in another thread). */
export interface SessionHandle {
  run(feeds: Feeds, outputs?: string[]): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
  /** Writes the profile of a session created with `profileFilePrefix` (in-thread sessions). */
  endProfiling?(): void;
}

/** Where a backend put a graph's weights: locations for the ONNX initializers and the options that make them readable. */
export interface WeightPlacement {
  locate: (request: WeightRequest) => WeightLocation;
  /** Merged into the session options (e.g. `externalData`, or onnxruntime-node's external-data folder). */
  sessionOptions: InferenceSession.SessionOptions;
}

/** One onnxruntime build and the way it reads weights. */
export interface RuntimeBackend {
  /** `InferenceSession` and `env` of the build (`import * as ort from 'onnxruntime-web'` fits). */
  readonly ort: {
    InferenceSession: {
      create(model: Uint8Array, options?: InferenceSession.SessionOptions): Promise<InferenceSession>;
    };
    env: Env;
  };
  /** Threads when nobody set a budget (Node: the available cores). */
  readonly defaultThreads: number;
  /** Execution providers when the caller names none (default `['cpu']`; a browser's choice of `webgpu`/`wasm`). */
  readonly executionProviders?: string[];
  /** Makes the graph's weights readable by this build (graphs without weights are never passed). */
  placeWeights(graphName: string, requests: WeightRequest[], options: SessionOptions): Promise<WeightPlacement>;
  /** Creates a session in a thread of its own (see `SessionOptions.offThread`); absent where the build has none. */
  createOffThread?(model: Uint8Array, options: InferenceSession.SessionOptions): Promise<SessionHandle>;
}

export const runtimeBackend = new Seam<RuntimeBackend>(
  'onnxruntime backend',
  [import.meta.url, './node/runtime.js'],
  'nodeRuntime',
);

export type Feeds = Record<string, OrtTensor>;

/** A float32 output of a run as the library returns tensors. */
export function asFloatTensor(output: OrtTensor): FloatTensor {
  if (output.type !== 'float32') throw new InternalError(`expected a float32 output, got ${output.type}`);
  return floatTensor(output.data as Float32Array, [...output.dims]);
}

/** The process-wide pool of intra-op threads that running sessions draw from. */
class ThreadBudget {
  total: number | undefined;
  private inUse = 0;
  private readonly waiting: Array<{ threads: number; start: () => void }> = [];

  async acquire(threads: number): Promise<void> {
    const total = this.total!;
    // First come, first served: a large run is not starved by a stream of small ones.
    if (this.waiting.length === 0 && (this.inUse + threads <= total || this.inUse === 0)) {
      this.inUse += threads;
      return;
    }
    await new Promise<void>((start) => this.waiting.push({ threads, start }));
  }

  release(threads: number): void {
    this.inUse -= threads;
    while (this.waiting.length > 0) {
      const next = this.waiting[0];
      if (this.inUse > 0 && this.inUse + next.threads > this.total!) break;
      this.waiting.shift();
      this.inUse += next.threads;
      next.start();
    }
  }
}

const budget = new ThreadBudget();

/**
 * Sets the number of intra-op threads all sessions of this process share (default: the backend's, all cores in
 * Node). Sessions created afterwards use at most this many threads each.
 */
export function setThreadBudget(threads: number): void {
  if (!Number.isInteger(threads) || threads < 1)
    throw new UsageError(`thread budget must be an integer >= 1, got ${threads}`);
  budget.total = threads;
}

export class ModelSession {
  constructor(
    readonly name: string,
    readonly session: SessionHandle,
    /** Intra-op threads this session runs with (drawn from the thread budget for each run unless off-thread). */
    readonly threads: number,
    readonly offThread = false,
  ) {}

  async run(feeds: Feeds, outputs?: string[]): Promise<Record<string, OrtTensor>> {
    const drawn = this.offThread ? 0 : this.threads;
    if (drawn) await budget.acquire(drawn);
    try {
      return await this.session.run(feeds, outputs);
    } catch (error) {
      throw new RuntimeError(`graph ${this.name}: onnxruntime failed: ${(error as Error).message}`, { cause: error });
    } finally {
      if (drawn) budget.release(drawn);
    }
  }

  /** Writes the profile of a session created with `profileFilePrefix`. */
  endProfiling(): void {
    if (!this.session.endProfiling) throw new InternalError(`graph ${this.name}: this session cannot be profiled`);
    this.session.endProfiling();
  }

  private released = false;

  /** Frees the native session; a second call does nothing. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }
}

/** The execution providers a session created with these options runs on, in order of preference. */
function executionProviders(backend: RuntimeBackend, options: SessionOptions): string[] {
  return options.executionProviders ?? backend.executionProviders ?? ['cpu'];
}

/**
 * How to build a graph whose session will be created with these options: the one place where an execution
 * provider's kernels decide the graph's operators. Graphs for the CPU and wasm providers are built as ever.
 */
export async function graphTarget(options: SessionOptions = {}): Promise<GraphTarget> {
  return { decomposedAttention: executionProviders(await runtimeBackend.get(), options)[0] === 'webgpu' };
}

export async function createSession(graph: GraphBuilder, options: SessionOptions = {}): Promise<ModelSession> {
  const backend = await runtimeBackend.get();
  budget.total ??= backend.defaultThreads;
  const requests = [...graph.weights.values()];
  // Only float weights count: prepacking copies them (memory ×2), while quantized kernels (MatMulNBits) run ~100×
  // slower unprepacked (measured: 4-bit decoding 0.5 vs 45 tokens/s) and their weights are 4–8× smaller.
  const floatBytes = requests
    .filter((r) => r.type === 'float32' || r.type === 'float16')
    .reduce((sum, r) => sum + byteSize(r), 0);
  const placement =
    requests.length === 0
      ? {
          locate: () => {
            throw new RuntimeError(`graph ${graph.name}: no weights`);
          },
          sessionOptions: {},
        }
      : await backend.placeWeights(graph.name, requests, options);
  const bytes = graph.toModelBytes(placement.locate);
  const prepack = options.prepack ?? floatBytes < 2 ** 31;
  const threads = Math.min(options.threads ?? budget.total, budget.total);
  const extra = placement.sessionOptions.extra as { session?: Record<string, string> } | undefined;
  const sessionOptions: InferenceSession.SessionOptions = {
    executionProviders: executionProviders(backend, options),
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    // Fatal only: a failure reaches the user once, as the typed error below, not also as a native log line.
    logSeverityLevel: 4,
    ...(options.profileFilePrefix ? { enableProfiling: true, profileFilePrefix: options.profileFilePrefix } : {}),
    ...placement.sessionOptions,
    extra: {
      ...extra,
      session: {
        ...extra?.session,
        ...(prepack ? {} : { disable_prepacking: '1' }),
        // Spinning threads would take the cores from the sessions an off-thread one overlaps with.
        ...(options.offThread ? { 'session.intra_op.allow_spinning': '0' } : {}),
      },
    },
  };
  try {
    if (options.offThread && backend.createOffThread)
      return new ModelSession(graph.name, await backend.createOffThread(bytes, sessionOptions), threads, true);
    const session = await backend.ort.InferenceSession.create(bytes, sessionOptions);
    const handle: SessionHandle = {
      run: (feeds, outputs) => (outputs ? session.run(feeds, outputs) : session.run(feeds)),
      release: () => session.release(),
      endProfiling: () => session.endProfiling(),
    };
    return new ModelSession(graph.name, handle, threads);
  } catch (error) {
    throw new RuntimeError(`graph ${graph.name}: onnxruntime could not create a session: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function byteSize(request: WeightRequest): number {
  return request.dims.reduce((a, b) => a * b, 1) * ELEM_BYTES[request.type];
}
