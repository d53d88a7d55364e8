/** The server's cache of image token embeddings: keyed by tile content, one encoding per new visual, LRU bytes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { floatTensor } from '../src/core/tensor.js';
import type { ChatPipeline, PreparedVisuals } from '../src/tasks/chat.js';
import { VisualEmbeddingCache } from '../src/tasks/visual_cache.js';

const TILE = 12; // values per tile
const TOKENS = 2;
const HIDDEN = 3;

/** A vision tower whose tile embeddings are (tile sum + token + channel): checkable, and counting its runs. */
function fakePipeline(options: { fail?: boolean } = {}) {
  const runs: number[] = [];
  const model = {
    config: { llm: { hiddenSize: HIDDEN } },
    async extractFeature(pixels: Float32Array, tiles: number) {
      runs.push(tiles);
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (options.fail) throw new Error('vision failed');
      const out = new Float32Array(tiles * TOKENS * HIDDEN);
      for (let t = 0; t < tiles; t++) {
        const sum = pixels.subarray(t * TILE, (t + 1) * TILE).reduce((a, b) => a + b, 0);
        for (let i = 0; i < TOKENS * HIDDEN; i++) out[t * TOKENS * HIDDEN + i] = sum + i;
      }
      return floatTensor(out, [tiles, TOKENS, HIDDEN]);
    },
  };
  return { pipeline: { model } as unknown as ChatPipeline, runs };
}

/** Visuals of the given tile values (one number per tile, repeated over the tile). */
function visuals(...items: number[][]): PreparedVisuals {
  const pixels = new Float32Array(items.flat().length * TILE);
  items.flat().forEach((v, t) => pixels.fill(v, t * TILE, (t + 1) * TILE));
  return { pixels, visuals: items.map((tiles) => ({ kind: 'image' as const, tiles: tiles.length })) };
}

const expected = (...tiles: number[]) =>
  tiles.flatMap((v) => Array.from({ length: TOKENS * HIDDEN }, (_, i) => v * TILE + i));

test('visual cache: a visual seen again is not encoded again; results equal an uncached encoding', async () => {
  const { pipeline, runs } = fakePipeline();
  const cache = new VisualEmbeddingCache(pipeline, 1 << 20);
  const first = await cache.encode(visuals([1, 2], [3]));
  assert.deepEqual(first?.dims, [3, TOKENS, HIDDEN]);
  assert.deepEqual(Array.from(first!.data), expected(1, 2, 3));
  assert.deepEqual(runs, [3]);
  // One held, one new, one repeated within the request: only the new one is encoded.
  const second = await cache.encode(visuals([3], [4], [3]));
  assert.deepEqual(Array.from(second!.data), expected(3, 4, 3));
  assert.deepEqual(runs, [3, 1]);
  assert.deepEqual(cache.stats, { hits: 2, misses: 3, bytes: 4 * TOKENS * HIDDEN * 4, entries: 3 });
  assert.equal(await cache.encode({ pixels: null, visuals: [] }), null);
});

test('visual cache: requests arriving together with one new image encode it once', async () => {
  const { pipeline, runs } = fakePipeline();
  const cache = new VisualEmbeddingCache(pipeline, 1 << 20);
  const results = await Promise.all([1, 2, 3].map(() => cache.encode(visuals([7]))));
  for (const r of results) assert.deepEqual(Array.from(r!.data), expected(7));
  assert.deepEqual(runs, [1]);
  assert.deepEqual({ hits: cache.stats.hits, misses: cache.stats.misses }, { hits: 2, misses: 1 });
});

test('visual cache: least recently used entries go past the byte budget; 0 bytes keeps nothing', async () => {
  const entry = TOKENS * HIDDEN * 4;
  const { pipeline, runs } = fakePipeline();
  const cache = new VisualEmbeddingCache(pipeline, 2 * entry);
  await cache.encode(visuals([1]));
  await cache.encode(visuals([2]));
  await cache.encode(visuals([1])); // 1 is now the most recently used
  await cache.encode(visuals([3])); // evicts 2
  assert.deepEqual({ bytes: cache.stats.bytes, entries: cache.stats.entries }, { bytes: 2 * entry, entries: 2 });
  runs.length = 0;
  await cache.encode(visuals([1]));
  await cache.encode(visuals([3]));
  assert.deepEqual(runs, []);
  await cache.encode(visuals([2]));
  assert.deepEqual(runs, [1]);

  const none = fakePipeline();
  const uncached = new VisualEmbeddingCache(none.pipeline, 0);
  await uncached.encode(visuals([5]));
  await uncached.encode(visuals([5]));
  // Not even requests arriving together share an encoding: every visual of every request is encoded.
  await Promise.all([uncached.encode(visuals([5], [5])), uncached.encode(visuals([5]))]);
  assert.deepEqual(none.runs, [1, 1, 2, 1]);
  assert.deepEqual({ hits: uncached.stats.hits, misses: uncached.stats.misses }, { hits: 0, misses: 5 });
  assert.equal(uncached.stats.entries, 0);
});

test('visual cache: a failed encoding reaches every waiting request and is not kept', async () => {
  const { pipeline, runs } = fakePipeline({ fail: true });
  const cache = new VisualEmbeddingCache(pipeline, 1 << 20);
  const all = await Promise.allSettled([cache.encode(visuals([9])), cache.encode(visuals([9]))]);
  assert.deepEqual(
    all.map((r) => r.status === 'rejected' && (r.reason as Error).message),
    ['vision failed', 'vision failed'],
  );
  await assert.rejects(cache.encode(visuals([9])), /vision failed/);
  assert.deepEqual(runs, [1, 1]);
  assert.equal(cache.stats.entries, 0);
});
