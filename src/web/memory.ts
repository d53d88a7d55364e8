/**
 * Will a model fit? onnxruntime-web's wasm build has a 32-bit heap: 4 GiB at most, weights, activations and
 * onnxruntime's own buffers together. The weights a model puts there are known before anything is downloaded: the
 * safetensors headers (a few range requests) give every tensor's size, and the weight format gives its bytes.
 *
 * Counted: every tensor the graphs hold (vision tower, projector, language model), at 4 bytes per value, or for the
 * quantized linears (2-D weights of at least 64 rows and columns) 1 byte (int8) or 0.64 byte (int4: 4-bit codes,
 * a float scale and a 4-bit zero point per 32) per value, int4+int8 both. Not counted: the token embedding table,
 * which stays in the checkpoint and is read a row per token.
 */
import type { WeightFormat } from '../core/quantize/formats.js';
import { Checkpoint } from '../core/safetensors.js';
import type { WebDevice } from './runtime.js';

/**
 * What the weights may take of the 4 GiB heap; the rest is for onnxruntime's copies while a session is created
 * (prepacked matrices), activations (a 448 px tile: ~0.3 GB), the KV cache and its arena. Measured in Chromium 156
 * (docs/benchmarks.md): InternVL2-1B with 1.73 GB of weights loads and runs; with 3.21 GB (all float32) creating
 * the language model's session fails (std::bad_alloc). Sizes in between are untried; this bound is kept well
 * below the failure.
 */
export const WASM_WEIGHT_BUDGET = 2.5 * 2 ** 30;

const EMBEDDING_TABLE = /(^|\.)(embed_tokens|tok_embeddings|wte)\.weight$/;
const VISION = /^(vision_model|model\.vision_tower)\./;

const BYTES_PER_VALUE: Record<WeightFormat, number> = { fp32: 4, int8: 1, int4: 20.5 / 32, 'int4+int8': 1 + 20.5 / 32 };

export interface FitEstimate {
  fits: boolean;
  /** Bytes of weights in the heap: vision (tower and projector) and language model. */
  visionBytes: number;
  languageBytes: number;
  /** One line for the user: the sizes, and what to do when it does not fit. */
  message: string;
}

/** The weights `url`'s model needs in the heap in these formats, against {@link WASM_WEIGHT_BUDGET} (wasm only). */
export async function modelFits(
  url: string,
  formats: { llm: WeightFormat; vision: WeightFormat; device: WebDevice },
): Promise<FitEstimate> {
  const checkpoint = await Checkpoint.open(url);
  let visionBytes = 0;
  let languageBytes = 0;
  for (const name of checkpoint.keys()) {
    if (EMBEDDING_TABLE.test(name)) continue;
    const { shape } = checkpoint.entry(name);
    const values = shape.reduce((a, b) => a * b, 1);
    const vision = VISION.test(name) || name.startsWith('mlp1.');
    const linear = shape.length === 2 && Math.min(...shape) >= 64;
    const perValue = linear ? BYTES_PER_VALUE[vision ? formats.vision : formats.llm] : 4;
    if (vision) visionBytes += values * perValue;
    else languageBytes += values * perValue;
  }
  const total = visionBytes + languageBytes;
  const gb = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;
  const sizes = `weights ${gb(total)}: vision ${formats.vision} ${gb(visionBytes)}, language model ${formats.llm} ${gb(languageBytes)}`;
  if (formats.device !== 'wasm' || total <= WASM_WEIGHT_BUDGET)
    return { fits: true, visionBytes, languageBytes, message: sizes };
  return {
    fits: false,
    visionBytes,
    languageBytes,
    message: `${url}: the model does not fit in the browser's wasm memory (${sizes}; at most ${gb(WASM_WEIGHT_BUDGET)} of the 4 GiB heap): choose int4 or int8 weights, or WebGPU`,
  };
}
