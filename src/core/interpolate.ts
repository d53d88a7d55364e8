/**
 * PyTorch's `F.interpolate(mode='bicubic', align_corners=False)` (cubic convolution with A = −0.75, source index
 * (dst + 0.5)·in/out − 0.5, borders clamped, no antialiasing). The official InternViT resizes its position
 * embeddings this way, so the port must reproduce it exactly rather than use an image resampler.
 */
import { UsageError } from './errors.js';

const A = -0.75;

function cubicWeights(t: number): [number, number, number, number] {
  const near = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const far = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return [far(t + 1), near(t), near(1 - t), far(2 - t)];
}

/** Per output index: the 4 clamped source indices and their weights. */
function axisTaps(inSize: number, outSize: number): Array<{ index: number[]; weight: number[] }> {
  const scale = inSize / outSize;
  return Array.from({ length: outSize }, (_, out) => {
    const real = scale * (out + 0.5) - 0.5;
    const base = Math.min(Math.floor(real), inSize - 1);
    const t = Math.min(Math.max(real - base, 0), 1);
    const clamp = (i: number) => Math.min(Math.max(i, 0), inSize - 1);
    return { index: [clamp(base - 1), clamp(base), clamp(base + 1), clamp(base + 2)], weight: cubicWeights(t) };
  });
}

/** Resizes channel-major data [C, inH, inW] → [C, outH, outW]. */
export function interpolateBicubic(
  data: Float32Array,
  channels: number,
  inH: number,
  inW: number,
  outH: number,
  outW: number,
): Float32Array {
  for (const size of [channels, inH, inW, outH, outW]) {
    if (!Number.isInteger(size) || size <= 0)
      throw new UsageError(
        `interpolateBicubic: sizes must be positive integers, got [${channels}, ${inH}, ${inW}] → [${outH}, ${outW}]`,
      );
  }
  if (data.length !== channels * inH * inW)
    throw new UsageError(`interpolateBicubic: ${data.length} values for [${channels}, ${inH}, ${inW}]`);
  const out = new Float32Array(channels * outH * outW);
  if (inH === outH && inW === outW) {
    out.set(data.subarray(0, out.length));
    return out;
  }
  const rows = axisTaps(inH, outH);
  const cols = axisTaps(inW, outW);
  for (let c = 0; c < channels; c++) {
    const plane = c * inH * inW;
    for (let y = 0; y < outH; y++) {
      const row = rows[y];
      for (let x = 0; x < outW; x++) {
        const col = cols[x];
        let sum = 0;
        for (let i = 0; i < 4; i++) {
          const line = plane + row.index[i] * inW;
          let inner = 0;
          for (let j = 0; j < 4; j++) inner += data[line + col.index[j]] * col.weight[j];
          sum += inner * row.weight[i];
        }
        out[c * outH * outW + y * outW + x] = sum;
      }
    }
  }
  return out;
}
