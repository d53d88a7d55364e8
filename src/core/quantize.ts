/**
 * Quantized linear layers: `useQuantizedLinears(g, {format})` makes every `Scope.linear` of a graph run on 4-bit or
 * 8-bit weights instead of float32, without any change to model code (through `linearHooks`).
 *
 * - `int4`: com.microsoft `MatMulNBits`, weights quantized in blocks of `blockSize` along K (the reduction axis), one
 *   float scale and one 4-bit zero point per block. With `accuracy_level` 4 onnxruntime quantizes the activations to
 *   int8 per block as well and runs integer dot products, which is what makes 4-bit decoding memory-bound instead of
 *   compute-bound. Asymmetric blocks (with zero points) are the default: on Gaussian weights their RMS error is
 *   ~6 % lower than symmetric blocks' (7.0–8.2 % vs 7.8–8.9 % per matmul), at the same speed within noise.
 * - `int8`: `DynamicQuantizeMatMul` with per-output-channel int8 weights (default), or `MatMulNBits` with 8-bit
 *   blocks (`int8Kernel: 'nbits'`). The first runs a real int8 GEMM (VNNI/AMX) and is ~2× faster on prompt- and
 *   image-sized inputs (1025×1024×4096: 21 ms vs 42 ms on 2 cores); the second quantizes activations per block of
 *   32 instead of per tensor, so an outlier token does not coarsen all others: error 5.6–8.4e-3 vs 7.6e-3–1.2e-2.
 *
 * - `int4` with `prefill: 'int8'`: both of the above in one graph, chosen per matmul by its row count (an `If`):
 *   decoding streams the 4-bit weights, prompt and image-token prefill run the int8 GEMM. On the 2-core Zen 4
 *   machine of docs/benchmarks.md this cut the InternVL2-1B prefill of 276 tokens from 0.93 s to 0.42 s at the
 *   same decoding speed, for the int8 copy of the weights in memory.
 *
 * The quantized bytes are produced lazily through `WeightRequest.produce()`, so the runtime computes them once and
 * keeps them in its on-disk weight cache; later loads map the cache file and never quantize again.
 */
import { AttributeProto_AttributeType, TensorProto_DataType } from 'onnx-buf';
import { linearHooks, type GraphBuilder, type Scope, type WeightRequest } from './graph.js';
import { UsageError } from './errors.js';

export type QuantFormat = 'int4' | 'int8';

export interface QuantizeOptions {
  format: QuantFormat;
  /** Values per block along K (int4, and int8 with the `nbits` kernel). Power of two ≥ 16. Default 32. */
  blockSize?: number;
  /**
   * MatMulNBits `accuracy_level`: 4 = int8 activations with integer dot products (fast), 0/1 = float activations
   * (slow on CPU: the weights are dequantized on the fly). Default 4.
   */
  accuracyLevel?: number;
  /** Weight keys (`….weight`) to keep in float. */
  skip?: (weightKey: string) => boolean;
  /** int4: blocks without zero points (symmetric) instead of with them. Default false (asymmetric). */
  symmetric?: boolean;
  /** int8 kernel: `dynamic` (DynamicQuantizeMatMul, per channel; default) or `nbits` (MatMulNBits, 8-bit blocks). */
  int8Kernel?: 'nbits' | 'dynamic';
  /**
   * Matrices with fewer input columns stay float: their matmuls are too small for the quantized kernels to pay off,
   * and a 4-bit block needs at least `blockSize` columns. Default 64.
   */
  minColumns?: number;
  /** Run linears that read the same input (q/k/v, gate/up) as one matmul. Default true. */
  fuse?: boolean;
  /**
   * int4 only: also keep per-channel int8 weights and use them (DynamicQuantizeMatMul) when a matmul has more than
   * `prefillRows` rows. 4-bit MatMulNBits is the fastest kernel for decoding (1 row) but on CPUs without AMX its
   * many-row path is no faster than float32, while the int8 GEMM is 2–3× faster: prompt and image-token prefill
   * take the int8 path, decoding the 4-bit one. Costs the int8 copy of the weights (1 byte per value) in memory.
   */
  prefill?: 'int8';
  /** Row count above which the `prefill` weights are used. Default 16. */
  prefillRows?: number;
}

/** Bumped whenever the bytes a quantizer produces change, so stale cache files are not reused. */
const QUANTIZER_VERSION = 1;

/** One `Scope.linear` call routed to a quantized matmul. */
interface Member {
  key: string;
  N: number;
  biasKey: string | null;
  /** The value name returned to the model. */
  output: string;
}

type NodeInit = GraphBuilder['nodes'][number];

