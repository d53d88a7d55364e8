import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { RgbImage } from '../src/processing/image.js';
import { resizeBicubicPillow } from '../src/processing/resample.js';
import { interpolateBicubic as resizeBicubicTorch } from '../src/core/interpolate.js';

// ---------------------------------------------------------------------------------------------------------------
// Independent reference implementations, written from the formulas (not from the library code).
// ---------------------------------------------------------------------------------------------------------------

/** Keys cubic kernel with parameter a. */
function keys(x: number, a: number): number {
  const t = Math.abs(x);
  if (t <= 1) return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1;
  if (t < 2) return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a;
  return 0;
}

/** PyTorch bicubic, align_corners=False: direct 2D sum over the 4×4 clamped neighbourhood. */
function torchRef(x: number[][][], outH: number, outW: number): number[][][] {
  const inH = x[0].length;
  const inW = x[0][0].length;
  const clamp = (v: number, n: number): number => Math.min(Math.max(v, 0), n - 1);
  return x.map((plane) => {
    const res: number[][] = [];
    for (let oy = 0; oy < outH; oy++) {
      const row: number[] = [];
      const sy = (oy + 0.5) * (inH / outH) - 0.5;
      const fy = Math.floor(sy);
      for (let ox = 0; ox < outW; ox++) {
        const sx = (ox + 0.5) * (inW / outW) - 0.5;
        const fx = Math.floor(sx);
        let v = 0;
        for (let m = -1; m <= 2; m++) {
          for (let n = -1; n <= 2; n++) {
            const w = keys(sy - (fy + m), -0.75) * keys(sx - (fx + n), -0.75);
            v += w * plane[clamp(fy + m, inH)][clamp(fx + n, inW)];
          }
        }
        row.push(v);
      }
      res.push(row);
    }
    return res;
  });
}

/** Pillow-style antialiased bicubic (a = −0.5) in plain floating point, rounded at the end of each pass. */
function pillowFloatRef(img: RgbImage, outW: number, outH: number): RgbImage {
  const pass = (src: Float64Array, w: number, h: number, horizontal: boolean, outN: number): Float64Array => {
    const inN = horizontal ? w : h;
    const scale = inN / outN;
    const fs = Math.max(scale, 1);
    const support = 2 * fs;
    const ow = horizontal ? outN : w;
    const oh = horizontal ? h : outN;
    const dst = new Float64Array(ow * oh * 3);
    for (let o = 0; o < outN; o++) {
      const center = (o + 0.5) * scale;
      const lo = Math.max(0, Math.floor(center - support + 0.5));
      const hi = Math.min(inN, Math.floor(center + support + 0.5));
      const ws: number[] = [];
      for (let i = lo; i < hi; i++) ws.push(keys((i + 0.5 - center) / fs, -0.5));
      const sum = ws.reduce((p, q) => p + q, 0);
      const other = horizontal ? h : w;
      for (let q = 0; q < other; q++) {
        for (let c = 0; c < 3; c++) {
          let v = 0;
          for (let i = lo; i < hi; i++) {
            const idx = horizontal ? (q * w + i) * 3 + c : (i * w + q) * 3 + c;
            v += (ws[i - lo] / sum) * src[idx];
          }
          const di = horizontal ? (q * ow + o) * 3 + c : (o * ow + q) * 3 + c;
          dst[di] = Math.min(255, Math.max(0, Math.round(v)));
        }
      }
    }
    return dst;
  };
  let cur: Float64Array = Float64Array.from(img.data);
  let w = img.width;
  let h = img.height;
  if (outW !== w) {
    cur = pass(cur, w, h, true, outW);
    w = outW;
  }
  if (outH !== h) {
    cur = pass(cur, w, h, false, outH);
    h = outH;
  }
  return { width: w, height: h, data: Uint8Array.from(cur) };
}

function randomImage(w: number, h: number, seed: number): RgbImage {
  let s = seed >>> 0;
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s >>> 24;
  }
  return { width: w, height: h, data };
}

// ---------------------------------------------------------------------------------------------------------------

test('resizeBicubicTorch matches the formula: 2×2 → 4×4, 4×4 → 3×3, 3×5 → 7×2 (2 channels)', () => {
  const cases: [number, number, number, number, number][] = [
    [1, 2, 2, 4, 4],
    [1, 4, 4, 3, 3],
    [2, 3, 5, 7, 2],
    [3, 16, 16, 23, 9],
  ];
  for (const [C, H, W, OH, OW] of cases) {
    const input = new Float32Array(C * H * W).map((_, i) => Math.fround(Math.sin(i * 1.7) * 3 + i * 0.1));
    const nested = Array.from({ length: C }, (_, c) =>
      Array.from({ length: H }, (_, y) => Array.from({ length: W }, (_, x) => input[(c * H + y) * W + x])),
    );
    const expect = torchRef(nested, OH, OW).flat(2);
    const got = resizeBicubicTorch(input, C, H, W, OH, OW);
    assert.equal(got.length, C * OH * OW);
    for (let i = 0; i < got.length; i++) {
      assert.ok(
        Math.abs(got[i] - expect[i]) <= 1e-6 * Math.max(1, Math.abs(expect[i])),
        `${C}x${H}x${W}→${OH}x${OW} @${i}`,
      );
    }
  }
});

