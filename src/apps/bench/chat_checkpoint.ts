/**
 * Random-weight checkpoints of released InternVL-Chat shapes for `bench chat` and `bench serve`: the remote-code
 * layout with `config.json` as released, weights in the release's bf16 by default (random_checkpoint.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { RandomShards, type RandomTensor, type StorageDtype } from './random_checkpoint.js';

export interface ChatShape {
  name: string;
  /** The released checkpoints with this shape. */
  models: string;
  vision: { layers: number; hidden: number; heads: number; intermediate: number; imageSize: number; patchSize: number };
  llm: {
    family: 'qwen2' | 'internlm2';
    layers: number;
    hidden: number;
    heads: number;
    kvHeads: number;
    headDim: number;
    intermediate: number;
    vocab: number;
    ropeTheta: number;
    rmsNormEps: number;
    tieWordEmbeddings: boolean;
  };
  template: string;
}

const INTERNVIT_300M_448 = { layers: 24, hidden: 1024, heads: 16, intermediate: 4096, imageSize: 448, patchSize: 14 };

export const CHAT_SHAPES: Record<string, ChatShape> = {
  'internvl2-1b': {
    name: 'internvl2-1b',
    models: 'InternVL2-1B (InternViT-300M-448px + Qwen2-0.5B-Instruct)',
    vision: INTERNVIT_300M_448,
    llm: {
      family: 'qwen2',
      layers: 24,
      hidden: 896,
      heads: 14,
      kvHeads: 2,
      headDim: 64,
      intermediate: 4864,
      vocab: 151655,
      ropeTheta: 1e6,
      rmsNormEps: 1e-6,
      tieWordEmbeddings: false,
    },
    template: 'Hermes-2',
  },
  'internvl2-2b': {
    name: 'internvl2-2b',
    models: 'InternVL2-2B (InternViT-300M-448px + internlm2-chat-1_8b)',
    vision: INTERNVIT_300M_448,
    llm: {
      family: 'internlm2',
      layers: 24,
      hidden: 2048,
      heads: 16,
      kvHeads: 8,
      headDim: 128,
      intermediate: 8192,
      vocab: 92553,
      ropeTheta: 1e6,
      rmsNormEps: 1e-5,
      tieWordEmbeddings: false,
    },
    template: 'internlm2-chat',
  },
};

/** config.json in the layout of the released InternVLChatModel checkpoints (remote code). */
export function chatConfigJson(shape: ChatShape, dtype: StorageDtype): Record<string, unknown> {
  const v = shape.vision;
  const l = shape.llm;
  const llmConfig: Record<string, unknown> =
    l.family === 'qwen2'
      ? {
          architectures: ['Qwen2ForCausalLM'],
          model_type: 'qwen2',
          attention_dropout: 0.0,
          bos_token_id: 151643,
          eos_token_id: 151645,
          hidden_act: 'silu',
          hidden_size: l.hidden,
          initializer_range: 0.02,
          intermediate_size: l.intermediate,
          max_position_embeddings: 32768,
          max_window_layers: 21,
          num_attention_heads: l.heads,
          num_hidden_layers: l.layers,
          num_key_value_heads: l.kvHeads,
          rms_norm_eps: l.rmsNormEps,
          rope_theta: l.ropeTheta,
          rope_scaling: null,
          sliding_window: 32768,
          tie_word_embeddings: l.tieWordEmbeddings,
          torch_dtype: dtype,
          use_cache: true,
          use_sliding_window: false,
          vocab_size: l.vocab,
        }
      : {
          architectures: ['InternLM2ForCausalLM'],
          model_type: 'internlm2',
          bias: false,
          bos_token_id: 1,
          eos_token_id: 2,
          pad_token_id: 2,
          hidden_act: 'silu',
          hidden_size: l.hidden,
          initializer_range: 0.02,
          intermediate_size: l.intermediate,
          max_position_embeddings: 32768,
          num_attention_heads: l.heads,
          num_hidden_layers: l.layers,
          num_key_value_heads: l.kvHeads,
          rms_norm_eps: l.rmsNormEps,
          rope_scaling: { factor: 2.0, type: 'dynamic' },
          rope_theta: l.ropeTheta,
          tie_word_embeddings: l.tieWordEmbeddings,
          torch_dtype: dtype,
          use_cache: true,
          vocab_size: l.vocab,
        };
  return {
    architectures: ['InternVLChatModel'],
    model_type: 'internvl_chat',
    downsample_ratio: 0.5,
    dynamic_image_size: true,
    force_image_size: v.imageSize,
    hidden_size: l.hidden,
    max_dynamic_patch: 12,
    min_dynamic_patch: 1,
    pad2square: false,
    ps_version: 'v2',
    select_layer: -1,
    template: shape.template,
    tie_word_embeddings: false,
    torch_dtype: dtype,
    use_backbone_lora: 0,
    use_llm_lora: 0,
    use_thumbnail: true,
    llm_config: llmConfig,
    vision_config: {
      architectures: ['InternVisionModel'],
      model_type: 'intern_vit_6b',
      attention_dropout: 0.0,
      drop_path_rate: 0.0,
      dropout: 0.0,
      hidden_act: 'gelu',
      hidden_size: v.hidden,
      image_size: v.imageSize,
      initializer_factor: 1.0,
      initializer_range: 0.02,
      intermediate_size: v.intermediate,
      layer_norm_eps: 1e-6,
      norm_type: 'layer_norm',
      num_attention_heads: v.heads,
      num_channels: 3,
      num_hidden_layers: v.layers,
      patch_size: v.patchSize,
      qk_normalization: false,
      qkv_bias: true,
      torch_dtype: dtype,
      use_flash_attn: false,
    },
  };
}