/**
 * Linears that read the same input (q/k/v, gate/up) run as one matmul over their concatenated output channels,
 * split afterwards: the activations are quantized once, and the narrow k/v projections of GQA models (128–1024
 * rows) are not separate kernel launches. On 2 cores this measured the same as unfused (decoding and prefill within
 * noise); it halves the `If` nodes of `prefill: 'int8'` and gives many-thread pools wider matrices to split.
 */
interface Group {
  x: string;
  K: number;
  members: Member[];
  /** The nodes, constants and weight requests emitted for the group, replaced as members join. */
  nodes: NodeInit[];
  constants: string[];
  requests: string[];
}

/** Installs the quantized replacement for every `Scope.linear` of `g`. Call before the model builds its graph. */
export function useQuantizedLinears(g: GraphBuilder, options: QuantizeOptions): void {
  const blockSize = options.blockSize ?? 32;
  const accuracyLevel = options.accuracyLevel ?? 4;
  const minColumns = options.minColumns ?? 64;
  const fuse = options.fuse ?? true;
  if (options.format !== 'int4' && options.format !== 'int8') {
    throw new UsageError(`unknown quantization format '${String(options.format)}' (expected 'int4' or 'int8')`);
  }
  if (!(blockSize >= 16 && (blockSize & (blockSize - 1)) === 0)) {
    throw new UsageError(`quantization block size must be a power of two ≥ 16, got ${blockSize}`);
  }
  const kernel = options.format === 'int4' ? 'nbits' : (options.int8Kernel ?? 'dynamic');
  const bits = options.format === 'int4' ? 4 : 8;
  const symmetric = bits === 4 ? (options.symmetric ?? false) : true;
  const prefillInt8 = options.format === 'int4' && options.prefill === 'int8';
  const prefillRows = options.prefillRows ?? 16;
  // The int8 and 4-bit copies of a `prefill` group are produced one after the other: one checkpoint read serves both.
  let lastRead: { key: string; data: Promise<Float32Array> } | null = null;
  const readStacked = (members: Member[], K: number): Promise<Float32Array> => {
    if (!prefillInt8) return stackedWeights(g, members, K);
    const key = members.map((m) => m.key).join('+');
    if (lastRead?.key === key) {
      const { data } = lastRead;
      lastRead = null;
      return data;
    }
    lastRead = { key, data: stackedWeights(g, members, K) };
    return lastRead.data;
  };
  const groups = new Map<string, Group>();
  // Requests shared between groups (a weight applied to two inputs) must outlive the group that is rebuilt, and
  // requests the model made itself (a bias it also reads) are never dropped.
  const uses = new Map<string, number>();
  const use = (name: string, group: Group) => {
    group.requests.push(name);
    uses.set(name, (uses.get(name) ?? 0) + 1);
    return name;
  };

  /** Appends the matmul (and the Split of a fused group) computing `outputs` from x with one kernel. */
  const emitKernel = (group: Group, which: 'dynamic' | 'nbits', bias: string | null, outputs: string[]) => {
    const { x, K, members } = group;
    const N = members.reduce((sum, m) => sum + m.N, 0);
    const fused =
      members.length === 1 ? outputs[0] : g.fresh(members.map((m) => m.key.replace(/\.weight$/, '')).join('+'));
    if (which === 'dynamic') {
      const [weight, scales] = int8PerChannelRequests(g, members, K, () => readStacked(members, K));
      // b_zero_point is positional before bias; zeros = symmetric.
      const zeroPoint = g.request(zerosRequest(`zeros#int8[${N}]`, N));
      g.node(
        'DynamicQuantizeMatMul',
        [x, use(weight, group), use(scales, group), use(zeroPoint, group), ...(bias ? [bias] : [])],
        {},
        { domain: 'com.microsoft', outputs: [fused] },
      );
    } else {
      const parts = nbitsRequests(g, members, K, bits, blockSize, symmetric, () => readStacked(members, K));
      const inputs = [
        x,
        use(parts.weight, group),
        use(parts.scales, group),
        parts.zeroPoints ? use(parts.zeroPoints, group) : '',
      ];
      // Input 4 (g_idx) is unused; the bias input (5) saves a separate Add per linear.
      if (bias) inputs.push('', bias);
      while (inputs[inputs.length - 1] === '') inputs.pop();
      g.node(
        'MatMulNBits',
        inputs,
        { K, N, bits, block_size: blockSize, accuracy_level: accuracyLevel },
        { domain: 'com.microsoft', outputs: [fused] },
      );
    }
    if (members.length > 1) {
      const sizes = g.constInt64(members.map((m) => m.N));
      group.constants.push(sizes);
      g.node('Split', [fused, sizes], { axis: -1 }, { outputs });
    }
  };

  const emit = (group: Group) => {
    const { x, members } = group;
    let bias: string | null = null;
    if (members.length === 1 && members[0].biasKey) {
      const key = members[0].biasKey;
      const external = g.weights.has(key) && !uses.has(key);
      bias = g.weight(key);
      if (!external) use(bias, group);
    } else if (members.some((m) => m.biasKey)) {
      bias = use(g.request(fusedBiasRequest(g, members)), group);
    }
    const first = g.nodes.length;
    const outputs = members.map((m) => m.output);
    if (!prefillInt8) {
      emitKernel(group, kernel, bias, outputs);
    } else {
      // Many rows (a prompt, an image): the int8 GEMM; few rows (decoding): the 4-bit GEMV, which streams a third
      // fewer bytes. Both branches read the same outer-scope x and weights.
      const threshold = g.constInt64([prefillRows], [1]);
      group.constants.push(threshold);
      const many = g.node('Greater', [g.node('Shape', [x], { start: 0, end: 1 }), threshold]);
      const branch = (which: 'dynamic' | 'nbits') => {
        const at = g.nodes.length;
        const names = outputs.map((o) => g.fresh(`${o}/${which}`));
        emitKernel(group, which, bias, names);
        const nodes = g.nodes.splice(at);
        return {
          name: g.fresh(`branch_${which}`),
          node: nodes,
          output: names.map((name) => ({
            name,
            type: { value: { case: 'tensorType' as const, value: { elemType: TensorProto_DataType.FLOAT } } },
          })),
        };
      };
      g.nodes.push({
        opType: 'If',
        domain: '',
        input: [many],
        output: outputs,
        name: g.fresh('If'),
        attribute: [
          { name: 'then_branch', type: AttributeProto_AttributeType.GRAPH, g: branch('dynamic') },
          { name: 'else_branch', type: AttributeProto_AttributeType.GRAPH, g: branch('nbits') },
        ],
      });
    }
    group.nodes = g.nodes.slice(first);
  };

  const retract = (group: Group) => {
    const at = g.nodes.indexOf(group.nodes[0]);
    g.nodes.splice(at, group.nodes.length);
    for (const name of group.constants)
      g.constants.splice(
        g.constants.findIndex((c) => c.name === name),
        1,
      );
    for (const name of group.requests) {
      const left = uses.get(name)! - 1;
      uses.set(name, left);
      if (left === 0) g.weights.delete(name);
    }
    group.constants = [];
    group.requests = [];
    return at;
  };

  linearHooks.set(g, (scope: Scope, x: string, name: string) => {
    const key = scope.key(`${name}.weight`);
    if (!g.hasWeight(key) || options.skip?.(key)) return undefined;
    const shape = g.weightShape(key);
    if (shape.length !== 2) return undefined;
    const [N, K] = shape;
    if (K < minColumns) return undefined;
    if (kernel === 'nbits' && K % blockSize !== 0) return undefined;
    const biasKey = scope.key(`${name}.bias`);
    const member: Member = { key, N, biasKey: g.hasWeight(biasKey) ? biasKey : null, output: g.fresh(scope.key(name)) };
    const group = fuse ? groups.get(x) : undefined;
    if (group && group.K === K) {
      // Rebuild the group's nodes where they were: x is computed before them, and every consumer of the earlier
      // members' outputs comes after.
      const at = retract(group);
      group.members.push(member);
      emit(group);
      g.nodes.splice(g.nodes.length - group.nodes.length, group.nodes.length);
      g.nodes.splice(at, 0, ...group.nodes);
    } else {
      const created: Group = { x, K, members: [member], nodes: [], constants: [], requests: [] };
      emit(created);
      groups.set(x, created);
    }
    return member.output;
  });
}

