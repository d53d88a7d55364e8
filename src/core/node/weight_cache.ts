/**
 * The weight cache: when a graph needs bytes that are not in the checkpoint (bf16 → fp32 conversion, quantized
 * matrices), all its weights are written once to one file keyed by their sources, and later sessions map that file
 * directly as onnxruntime external data.
 *
 * An entry is trusted only through its manifest (`weights-<key>.json`, written after the data file):
 * - the data file's sha256, and a seal: its (dev, inode, size, mtime, ctime) when that sha256 was last checked;
 * - each source file's identity (path, size, mtime, dev, inode, ctime) and sha256.
 * The kernel sets ctime on every change of a file's bytes or times and no call sets it back, so an unchanged seal
 * means unchanged bytes, and a load costs a few stats. Anything else (bytes flipped or rewritten in place, a source
 * rewritten with its old size and mtime, a copy of the cache) is settled by hashing: matching bytes are resealed,
 * others rebuilt. A whole-file sha256 (≈1.6 GB/s here) is paid once per conversion and after such changes only; a
 * sampled fingerprint would be cheaper but would miss a rewritten tensor between samples.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AtomicWriter, storageError, writeFileAtomic } from './atomic_write.js';
import { RuntimeError } from '../errors.js';
import { acquireLock } from './file_lock.js';
import { ELEM_BYTES, type WeightRequest } from '../graph.js';
import { nextTurn } from '../platform.js';

export function defaultCacheDir(): string {
  if (process.env.INTERNVL_CACHE) return process.env.INTERNVL_CACHE;
  const base = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return path.join(base, 'internvl-ts');
}

const ALIGN = 64;
/** Bytes hashed between two turns of the event loop. */
const HASH_SLICE = 1 << 24;
const MANIFEST_VERSION = 1;

/** What identifies a file's bytes without reading them (see the module comment for why ctime and inode). */
interface Identity {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  dev: number;
  ino: number;
}

interface Manifest {
  version: number;
  size: number;
  sha256: string;
  seal: Identity;
  sources: Array<{ path: string; identity: Identity; sha256: string }>;
}

export interface WeightCacheEntry {
  fileName: string;
  offsets: Map<string, { offset: number; length: number }>;
}

function identityOf(stat: fs.Stats): Identity {
  return { size: stat.size, mtimeMs: stat.mtimeMs, ctimeMs: stat.ctimeMs, dev: stat.dev, ino: stat.ino };
}

function sameIdentity(a: Identity, b: Identity): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs && a.dev === b.dev && a.ino === b.ino;
}

async function statIdentity(file: string): Promise<Identity | undefined> {
  try {
    return identityOf(await fs.promises.stat(file));
  } catch {
    return undefined;
  }
}

