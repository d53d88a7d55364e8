/**
 * InternVL image preprocessing:
 * - `dynamic_preprocess` (internvl_chat/internvl/train/dataset.py) → {@link dynamicTiles}, {@link preprocessForChat};
 * - the clip_benchmark / torchvision transforms for InternVL-C/G → {@link resizeShortSideCenterCrop},
 *   {@link resizeExact}, {@link preprocessForClip}.
 *
 * The candidate grids of `dynamic_preprocess` come from a Python `set` of (cols, rows) tuples that is then sorted
 * stably by cols·rows, so on equal products the set's iteration order decides, and with it which grid wins an aspect
 * ratio tie. {@link targetRatios} reproduces that order by emulating CPython (≥ 3.8, 64-bit): the xxHash-based tuple
 * hash (Objects/tupleobject.c) and the set's open addressing — linear probes of 9, perturbed probing, table growth
 * ×4 when 5·fill ≥ 3·mask, re-insertion in old-table order (Objects/setobject.c).
 */
import { UsageError } from '../core/errors.js';
import { centerCrop, cropImage, IMAGENET_MEAN, IMAGENET_STD, toCHWFloat, type RgbImage } from './image.js';
import { resizeBicubicPillow } from './resample.js';

const M64 = (1n << 64n) - 1n;
const XXPRIME_1 = 11400714785074694791n;
const XXPRIME_2 = 14029467366897019727n;
const XXPRIME_5 = 2870177450012600261n;

/** CPython `hash(int)` for a small non-negative int, as an unsigned 64-bit value. */
function pyIntHash(v: number): bigint {
  return BigInt(v); // |v| < 2^61 − 1: the value itself
}

/** CPython `hash(tuple_of_small_ints)` (3.8+, 64-bit build), as an unsigned 64-bit value (−1 → −2 not needed here). */
export function pyTupleHash(items: readonly number[]): bigint {
  let acc = XXPRIME_5;
  for (const it of items) {
    const lane = pyIntHash(it);
    acc = (acc + lane * XXPRIME_2) & M64;
    acc = ((acc << 31n) | (acc >> 33n)) & M64;
    acc = (acc * XXPRIME_1) & M64;
  }
  acc = (acc + (BigInt(items.length) ^ (XXPRIME_5 ^ 3527539n))) & M64;
  if (acc === M64) return 1546275796n;
  return acc;
}

interface Slot {
  key: [number, number];
  hash: bigint;
}

const LINEAR_PROBES = 9;
const PERTURB_SHIFT = 5n;
const SET_MINSIZE = 8;

/** A CPython set of (i, j) tuples, insertion only: enough to get `list(set)`'s order. */
class PyTupleSet {
  private table: (Slot | null)[] = new Array<Slot | null>(SET_MINSIZE).fill(null);
  private mask = SET_MINSIZE - 1;
  private fill = 0;
  private used = 0;

  add(key: [number, number]): void {
    const hash = pyTupleHash(key);
    const mask = BigInt(this.mask);
    let perturb = hash;
    let i = hash & mask;
    for (;;) {
      const probes = i + BigInt(LINEAR_PROBES) <= mask ? LINEAR_PROBES : 0;
      let idx = Number(i);
      for (let p = 0; p <= probes; p++, idx++) {
        const e = this.table[idx];
        if (e === null) {
          this.table[idx] = { key, hash };
          this.fill++;
          this.used++;
          if (this.fill * 5 >= this.mask * 3) this.resize(this.used > 50000 ? this.used * 2 : this.used * 4);
          return;
        }
        if (e.hash === hash && e.key[0] === key[0] && e.key[1] === key[1]) return; // already present
      }
      perturb >>= PERTURB_SHIFT;
      i = (i * 5n + 1n + perturb) & mask;
    }
  }

  private resize(minused: number): void {
    let newsize = SET_MINSIZE;
    while (newsize <= minused) newsize *= 2;
    const old = this.table;
    this.table = new Array<Slot | null>(newsize).fill(null);
    this.mask = newsize - 1;
    const mask = BigInt(this.mask);
    for (const e of old) {
      if (e === null) continue;
      // set_insert_clean
      let perturb = e.hash;
      let i = e.hash & mask;
      for (;;) {
        let idx = Number(i);
        if (this.table[idx] === null) {
          this.table[idx] = e;
          break;
        }
        let placed = false;
        if (i + BigInt(LINEAR_PROBES) <= mask) {
          for (let j = 0; j < LINEAR_PROBES; j++) {
            idx++;
            if (this.table[idx] === null) {
              this.table[idx] = e;
              placed = true;
              break;
            }
          }
        }
        if (placed) break;
        perturb >>= PERTURB_SHIFT;
        i = (i * 5n + 1n + perturb) & mask;
      }
    }
  }

