/**
 * The weight cache: when a graph needs bytes that are not in the checkpoint (bf16 → fp32 conversion, quantized
 * matrices), all its weights are written once to one file keyed by their sources, and later sessions map that file
 * directly as onnxruntime external data.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RuntimeError } from '../errors.js';
import { ELEM_BYTES, type WeightRequest } from '../graph.js';

export function defaultCacheDir(): string {
  if (process.env.INTERNVL_CACHE) return process.env.INTERNVL_CACHE;
  const base = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return path.join(base, 'internvl-ts');
}

const ALIGN = 64;

export function ensureWeightCache(
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
