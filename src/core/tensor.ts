/**
 * The one tensor type of the library's results: float values in JavaScript memory, row-major, with their shape
 * (`dims`, as onnxruntime's tensors name it). Model outputs (vision features, image and text embeddings, hidden
 * states), checkpoint reads and task results (`Matrix` is its two-dimensional case) all have this form.
 */
import { InternalError } from './errors.js';

export interface FloatTensor {
  dims: number[];
  data: Float32Array;
}

/** Wraps `data` with its shape, checking that they agree (a mismatch is a bug of the caller). */
export function floatTensor(data: Float32Array, dims: number[]): FloatTensor {
  const size = dims.reduce((a, b) => a * b, 1);
  if (data.length !== size)
    throw new InternalError(`a tensor of shape [${dims.join(', ')}] needs ${size} values, got ${data.length}`);
  return { dims, data };
}
