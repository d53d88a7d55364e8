/**
 * The quantizers: plain loops over typed arrays, one pass per block (a 2-core machine quantizes a 0.5B-parameter LLM
 * in seconds), in the layouts onnxruntime's kernels read (MatMulNBits blocks, DynamicQuantizeMatMul's transposed
 * per-channel int8), and their inverses for the accuracy tests. Rounding uses `(v + 0.5) | 0` on values made
 * non-negative first (truncation = floor there), which is several times faster than Math.round in V8's optimized code.
 */
import { UsageError } from '../errors.js';
import { nextTurn } from '../platform.js';
export interface Int4Blockwise {
  /** [N, K/blockSize, blockSize/2]: two codes per byte along K, the lower-index one in the low nibble. */
  packed: Uint8Array;
  /** [N · K/blockSize] float32. */
  scales: Float32Array;
  /** [N · ceil((K/blockSize)/2)]: per-block 4-bit zero points, packed like the codes; null when symmetric (zero point 8). */
  zeroPoints: Uint8Array | null;
}

/**
 * 4-bit block quantization of a row-major [N, K] matrix in MatMulNBits' layout; value ≈ (code − zero point) · scale.
 * Asymmetric: each block's [min, max] (widened to include 0, so that 0 stays exact) maps onto 0…15.
 * Symmetric: the block's largest-magnitude value maps exactly onto code 0 (−8 · scale, scale signed, as Q4_0 does),
 * which uses all 16 levels instead of 15.
 */
export function quantizeInt4Blockwise(
  weights: Float32Array,
  N: number,
  K: number,
  blockSize = 32,
  options: { symmetric?: boolean } = {},
): Int4Blockwise {
  if (weights.length !== N * K)
    throw new UsageError(`quantizeInt4Blockwise: ${weights.length} values for [${N}, ${K}]`);
  if (K % blockSize !== 0 || blockSize % 2 !== 0)
    throw new UsageError(`quantizeInt4Blockwise: K=${K} is not a multiple of block ${blockSize}`);
  const symmetric = options.symmetric ?? false;
  const blocks = K / blockSize;
  const totalBlocks = N * blocks;
  const half = blockSize >> 1;
  const packed = new Uint8Array(totalBlocks * half);
  const scales = new Float32Array(totalBlocks);
  const zpStride = Math.ceil(blocks / 2);
  const zeroPoints = symmetric ? null : new Uint8Array(N * zpStride);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const start = n * K + b * blockSize;
      const end = start + blockSize;
      const block = n * blocks + b;
      let out = block * half;
      if (symmetric) {
        let extreme = 0;
        let magnitude = 0;
        for (let i = start; i < end; i++) {
          const v = weights[i];
          const a = v < 0 ? -v : v;
          if (a > magnitude) {
            magnitude = a;
            extreme = v;
          }
        }
        const scale = extreme / -8;
        scales[block] = scale;
        const inverse = scale === 0 ? 0 : 1 / scale;
        for (let i = start; i < end; i += 2) {
          // +8.5 then truncation = round-half-up of v/scale + 8, non-negative once clamped below.
          let lo = weights[i] * inverse + 8.5;
          let hi = weights[i + 1] * inverse + 8.5;
          lo = lo < 0 ? 0 : lo > 15 ? 15 : lo;
          hi = hi < 0 ? 0 : hi > 15 ? 15 : hi;
          packed[out++] = lo | 0 | ((hi | 0) << 4);
        }
      } else {
        let min = 0;
        let max = 0;
        for (let i = start; i < end; i++) {
          const v = weights[i];
          if (v < min) min = v;
          if (v > max) max = v;
        }
        const scale = (max - min) / 15;
        const inverse = scale === 0 ? 0 : 1 / scale;
        let zp = (-min * inverse + 0.5) | 0;
        if (zp > 15) zp = 15;
        scales[block] = scale;
        // Codes are x/scale + zp; with zp integral this equals (x − min)/scale up to the rounding of min.
        const offset = zp + 0.5;
        for (let i = start; i < end; i += 2) {
          let lo = weights[i] * inverse + offset;
          let hi = weights[i + 1] * inverse + offset;
          lo = lo < 0 ? 0 : lo > 15 ? 15 : lo;
          hi = hi < 0 ? 0 : hi > 15 ? 15 : hi;
          packed[out++] = lo | 0 | ((hi | 0) << 4);
        }
        zeroPoints![n * zpStride + (b >> 1)] |= zp << ((b & 1) << 2);
      }
    }
  }
  return { packed, scales, zeroPoints };
}

