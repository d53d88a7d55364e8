/**
 * Converted and quantized weights kept between page loads. A weight that cannot be used as stored (bf16 → fp32,
 * int4/int8 quantization) costs a download of its source and seconds of conversion; the store keeps the result.
 *
 * Keys are built like the Node weight cache's: the request's `cacheKey` (source name, offset, dtype, shape, format,
 * quantizer version) plus the identity of each source file as its server states it (ETag, size, Last-Modified:
 * a new revision behind the same `resolve/main/` URL is a new key). Each entry is sealed by the SHA-256 of its
 * bytes, checked when it is read: a damaged or half-written entry is produced again.
 */
import type { WeightRequest } from '../core/graph.js';

export interface WeightStore {
  /** The request's bytes: from the store (`stored: true`), or produced now and stored. */
  get(request: WeightRequest): Promise<{ bytes: Uint8Array; stored: boolean }>;
}
