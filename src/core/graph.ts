/**
 * A small ONNX graph builder. Models describe their forward pass with it, in modules scoped by the checkpoint's
 * state-dict prefixes (`g.scope('encoder.layers.3').linear(x, 'attn.qkv')` binds `…encoder.layers.3.attn.qkv.weight`),
 * so weights bind by name with no mapping table. Weights are not copied into the graph: each is an initializer whose
 * bytes are produced later by a `WeightStore` (pointing into the safetensors file, or converted once and cached).
 */
import { create, toBinary } from '@bufbuild/protobuf';
import {
  ModelProtoSchema,
  TensorProto_DataType,
  TensorProto_DataLocation,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
  type AttributeProto,
} from 'onnx-buf';
import { AttributeProto_AttributeType } from 'onnx-buf';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { ModelLoadError } from './errors.js';
import type { ByteSource } from './bytes.js';
import type { Checkpoint, TensorEntry } from './safetensors.js';

export type ElemType = 'float32' | 'float16' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';

const ONNX_TYPES: Record<ElemType, TensorProto_DataType> = {
  float32: TensorProto_DataType.FLOAT,
  float16: TensorProto_DataType.FLOAT16,
  int64: TensorProto_DataType.INT64,
  int32: TensorProto_DataType.INT32,
  int8: TensorProto_DataType.INT8,
  uint8: TensorProto_DataType.UINT8,
  bool: TensorProto_DataType.BOOL,
};

export const ELEM_BYTES: Record<ElemType, number> = {
  float32: 4,
  float16: 2,
  int64: 8,
  int32: 4,
  int8: 1,
  uint8: 1,
  bool: 1,
};

/** A dimension: a fixed size or a symbolic name (`batch`, `seq`). */
export type Dim = number | string;

export type AttrValue = number | string | number[] | { float: number } | { floats: number[] } | { tensor: TensorProto };

/** A weight the graph needs, and how to produce its bytes. */
export interface WeightRequest {
  /** Initializer name (the checkpoint key, plus a suffix when derived: `….weight#q4`). */
  name: string;
  type: ElemType;
  dims: number[];
  /** Set when the bytes can be used as stored in the checkpoint. */
  inPlace?: { source: ByteSource; offset: number; length: number };
  /** Produces the bytes when they cannot be used in place (conversion, quantization). */
  produce: () => Promise<Uint8Array>;
  /** Identity of the bytes for the on-disk cache key. */
  cacheKey: string;
  /** Names of the checkpoint sources the bytes come from: a cache entry is rebuilt when one of them changes. */
  sources?: readonly string[];
}

/** How a float initializer is stored for execution (the user-facing weight formats are quantize.ts's `WeightFormat`). */
export type FloatStorage = 'float32' | 'float16';

/** How a graph is built for the execution provider that will run it (`graphTarget` in session.ts decides). */
export interface GraphTarget {
  /**
   * Attention as MatMul, scale, Softmax, MatMul instead of com.microsoft MultiHeadAttention, whose kernel in
   * onnxruntime-web's WebGPU build is wrong from 32 tokens on (docs/browser.md).
   */
  decomposedAttention: boolean;
}

/** The target of graphs built without one: onnxruntime's fused kernels (the CPU and wasm providers). */
export const FUSED_KERNELS: GraphTarget = { decomposedAttention: false };

export class GraphBuilder {
  readonly nodes: MessageInitShape<typeof import('onnx-buf').NodeProtoSchema>[] = [];
  readonly inputs: MessageInitShape<typeof import('onnx-buf').ValueInfoProtoSchema>[] = [];
  readonly outputs: MessageInitShape<typeof import('onnx-buf').ValueInfoProtoSchema>[] = [];
  readonly constants: MessageInitShape<typeof import('onnx-buf').TensorProtoSchema>[] = [];
  readonly weights = new Map<string, WeightRequest>();
  private counter = 0;

  constructor(
    readonly name: string,
    readonly checkpoint: Checkpoint | null,
    readonly target: GraphTarget = FUSED_KERNELS,
  ) {}

  /** A fresh value name, readable in profiles. */
  fresh(hint: string): string {
    return `${hint}:${this.counter++}`;
  }

