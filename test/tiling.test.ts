import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadImage, type RgbImage } from '../src/processing/image.js';
import { resizeBicubicPillow } from '../src/processing/resample.js';
import {
  dynamicTiles,
  findClosestAspectRatio,
  preprocessForChat,
  preprocessForClip,
  pyTupleHash,
  resizeExact,
  resizeShortSideCenterCrop,
  shortSideResizeSize,
  targetRatios,
} from '../src/processing/tiling.js';

const DATA = new URL('./data/', import.meta.url).pathname;

// ---- tiny safetensors reader (test only; the library's reader lives in src/core) ----
interface Tensor {
  dtype: string;
  shape: number[];
  f32?: Float32Array;
  i64?: BigInt64Array;
}
function readSafetensors(path: string): Record<string, Tensor> {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const out: Record<string, Tensor> = {};
  for (const [name, h] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [s, e] = h.data_offsets;
    const bytes = new Uint8Array(buf.subarray(8 + n + s, 8 + n + e)); // copy → aligned
    const t: Tensor = { dtype: h.dtype, shape: h.shape };
    if (h.dtype === 'F32') t.f32 = new Float32Array(bytes.buffer);
    else if (h.dtype === 'I64') t.i64 = new BigInt64Array(bytes.buffer);
    out[name] = t;
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

// ---------------------------------------------------------------------------------------------------------------

const ORDER_12 = [
  [1, 1],
  [1, 2],
  [2, 1],
  [3, 1],
  [1, 3],
  [2, 2],
  [4, 1],
  [1, 4],
  [5, 1],
  [1, 5],
  [1, 6],
  [6, 1],
  [3, 2],
  [2, 3],
  [7, 1],
  [1, 7],
  [4, 2],
  [2, 4],
  [1, 8],
  [8, 1],
  [1, 9],
  [3, 3],
  [9, 1],
  [2, 5],
  [5, 2],
  [10, 1],
  [1, 10],
  [11, 1],
  [1, 11],
  [12, 1],
  [3, 4],
  [4, 3],
  [1, 12],
  [6, 2],
  [2, 6],
];
const ORDER_6 = [
  [1, 1],
  [1, 2],
  [2, 1],
  [3, 1],
  [1, 3],
  [4, 1],
  [1, 4],
  [2, 2],
  [1, 5],
  [5, 1],
  [6, 1],
  [2, 3],
  [1, 6],
  [3, 2],
];

test('CPython tuple hash (xxHash based, 3.8+)', () => {
  // hash((1, 2)) and hash(()) on 64-bit CPython ≥ 3.8, as unsigned 64-bit values.
  assert.equal(pyTupleHash([1, 2]), BigInt.asUintN(64, -3550055125485641917n));
  assert.equal(pyTupleHash([]), 5740354900026072187n);
});

test('candidate grids come out in CPython set order (reference orders for max 12 and max 6)', () => {
  assert.deepEqual(targetRatios(1, 12), ORDER_12);
  assert.deepEqual(targetRatios(1, 6), ORDER_6);
  // the fixture's meta records the order the official code used
  const meta = JSON.parse(readFileSync(join(DATA, 'fixtures/preprocess/meta.json'), 'utf8'));
  assert.deepEqual(targetRatios(1, 6), meta.images['image5.jpg'].target_ratios);
});

test('candidate grids: the right set, sorted by tile count, for many (min, max)', () => {
  for (let max = 1; max <= 40; max++) {
    for (const min of [1, 2, 3, Math.max(1, max - 2), max]) {
      if (min > max) continue;
      const got = targetRatios(min, max);
      const want = new Set<string>();
      for (let i = 1; i <= max; i++)
        for (let j = 1; j <= max; j++) if (i * j >= min && i * j <= max) want.add(`${i},${j}`);
      assert.equal(got.length, want.size, `${min}..${max}`);
      assert.deepEqual(new Set(got.map(([i, j]) => `${i},${j}`)), want);
      for (let k = 1; k < got.length; k++) assert.ok(got[k - 1][0] * got[k - 1][1] <= got[k][0] * got[k][1]);
    }
  }
});

test('closest aspect ratio and the tie rule', () => {
  const r6 = targetRatios(1, 6);
  // 448×448: (1,1) and (2,2) tie at ratio 1; area 200704 is not > 0.5·448²·4 → keep (1,1)
  assert.deepEqual(findClosestAspectRatio(448, 448, r6, 448), [1, 1]);
  // 1000×1000: area 1e6 > 401408 → the later (2,2) wins the tie
  assert.deepEqual(findClosestAspectRatio(1000, 1000, r6, 448), [2, 2]);
  // 2:1 → (2,1); ties with (4,2) are out of range for max 6
  assert.deepEqual(findClosestAspectRatio(889, 500, r6, 448), [2, 1]);
  assert.deepEqual(findClosestAspectRatio(600, 500, r6, 448), [1, 1]);
  // very tall
  assert.deepEqual(findClosestAspectRatio(100, 1000, r6, 448), [1, 6]);
});

test('dynamicTiles: row-major tiles cut from the Pillow resize, thumbnail last', () => {
  const w = 1200;
  const h = 620; // aspect 1.94 → (2, 1)
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 251;
  const img: RgbImage = { width: w, height: h, data };
  const { grid, tiles } = dynamicTiles(img, { maxTiles: 6 });
  assert.deepEqual(grid, [2, 1]);
  assert.equal(tiles.length, 3);
  const resized = resizeBicubicPillow(img, 896, 448);
  for (let k = 0; k < 2; k++) {
    for (let y = 0; y < 448; y += 37) {
      const a = tiles[k].data.subarray(y * 448 * 3, (y + 1) * 448 * 3);
      const b = resized.data.subarray((y * 896 + k * 448) * 3, (y * 896 + k * 448 + 448) * 3);
      assert.deepEqual(a, b);
    }
  }
  assert.deepEqual(tiles[2].data, resizeBicubicPillow(img, 448, 448).data);
  // no thumbnail when turned off, and never for a single tile
  assert.equal(dynamicTiles(img, { maxTiles: 6, useThumbnail: false }).tiles.length, 2);
  assert.equal(dynamicTiles(img, { maxTiles: 1 }).tiles.length, 1);
  // 3 × 2 grid order: tile k = (col k % 3, row k / 3)
  const wide: RgbImage = { width: 1344, height: 896, data: new Uint8Array(1344 * 896 * 3) };
  for (let y = 0; y < 896; y++) {
    for (let x = 0; x < 1344; x++) wide.data[(y * 1344 + x) * 3] = Math.floor(x / 448) + 3 * Math.floor(y / 448);
  }
  const r = dynamicTiles(wide, { maxTiles: 6 });
  assert.deepEqual(r.grid, [3, 2]);
  assert.equal(r.tiles.length, 7);
  for (let k = 0; k < 6; k++) assert.equal(r.tiles[k].data[(224 * 448 + 224) * 3], k);
});

test('preprocess fixture: official dynamic_preprocess + build_transform (448, max 6, thumbnail)', async (t) => {
  const st = readSafetensors(join(DATA, 'fixtures/preprocess/io.safetensors'));
  const meta = JSON.parse(readFileSync(join(DATA, 'fixtures/preprocess/meta.json'), 'utf8'));
  for (const name of ['image3', 'image5']) {
    const img = await loadImage(join(DATA, `fixtures/preprocess/images/${name}.jpg`));
    const info = meta.images[`${name}.jpg`];
    assert.deepEqual([img.width, img.height], info.orig_size);
    const r = preprocessForChat(img, { maxTiles: 6, minTiles: 1, tileSize: 448, useThumbnail: true });
    const grid = st[`out.${name}.target_aspect_ratio`].i64!;
    assert.deepEqual(r.grid, [Number(grid[0]), Number(grid[1])]);
    const golden = st[`out.${name}.pixel_values`];
    assert.deepEqual([r.numTiles, 3, 448, 448], golden.shape);
    const err = maxAbsDiff(r.pixelValues, golden.f32!);
    t.diagnostic(`preprocess ${name}: grid ${r.grid.join('x')}, ${r.numTiles} tiles, max |err| = ${err}`);
    assert.ok(err <= 0.04, `${name}: max error ${err}`);
    assert.equal(err, 0, 'bit-exact with Pillow + torchvision');
  }
});

test('clip_e2e pixels: Resize 224 + CenterCrop (classification) and Resize (224, 224) (retrieval)', async (t) => {
  const st = readSafetensors(join(DATA, 'fixtures/clip_e2e/golden/io.safetensors'));
  const meta = JSON.parse(readFileSync(join(DATA, 'fixtures/clip_e2e/golden/meta.json'), 'utf8'));
  const files: string[] = meta.images.map((e: { file: string }) => e.file);
  assert.equal(files.length, 8);
  const per = 3 * 224 * 224;
  for (const [task, key] of [
    ['classification', 'in.cls.pixel_values'],
    ['retrieval', 'in.ret.pixel_values'],
  ] as const) {
    const golden = st[key].f32!;
    assert.deepEqual(st[key].shape, [8, 3, 224, 224]);
    let worst = 0;
    for (let k = 0; k < 8; k++) {
      const img = await loadImage(join(DATA, 'images', files[k]));
      const px = preprocessForClip(img, task);
      const err = maxAbsDiff(px, golden.subarray(k * per, (k + 1) * per));
      worst = Math.max(worst, err);
      assert.ok(err <= 0.04, `${task} ${files[k]}: ${err}`);
      if (files[k].endsWith('.png')) assert.equal(err, 0, `${task} ${files[k]} bit-exact`);
    }
    t.diagnostic(`clip_e2e ${task}: max |err| over 8 photos = ${worst}`);
  }
});

test('torchvision Resize(int) output size truncates the long side; helpers keep sizes', () => {
  assert.deepEqual(shortSideResizeSize(451, 300, 224), [336, 224]); // 224·451/300 = 336.77 → 336
  assert.deepEqual(shortSideResizeSize(300, 451, 224), [224, 336]);
  assert.deepEqual(shortSideResizeSize(384, 191, 224), [450, 224]); // 450.35 → 450
  assert.deepEqual(shortSideResizeSize(512, 512, 224), [224, 224]);
  const img: RgbImage = { width: 100, height: 60, data: new Uint8Array(100 * 60 * 3).fill(9) };
  const a = resizeShortSideCenterCrop(img, 224);
  assert.deepEqual([a.width, a.height], [224, 224]);
  assert.ok(a.data.every((v) => v === 9));
  const b = resizeExact(img, 224, 224);
  assert.deepEqual([b.width, b.height], [224, 224]);
});