/** sha256 of a whole file, streamed (the event loop keeps running). */
async function hashFile(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 22 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function readManifest(file: string): Manifest | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest;
    return m.version === MANIFEST_VERSION && Array.isArray(m.sources) ? m : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether the cache entry matches its manifest and its sources' current bytes. `reseal` is set when it does but
 * some identity changed (then the manifest should be rewritten so the next load is cheap again).
 */
async function checkEntry(
  dataPath: string,
  manifest: Manifest,
  size: number,
  sources: Map<string, Identity>,
): Promise<{ valid: boolean; reseal: boolean }> {
  const invalid = { valid: false, reseal: false };
  const now = await statIdentity(dataPath);
  if (!now || now.size !== size || manifest.size !== size) return invalid;
  if (manifest.sources.length !== sources.size) return invalid;
  let reseal = false;
  for (const recorded of manifest.sources) {
    const current = sources.get(recorded.path);
    if (!current) return invalid;
    if (!sameIdentity(recorded.identity, current)) {
      if (recorded.identity.size !== current.size || (await hashFile(recorded.path)) !== recorded.sha256)
        return invalid;
      reseal = true;
    }
  }
  if (!sameIdentity(manifest.seal, now)) {
    if ((await hashFile(dataPath)) !== manifest.sha256) return invalid;
    reseal = true;
  }
  return { valid: true, reseal };
}

/** Layout and cache key of a set of weight requests; the key covers each weight and its sources' size and mtime. */
async function plan(requests: WeightRequest[]): Promise<{
  key: string;
  offsets: Map<string, { offset: number; length: number }>;
  size: number;
  sources: Map<string, Identity>;
}> {
  const sources = new Map<string, Identity>();
  for (const r of requests) {
    for (const file of r.sources ?? (r.inPlace ? [r.inPlace.source.name] : [])) {
      if (sources.has(file)) continue;
      try {
        sources.set(file, identityOf(await fs.promises.stat(file)));
      } catch (error) {
        throw storageError(error, file, 'reading');
      }
    }
  }
  const hash = crypto.createHash('sha256');
  for (const r of requests) {
    const stamps = (r.sources ?? (r.inPlace ? [r.inPlace.source.name] : [])).map((f) => {
      const id = sources.get(f)!;
      return `${id.size}:${id.mtimeMs}`;
    });
    hash.update(`${r.name}|${r.type}|${r.dims.join('x')}|${r.cacheKey}|${stamps.join(',')}\n`);
  }
  const offsets = new Map<string, { offset: number; length: number }>();
  let offset = 0;
  for (const r of requests) {
    const length = r.dims.reduce((a, b) => a * b, 1) * ELEM_BYTES[r.type];
    offsets.set(r.name, { offset, length });
    offset = Math.ceil((offset + length) / ALIGN) * ALIGN;
  }
  return { key: hash.digest('hex').slice(0, 32), offsets, size: offset, sources };
}

/** Writes the data file (sequentially, padding included: no holes) and returns its sha256. */
async function writeData(
  dataPath: string,
  requests: WeightRequest[],
  offsets: Map<string, { offset: number; length: number }>,
  size: number,
  onProgress?: (done: number, total: number) => void,
): Promise<string> {
  const writer = await AtomicWriter.open(dataPath, { makeFolder: true });
  const hash = crypto.createHash('sha256');
  const put = async (bytes: Uint8Array) => {
    // Hashing hundreds of MB at once would hold the event loop; slices let it take turns.
    for (let start = 0; start < bytes.byteLength; start += HASH_SLICE) {
      hash.update(bytes.subarray(start, start + HASH_SLICE));
      if (start + HASH_SLICE < bytes.byteLength) await nextTurn();
    }
    await writer.write(bytes);
  };
  try {
    let done = 0;
    for (const r of requests) {
      const slot = offsets.get(r.name)!;
      if (writer.size < slot.offset) await put(new Uint8Array(slot.offset - writer.size));
      const bytes = await r.produce();
      if (bytes.byteLength !== slot.length) {
        throw new RuntimeError(`weight ${r.name}: produced ${bytes.byteLength} bytes, expected ${slot.length}`);
      }
      await put(bytes);
      onProgress?.(++done, requests.length);
    }
    if (writer.size < size) await put(new Uint8Array(size - writer.size));
  } catch (error) {
    await writer.abort();
    throw error;
  }
  await writer.commit();
  return hash.digest('hex');
}

/**
 * The cache file holding every request's bytes (written if missing, stale or corrupt) and each weight's place in it.
 * Concurrent processes converting the same weights take turns through a lock; the second finds the entry built.
 */
export async function ensureWeightCache(
  cacheDir: string,
  requests: WeightRequest[],
  onProgress?: (done: number, total: number) => void,
): Promise<WeightCacheEntry> {
  const { key, offsets, size, sources } = await plan(requests);
  const fileName = `weights-${key}.bin`;
  const dataPath = path.join(cacheDir, fileName);
  const manifestPath = path.join(cacheDir, `weights-${key}.json`);

  const reuse = async (): Promise<boolean> => {
    const manifest = readManifest(manifestPath);
    if (!manifest) return false;
    const { valid, reseal } = await checkEntry(dataPath, manifest, size, sources);
    if (valid && reseal) {
      const seal = (await statIdentity(dataPath))!;
      const resealed = manifest.sources.map((s) => ({ ...s, identity: sources.get(s.path)! }));
      await writeFileAtomic(manifestPath, JSON.stringify({ ...manifest, seal, sources: resealed }));
    }
    return valid;
  };
  if (await reuse()) return { fileName, offsets };

  const release = await acquireLock(path.join(cacheDir, `weights-${key}.lock`), {
    what: `the weight conversion into ${dataPath}`,
  });
  try {
    if (await reuse()) return { fileName, offsets };
    const sha256 = await writeData(dataPath, requests, offsets, size, onProgress);
    const recorded: Manifest['sources'] = [];
    for (const [file, identity] of sources) {
      const digest = await hashFile(file);
      // A source changed while it was converted: leave the entry without a manifest, so the next load rebuilds it.
      const after = await statIdentity(file);
      if (!after || !sameIdentity(after, identity)) return { fileName, offsets };
      recorded.push({ path: file, identity, sha256: digest });
    }
    const seal = (await statIdentity(dataPath))!;
    const manifest: Manifest = { version: MANIFEST_VERSION, size, sha256, seal, sources: recorded };
    await writeFileAtomic(manifestPath, `${JSON.stringify(manifest)}\n`);
    return { fileName, offsets };
  } finally {
    await release();
  }
}
