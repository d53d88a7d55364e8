/**
 * The Node runtime backend: onnxruntime-node, with weights read where they lie.
 *
 * Weights never travel through JavaScript memory when they can be used as stored: initializers point into the
 * safetensors files (external data, resolved through symlinks such as the Hugging Face cache's). When a graph needs
 * bytes that are not in the checkpoint (bf16 → fp32 conversion, quantized matrices), all its weights go through the
 * weight cache (weight_cache.ts).
 */
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { WeightLocation, WeightRequest } from '../graph.js';
import type { RuntimeBackend, SessionOptions } from '../session.js';
import { defaultCacheDir, ensureWeightCache } from './weight_cache.js';
import { createWorkerSession } from './worker_session.js';

export const nodeRuntime: RuntimeBackend = {
  ort,
  defaultThreads: os.availableParallelism(),
  placeWeights: async (_graphName, requests, options) => {
    const { folder, locate } = await placeWeights(requests, options);
    return { locate, sessionOptions: { extra: { session: { model_external_initializers_file_folder_path: folder } } } };
  },
  createOffThread: createWorkerSession,
};

/**
 * Chooses where the graph's weights are read from. onnxruntime takes one folder for all external data and rejects
 * paths with `..`, so either every weight is used in place from one checkpoint folder, or every weight goes
 * through the cache file.
 */
async function placeWeights(
  requests: WeightRequest[],
  options: SessionOptions,
): Promise<{ folder: string; locate: (r: WeightRequest) => WeightLocation }> {
  const filePath = (r: WeightRequest) => r.inPlace?.source.path;
  const folders = new Set(requests.map((r) => (filePath(r) ? path.dirname(filePath(r)!) : null)));
  if (folders.size === 1 && !folders.has(null)) {
    const folder = [...folders][0]!;
    return {
      folder,
      locate: (r) => ({
        location: path.basename(filePath(r)!),
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

/** onnxruntime-node itself, for Node apps that need more than sessions (profiling, versions). */
export { ort };