  /** Iteration order of the set (table order). */
  items(): [number, number][] {
    return this.table.filter((e): e is Slot => e !== null).map((e) => e.key);
  }
}

const ratioCache = new Map<string, [number, number][]>();

/**
 * The candidate grids (cols, rows) of `dynamic_preprocess`, in the exact order the official Python code iterates
 * them: `sorted(set((i, j) for n in range(min, max+1) for i in 1..n for j in 1..n if min <= i*j <= max),
 * key=lambda x: x[0]*x[1])`.
 */
export function targetRatios(minTiles: number, maxTiles: number): [number, number][] {
  if (!Number.isInteger(minTiles) || !Number.isInteger(maxTiles) || minTiles < 1 || maxTiles < minTiles) {
    throw new UsageError(`tiling: need integers 1 <= minTiles <= maxTiles, got ${minTiles}, ${maxTiles}`);
  }
  if (maxTiles > 1024) throw new UsageError(`tiling: maxTiles ${maxTiles} is unreasonably large (max 1024)`);
  const cacheKey = `${minTiles},${maxTiles}`;
  const hit = ratioCache.get(cacheKey);
  if (hit) return hit.map((r) => [r[0], r[1]]);
  const set = new PyTupleSet();
  const seen = new Set<number>(); // re-adding a present key leaves a CPython set untouched: skip it cheaply
  for (let n = minTiles; n <= maxTiles; n++) {
    for (let i = 1; i <= n; i++) {
      // j beyond maxTiles / i never passes the filter: skipping it keeps the insertion order.
      const jEnd = Math.min(n, Math.floor(maxTiles / i));
      for (let j = 1; j <= jEnd; j++) {
        if (i * j >= minTiles && !seen.has(i * 4096 + j)) {
          seen.add(i * 4096 + j);
          set.add([i, j]);
        }
      }
    }
  }
  const items = set.items();
  // Array.prototype.sort is stable (ES2019), like Python's sorted.
  const sorted = items.sort((a, b) => a[0] * a[1] - b[0] * b[1]);
  ratioCache.set(cacheKey, sorted);
  return sorted.map((r) => [r[0], r[1]]);
}

/**
 * `find_closest_aspect_ratio`: the first candidate with the smallest |W/H − cols/rows|; on an exact tie a later
 * candidate replaces it only when W·H > 0.5 · tileSize² · cols · rows.
 */
export function findClosestAspectRatio(
  width: number,
  height: number,
  ratios: readonly (readonly [number, number])[],
  tileSize: number,
): [number, number] {
  const aspect = width / height;
  let bestDiff = Infinity;
  let best: [number, number] = [1, 1];
  const area = width * height;
  for (const r of ratios) {
    const diff = Math.abs(aspect - r[0] / r[1]);
    if (diff < bestDiff) {
      bestDiff = diff;
      best = [r[0], r[1]];
    } else if (diff === bestDiff) {
      if (area > 0.5 * tileSize * tileSize * r[0] * r[1]) best = [r[0], r[1]];
    }
  }
  return best;
}

export interface TilingOptions {
  /** Minimum number of tiles (default 1). */
  minTiles?: number;
  /** Maximum number of tiles (default 12, the README/model-card value; eval scripts use 6). */
  maxTiles?: number;
  /** Tile side in pixels (default 448). */
  tileSize?: number;
  /** Append a whole-image thumbnail after the tiles when there is more than one tile (default true). */
  useThumbnail?: boolean;
}

export interface TilingResult {
  /** Chosen grid as [cols, rows]. */
  grid: [number, number];
  /** Tiles in row-major order, then the thumbnail (if any). */
  tiles: RgbImage[];
}

function resolveTiling(opts: TilingOptions): Required<TilingOptions> {
  const o: Required<TilingOptions> = {
    minTiles: opts.minTiles ?? 1,
    maxTiles: opts.maxTiles ?? 12,
    tileSize: opts.tileSize ?? 448,
    useThumbnail: opts.useThumbnail ?? true,
  };
  if (!Number.isInteger(o.tileSize) || o.tileSize <= 0) throw new UsageError(`tiling: bad tileSize ${o.tileSize}`);
  return o;
}

