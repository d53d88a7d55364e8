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
import { linearHooks, type GraphBuilder, type Scope } from './graph.js';
import { UsageError } from './errors.js';
import {
  fusedBiasRequest,
  int8PerChannelRequests,
  nbitsRequests,
  stackedWeights,
  zerosRequest,
  type Member,
} from './quantize/requests.js';

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