/** The [N, K] float matrix that MatMulNBits computes with for `quantizeInt4Blockwise`'s output. */
export function dequantizeInt4Blockwise(q: Int4Blockwise, N: number, K: number, blockSize = 32): Float32Array {
  const blocks = K / blockSize;
  const zpStride = Math.ceil(blocks / 2);
  const half = blockSize >> 1;
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const block = n * blocks + b;
      const scale = q.scales[block];
      const zp = q.zeroPoints ? (q.zeroPoints[n * zpStride + (b >> 1)] >> ((b & 1) << 2)) & 15 : 8;
      let o = n * K + b * blockSize;
      for (let j = 0; j < half; j++) {
        const byte = q.packed[block * half + j];
        out[o++] = ((byte & 15) - zp) * scale;
        out[o++] = ((byte >> 4) - zp) * scale;
      }
    }
  }
  return out;
}

export interface Int8Blockwise {
  /** [N, K/blockSize, blockSize] unsigned codes; value = (code − 128) · scale. */
  packed: Uint8Array;
  scales: Float32Array;
  zeroPoints: null;
}

/** Symmetric 8-bit blocks for MatMulNBits(bits 8): default zero point 128. */
export function quantizeInt8Blockwise(weights: Float32Array, N: number, K: number, blockSize = 32): Int8Blockwise {
  if (weights.length !== N * K)
    throw new UsageError(`quantizeInt8Blockwise: ${weights.length} values for [${N}, ${K}]`);
  if (K % blockSize !== 0)
    throw new UsageError(`quantizeInt8Blockwise: K=${K} is not a multiple of block ${blockSize}`);
  const totalBlocks = (N * K) / blockSize;
  const packed = new Uint8Array(N * K);
  const scales = new Float32Array(totalBlocks);
  for (let block = 0; block < totalBlocks; block++) {
    const start = block * blockSize;
    const end = start + blockSize;
    let magnitude = 0;
    for (let i = start; i < end; i++) {
      const v = weights[i];
      const a = v < 0 ? -v : v;
      if (a > magnitude) magnitude = a;
    }
    const scale = magnitude / 127;
    scales[block] = scale;
    const inverse = scale === 0 ? 0 : 1 / scale;
    for (let i = start; i < end; i++) {
      // |v · inverse| ≤ 127, so v · inverse + 128.5 is in [1.5, 255.5]: truncation rounds, no clamp needed.
      packed[i] = (weights[i] * inverse + 128.5) | 0;
    }
  }
  return { packed, scales, zeroPoints: null };
}

export function dequantizeInt8Blockwise(q: Int8Blockwise, N: number, K: number, blockSize = 32): Float32Array {
  const out = new Float32Array(N * K);
  for (let i = 0; i < N * K; i++) out[i] = (q.packed[i] - 128) * q.scales[(i / blockSize) | 0];
  return out;
}

export interface Int8PerChannel {
  /** [K, N]: transposed, as DynamicQuantizeMatMul / MatMulInteger take B. */
  transposed: Int8Array;
  /** [N]: value = code · scale. */
  scales: Float32Array;
}

/** Symmetric per-output-channel int8 of a row-major [N, K] matrix, returned transposed to [K, N]. */
export function quantizeInt8PerChannel(weights: Float32Array, N: number, K: number): Int8PerChannel {
  if (weights.length !== N * K)
    throw new UsageError(`quantizeInt8PerChannel: ${weights.length} values for [${N}, ${K}]`);
  const transposed = new Int8Array(N * K);
  const scales = new Float32Array(N);
  // Rows in tiles so that the transposed writes of one tile stay in cache.
  const TILE = 64;
  const inverses = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let magnitude = 0;
    for (let i = n * K, end = i + K; i < end; i++) {
      const v = weights[i];
      const a = v < 0 ? -v : v;
      if (a > magnitude) magnitude = a;
    }
    scales[n] = magnitude / 127;
    inverses[n] = magnitude === 0 ? 0 : 127 / magnitude;
  }
  for (let n0 = 0; n0 < N; n0 += TILE) {
    const n1 = Math.min(N, n0 + TILE);
    for (let k0 = 0; k0 < K; k0 += TILE) {
      const k1 = Math.min(K, k0 + TILE);
      for (let n = n0; n < n1; n++) {
        const inverse = inverses[n];
        const row = n * K;
        for (let k = k0; k < k1; k++) {
          transposed[k * N + n] = ((weights[row + k] * inverse + 128.5) | 0) - 128;
        }
      }
    }
  }
  return { transposed, scales };
}

