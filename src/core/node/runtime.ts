/**
 * The Node runtime backend: onnxruntime-node, with weights read where they lie.
 *
 * Weights never travel through JavaScript memory when they can be used as stored: initializers point into the
 * safetensors files (external data, resolved through symlinks such as the Hugging Face cache's). When a graph needs
 * bytes that are not in the checkpoint (bf16 → fp32 conversion, quantized matrices), all its weights are written
 * once to a cache file keyed by their sources, and later sessions map that file directly.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import * as ort from 'onnxruntime-node';
import { ELEM_BYTES, type WeightLocation, type WeightRequest } from '../graph.js';
import { RuntimeError } from '../errors.js';
import type { RuntimeBackend, SessionOptions } from '../session.js';

export const nodeRuntime: RuntimeBackend = {
  ort,
  defaultThreads: os.availableParallelism(),
  placeWeights: async (_graphName, requests, options) => {
    const { folder, locate } = placeWeights(requests, options);
    return { locate, sessionOptions: { extra: { session: { model_external_initializers_file_folder_path: folder } } } };
  },
};

export function defaultCacheDir(): string {
  if (process.env.INTERNVL_CACHE) return process.env.INTERNVL_CACHE;
  const base = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return path.join(base, 'internvl-ts');
}

/**
 * Chooses where the graph's weights are read from. onnxruntime takes one folder for all external data and rejects
 * paths with `..`, so either every weight is used in place from one checkpoint folder, or every weight goes
 * through the cache file.
 */
function placeWeights(
  requests: WeightRequest[],
  options: SessionOptions,
): { folder: string; locate: (r: WeightRequest) => WeightLocation } {
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
  const { fileName, offsets } = ensureWeightCache(cacheDir, requests, options.onProgress);
  return {
    folder: cacheDir,
    locate: (r) => {
      const slot = offsets.get(r.name)!;
      return { location: fileName, offset: slot.offset, length: slot.length };
    },
  };
}

const ALIGN = 64;

function ensureWeightCache(
  cacheDir: string,
  requests: WeightRequest[],
  onProgress?: (done: number, total: number) => void,
): { fileName: string; offsets: Map<string, { offset: number; length: number }> } {
  const hash = crypto.createHash('sha256');
  const stamps = new Map<string, string>();
  const stampOf = (file: string) => {
    if (!stamps.has(file)) {
      const stat = fs.statSync(file);
      stamps.set(file, `${stat.size}:${stat.mtimeMs}`);
    }
    return stamps.get(file)!;
  };
  for (const r of requests) {
    const sources = r.sources ?? (r.inPlace ? [r.inPlace.source.name] : []);
    hash.update(`${r.name}|${r.type}|${r.dims.join('x')}|${r.cacheKey}|${sources.map(stampOf).join(',')}\n`);
  }
  const fileName = `weights-${hash.digest('hex').slice(0, 32)}.bin`;
  const offsets = new Map<string, { offset: number; length: number }>();
  let offset = 0;
  for (const r of requests) {
    const length = r.dims.reduce((a, b) => a * b, 1) * ELEM_BYTES[r.type];
    offsets.set(r.name, { offset, length });
    offset = Math.ceil((offset + length) / ALIGN) * ALIGN;
  }
  const filePath = path.join(cacheDir, fileName);
  if (fs.existsSync(filePath) && fs.statSync(filePath).size === offset) return { fileName, offsets };
  fs.mkdirSync(cacheDir, { recursive: true });
  const temporary = `${filePath}.${process.pid}.tmp`;
  const fd = fs.openSync(temporary, 'w');
  try {
    let done = 0;
    for (const r of requests) {
      const bytes = r.produce();
      const slot = offsets.get(r.name)!;
      if (bytes.byteLength !== slot.length) {
        throw new RuntimeError(`weight ${r.name}: produced ${bytes.byteLength} bytes, expected ${slot.length}`);
      }
      fs.writeSync(fd, bytes, 0, bytes.byteLength, slot.offset);
      onProgress?.(++done, requests.length);
    }
    fs.ftruncateSync(fd, offset);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temporary, filePath);
  return { fileName, offsets };
}

/** onnxruntime-node itself, for Node apps that need more than sessions (profiling, versions). */
export { ort };