// ---- weight requests ------------------------------------------------------------------------------------------

/**
 * One quantization shared by the requests of its parts (packed codes, scales, zero points): the runtime asks for
 * them one after the other, so the result is computed once and dropped when the last part has been taken.
 */
function shared<T>(parts: number, compute: () => T): () => T {
  let value: T | null = null;
  let taken = 0;
  return () => {
    value ??= compute();
    const result = value;
    if (++taken === parts) {
      value = null;
      taken = 0;
    }
    return result;
  };
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** Identity of the members' source bytes; the first file path leads, as the runtime stats it for invalidation. */
function sourceKey(g: GraphBuilder, members: Member[]): string {
  return members
    .map((m) => {
      const entry = g.checkpoint!.entry(m.key);
      return `${entry.source.name}:${entry.offset}:${entry.dtype}:${entry.shape.join('x')}`;
    })
    .join('|');
}

function sourceFiles(g: GraphBuilder, members: Member[]): string[] {
  return [...new Set(members.map((m) => g.checkpoint!.entry(m.key).source.name))];
}

function requestName(members: Member[], suffix: string): string {
  return `${members.map((m) => m.key).join('+')}#${suffix}`;
}

/** The members' [N, K] matrices stacked along N (quantization is per row, so stacking commutes with it). */
async function stackedWeights(g: GraphBuilder, members: Member[], K: number): Promise<Float32Array> {
  if (members.length === 1) return (await g.checkpoint!.readFloat32(members[0].key)).data;
  const out = new Float32Array(members.reduce((sum, m) => sum + m.N, 0) * K);
  let offset = 0;
  for (const m of members) {
    out.set((await g.checkpoint!.readFloat32(m.key)).data, offset);
    offset += m.N * K;
  }
  return out;
}

function fusedBiasRequest(g: GraphBuilder, members: Member[]): WeightRequest {
  const N = members.reduce((sum, m) => sum + m.N, 0);
  return {
    name: requestName(members, 'bias'),
    type: 'float32',
    dims: [N],
    cacheKey: `${sourceKey(g, members)}:bias:${members.map((m) => (m.biasKey ? 1 : 0)).join('')}`,
    sources: sourceFiles(g, members),
    produce: async () => {
      const out = new Float32Array(N);
      let offset = 0;
      for (const m of members) {
        if (m.biasKey) out.set((await g.checkpoint!.readFloat32(m.biasKey)).data, offset);
        offset += m.N;
      }
      return bytesOf(out);
    },
  };
}

function nbitsRequests(
  g: GraphBuilder,
  members: Member[],
  K: number,
  bits: 4 | 8,
  blockSize: number,
  symmetric: boolean,
  read: () => Promise<Float32Array>,
): { weight: string; scales: string; zeroPoints: string | null } {
  const N = members.reduce((sum, m) => sum + m.N, 0);
  const tag = `q${bits}b${blockSize}${symmetric ? 's' : 'a'}`;
  const cacheKey = `${sourceKey(g, members)}:${tag}:v${QUANTIZER_VERSION}`;
  const blocks = K / blockSize;
  const quantize = shared(symmetric ? 2 : 3, async () => {
    const weights = await read();
    return bits === 4
      ? quantizeInt4Blockwise(weights, N, K, blockSize, { symmetric })
      : quantizeInt8Blockwise(weights, N, K, blockSize);
  });
  const request = (
    suffix: string,
    type: WeightRequest['type'],
    dims: number[],
    pick: () => Promise<ArrayBufferView>,
  ): string =>
    g.request({
      name: requestName(members, `${tag}.${suffix}`),
      type,
      dims,
      cacheKey: `${cacheKey}:${suffix}`,
      sources: sourceFiles(g, members),
      produce: async () => bytesOf(await pick()),
    });
  const weight = request('B', 'uint8', [N, blocks, (blockSize * bits) / 8], async () => (await quantize()).packed);
  const scales = request('scales', 'float32', [N * blocks], async () => (await quantize()).scales);
  const zeroPoints = symmetric
    ? null
    : request('zp', 'uint8', [N * Math.ceil(blocks / 2)], async () => (await quantize()).zeroPoints!);
  return { weight, scales, zeroPoints };
}

function int8PerChannelRequests(
  g: GraphBuilder,
  members: Member[],
  K: number,
  read: () => Promise<Float32Array>,
): [string, string] {
  const N = members.reduce((sum, m) => sum + m.N, 0);
  const cacheKey = `${sourceKey(g, members)}:q8c:v${QUANTIZER_VERSION}`;
  const quantize = shared(2, async () => quantizeInt8PerChannel(await read(), N, K));
  const weight = g.request({
    name: requestName(members, 'q8c.B'),
    type: 'int8',
    dims: [K, N],
    cacheKey: `${cacheKey}:B`,
    sources: sourceFiles(g, members),
    produce: async () => bytesOf((await quantize()).transposed),
  });
  const scales = g.request({
    name: requestName(members, 'q8c.scales'),
    type: 'float32',
    dims: [N],
    cacheKey: `${cacheKey}:scales`,
    sources: sourceFiles(g, members),
    produce: async () => bytesOf((await quantize()).scales),
  });
  return [weight, scales];
}

function zerosRequest(name: string, count: number): WeightRequest {
  return { name, type: 'int8', dims: [count], cacheKey: `zeros:${count}`, produce: async () => new Uint8Array(count) };
}

// ---- quantizers -----------------------------------------------------------------------------------------------
// Plain loops over typed arrays, one pass per block: a 2-core machine quantizes a 0.5B-parameter LLM in seconds.
// Rounding uses `(v + 0.5) | 0` on values made non-negative first (truncation = floor there), which is several times
// faster than Math.round in V8's optimized code.

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
