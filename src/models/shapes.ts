/**
 * Shape expectations: the checkpoint tensor shapes a config implies, checked once at load. A config that disagrees
 * with its weights (a wrong vocab_size, heads, sizes) is then one error naming the config field and the tensor,
 * instead of an onnxruntime shape error at the first run or, worse, a model that runs on misread weights. The model
 * files list what they expect; this module compares and words the errors, and bounds the buffers a config sizes.
 */
import { ConfigError } from '../core/errors.js';

/** A dimension the config determines: its value and the field (or expression of fields) it comes from. */
export interface ConfigDim {
  value: number;
  /** `llm_config.vocab_size`, or an expression such as `3 × vision_config.hidden_size`. */
  field: string;
  /** For an expression: its terms' values (`2 × 64`), shown before the value. */
  terms?: string;
}

/** A tensor's expected shape: literal dimensions (3 channels) or config-derived ones. */
export interface ExpectedTensor {
  key: string;
  dims: ReadonlyArray<number | ConfigDim>;
}

/** Where a config's fields live, for messages: the file and the section path (`llm_config`, '' at the root). */
export interface ConfigOrigin {
  file: string;
  at: string;
}

/** The field `key` of a section as a {@link ConfigDim}. */
export function configDim(origin: ConfigOrigin, key: string, value: number): ConfigDim {
  return { value, field: origin.at ? `${origin.at}.${key}` : key };
}

/** `factor × dim`, e.g. the packed q/k/v rows `3 × hidden_size`. */
export function scaledDim(factor: number, dim: ConfigDim): ConfigDim {
  return { value: factor * dim.value, field: `${factor} × ${dim.field}`, terms: `${factor} × ${dim.value}` };
}

/** A field's value as the message shows it: `vocab_size 1000`, `3 × hidden_size = 3 × 48 = 144`. */
function described(dim: ConfigDim): string {
  return dim.terms ? `${dim.field} = ${dim.terms} = ${dim.value}` : `${dim.field} ${dim.value}`;
}

/** The shape of a tensor in the checkpoint, or undefined when it has none of that name. */
export type ShapeLookup = (key: string) => readonly number[] | undefined;

function show(dim: number | ConfigDim): string {
  return typeof dim === 'number' ? String(dim) : `${dim.field} (${dim.value})`;
}

/**
 * Throws a ConfigError naming the first field whose value disagrees with a tensor's shape. Tensors the checkpoint
 * does not hold are left to the loader (which names the missing tensor).
 */
export function checkShapes(origin: ConfigOrigin, lookup: ShapeLookup, expected: readonly ExpectedTensor[]): void {
  for (const { key, dims } of expected) {
    const shape = lookup(key);
    if (!shape) continue;
    const actual = `${key} is [${shape.join(', ')}]`;
    if (shape.length !== dims.length) {
      throw new ConfigError(`${origin.file}: ${actual}, but the config implies [${dims.map(show).join(', ')}]`);
    }
    dims.forEach((dim, i) => {
      const want = typeof dim === 'number' ? dim : dim.value;
      if (shape[i] === want) return;
      if (typeof dim === 'number')
        throw new ConfigError(`${origin.file}: ${actual}, but dimension ${i} must be ${dim}`);
      throw new ConfigError(`${origin.file}: ${described(dim)} but ${actual}`);
    });
  }
}

/**
 * Layer count: layers 0 … n−1 must be in the checkpoint. Layers past n may be (a config that uses fewer blocks than
 * stored, as transformers loads them: the extra weights unused). `probe(i)` is the key of a tensor every layer has.
 */
export function checkLayerCount(
  origin: ConfigOrigin,
  lookup: ShapeLookup,
  layers: ConfigDim,
  probe: (i: number) => string,
): void {
  const n = layers.value;
  if (n === 0) return;
  if (lookup(probe(0)) && !lookup(probe(n - 1)))
    throw new ConfigError(`${origin.file}: ${layers.field} ${n} but the checkpoint has no ${probe(n - 1)}`);
}

/** The largest single buffer a config may size: 4 GiB of float32. */
export const MAX_BUFFER_ELEMENTS = 2 ** 30;

/** Refuses a config value whose buffer (`elements` float32 values) would not fit in memory. */
export function checkBuffer(origin: ConfigOrigin, field: string, value: number, elements: number, what: string): void {
  if (elements > MAX_BUFFER_ELEMENTS) {
    throw new ConfigError(
      `${origin.file}: ${origin.at ? `${origin.at}.` : ''}${field} ${value} is too large: ${what} would need ` +
        `${(elements * 4) / 2 ** 30 >= 1024 ? `${((elements * 4) / 2 ** 40).toFixed(1)} TiB` : `${((elements * 4) / 2 ** 30).toFixed(1)} GiB`} ` +
        `(limit ${(MAX_BUFFER_ELEMENTS * 4) / 2 ** 30} GiB)`,
    );
  }
}