/** InternVL's `dynamic_preprocess(image, min_num, max_num, image_size, use_thumbnail)`, exactly. */
export function dynamicTiles(img: RgbImage, opts: TilingOptions = {}): TilingResult {
  const { minTiles, maxTiles, tileSize, useThumbnail } = resolveTiling(opts);
  const ratios = targetRatios(minTiles, maxTiles);
  const [cols, rows] = findClosestAspectRatio(img.width, img.height, ratios, tileSize);
  const resized = resizeBicubicPillow(img, tileSize * cols, tileSize * rows);
  const tiles: RgbImage[] = [];
  for (let k = 0; k < cols * rows; k++) {
    const c = k % cols;
    const r = Math.floor(k / cols);
    tiles.push(cols * rows === 1 ? resized : cropImage(resized, c * tileSize, r * tileSize, tileSize, tileSize));
  }
  if (useThumbnail && tiles.length !== 1) tiles.push(resizeBicubicPillow(img, tileSize, tileSize));
  return { grid: [cols, rows], tiles };
}

export interface ChatPixels {
  /** Float32 [numTiles, 3, tileSize, tileSize], ImageNet-normalised. */
  pixelValues: Float32Array;
  numTiles: number;
  /** [cols, rows] of the grid (the thumbnail is not counted). */
  grid: [number, number];
  tileSize: number;
}

/**
 * `dynamic_preprocess` + `build_transform(is_train=False, input_size)` of InternVL-Chat: tiles, each
 * Resize((tileSize, tileSize)) (a no-op), ToTensor, Normalize(ImageNet).
 */
export function preprocessForChat(
  img: RgbImage,
  opts: TilingOptions & { mean?: readonly number[]; std?: readonly number[] } = {},
): ChatPixels {
  const { tileSize } = resolveTiling(opts);
  const { grid, tiles } = dynamicTiles(img, opts);
  const per = 3 * tileSize * tileSize;
  const pixelValues = new Float32Array(tiles.length * per);
  tiles.forEach((t, i) => {
    const tile = t.width === tileSize && t.height === tileSize ? t : resizeBicubicPillow(t, tileSize, tileSize);
    toCHWFloat(tile, opts.mean ?? IMAGENET_MEAN, opts.std ?? IMAGENET_STD, pixelValues, i * per);
  });
  return { pixelValues, numTiles: tiles.length, grid, tileSize };
}

/**
 * torchvision `_compute_resized_output_size` for an int size: the short side becomes `size`, the long side
 * `int(size * long / short)` (truncation). Returns [width, height].
 */
export function shortSideResizeSize(width: number, height: number, size: number): [number, number] {
  if (width <= height) return [size, Math.trunc((size * height) / width)];
  return [Math.trunc((size * width) / height), size];
}

/**
 * torchvision `Resize(size, BICUBIC)` (short side) + `CenterCrop(size)` on a PIL image — the clip_benchmark
 * classification transform of InternVL-C/G. Pillow's antialiased bicubic, torchvision's crop offsets.
 */
export function resizeShortSideCenterCrop(img: RgbImage, size = 224): RgbImage {
  const [w, h] = shortSideResizeSize(img.width, img.height, size);
  const resized = w === img.width && h === img.height ? img : resizeBicubicPillow(img, w, h);
  return centerCrop(resized, size, size);
}

/**
 * torchvision `Resize((height, width), BICUBIC)` on a PIL image (no crop) — the clip_benchmark retrieval transform.
 * Returns the input itself when it already has that size (torchvision does the same).
 */
export function resizeExact(img: RgbImage, width: number, height: number = width): RgbImage {
  if (img.width === width && img.height === height) return img;
  return resizeBicubicPillow(img, width, height);
}

/**
 * The full clip_benchmark `build_transform(task, size)` of InternVL-C/G: 'classification' = Resize(size) +
 * CenterCrop(size), 'retrieval' = Resize((size, size)); then ToTensor + ImageNet Normalize → float32 [3, size, size].
 */
export function preprocessForClip(
  img: RgbImage,
  task: 'classification' | 'retrieval',
  size = 224,
  out?: Float32Array,
  offset = 0,
): Float32Array {
  const t = task === 'retrieval' ? resizeExact(img, size, size) : resizeShortSideCenterCrop(img, size);
  return toCHWFloat(t, IMAGENET_MEAN, IMAGENET_STD, out, offset);
}