/** Writes config.json and a random checkpoint of `shape` (sharded per layer, with an index) to `dir`. */
export function writeRandomChatCheckpoint(
  dir: string,
  shape: ChatShape,
  options: { dtype: StorageDtype; seed?: number },
): number {
  const shards = new RandomShards(dir, options.dtype, options.seed);
  const writeShard = (file: string, specs: RandomTensor[]) => shards.write(file, specs);
  const { vision: v, llm: l } = shape;
  const grid = v.imageSize / v.patchSize;
  const W = 0.02;
  // Norm gains around 1 and small biases: activations stay in a normal float range through all layers.
  writeShard('model-vision-embeddings.safetensors', [
    ['vision_model.embeddings.class_embedding', [1, 1, v.hidden], W],
    ['vision_model.embeddings.patch_embedding.weight', [v.hidden, 3, v.patchSize, v.patchSize], W],
    ['vision_model.embeddings.patch_embedding.bias', [v.hidden], W],
    ['vision_model.embeddings.position_embedding', [1, 1 + grid * grid, v.hidden], W],
  ]);
  for (let i = 0; i < v.layers; i++) {
    const p = `vision_model.encoder.layers.${i}`;
    writeShard(`model-vision-${String(i).padStart(3, '0')}.safetensors`, [
      [`${p}.norm1.weight`, [v.hidden], 0.1, 1],
      [`${p}.norm1.bias`, [v.hidden], W],
      [`${p}.attn.qkv.weight`, [3 * v.hidden, v.hidden], W],
      [`${p}.attn.qkv.bias`, [3 * v.hidden], W],
      [`${p}.attn.proj.weight`, [v.hidden, v.hidden], W],
      [`${p}.attn.proj.bias`, [v.hidden], W],
      [`${p}.ls1`, [v.hidden], 0.1, 0.5],
      [`${p}.norm2.weight`, [v.hidden], 0.1, 1],
      [`${p}.norm2.bias`, [v.hidden], W],
      [`${p}.mlp.fc1.weight`, [v.intermediate, v.hidden], W],
      [`${p}.mlp.fc1.bias`, [v.intermediate], W],
      [`${p}.mlp.fc2.weight`, [v.hidden, v.intermediate], W],
      [`${p}.mlp.fc2.bias`, [v.hidden], W],
      [`${p}.ls2`, [v.hidden], 0.1, 0.5],
    ]);
  }
  writeShard('model-projector.safetensors', [
    ['mlp1.0.weight', [4 * v.hidden], 0.1, 1],
    ['mlp1.0.bias', [4 * v.hidden], W],
    ['mlp1.1.weight', [l.hidden, 4 * v.hidden], W],
    ['mlp1.1.bias', [l.hidden], W],
    ['mlp1.3.weight', [l.hidden, l.hidden], W],
    ['mlp1.3.bias', [l.hidden], W],
  ]);
  const qwen = l.family === 'qwen2';
  const root = 'language_model.model';
  writeShard('model-llm-embeddings.safetensors', [
    [`${root}.${qwen ? 'embed_tokens' : 'tok_embeddings'}.weight`, [l.vocab, l.hidden], W],
  ]);
  for (let i = 0; i < l.layers; i++) {
    const p = `${root}.layers.${i}`;
    const q = l.heads * l.headDim;
    const kv = l.kvHeads * l.headDim;
    const specs: RandomTensor[] = qwen
      ? [
          [`${p}.input_layernorm.weight`, [l.hidden], 0.1, 1],
          [`${p}.self_attn.q_proj.weight`, [q, l.hidden], W],
          [`${p}.self_attn.q_proj.bias`, [q], W],
          [`${p}.self_attn.k_proj.weight`, [kv, l.hidden], W],
          [`${p}.self_attn.k_proj.bias`, [kv], W],
          [`${p}.self_attn.v_proj.weight`, [kv, l.hidden], W],
          [`${p}.self_attn.v_proj.bias`, [kv], W],
          [`${p}.self_attn.o_proj.weight`, [l.hidden, q], W],
          [`${p}.post_attention_layernorm.weight`, [l.hidden], 0.1, 1],
          [`${p}.mlp.gate_proj.weight`, [l.intermediate, l.hidden], W],
          [`${p}.mlp.up_proj.weight`, [l.intermediate, l.hidden], W],
          [`${p}.mlp.down_proj.weight`, [l.hidden, l.intermediate], W],
        ]
      : [
          [`${p}.attention_norm.weight`, [l.hidden], 0.1, 1],
          [`${p}.attention.wqkv.weight`, [q + 2 * kv, l.hidden], W],
          [`${p}.attention.wo.weight`, [l.hidden, q], W],
          [`${p}.ffn_norm.weight`, [l.hidden], 0.1, 1],
          [`${p}.feed_forward.w1.weight`, [l.intermediate, l.hidden], W],
          [`${p}.feed_forward.w3.weight`, [l.intermediate, l.hidden], W],
          [`${p}.feed_forward.w2.weight`, [l.hidden, l.intermediate], W],
        ];
    writeShard(`model-llm-${String(i).padStart(3, '0')}.safetensors`, specs);
  }
  writeShard('model-llm-head.safetensors', [
    [`${root}.norm.weight`, [l.hidden], 0.1, 1],
    [`language_model.${qwen ? 'lm_head' : 'output'}.weight`, [l.vocab, l.hidden], W],
  ]);
  shards.writeIndex();
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(chatConfigJson(shape, options.dtype), null, 2)}\n`);
  return shards.bytes;
}

/** Writes the checkpoint unless `dir` already holds one of the same shape and dtype (config.json is written last). */
export function ensureRandomChatCheckpoint(
  dir: string,
  shape: ChatShape,
  dtype: StorageDtype,
  log: (m: string) => void,
): void {
  const configPath = path.join(dir, 'config.json');
  const wanted = JSON.stringify(chatConfigJson(shape, dtype));
  if (fs.existsSync(configPath) && JSON.stringify(JSON.parse(fs.readFileSync(configPath, 'utf8'))) === wanted) return;
  fs.rmSync(dir, { recursive: true, force: true });
  log(`writing a random ${dtype} ${shape.name} checkpoint to ${dir}`);
  const start = performance.now();
  const bytes = writeRandomChatCheckpoint(dir, shape, { dtype });
  log(`  ${(bytes / 2 ** 30).toFixed(2)} GiB in ${((performance.now() - start) / 1000).toFixed(1)} s`);
}