  input(name: string, type: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  output(value: string, name: string, type: ElemType = 'float32', dims?: Dim[]): void {
    this.node('Identity', [value], {}, { outputs: [name] });
    this.outputs.push(valueInfo(name, type, dims));
  }

  /** Adds a node; returns its first output (or all of them with `count`). */
  node(
    opType: string,
    inputs: string[],
    attrs: Record<string, AttrValue> = {},
    options: { domain?: string; outputs?: string[]; count?: number; hint?: string } = {},
  ): string {
    return this.nodeMulti(opType, inputs, attrs, options)[0];
  }

  nodeMulti(
    opType: string,
    inputs: string[],
    attrs: Record<string, AttrValue> = {},
    options: { domain?: string; outputs?: string[]; count?: number; hint?: string } = {},
  ): string[] {
    const outputs =
      options.outputs ?? Array.from({ length: options.count ?? 1 }, () => this.fresh(options.hint ?? opType));
    this.nodes.push({
      opType,
      domain: options.domain ?? '',
      input: inputs,
      output: outputs,
      name: this.fresh(opType),
      attribute: Object.entries(attrs).map(([key, value]) => attribute(key, value)),
    });
    return outputs;
  }

  constFloat(values: ArrayLike<number>, dims: number[], hint = 'const'): string {
    const name = this.fresh(hint);
    this.constants.push({
      name,
      dataType: TensorProto_DataType.FLOAT,
      dims: dims.map(BigInt),
      floatData: Array.from(values),
    });
    return name;
  }

  constInt64(values: ArrayLike<number>, dims?: number[], hint = 'shape'): string {
    const name = this.fresh(hint);
    this.constants.push({
      name,
      dataType: TensorProto_DataType.INT64,
      dims: (dims ?? [values.length]).map(BigInt),
      int64Data: Array.from(values, (v) => BigInt(v)),
    });
    return name;
  }

  /** A module scope: weight names are resolved relative to `prefix`. */
  scope(prefix: string): Scope {
    return new Scope(this, prefix);
  }

  /** Registers a weight request (idempotent per name) and returns the initializer name. */
  request(request: WeightRequest): string {
    if (!this.weights.has(request.name)) this.weights.set(request.name, request);
    return request.name;
  }

  /** The graph's weight named by its checkpoint key, as float32 (converted from F16/BF16/F64 when needed). */
  weight(key: string, format: FloatStorage = 'float32'): string {
    if (!this.checkpoint) throw new ModelLoadError(`graph ${this.name}: no checkpoint to bind weight '${key}'`);
    const entry = this.checkpoint.entry(key);
    return this.request(floatWeightRequest(this.checkpoint, entry, format));
  }

  hasWeight(key: string): boolean {
    return this.checkpoint?.has(key) ?? false;
  }

  weightShape(key: string): number[] {
    if (!this.checkpoint) throw new ModelLoadError(`graph ${this.name}: no checkpoint`);
    return this.checkpoint.entry(key).shape;
  }

  /**
   * Serializes the graph. `locate` maps each weight to its initializer storage (external or raw bytes).
   */
  toModelBytes(locate: (request: WeightRequest) => WeightLocation, opset = 23): Uint8Array {
    const initializers: MessageInitShape<typeof import('onnx-buf').TensorProtoSchema>[] = [...this.constants];
    for (const request of this.weights.values()) {
      const location = locate(request);
      const base = { name: request.name, dataType: ONNX_TYPES[request.type], dims: request.dims.map(BigInt) };
      if ('rawData' in location) {
        initializers.push({ ...base, rawData: location.rawData as Uint8Array<ArrayBuffer> });
      } else {
        initializers.push({
          ...base,
          dataLocation: TensorProto_DataLocation.EXTERNAL,
          externalData: [
            { key: 'location', value: location.location },
            { key: 'offset', value: String(location.offset) },
            { key: 'length', value: String(location.length) },
          ],
        });
      }
    }
    const model = create(ModelProtoSchema, {
      irVersion: 10n,
      producerName: 'internvl-ts',
      opsetImport: [
        { domain: '', version: BigInt(opset) },
        { domain: 'com.microsoft', version: 1n },
      ],
      graph: { name: this.name, node: this.nodes, input: this.inputs, output: this.outputs, initializer: initializers },
    });
    return toBinary(ModelProtoSchema, model);
  }

  // ---- operators used across models -------------------------------------------------------------------------

  add(a: string, b: string): string {
    return this.node('Add', [a, b]);
  }
  sub(a: string, b: string): string {
    return this.node('Sub', [a, b]);
  }
  mul(a: string, b: string): string {
    return this.node('Mul', [a, b]);
  }
  div(a: string, b: string): string {
    return this.node('Div', [a, b]);
  }
  matmul(a: string, b: string): string {
    return this.node('MatMul', [a, b]);
  }
  reshape(x: string, dims: number[]): string {
    return this.node('Reshape', [x, this.constInt64(dims)]);
  }
  transpose(x: string, perm: number[]): string {
    return this.node('Transpose', [x], { perm });
  }
  concat(values: string[], axis: number): string {
    return this.node('Concat', values, { axis });
  }
  softmax(x: string, axis = -1): string {
    return this.node('Softmax', [x], { axis });
  }
  /** Exact (erf) GELU. */
  gelu(x: string): string {
    return this.node('Gelu', [x], {}, { domain: 'com.microsoft' });
  }
  silu(x: string): string {
    return this.mul(x, this.node('Sigmoid', [x]));
  }
  slice(x: string, starts: number[], ends: number[], axes: number[]): string {
    return this.node('Slice', [x, this.constInt64(starts), this.constInt64(ends), this.constInt64(axes)]);
  }
  gather(data: string, indices: string, axis = 0): string {
    return this.node('Gather', [data, indices], { axis });
  }
  reduceMean(x: string, axes: number[], keepdims = true): string {
    return this.node('ReduceMean', [x, this.constInt64(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  /**
   * Non-causal multi-head attention on [B, S, heads·headSize] queries and [B, T, heads·headSize] keys and values,
   * scores scaled by `scale` (default 1/√headSize); returns [B, S, heads·headSize]. One MultiHeadAttention node, or
   * its exact decomposition when the target asks for it.
   */
  multiHeadAttention(
    q: string,
    k: string,
    v: string,
    options: { heads: number; headSize: number; scale?: number },
  ): string {
    const { heads, headSize, scale } = options;
    if (!this.target.decomposedAttention) {
      return this.node(
        'MultiHeadAttention',
        [q, k, v],
        { num_heads: heads, ...(scale === undefined ? {} : { scale: { float: scale } }) },
        { domain: 'com.microsoft' },
      );
    }
    const split = (x: string, perm: number[]) => this.transpose(this.reshape(x, [0, 0, heads, headSize]), perm);
    const queries = split(q, [0, 2, 1, 3]); // [B, H, S, D]
    const keys = split(k, [0, 2, 3, 1]); // [B, H, D, T]
    const values = split(v, [0, 2, 1, 3]); // [B, H, T, D]
    const scores = this.mul(this.matmul(queries, keys), this.constFloat([scale ?? 1 / Math.sqrt(headSize)], [1]));
    const attended = this.matmul(this.softmax(scores), values); // [B, H, S, D]
    return this.reshape(this.transpose(attended, [0, 2, 1, 3]), [0, 0, heads * headSize]);
  }

  l2normalize(x: string): string {
    const norm = this.node('ReduceL2', [x, this.constInt64([-1])], { keepdims: 1 });
    return this.div(x, norm);
  }
}

/** Where a weight's bytes live for onnxruntime. */
export type WeightLocation = { location: string; offset: number; length: number } | { rawData: Uint8Array };

/** A view of the graph with weight names relative to a module prefix. */
export class Scope {
  constructor(
    readonly graph: GraphBuilder,
    readonly prefix: string,
  ) {}

  key(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  scope(name: string): Scope {
    return new Scope(this.graph, this.key(name));
  }

  weight(name: string): string {
    return this.graph.weight(this.key(name));
  }

  has(name: string): boolean {
    return this.graph.hasWeight(this.key(name));
  }

  shape(name: string): number[] {
    return this.graph.weightShape(this.key(name));
  }

  /**
   * nn.Linear on a 2-D [tokens, in] input: Gemm against the [out, in] weight as stored (transB), plus the bias when
   * the checkpoint has one. A `linearHooks` entry for the graph (quantized weights) may replace it.
   */
  linear(x: string, name: string): string {
    const g = this.graph;
    const hooked = linearHooks.get(g)?.(this, x, name);
    if (hooked) return hooked;
    const inputs = [x, this.weight(`${name}.weight`)];
    if (this.has(`${name}.bias`)) inputs.push(this.weight(`${name}.bias`));
    return g.node('Gemm', inputs, { transB: 1 }, { hint: this.key(name) });
  }

  layerNorm(x: string, name: string, eps: number): string {
    const g = this.graph;
    const inputs = [x, this.weight(`${name}.weight`)];
    if (this.has(`${name}.bias`)) inputs.push(this.weight(`${name}.bias`));
    return g.node('LayerNormalization', inputs, { axis: -1, epsilon: { float: eps } });
  }

  /** RMSNorm as LLaMA/InternViT: x · rsqrt(mean(x²) + eps) · weight, computed in float32. */
  rmsNorm(x: string, name: string, eps: number): string {
    return this.graph.node('RMSNormalization', [x, this.weight(`${name}.weight`)], {
      axis: -1,
      epsilon: { float: eps },
    });
  }
}

/**
 * Per-graph replacement of `Scope.linear` (quantized matmuls). Kept outside the class so that model code stays
 * the same whatever the weight format.
 */
export const linearHooks = new WeakMap<GraphBuilder, (scope: Scope, x: string, name: string) => string | undefined>();

function floatWeightRequest(checkpoint: Checkpoint, entry: TensorEntry, format: FloatStorage): WeightRequest {
  const inPlace = (entry.dtype === 'F32' && format === 'float32') || (entry.dtype === 'F16' && format === 'float16');
  const type: ElemType = format;
  return {
    name: format === 'float32' ? entry.name : `${entry.name}#f16`,
    type,
    dims: entry.shape,
    inPlace: inPlace ? { source: entry.source, offset: entry.offset, length: entry.byteLength } : undefined,
    cacheKey: `${entry.source.name}:${entry.offset}:${entry.dtype}:${entry.shape.join('x')}:${format}`,
    sources: [entry.source.name],
    produce: async () => {
      const { data } = await checkpoint.readFloat32(entry.name);
      const out = format === 'float32' ? data : float32ToFloat16(data);
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    },
  };
}

export function float32ToFloat16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i];
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000;
    const exponent = (x >>> 23) & 0xff;
    let mantissa = x & 0x7fffff;
    if (exponent === 0xff) {
      out[i] = sign | 0x7c00 | (mantissa ? 0x200 : 0);
      continue;
    }
    const e = exponent - 127 + 15;
    if (e >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mantissa |= 0x800000;
      const shift = 14 - e;
      let half = mantissa >> shift;
      const rest = mantissa & ((1 << shift) - 1);
      const halfway = 1 << (shift - 1);
      if (rest > halfway || (rest === halfway && half & 1)) half++;
      out[i] = sign | half;
      continue;
    }
    let half = (e << 10) | (mantissa >> 13);
    const rest = mantissa & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
    out[i] = sign | half;
  }
  return out;
}

function valueInfo(
  name: string,
  type: ElemType,
  dims?: Dim[],
): MessageInitShape<typeof import('onnx-buf').ValueInfoProtoSchema> {
  return {
    name,
    type: {
      value: {
        case: 'tensorType',
        value: {
          elemType: ONNX_TYPES[type],
          shape: dims
            ? {
                dim: dims.map((d) =>
                  typeof d === 'number'
                    ? { value: { case: 'dimValue' as const, value: BigInt(d) } }
                    : { value: { case: 'dimParam' as const, value: d } },
                ),
              }
            : undefined,
        },
      },
    },
  };
}

function attribute(name: string, value: AttrValue): MessageInitShape<typeof import('onnx-buf').AttributeProtoSchema> {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) return { name, type: AttributeProto_AttributeType.FLOAT, f: value };
    return { name, type: AttributeProto_AttributeType.INT, i: BigInt(value) };
  }
  if (typeof value === 'string')
    return { name, type: AttributeProto_AttributeType.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: AttributeProto_AttributeType.INTS, ints: value.map(BigInt) };
  if ('float' in value) return { name, type: AttributeProto_AttributeType.FLOAT, f: value.float };
  if ('floats' in value) return { name, type: AttributeProto_AttributeType.FLOATS, floats: value.floats };
  return { name, type: AttributeProto_AttributeType.TENSOR, t: value.tensor };
}

export type { NodeProto, TensorProto, ValueInfoProto, AttributeProto };
