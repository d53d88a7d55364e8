/**
 * Config vs weights: every config field that sizes a tensor is checked against the checkpoint at load, and absurd
 * values are refused by field name, before onnxruntime sees a graph. The broken configs are made here from copies
 * of the bundled fixtures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { ConfigError } from '../src/core/errors.js';
import { InternVLChatModel } from '../src/models/internvl_chat.js';
import { InternVLClipModel } from '../src/models/internvl_clip.js';
import { copyFolder, DATA, errorLines, REPO, runCli } from './helpers/cli.js';

const FIXTURES = path.join(DATA, 'fixtures');
type Config = Record<string, any>;

/** A copy of a fixture whose config.json is edited; one copy per fixture, the config rewritten per case. */
function editor(fixture: string): (edit: (c: Config) => void) => string {
  const dir = copyFolder(path.join(FIXTURES, fixture));
  const original = fs.readFileSync(path.join(FIXTURES, fixture, 'config.json'), 'utf8');
  return (edit) => {
    const config = JSON.parse(original);
    edit(config);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  };
}

async function loadError(load: () => Promise<{ release(): Promise<void> }>): Promise<string> {
  let model: { release(): Promise<void> } | undefined;
  try {
    model = await load();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `${(error as Error).name}: ${(error as Error).message}`);
    return error.message;
  }
  await model.release();
  assert.fail('the model loaded');
}

test('chat (Qwen2): each shape field disagreeing with the weights names the field and the tensor', async () => {
  const edit = editor('chat_qwen2');
  const cases: [(c: Config) => void, RegExp][] = [
    [
      (c) => (c.llm_config.vocab_size = 1000),
      /config\.json: llm_config\.vocab_size 1000 but language_model\.model\.embed_tokens\.weight is \[300, 64\]$/,
    ],
    [
      (c) => (c.llm_config.num_attention_heads = 8),
      /llm_config\.num_key_value_heads × head_dim = 2 × 8 = 16 but language_model\.model\.layers\.0\.self_attn\.k_proj\.weight is \[32, 64\]$/,
    ],
    [
      (c) => (c.llm_config.intermediate_size = 100),
      /llm_config\.intermediate_size 100 but language_model\.model\.layers\.0\.mlp\.gate_proj\.weight is \[128, 64\]$/,
    ],
    [(c) => (c.llm_config.hidden_size = 32), /llm_config\.hidden_size 32 but mlp1\.1\.weight is \[64, 192\]$/],
    [
      (c) => (c.llm_config.num_hidden_layers = 3),
      /llm_config\.num_hidden_layers 3 but the checkpoint has no language_model\.model\.layers\.2\.input_layernorm\.weight/,
    ],
    [
      (c) => (c.vision_config.hidden_size = 96),
      /vision_config\.hidden_size 96 but vision_model\.embeddings\.class_embedding is \[1, 1, 48\]$/,
    ],
    [
      (c) => (c.vision_config.patch_size = 7),
      /vision_config\.patch_size 7 but vision_model\.embeddings\.patch_embedding\.weight is \[48, 3, 14, 14\]$/,
    ],
    [
      (c) => (c.vision_config.image_size = 112),
      /1 \+ \(vision_config\.image_size \/ patch_size\)² = 1 \+ \(112 \/ 14\)² = 65 but vision_model\.embeddings\.position_embedding is \[1, 17, 48\]$/,
    ],
    [
      (c) => (c.vision_config.intermediate_size = 768),
      /vision_config\.intermediate_size 768 but vision_model\.encoder\.layers\.0\.mlp\.fc1\.weight is \[192, 48\]$/,
    ],
  ];
  for (const [change, pattern] of cases) {
    const dir = edit(change);
    assert.match(await loadError(() => InternVLChatModel.load(dir)), pattern);
  }
});