export function dequantizeInt8PerChannel(q: Int8PerChannel, N: number, K: number): Float32Array {
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) out[n * K + k] = q.transposed[k * N + n] * q.scales[n];
  return out;
}

// ---- the same, a slice of rows at a time ----------------------------------------------------------------------
// Quantizing a large matrix takes seconds (an lm_head of 136 M values), during which a process could answer nothing.
// The sliced quantizers quantize about a million values at a time and give the event loop a turn in between. Rows
// are independent in all three formats, so the bytes are the same as in one piece.

const SLICE_VALUES = 1 << 20;

async function forRowSlices(N: number, K: number, quantize: (n0: number, rows: number) => void): Promise<void> {
  const step = Math.max(1, Math.floor(SLICE_VALUES / Math.max(1, K)));
  for (let n0 = 0; n0 < N; n0 += step) {
    quantize(n0, Math.min(step, N - n0));
    if (n0 + step < N) await nextTurn();
  }
}

function checkSize(what: string, weights: Float32Array, N: number, K: number): void {
  if (weights.length !== N * K) throw new UsageError(`${what}: ${weights.length} values for [${N}, ${K}]`);
}

/** {@link quantizeInt4Blockwise} in slices of rows. */
export async function quantizeInt4BlockwiseSliced(
  weights: Float32Array,
  N: number,
  K: number,
  blockSize = 32,
  options: { symmetric?: boolean } = {},
): Promise<Int4Blockwise> {
  checkSize('quantizeInt4Blockwise', weights, N, K);
  const rowBytes = K / 2;
  const blocks = K / blockSize;
  const zpStride = Math.ceil(blocks / 2);
  const out: Int4Blockwise = {
    packed: new Uint8Array(N * rowBytes),
    scales: new Float32Array(N * blocks),
    zeroPoints: options.symmetric ? null : new Uint8Array(N * zpStride),
  };
  await forRowSlices(N, K, (n0, rows) => {
    const part = quantizeInt4Blockwise(weights.subarray(n0 * K, (n0 + rows) * K), rows, K, blockSize, options);
    out.packed.set(part.packed, n0 * rowBytes);
    out.scales.set(part.scales, n0 * blocks);
    if (part.zeroPoints) out.zeroPoints!.set(part.zeroPoints, n0 * zpStride);
  });
  return out;
}

/** {@link quantizeInt8Blockwise} in slices of rows. */
export async function quantizeInt8BlockwiseSliced(
  weights: Float32Array,
  N: number,
  K: number,
  blockSize = 32,
): Promise<Int8Blockwise> {
  checkSize('quantizeInt8Blockwise', weights, N, K);
  const blocks = K / blockSize;
  const out: Int8Blockwise = { packed: new Uint8Array(N * K), scales: new Float32Array(N * blocks), zeroPoints: null };
  await forRowSlices(N, K, (n0, rows) => {
    const part = quantizeInt8Blockwise(weights.subarray(n0 * K, (n0 + rows) * K), rows, K, blockSize);
    out.packed.set(part.packed, n0 * K);
    out.scales.set(part.scales, n0 * blocks);
  });
  return out;
}

/** {@link quantizeInt8PerChannel} in slices of rows (each slice's columns go into the transposed [K, N]). */
export async function quantizeInt8PerChannelSliced(
  weights: Float32Array,
  N: number,
  K: number,
): Promise<Int8PerChannel> {
  checkSize('quantizeInt8PerChannel', weights, N, K);
  const out: Int8PerChannel = { transposed: new Int8Array(N * K), scales: new Float32Array(N) };
  await forRowSlices(N, K, (n0, rows) => {
    const part = quantizeInt8PerChannel(weights.subarray(n0 * K, (n0 + rows) * K), rows, K);
    for (let k = 0; k < K; k++) out.transposed.set(part.transposed.subarray(k * rows, (k + 1) * rows), k * N + n0);
    out.scales.set(part.scales, n0);
  });
  return out;
}
