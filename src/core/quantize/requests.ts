/**
 * The weight requests of quantized linears: how the runtime gets each packed matrix, scale and zero-point tensor
 * when it fills its weight cache. The parts of one quantization are computed once and handed out in turn; the cache
 * key names the source bytes, the format and the quantizer version, so a change of any of them rebuilds the entry.
 */
import type { GraphBuilder, WeightRequest } from '../graph.js';
import {
  quantizeInt4BlockwiseSliced,
  quantizeInt8BlockwiseSliced,
  quantizeInt8PerChannelSliced,
} from './quantizers.js';

/** Bumped whenever the bytes a quantizer produces change, so stale cache files are not reused. */
const QUANTIZER_VERSION = 1;

/** One `Scope.linear` call routed to a quantized matmul. */
export interface Member {
  key: string;
  N: number;
  biasKey: string | null;
  /** The value name returned to the model. */
  output: string;
}

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
export async function stackedWeights(g: GraphBuilder, members: Member[], K: number): Promise<Float32Array> {
  if (members.length === 1) return (await g.checkpoint!.readFloat32(members[0].key)).data;
  const out = new Float32Array(members.reduce((sum, m) => sum + m.N, 0) * K);
  let offset = 0;
  for (const m of members) {
    out.set((await g.checkpoint!.readFloat32(m.key)).data, offset);
    offset += m.N * K;
  }
  return out;
}

export function fusedBiasRequest(g: GraphBuilder, members: Member[]): WeightRequest {
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

export function nbitsRequests(
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
      ? quantizeInt4BlockwiseSliced(weights, N, K, blockSize, { symmetric })
      : quantizeInt8BlockwiseSliced(weights, N, K, blockSize);
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

export function int8PerChannelRequests(
  g: GraphBuilder,
  members: Member[],
  K: number,
  read: () => Promise<Float32Array>,
): [string, string] {
  const N = members.reduce((sum, m) => sum + m.N, 0);
  const cacheKey = `${sourceKey(g, members)}:q8c:v${QUANTIZER_VERSION}`;
  const quantize = shared(2, async () => quantizeInt8PerChannelSliced(await read(), N, K));
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

export function zerosRequest(name: string, count: number): WeightRequest {
  return { name, type: 'int8', dims: [count], cacheKey: `zeros:${count}`, produce: async () => new Uint8Array(count) };
}