test('chat: invalid values are refused by field name', async () => {
  const edit = editor('chat_qwen2');
  const cases: [(c: Config) => void, RegExp][] = [
    [(c) => (c.llm_config.rms_norm_eps = -1), /field 'llm_config\.rms_norm_eps' must be greater than 0, got -1$/],
    [(c) => (c.llm_config.rope_theta = 0), /field 'llm_config\.rope_theta' must be greater than 0, got 0$/],
    [(c) => (c.llm_config.vocab_size = 0), /field 'llm_config\.vocab_size' must be at least 1, got 0$/],
    [
      (c) => (c.llm_config.num_key_value_heads = 3),
      /'llm_config\.num_key_value_heads' 3 does not divide num_attention_heads 4$/,
    ],
    [
      (c) => (c.llm_config.num_attention_heads = 6),
      /'llm_config\.num_attention_heads' 6 does not divide hidden_size 64/,
    ],
    [(c) => (c.llm_config.head_dim = 15), /'llm_config\.head_dim' 15 must be even/],
    [(c) => (c.vision_config.hidden_size = -48), /field 'vision_config\.hidden_size' must be at least 1, got -48$/],
    [(c) => (c.vision_config.layer_norm_eps = -1e-6), /'vision_config\.layer_norm_eps' must be greater than 0/],
    [(c) => (c.vision_config.num_attention_heads = 5), /hidden_size 48 is not divisible by num_attention_heads 5/],
    [(c) => (c.vision_config.image_size = 50), /'vision_config\.image_size' 50 is not a multiple of patch_size 14$/],
    [(c) => (c.max_dynamic_patch = 0), /field 'max_dynamic_patch' must be at least 1, got 0$/],
    [
      (c) => (c.max_dynamic_patch = 1e7),
      /max_dynamic_patch 10000000 is too large: the tiles of one image would need 350\.5 GiB \(limit 4 GiB\)$/,
    ],
    [
      (c) => (c.force_image_size = 14 * 10000),
      /force_image_size 140000 is too large: the position embeddings would need/,
    ],
  ];
  for (const [change, pattern] of cases) {
    const dir = edit(change);
    assert.match(await loadError(() => InternVLChatModel.load(dir)), pattern);
  }
});

test('packed projections (InternLM2 wqkv) and the *-hf layout name their own fields and tensors', async () => {
  const internlm2 = editor('chat_internlm2')((c) => (c.llm_config.num_key_value_heads = 1));
  assert.match(
    await loadError(() => InternVLChatModel.load(internlm2)),
    /\(llm_config\.num_attention_heads \+ 2 × num_key_value_heads\) × head_dim = \(4 \+ 2 × 1\) × 16 = 96 but language_model\.model\.layers\.0\.attention\.wqkv\.weight is \[128, 64\]$/,
  );
  const hf = editor('hf_internvl')((c) => (c.text_config.vocab_size = 1000));
  assert.match(
    await loadError(() => InternVLChatModel.load(hf)),
    /text_config\.vocab_size 1000 but model\.language_model\.embed_tokens\.weight is \[300, 64\]$/,
  );
});

test('InternVL-C/G: embedding width, query tokens and cross-attention layers are checked', async () => {
  const edit = editor('internvl_clip');
  const cases: [(c: Config) => void, RegExp][] = [
    [(c) => (c.clip_embed_dim = 16), /clip_embed_dim 16 but clip_projector\.cross_attn\.proj\.weight is \[32, 64\]$/],
    [(c) => (c.num_query_token = 32), /num_query_token 32 but query_tokens is \[1, 96, 48\]$/],
    [
      (c) => (c.qllama_config.cross_attention_frequency = 1),
      /qllama_config\.cross_attention_frequency 1 but qllama\.model\.layers\.1\.cross_attn\.k_proj\.weight is missing$/,
    ],
    [(c) => (c.attn_pool_num_heads = 5), /'attn_pool_num_heads' 5 does not divide vision_config\.hidden_size 64$/],
    [
      (c) => (c.qllama_config.vocab_size = 999),
      /qllama_config\.vocab_size 999 but qllama\.model\.embed_tokens\.weight is \[1000, 48\]$/,
    ],
  ];
  for (const [change, pattern] of cases) {
    const dir = edit(change);
    assert.match(await loadError(() => InternVLClipModel.load(dir)), pattern);
  }
});

test('CLI: a config that disagrees with its weights is exit 2 and one line, no onnxruntime output', async () => {
  const dir = editor('intern_vit_rms')((c) => (c.hidden_size = 96));
  const r = await runCli(['verify', dir]);
  assert.equal(r.code, 2);
  assert.deepEqual(errorLines(r.stderr), [
    `error: ${path.join(dir, 'config.json')}: hidden_size 96 but embeddings.class_embedding is [1, 1, 64]`,
  ]);
});

test('an onnxruntime failure at run time prints no native log line, only the typed error', () => {
  // A graph whose Reshape cannot hold its input: onnxruntime logs "[E:onnxruntime:…]" at its default severity.
  const script = `
    import { GraphBuilder } from './src/core/graph.ts';
    import { createSession, Tensor } from './src/core/session.ts';
    const g = new GraphBuilder('bad_reshape');
    g.output(g.reshape(g.input('x', 'float32', ['n']), [2, 3]), 'y', 'float32');
    const session = await createSession(g, { threads: 1 });
    try {
      await session.run({ x: new Tensor('float32', new Float32Array(5), [5]) });
    } catch (error) {
      console.log(error.name);
    }`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO,
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'RuntimeError');
  assert.equal(r.stderr, '');
});