test('resizeBicubicTorch hand-computed values and identity', () => {
  // [[0, 1], [2, 3]] → 4×4: output (0, 0) samples at (−0.25, −0.25): t = 0.75, only the last tap reaches index 1:
  // weight cubic2(1.25) = ((A·1.25 − 5A)·1.25 + 8A)·1.25 − 4A with A = −0.75 = −0.10546875.
  // value = 1 · w + 2 · w = 3 · (−0.10546875)
  const out = resizeBicubicTorch(new Float32Array([0, 1, 2, 3]), 1, 2, 2, 4, 4);
  assert.equal(out[0], Math.fround(-0.31640625));
  // symmetric: out(3,3) = 3 − out(0,0)
  assert.equal(out[15], Math.fround(3 + 0.31640625));
  // 1-D ×2 upsample of the ramp 0..7. Output 3 samples at 1.25: t = 0.25, taps 0..3 with weights
  // cubic2(1.25) = −0.10546875, cubic1(0.25) = 0.87890625, cubic1(0.75) = 0.26171875, cubic2(1.75) = −0.03515625
  // → 0·w0 + 1·w1 + 2·w2 + 3·w3 = 1.296875 (A = −0.75 does not reproduce linear functions exactly).
  const ramp = new Float32Array(8).map((_, i) => i);
  const up = resizeBicubicTorch(ramp, 1, 1, 8, 1, 16);
  assert.equal(up[3], 1.296875);
  assert.equal(up[4], 1.703125);
  for (let o = 0; o < 16; o++) assert.ok(Math.abs(up[o] + up[15 - o] - 7) < 1e-6, 'mirror symmetry');
  // constants are reproduced (weights sum to 1)
  const flat = resizeBicubicTorch(new Float32Array(12).fill(2.5), 1, 3, 4, 7, 5);
  assert.ok(flat.every((v) => Math.abs(v - 2.5) < 1e-6));
  // same size → identity
  const x = new Float32Array(3 * 5 * 4).map((_, i) => Math.fround(Math.cos(i)));
  assert.deepEqual(resizeBicubicTorch(x, 3, 5, 4, 5, 4), x);
});

test('resizeBicubicTorch on a position-embedding-sized grid (32×32 → 24×40): shape and range', () => {
  // The grid InternViT-448 resizes for a non-square input: check shape and that values stay bounded.
  const C = 4;
  const g = 32;
  const pe = new Float32Array(C * g * g).map((_, i) => Math.fround(Math.sin(i / 37)));
  const r = resizeBicubicTorch(pe, C, g, g, 24, 40);
  assert.equal(r.length, C * 24 * 40);
  assert.ok(r.every((v) => Number.isFinite(v) && Math.abs(v) < 1.5));
});

test('resizeBicubicPillow: same size is a copy; constant images stay constant', () => {
  const img = randomImage(13, 7, 1);
  const same = resizeBicubicPillow(img, 13, 7);
  assert.deepEqual(same.data, img.data);
  assert.notEqual(same.data, img.data);
  const flat: RgbImage = {
    width: 37,
    height: 23,
    data: new Uint8Array(37 * 23 * 3).fill(0).map((_, i) => [12, 200, 255][i % 3]),
  };
  for (const [w, h] of [
    [448, 448],
    [5, 3],
    [37, 100],
    [1, 1],
    [200, 23],
  ]) {
    const r = resizeBicubicPillow(flat, w, h);
    assert.equal(r.data.length, w * h * 3);
    for (let i = 0; i < r.data.length; i++) assert.equal(r.data[i], [12, 200, 255][i % 3]);
  }
});

test('resizeBicubicPillow agrees with a float reference to ±1 (fixed-point rounding only)', () => {
  const cases: [number, number, number, number][] = [
    [40, 30, 17, 11], // down both
    [9, 7, 31, 25], // up both
    [50, 20, 50, 33], // vertical only
    [21, 40, 64, 40], // horizontal only
    [100, 60, 37, 90], // down / up
  ];
  let seed = 7;
  for (const [w, h, ow, oh] of cases) {
    const img = randomImage(w, h, seed++);
    const got = resizeBicubicPillow(img, ow, oh);
    const ref = pillowFloatRef(img, ow, oh);
    assert.deepEqual([got.width, got.height], [ow, oh]);
    let maxd = 0;
    for (let i = 0; i < got.data.length; i++) maxd = Math.max(maxd, Math.abs(got.data[i] - ref.data[i]));
    assert.ok(maxd <= 1, `${w}x${h}→${ow}x${oh}: max diff ${maxd}`);
  }
});

test('resizeBicubicPillow is bit-exact against Pillow on the preprocess fixture (896×448 tiles of image5)', async () => {
  // The fixture stores the normalised tiles of Pillow's resize; invert the float32 normalisation to bytes.
  const { loadImage, IMAGENET_MEAN, IMAGENET_STD } = await import('../src/processing/image.js');
  const buf = readFileSync(new URL('./data/fixtures/preprocess/io.safetensors', import.meta.url));
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<
    string,
    { data_offsets: [number, number] }
  >;
  const [s, e] = header['out.image5.pixel_values'].data_offsets;
  const golden = new Float32Array(new Uint8Array(buf.subarray(8 + n + s, 8 + n + e)).buffer);
  const img = await loadImage(new URL('./data/fixtures/preprocess/images/image5.jpg', import.meta.url).pathname);
  const resized = resizeBicubicPillow(img, 896, 448);
  const T = 448;
  let mism = 0;
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < T; y++) {
      for (let x = 0; x < 2 * T; x++) {
        const tile = x < T ? 0 : 1;
        const g = golden[((tile * 3 + c) * T + y) * T + (x % T)];
        const byte = Math.round((g * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255);
        if (byte !== resized.data[(y * 896 + x) * 3 + c]) mism++;
      }
    }
  }
  assert.equal(mism, 0);
});
