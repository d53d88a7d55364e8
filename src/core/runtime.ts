/**
 * onnxruntime sessions for graphs built with GraphBuilder.
 *
 * Weights never travel through JavaScript memory when they can be used as stored: initializers point into the
 * safetensors files (external data, resolved through symlinks such as the Hugging Face cache's). When a graph needs
 * bytes that are not in the checkpoint (bf16 → fp32 conversion, quantized matrices), all its weights go through the
 * weight cache (weight_cache.ts).
 */
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { ELEM_BYTES, type GraphBuilder, type WeightLocation, type WeightRequest } from './graph.js';
import { RuntimeError } from './errors.js';
import { defaultCacheDir, ensureWeightCache } from './weight_cache.js';

export interface SessionOptions {
  /** Intra-op threads (default: all cores). */
  threads?: number;
  /**
   * Let onnxruntime repack matmul weights for speed (costs a second copy of the weights in memory).
   * Default: on when the graph's float weights are below 2 GiB (quantized weights do not count: see createSession).
   */
  prepack?: boolean;
  /** Execution providers in order of preference (default `['cpu']`; `webgpu` / `cuda` where the build has them). */
  executionProviders?: string[];
  /** Where converted/quantized weights are cached (default `$INTERNVL_CACHE` or `~/.cache/internvl-ts`). */
  cacheDir?: string;
  /** Called while a weight cache file is written (first load of a converted model). */
  onProgress?: (done: number, total: number) => void;
}

export type Feeds = Record<string, ort.Tensor>;

export class ModelSession {
  constructor(
    readonly name: string,
    readonly session: ort.InferenceSession,
  ) {}

  async run(feeds: Feeds, outputs?: string[]): Promise<Record<string, ort.Tensor>> {
    try {
      return outputs ? await this.session.run(feeds, outputs) : await this.session.run(feeds);
    } catch (error) {
      throw new RuntimeError(`graph ${this.name}: onnxruntime failed: ${(error as Error).message}`, { cause: error });
    }
  }

  private released = false;

  /** Frees the native session; a second call does nothing. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }
}

export async function createSession(graph: GraphBuilder, options: SessionOptions = {}): Promise<ModelSession> {
  const requests = [...graph.weights.values()];
  // Only float weights count: prepacking copies them (memory ×2), while quantized kernels (MatMulNBits) run ~100×
  // slower unprepacked (measured: 4-bit decoding 0.5 vs 45 tokens/s) and their weights are 4–8× smaller.
  const floatBytes = requests
    .filter((r) => r.type === 'float32' || r.type === 'float16')
    .reduce((sum, r) => sum + byteSize(r), 0);
  const { folder, locate } = await placeWeights(graph.name, requests, options);
  const bytes = graph.toModelBytes(locate);
  const prepack = options.prepack ?? floatBytes < 2 ** 31;
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    executionProviders: options.executionProviders ?? ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: options.threads ?? os.availableParallelism(),
    interOpNumThreads: 1,
    // Fatal only: a failure reaches the user once, as the typed error below, not also as a native log line.
    logSeverityLevel: 4,
    extra: {
      session: {
        ...(folder ? { model_external_initializers_file_folder_path: folder } : {}),
        ...(prepack ? {} : { disable_prepacking: '1' }),
      },
    },
  };
  try {
    return new ModelSession(graph.name, await ort.InferenceSession.create(bytes, sessionOptions));
  } catch (error) {
    throw new RuntimeError(`graph ${graph.name}: onnxruntime could not create a session: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function byteSize(request: WeightRequest): number {
  return request.dims.reduce((a, b) => a * b, 1) * ELEM_BYTES[request.type];
}

/**
 * Chooses where the graph's weights are read from. onnxruntime takes one folder for all external data and rejects
 * paths with `..`, so either every weight is used in place from one checkpoint folder, or every weight goes
 * through the cache file.
 */
async function placeWeights(
  name: string,
  requests: WeightRequest[],
  options: SessionOptions,
): Promise<{ folder: string | null; locate: (r: WeightRequest) => WeightLocation }> {
  if (requests.length === 0)
    return {
      folder: null,
      locate: () => {
        throw new RuntimeError(`graph ${name}: no weights`);
      },
    };
  const folders = new Set(requests.map((r) => (r.inPlace ? path.dirname(r.inPlace.file) : null)));
  if (folders.size === 1 && !folders.has(null)) {
    const folder = [...folders][0]!;
    return {
      folder,
      locate: (r) => ({
        location: path.basename(r.inPlace!.file),
        offset: r.inPlace!.offset,
        length: r.inPlace!.length,
      }),
    };
  }
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const { fileName, offsets } = await ensureWeightCache(cacheDir, requests, options.onProgress);
  return {
    folder: cacheDir,
    locate: (r) => {
      const slot = offsets.get(r.name)!;
      return { location: fileName, offset: slot.offset, length: slot.length };
    },
  };
}

export { ort };
