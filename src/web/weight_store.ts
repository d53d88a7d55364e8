/**
 * Converted and quantized weights kept between page loads. A weight that cannot be used as stored (bf16 → fp32,
 * int4/int8 quantization) costs a download of its source and seconds of conversion; the store keeps the result,
 * keyed like the Node weight cache by the request's `cacheKey` (source identity, offset, dtype, shape, format,
 * quantizer version).
 */
import type { WeightRequest } from '../core/graph.js';
import type { SessionOptions } from '../core/session.js';

export interface WeightStore {
  /** The request's bytes: from the store, or produced and stored. */
  get(request: WeightRequest, options: SessionOptions): Promise<Uint8Array>;
}
