/**
 * Image token embeddings kept by the content of their tiles, so a visual seen again is not encoded again. OpenAI-style
 * clients send the whole conversation every turn, images included: without this, every turn of a chat about a
 * picture pays its vision encoding anew. The key is the sha256 of a visual's preprocessed tiles (the pixels, which
 * decide its embeddings); entries are evicted least recently used past a byte budget.
 */
import { floatTensor, type FloatTensor } from '../core/tensor.js';
import { encodeVisuals, type ChatPipeline, type PreparedVisuals } from './chat.js';

/** What a server keeps per chat model unless told otherwise: ~280 tiles of InternVL2-1B, ~40 of a 26B. */
export const DEFAULT_VISUAL_CACHE_MB = 256;

export interface VisualCacheStats {
  /** Visuals whose embeddings were held or already being encoded. */
  hits: number;
  /** Visuals encoded. */
  misses: number;
  /** Bytes of embeddings held. */
  bytes: number;
  entries: number;
}

async function digest(pixels: Float32Array): Promise<string> {
  const bytes = new Uint8Array(pixels.buffer, pixels.byteOffset, pixels.byteLength);
  const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(hash, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class VisualEmbeddingCache {
  /** Insertion order is recency order: a hit moves its entry to the end. */
  private readonly entries = new Map<string, Float32Array>();
  /** Encodings in flight, so that requests arriving together with one new image encode it once. */
  private readonly pending = new Map<string, Promise<Float32Array>>();
  private held = 0;
  private hits = 0;
  private misses = 0;

  /** `maxBytes` 0: nothing is kept and nothing shared: every visual of every request is encoded. */
  constructor(
    private readonly pipeline: ChatPipeline,
    readonly maxBytes: number,
  ) {}

  get stats(): VisualCacheStats {
    return { hits: this.hits, misses: this.misses, bytes: this.held, entries: this.entries.size };
  }

  /** As `encodeVisuals`: [tiles, tokensPerTile, hidden] for all visuals in order, or null without visuals. */
  async encode(prepared: PreparedVisuals): Promise<FloatTensor | null> {
    const { pixels, visuals } = prepared;
    if (!pixels) return null;
    const tiles = visuals.reduce((n, v) => n + v.tiles, 0);
    if (this.maxBytes === 0) {
      this.misses += visuals.length;
      return encodeVisuals(this.pipeline, prepared);
    }
    const tileValues = pixels.length / tiles;
    let offset = 0;
    const parts = visuals.map((v) => {
      const slice = pixels.subarray(offset, offset + v.tiles * tileValues);
      offset += slice.length;
      return { tiles: v.tiles, pixels: slice };
    });
    const keys = await Promise.all(parts.map((p) => digest(p.pixels)));
    // Held entries are taken now, before anything can evict them; the rest are encoded together, in one run.
    const found = keys.map((key) => this.touch(key));
    const missing = keys
      .map((_, i) => i)
      .filter(
        (i, at, all) => !found[i] && !this.pending.has(keys[i]) && all.findIndex((j) => keys[j] === keys[i]) === at,
      );
    this.encodeMissing(parts, keys, missing);
    const embeds = await Promise.all(
      keys.map((key, i) => {
        if (missing.includes(i)) this.misses++;
        else this.hits++;
        return found[i] ?? this.pending.get(key)!;
      }),
    );
    const out = new Float32Array(embeds.reduce((n, e) => n + e.length, 0));
    let at = 0;
    for (const e of embeds) {
      out.set(e, at);
      at += e.length;
    }
    const hidden = this.pipeline.model.config.llm.hiddenSize;
    return floatTensor(out, [tiles, out.length / tiles / hidden, hidden]);
  }

  /** A held entry, made the most recently used. */
  private touch(key: string): Float32Array | undefined {
    const held = this.entries.get(key);
    if (held) {
      this.entries.delete(key);
      this.entries.set(key, held);
    }
    return held;
  }

  /** Starts one vision run over the visuals at `indices`, each visual's share of it pending under its key. */
  private encodeMissing(parts: { tiles: number; pixels: Float32Array }[], keys: string[], indices: number[]): void {
    if (indices.length === 0) return;
    const batch = new Float32Array(indices.reduce((n, i) => n + parts[i].pixels.length, 0));
    let at = 0;
    for (const i of indices) {
      batch.set(parts[i].pixels, at);
      at += parts[i].pixels.length;
    }
    const tiles = indices.reduce((n, i) => n + parts[i].tiles, 0);
    const run = this.pipeline.model.extractFeature(batch, tiles);
    let first = 0;
    for (const i of indices) {
      const start = first;
      first += parts[i].tiles;
      const key = keys[i];
      const share = run.then((out) => {
        const perTile = out.data.length / tiles;
        return out.data.slice(start * perTile, (start + parts[i].tiles) * perTile);
      });
      this.pending.set(key, share);
      share.then(
        (data) => {
          this.pending.delete(key);
          this.keep(key, data);
        },
        // The waiting requests get the failure; nothing is kept.
        () => this.pending.delete(key),
      );
    }
  }

  private keep(key: string, data: Float32Array): void {
    if (data.byteLength > this.maxBytes || this.entries.has(key)) return;
    this.entries.set(key, data);
    this.held += data.byteLength;
    for (const [old, value] of this.entries) {
      if (this.held <= this.maxBytes) break;
      this.entries.delete(old);
      this.held -= value.byteLength;
    }
  }
}
