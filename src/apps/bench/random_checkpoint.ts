/**
 * Random-weight checkpoints for the benchmarks: released shapes with uniform random values, written in shards of
 * safetensors (one per layer, so writing never holds more than a layer in memory) with an index, in the storage
 * dtype of a release. The values only need to be non-degenerate: activations of a normal float range through all
 * layers (norm gains around 1, weights of std 1/√fan_in or smaller).
 */
import fs from 'node:fs';
import path from 'node:path';
import { float32ToFloat16 } from '../../core/graph.js';
import { writeSafetensors } from '../../core/node/files.js';
import type { DType } from '../../core/safetensors.js';

/** How a checkpoint stores its float tensors (compute is float32 whatever the storage). */
export type StorageDtype = 'float32' | 'float16' | 'bfloat16';

export const STORAGE: Record<StorageDtype, { dtype: DType; bytes: number }> = {
  float32: { dtype: 'F32', bytes: 4 },
  float16: { dtype: 'F16', bytes: 2 },
  bfloat16: { dtype: 'BF16', bytes: 2 },
};

/**
 * Fills arrays with uniform values of a given standard deviation around a mean, from a 32-bit xorshift: fast, and
 * plenty for weights that only need to be non-degenerate.
 */
export function randomFiller(seed: number): (out: Float32Array, std: number, mean?: number) => void {
  let s = seed >>> 0 || 0x9e3779b9;
  return (out, std, mean = 0) => {
    // Uniform with standard deviation std: half-width std·√3.
    const width = 2 * std * Math.sqrt(3);
    for (let i = 0; i < out.length; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      out[i] = mean + width * ((s >>> 0) / 4294967296 - 0.5);
    }
  };
}

/** float32 values in a storage dtype (bf16 rounded to nearest even on the dropped bits, as torch's cast). */
export function encodeStorage(values: Float32Array, dtype: StorageDtype): ArrayBufferView {
  if (dtype === 'float32') return values;
  if (dtype === 'float16') return float32ToFloat16(values);
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const halves = new Uint16Array(values.length);
  for (let i = 0; i < words.length; i++) halves[i] = (words[i] + 0x7fff + ((words[i] >>> 16) & 1)) >>> 16;
  return halves;
}

/** A random tensor: its key, shape, standard deviation and mean. */
export type RandomTensor = [name: string, dims: number[], std: number, mean?: number];

/** Writes the shards of one checkpoint folder and remembers which tensor went where, for its index. */
export class RandomShards {
  readonly weightMap: Record<string, string> = {};
  /** Bytes of tensor data written so far. */
  bytes = 0;
  private readonly fill: (out: Float32Array, std: number, mean?: number) => void;

  constructor(
    readonly dir: string,
    readonly dtype: StorageDtype,
    seed = 1,
  ) {
    this.fill = randomFiller(seed);
    fs.mkdirSync(dir, { recursive: true });
  }

  /** One safetensors file of random tensors. */
  write(file: string, specs: readonly RandomTensor[]): void {
    const tensors: Record<string, { dtype: DType; shape: number[]; data: ArrayBufferView }> = {};
    for (const [name, dims, std, mean] of specs) {
      const values = new Float32Array(dims.reduce((a, b) => a * b, 1));
      this.fill(values, std, mean);
      const data = encodeStorage(values, this.dtype);
      tensors[name] = { dtype: STORAGE[this.dtype].dtype, shape: dims, data };
      this.weightMap[name] = file;
      this.bytes += data.byteLength;
    }
    writeSafetensors(path.join(this.dir, file), tensors, { format: 'pt' });
  }

  /** `model.safetensors.index.json` of everything written. */
  writeIndex(): void {
    fs.writeFileSync(
      path.join(this.dir, 'model.safetensors.index.json'),
      `${JSON.stringify({ metadata: { total_size: this.bytes }, weight_map: this.weightMap }, null, 2)}\n`,
    );
  }
}
