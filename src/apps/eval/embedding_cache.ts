/** The on-disk cache of image, video and text embeddings of `internvl eval`. */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { storageError } from '../../core/node/atomic_write.js';
import { InternalError, StorageError } from '../../core/errors.js';
import { defaultCacheDir } from '../../core/node/weight_cache.js';
import { DatasetError } from '../../core/errors.js';

const CACHE_MAGIC = Buffer.from('IVLEMB02', 'latin1');
const CACHE_HEADER = 16;
const KEY_BYTES = 32;
/** Each record ends with the first bytes of sha256(key hash ‖ values), so flipped or torn records are skipped. */
const CHECK_BYTES = 8;

/**
 * Embeddings on disk, one folder per namespace (model identity, embedding kind, mode, transform, image size,
 * frames…), keyed by a string per item (a file's real path + size + mtime, a prompt…).
 *
 * Each process appends to its own segment file (`*.emb`: a 16-byte header with the dimension, then fixed-size
 * records of sha256(key), D float32 and a check), and readers load every segment of the namespace. So two runs at
 * once never write the same file; a run killed mid-write leaves a partial last record, and a record whose bytes
 * changed fails its check: readers skip both, and the embedding is computed again.
 * Values are stored exactly, so a cached run gives bit-identical results.
 */
export class EmbeddingCache {
  private readonly index = new Map<string, { buf: Buffer; offset: number }>();
  private segment: string | null = null;

  private constructor(
    readonly dir: string,
    readonly dim: number,
  ) {}

  /** Opens (creating) the namespace folder under `root` and loads its segments. */
  static open(root: string, namespace: Record<string, unknown>, dim: number): EmbeddingCache {
    const nsJson = JSON.stringify(namespace);
    const dir = path.join(root, createHash('sha256').update(nsJson).digest('hex').slice(0, 32));
    try {
      fs.mkdirSync(dir, { recursive: true });
      const meta = path.join(dir, 'namespace.json');
      // For whoever looks inside the cache; never read back.
      if (!fs.existsSync(meta)) fs.writeFileSync(meta, `${JSON.stringify(namespace, null, 2)}\n`);
    } catch (e) {
      throw cacheError(root, e);
    }
    const cache = new EmbeddingCache(dir, dim);
    cache.load();
    return cache;
  }

  private get recordBytes(): number {
    return KEY_BYTES + 4 * this.dim + CHECK_BYTES;
  }

  private load(): void {
    let names: string[];
    try {
      names = fs
        .readdirSync(this.dir)
        .filter((n) => n.endsWith('.emb'))
        .sort();
    } catch (e) {
      throw cacheError(this.dir, e);
    }
    for (const name of names) {
      let buf: Buffer;
      try {
        buf = fs.readFileSync(path.join(this.dir, name));
      } catch {
        continue; // a segment another run is creating right now, or one deleted under us
      }
      if (buf.length < CACHE_HEADER || !buf.subarray(0, 8).equals(CACHE_MAGIC) || buf.readUInt32LE(8) !== this.dim)
        continue;
      const count = Math.floor((buf.length - CACHE_HEADER) / this.recordBytes);
      for (let i = 0; i < count; i++) {
        const offset = CACHE_HEADER + i * this.recordBytes;
        const body = buf.subarray(offset, offset + KEY_BYTES + 4 * this.dim);
        if (!recordCheck(body).equals(buf.subarray(offset + body.length, offset + this.recordBytes))) continue;
        this.index.set(buf.toString('hex', offset, offset + KEY_BYTES), { buf, offset: offset + KEY_BYTES });
      }
    }
  }

  get size(): number {
    return this.index.size;
  }

  get(key: string): Float32Array | undefined {
    const hit = this.index.get(hashKey(key));
    if (!hit) return undefined;
    // Copy through bytes: the record's offset in a pooled Buffer need not be 4-byte aligned.
    const bytes = new Uint8Array(4 * this.dim);
    bytes.set(hit.buf.subarray(hit.offset, hit.offset + 4 * this.dim));
    return new Float32Array(bytes.buffer);
  }

  /** Appends entries (one write, so a concurrent reader sees whole records or a skippable partial one). */
  put(entries: readonly (readonly [string, Float32Array])[]): void {
    if (entries.length === 0) return;
    const buf = Buffer.alloc(entries.length * this.recordBytes);
    entries.forEach(([key, value], i) => {
      if (value.length !== this.dim)
        throw new InternalError(`cannot cache a ${value.length}-dim embedding in a ${this.dim}-dim cache`);
      const offset = i * this.recordBytes;
      Buffer.from(hashKey(key), 'hex').copy(buf, offset);
      Buffer.from(value.buffer, value.byteOffset, value.byteLength).copy(buf, offset + KEY_BYTES);
      const body = buf.subarray(offset, offset + KEY_BYTES + 4 * this.dim);
      recordCheck(body).copy(buf, offset + body.length);
    });
    try {
      if (this.segment === null) {
        const header = Buffer.alloc(CACHE_HEADER);
        CACHE_MAGIC.copy(header, 0);
        header.writeUInt32LE(this.dim, 8);
        const name = `${Date.now().toString(36)}-${process.pid}-${randomBytes(4).toString('hex')}.emb`;
        fs.writeFileSync(path.join(this.dir, name), header, { flag: 'wx' });
        this.segment = path.join(this.dir, name);
      }
      fs.appendFileSync(this.segment, buf);
    } catch (e) {
      throw cacheError(this.segment ?? this.dir, e);
    }
    entries.forEach(([key], i) => this.index.set(hashKey(key), { buf, offset: i * this.recordBytes + KEY_BYTES }));
  }
}

function recordCheck(body: Uint8Array): Buffer {
  return createHash('sha256').update(body).digest().subarray(0, CHECK_BYTES);
}

function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

function cacheError(where: string, e: unknown): StorageError {
  const known = storageError(e, where);
  const why =
    known instanceof StorageError
      ? known.message
      : `cannot use the embedding cache in ${where}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  return new StorageError(`${why} (choose another with --cache-dir, or --no-cache)`, { cause: e });
}

/** `$INTERNVL_CACHE/embeddings`, else `~/.cache/internvl-ts/embeddings`. */
export function defaultEmbeddingCacheDir(): string {
  return path.join(defaultCacheDir(), 'embeddings');
}

/** Cache key of a file: real path, size, mtime. Editing or replacing the file changes it. */
export function fileKey(file: string): string {
  let real: string;
  let st: fs.Stats;
  try {
    real = fs.realpathSync(file);
    st = fs.statSync(real);
  } catch (e) {
    throw new DatasetError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return `file:${real}:${st.size}:${st.mtimeMs}`;
}
