/** The weight formats a user chooses (`--weights fp32|int8|int4|int4+int8`) and the quantization each means. */
import type { GraphBuilder } from '../graph.js';
import { useQuantizedLinears, type QuantizeOptions } from '../quantize.js';

/**
 * The weight formats offered to users: float32, or quantized linears. `int4+int8` = 4-bit weights for decoding
 * plus int8 ones for prompt/image prefill; int8 = DynamicQuantizeMatMul (per-channel weights, the fast int8 GEMM).
 */
export type WeightFormat = 'fp32' | 'int8' | 'int4' | 'int4+int8';
export const WEIGHT_FORMATS: readonly WeightFormat[] = ['fp32', 'int8', 'int4', 'int4+int8'];

export function quantizationFor(format: WeightFormat): QuantizeOptions | null {
  switch (format) {
    case 'fp32':
      return null;
    case 'int4':
      return { format: 'int4' };
    case 'int4+int8':
      return { format: 'int4', prefill: 'int8' };
    case 'int8':
      return { format: 'int8' };
  }
}

/** A graph hook (`configureGraph`) that installs the format's quantized linears; none for fp32. */
export function weightFormatHook(format: WeightFormat): ((g: GraphBuilder) => void) | undefined {
  const options = quantizationFor(format);
  return options ? (g) => useQuantizedLinears(g, options) : undefined;
}
