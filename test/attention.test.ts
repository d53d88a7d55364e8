/**
 * The decomposed attention (MatMul, scale, Softmax, MatMul) that graphs for the WebGPU execution provider use gives
 * what com.microsoft MultiHeadAttention gives, run on onnxruntime-node's CPU provider; and only WebGPU asks for it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GraphBuilder } from '../src/core/graph.js';
import { createSession, graphTarget, Tensor } from '../src/core/session.js';

interface Case {
  heads: number;
  headSize: number;
  /** Query and key/value lengths. */
  queries: number;
  keys: number;
  scale?: number;
}

function attentionGraph(decomposedAttention: boolean, c: Case): GraphBuilder {
  const g = new GraphBuilder('attention', null, { decomposedAttention });
  const C = c.heads * c.headSize;
  const q = g.input('q', 'float32', ['batch', 'queries', C]);
  const k = g.input('k', 'float32', ['batch', 'keys', C]);
  const v = g.input('v', 'float32', ['batch', 'keys', C]);
  g.output(g.multiHeadAttention(q, k, v, c), 'out');
  return g;
}

/** Deterministic values in [-2, 2): large enough that a wrong scale or a wrong head split shows. */
function values(n: number, seed: number): Float32Array {
  let state = seed;
  return Float32Array.from({ length: n }, () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return (state / 2 ** 31) * 4 - 2;
  });
}

async function run(g: GraphBuilder, c: Case, batch: number): Promise<Float32Array> {
  const C = c.heads * c.headSize;
  const session = await createSession(g, { executionProviders: ['cpu'] });
  try {
    const out = await session.run({
      q: new Tensor('float32', values(batch * c.queries * C, 1), [batch, c.queries, C]),
      k: new Tensor('float32', values(batch * c.keys * C, 2), [batch, c.keys, C]),
      v: new Tensor('float32', values(batch * c.keys * C, 3), [batch, c.keys, C]),
    });
    assert.deepEqual(out.out.dims, [batch, c.queries, C]);
    return out.out.data as Float32Array;
  } finally {
    await session.release();
  }
}

test('decomposed attention equals MultiHeadAttention on the CPU provider (self, cross and pooling shapes)', async () => {
  const cases: Case[] = [
    { heads: 4, headSize: 16, queries: 17, keys: 17 },
    // 37 and 257 tokens: past the 32 from which onnxruntime-web's WebGPU MultiHeadAttention goes wrong.
    { heads: 4, headSize: 16, queries: 37, keys: 37 },
    { heads: 2, headSize: 32, queries: 257, keys: 257 },
    { heads: 3, headSize: 8, queries: 5, keys: 40 },
    { heads: 2, headSize: 24, queries: 1, keys: 37, scale: 0.3 },
  ];
  for (const c of cases) {
    const fused = attentionGraph(false, c);
    const decomposed = attentionGraph(true, c);
    assert.deepEqual(
      fused.nodes.map((n) => n.opType).filter((op) => op !== 'Identity'),
      ['MultiHeadAttention'],
    );
    assert.ok(!decomposed.nodes.some((n) => n.opType === 'MultiHeadAttention'));
    const expected = await run(fused, c, 2);
    const actual = await run(decomposed, c, 2);
    let maxAbs = 0;
    let maxErr = 0;
    for (let i = 0; i < expected.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
      maxErr = Math.max(maxErr, Math.abs(actual[i] - expected[i]));
    }
    assert.ok(maxAbs > 0.1, `${JSON.stringify(c)}: outputs too small to compare`);
    assert.ok(maxErr / maxAbs <= 1e-5, `${JSON.stringify(c)}: ${maxErr / maxAbs} relative`);
  }
});

test('graphs are built with decomposed attention for the WebGPU execution provider only', async () => {
  assert.deepEqual(await graphTarget(), { decomposedAttention: false });
  assert.deepEqual(await graphTarget({ executionProviders: ['cpu'] }), { decomposedAttention: false });
  assert.deepEqual(await graphTarget({ executionProviders: ['wasm'] }), { decomposedAttention: false });
  assert.deepEqual(await graphTarget({ executionProviders: ['webgpu', 'wasm'] }), { decomposedAttention: true });
  assert.deepEqual(new GraphBuilder('default', null).target, { decomposedAttention: false });
});
