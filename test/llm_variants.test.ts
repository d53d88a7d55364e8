/**
 * The decoder's family variants are data: a Phi-3 checkpoint (packed qkv_proj, gate_up_proj), an InternLM2
 * checkpoint (wqkv grouped per KV head) and a tied-embedding LLaMA built from the same random weights as a plain
 * LLaMA must give the same logits. RoPE scalings against their formulas.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './helpers/cli.js';
import { writeSafetensors } from '../src/core/node/files.js';
import { Checkpoint, type DType } from '../src/core/safetensors.js';
import { readConfig } from '../src/models/config.js';
import { CausalLM, parseLlmConfig } from '../src/models/llm.js';
import { parseRopeScaling, RotaryEmbedding } from '../src/models/rope.js';
import { ConfigSection } from '../src/models/config.js';

const H = 32,
  HEADS = 4,
  KV = 2,
  D = 8,
  I = 48,
  V = 50,
  L = 2;

function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648 - 0.5;
  };
}

type Tensors = Record<string, { dtype: DType; shape: number[]; data: Float32Array }>;

function llamaWeights(): Tensors {
  const r = random(42);
  const t = (shape: number[], scale = 0.3): { dtype: DType; shape: number[]; data: Float32Array } => ({
    dtype: 'F32',
    shape,
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * scale),
  });
  const w: Tensors = {
    'model.embed_tokens.weight': t([V, H], 2),
    'model.norm.weight': t([H], 1),
    'lm_head.weight': t([V, H]),
  };
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}.`;
    Object.assign(w, {
      [`${p}input_layernorm.weight`]: t([H], 1),
      [`${p}post_attention_layernorm.weight`]: t([H], 1),
      [`${p}self_attn.q_proj.weight`]: t([HEADS * D, H]),
      [`${p}self_attn.k_proj.weight`]: t([KV * D, H]),
      [`${p}self_attn.v_proj.weight`]: t([KV * D, H]),
      [`${p}self_attn.o_proj.weight`]: t([H, HEADS * D]),
      [`${p}mlp.gate_proj.weight`]: t([I, H]),
      [`${p}mlp.up_proj.weight`]: t([I, H]),
      [`${p}mlp.down_proj.weight`]: t([H, I]),
    });
  }
  for (const value of Object.values(w)) if (value.shape.length === 1) value.data = value.data.map((x) => 1 + x);
  return w;
}

function rows(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

function save(dir: string, config: Record<string, unknown>, weights: Tensors): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      hidden_size: H,
      num_attention_heads: HEADS,
      num_key_value_heads: KV,
      intermediate_size: I,
      num_hidden_layers: L,
      vocab_size: V,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      max_position_embeddings: 64,
      hidden_act: 'silu',
      ...config,
    }),
  );
  writeSafetensors(path.join(dir, 'model.safetensors'), weights);
  return dir;
}

async function logitsOf(dir: string): Promise<Float32Array> {
  const lm = await CausalLM.load(await Checkpoint.open(dir), parseLlmConfig(await readConfig(dir)));
  const ids = [3, 17, 42, 8, 1, 29];
  const decoder = lm.batchDecoder({ maxSequences: 1, maxLength: ids.length });
  const logits = await decoder.prefill(decoder.addSequence(), { ids }, { allPositions: true });
  await lm.release();
  return logits;
}

function maxDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
}

test('Phi-3, InternLM2 and tied-embedding layouts compute what LLaMA computes from the same weights', async () => {
  const root = tempDir();
  const w = llamaWeights();
  const llama = await logitsOf(save(path.join(root, 'llama'), { architectures: ['LlamaForCausalLM'] }, w));

  const phi3: Tensors = {
    'model.embed_tokens.weight': w['model.embed_tokens.weight'],
    'model.norm.weight': w['model.norm.weight'],
    'lm_head.weight': w['lm_head.weight'],
  };
  const internlm2: Tensors = {
    'model.tok_embeddings.weight': w['model.embed_tokens.weight'],
    'model.norm.weight': w['model.norm.weight'],
    'output.weight': w['lm_head.weight'],
  };
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}.`;
    const get = (n: string) => w[`${p}${n}.weight`].data;
    const f = (shape: number[], data: Float32Array) => ({ dtype: 'F32' as DType, shape, data });
    Object.assign(phi3, {
      [`${p}input_layernorm.weight`]: w[`${p}input_layernorm.weight`],
      [`${p}post_attention_layernorm.weight`]: w[`${p}post_attention_layernorm.weight`],
      [`${p}self_attn.qkv_proj.weight`]: f(
        [(HEADS + 2 * KV) * D, H],
        rows(get('self_attn.q_proj'), get('self_attn.k_proj'), get('self_attn.v_proj')),
      ),
      [`${p}self_attn.o_proj.weight`]: w[`${p}self_attn.o_proj.weight`],
      [`${p}mlp.gate_up_proj.weight`]: f([2 * I, H], rows(get('mlp.gate_proj'), get('mlp.up_proj'))),
      [`${p}mlp.down_proj.weight`]: w[`${p}mlp.down_proj.weight`],
    });
    // InternLM2 packs, per KV head g: its HEADS/KV query heads, then its key head, then its value head.
    const groups = HEADS / KV;
    const parts: Float32Array[] = [];
    for (let g = 0; g < KV; g++) {
      for (let q = 0; q < groups; q++)
        parts.push(get('self_attn.q_proj').subarray((g * groups + q) * D * H, (g * groups + q + 1) * D * H));
      parts.push(
        get('self_attn.k_proj').subarray(g * D * H, (g + 1) * D * H),
        get('self_attn.v_proj').subarray(g * D * H, (g + 1) * D * H),
      );
    }
    Object.assign(internlm2, {
      [`${p}attention_norm.weight`]: w[`${p}input_layernorm.weight`],
      [`${p}ffn_norm.weight`]: w[`${p}post_attention_layernorm.weight`],
      [`${p}attention.wqkv.weight`]: f([(HEADS + 2 * KV) * D, H], rows(...parts)),
      [`${p}attention.wo.weight`]: w[`${p}self_attn.o_proj.weight`],
      [`${p}feed_forward.w1.weight`]: w[`${p}mlp.gate_proj.weight`],
      [`${p}feed_forward.w3.weight`]: w[`${p}mlp.up_proj.weight`],
      [`${p}feed_forward.w2.weight`]: w[`${p}mlp.down_proj.weight`],
    });
  }
  const phi3Logits = await logitsOf(save(path.join(root, 'phi3'), { architectures: ['Phi3ForCausalLM'] }, phi3));
  assert.ok(maxDifference(phi3Logits, llama) < 1e-5, `phi3: ${maxDifference(phi3Logits, llama)}`);
  const internLogits = await logitsOf(
    save(path.join(root, 'internlm2'), { architectures: ['InternLM2ForCausalLM'] }, internlm2),
  );
  assert.ok(maxDifference(internLogits, llama) < 1e-5, `internlm2: ${maxDifference(internLogits, llama)}`);

  const { 'lm_head.weight': _dropped, ...untied } = w;
  const tiedWeights = { ...untied };
  const tied = await logitsOf(
    save(path.join(root, 'tied'), { architectures: ['LlamaForCausalLM'], tie_word_embeddings: true }, tiedWeights),
  );
  const explicit = await logitsOf(
    save(
      path.join(root, 'explicit'),
      { architectures: ['LlamaForCausalLM'] },
      { ...untied, 'lm_head.weight': w['model.embed_tokens.weight'] },
    ),
  );
  assert.ok(maxDifference(tied, explicit) < 1e-6);
  assert.ok(maxDifference(tied, llama) > 1e-2, 'tied and untied heads must differ for these weights');
});

const section = (raw: Record<string, unknown>) => new ConfigSection(raw, 'config.json');

test('RoPE: default frequencies and positions', () => {
  const rope = new RotaryEmbedding(4, 10000, { type: 'default' });
  const { cos, sin } = rope.cosSin(Int32Array.of(0, 3), 4);
  assert.deepEqual(Array.from(cos.subarray(0, 4)), [1, 1, 1, 1]);
  // Position 3, frequency index 1: 3 · 10000^(−2/4) = 0.03.
  assert.ok(Math.abs(sin[4 + 1] - Math.sin(0.03)) < 1e-7);
  assert.ok(Math.abs(cos[4 + 2] - Math.cos(3)) < 1e-6);
});

test('RoPE: dynamic NTK rescales the base only past max_position_embeddings', () => {
  const scaling = parseRopeScaling(section({ rope_scaling: { type: 'dynamic', factor: 2 } }), 8);
  assert.deepEqual(scaling, { type: 'dynamic', factor: 2, maxPositionEmbeddings: 8 });
  const rope = new RotaryEmbedding(4, 10000, scaling);
  const plain = new RotaryEmbedding(4, 10000, { type: 'default' });
  assert.deepEqual(rope.cosSin(Int32Array.of(5), 8), plain.cosSin(Int32Array.of(5), 8));
  // total 16 > 8: base = 10000 · (2·16/8 − 1)^(4/2) = 90000.
  const { sin } = rope.cosSin(Int32Array.of(5), 16);
  assert.ok(Math.abs(sin[1] - Math.sin(5 / Math.sqrt(90000))) < 1e-6);
});

test('RoPE: llama3 bands and longrope factors', () => {
  const llama3 = parseRopeScaling(
    section({
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 16,
      },
    }),
    128,
  );
  const rope = new RotaryEmbedding(8, 10000, llama3);
  const { sin } = rope.cosSin(Int32Array.of(1), 1);
  // Frequencies 1, 0.1, 0.01: wavelength 6.3 lies between 16/4 and 16/1 (smoothed), 63 and 628 are above 16
  // (divided by the factor 8).
  const smooth = (16 / (2 * Math.PI) - 1) / (4 - 1);
  assert.ok(Math.abs(sin[0] - Math.sin((1 - smooth) / 8 + smooth)) < 1e-6);
  assert.ok(Math.abs(sin[1] - Math.sin(0.1 / 8)) < 1e-7);
  assert.ok(Math.abs(sin[2] - Math.sin(0.01 / 8)) < 1e-7);
  const longrope = parseRopeScaling(
    section({
      original_max_position_embeddings: 4,
      rope_scaling: { type: 'longrope', short_factor: [1, 2], long_factor: [3, 4] },
    }),
    16,
  );
  assert.equal(longrope.type, 'longrope');
  const scale = Math.sqrt(1 + Math.log(4) / Math.log(4));
  const lr = new RotaryEmbedding(4, 10000, longrope);
  const short = lr.cosSin(Int32Array.of(2), 3);
  assert.ok(Math.abs(short.sin[1] - scale * Math.sin(2 / (2 * 100))) < 1e-6);
  const long = lr.cosSin(Int32Array.of(6), 7);
  assert.ok(Math.abs(long.sin[1] - scale * Math.sin(6 / (4 * 100))) < 1e-6);
  assert.throws(
    () => parseRopeScaling(section({ rope_scaling: { type: 'yarn', factor: 2 } }), 8),
    /rope scaling 'yarn' is not supported/,
  );
});
