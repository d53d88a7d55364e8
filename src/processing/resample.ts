/**
 * Exact resamplers.
 *
 * - {@link resizeBicubicPillow}: Pillow's `Image.resize(size, Image.BICUBIC)` on 8-bit RGB, bit for bit. This is what
 *   the official InternVL code (and torchvision on PIL images) uses for every image resize.
 * (PyTorch's bicubic, used on position embeddings rather than images, is `interpolateBicubic` in core/interpolate.ts.)
 *
 * Pillow's algorithm (libImaging/Resample.c), restated:
 * - separable convolution; the horizontal pass runs first, over only the source rows the vertical pass will read;
 *   a pass is skipped when that dimension keeps its size;
 * - per output index `o`: `center = (o + 0.5) · scale` with `scale = in / out`; when downscaling the filter is
 *   stretched by `filterscale = max(scale, 1)` (antialiasing), support = 2 · filterscale for bicubic;
 *   the source window is `[trunc(center − support + 0.5), trunc(center + support + 0.5))` clipped to the image;
 *   weights `w(i) = cubic((i − center + 0.5) / filterscale)` with the Keys kernel, a = −0.5, normalised to sum 1;
 * - weights become fixed point with 22 fractional bits (PRECISION_BITS = 32 − 8 − 2), rounded half away from zero;
 * - each output value = clip8((2^21 + Σ pixel · weight) >> 22) (round half up, then clamp to 0..255).
 * Everything is evaluated in the same order and precision as the C code (doubles for the weights, 32-bit
 * integers for the sums), so the bytes match Pillow on x86-64 builds (no fused multiply-add in the weights).
 */
import { UsageError } from '../core/errors.js';
import type { RgbImage } from './image.js';

const PRECISION_BITS = 32 - 8 - 2;
const ONE_FIXED = 1 << PRECISION_BITS;
const HALF_FIXED = 1 << (PRECISION_BITS - 1);

/** Pillow's bicubic kernel (Keys, a = −0.5), written with the same operation order as Resample.c. */
function pillowBicubic(xIn: number): number {
  const x = xIn < 0 ? -xIn : xIn;
  if (x < 1.0) return ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * -0.5;
  return 0.0;
}

/** Fixed-point coefficient table for one axis. */
interface AxisCoeffs {
  /** Maximum taps per output sample (row stride of `weights`). */
  ksize: number;
  /** First source index per output sample. */
  start: Int32Array;
  /** Number of taps per output sample. */
  count: Int32Array;
  /** Fixed-point weights, `ksize` per output sample. */
  weights: Int32Array;
}

function pillowAxisCoeffs(inSize: number, outSize: number): AxisCoeffs {
  // Pillow: scale = (double)(in1 - in0) / outSize with a float box; exact for any realistic size.
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = 2.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const ss = 1.0 / filterscale;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const tmp = new Float64Array(ksize);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    const n = xmax - xmin;
    let ww = 0.0;
    for (let x = 0; x < n; x++) {
      const w = pillowBicubic((x + xmin - center + 0.5) * ss);
      tmp[x] = w;
      ww += w;
    }
    const base = o * ksize;
    for (let x = 0; x < n; x++) {
      const k = ww !== 0.0 ? tmp[x] / ww : tmp[x];
      weights[base + x] = k < 0 ? Math.trunc(-0.5 + k * ONE_FIXED) : Math.trunc(0.5 + k * ONE_FIXED);
    }
    start[o] = xmin;
    count[o] = n;
  }
  return { ksize, start, count, weights };
}

function clip8(acc: number): number {
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function checkSize(what: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new UsageError(`resize: ${what} must be a positive integer, got ${v}`);
}

/**
 * Pillow's `img.resize((width, height), Image.BICUBIC)` for an 8-bit RGB image, bit-exact.
 * Same size → a copy (as Pillow).
 */
export function resizeBicubicPillow(img: RgbImage, width: number, height: number): RgbImage {
  checkSize('width', width);
  checkSize('height', height);
  const inW = img.width;
  const inH = img.height;
  if (img.data.length !== inW * inH * 3) {
    throw new UsageError(`resize: image data has ${img.data.length} bytes, expected ${inW}×${inH}×3`);
  }
  if (inW === width && inH === height) return { width, height, data: img.data.slice() };

  const needH = width !== inW;
  const needV = height !== inH;
  const vert = pillowAxisCoeffs(inH, height);

  let src = img.data;
  let srcW = inW;
  let rowOffset = 0; // first source row held by `src`
  if (needH) {
    const yFirst = vert.start[0];
    const yLast = vert.start[height - 1] + vert.count[height - 1];
    const rows = yLast - yFirst;
    const hor = pillowAxisCoeffs(inW, width);
    const out = new Uint8Array(width * rows * 3);
    const { ksize, start, count, weights } = hor;
    const data = img.data;
    for (let y = 0; y < rows; y++) {
      const inRow = (y + yFirst) * inW * 3;
      const outRow = y * width * 3;
      for (let xx = 0; xx < width; xx++) {
        const kb = xx * ksize;
        const n = count[xx];
        let p = inRow + start[xx] * 3;
        let s0 = HALF_FIXED;
        let s1 = HALF_FIXED;
        let s2 = HALF_FIXED;
        for (let x = 0; x < n; x++, p += 3) {
          const k = weights[kb + x];
          s0 += data[p] * k;
          s1 += data[p + 1] * k;
          s2 += data[p + 2] * k;
        }
        const o = outRow + xx * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    src = out;
    srcW = width;
    rowOffset = yFirst;
  }
  if (!needV) {
    return { width, height, data: src === img.data ? src.slice() : src };
  }

  const out = new Uint8Array(width * height * 3);
  const { ksize, start, count, weights } = vert;
  const stride = srcW * 3;
  // Row-wise accumulation (sequential memory access). The int32 accumulator wraps exactly like Pillow's `int`
  // sums would, and every partial sum stays far below 2^31 anyway.
  const acc = new Int32Array(stride);
  for (let yy = 0; yy < height; yy++) {
    const kb = yy * ksize;
    const n = count[yy];
    const rowBase = (start[yy] - rowOffset) * stride;
    acc.fill(HALF_FIXED);
    for (let y = 0; y < n; y++) {
      const k = weights[kb + y];
      if (k === 0) continue;
      const r = rowBase + y * stride;
      for (let c = 0; c < stride; c++) acc[c] += src[r + c] * k;
    }
    const outRow = yy * stride;
    for (let c = 0; c < stride; c++) out[outRow + c] = clip8(acc[c]);
  }
  return { width, height, data: out };
}
