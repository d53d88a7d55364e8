/**
 * One decoder for every language model InternVL-Chat uses: LLaMA (Vicuna, Yi, Hermes), Qwen2/2.5, InternLM2 and
 * Phi-3. Families differ only by the data in `LLM_VARIANTS` (module names, packed projections, biases) and by their
 * RoPE scaling (`rope.ts`). Pre-norm blocks: RMSNorm → attention (GQA, rotate-half RoPE) → residual → RMSNorm →
 * SiLU-gated MLP → residual; final RMSNorm; lm_head.
 *
 * The graph takes input embeddings (image features are spliced in by the caller), a RoPE table with each new
 * token's row in it, the per-sequence cache buffers of earlier positions and their lengths (or an additive mask),
 * and returns the logits (or hidden states) of the requested positions plus the new positions' keys and values.
 * `decoder.ts` owns the caches and builds those inputs; callers use `lm.batchDecoder(...)`.
 */
import { GraphBuilder, type Scope } from '../core/graph.js';
import {
  createSession,
  graphTarget,
  type Feeds,
  type ModelSession,
  type SessionOptions,
  type Tensor,
} from '../core/session.js';
import { ModelLoadError } from '../core/errors.js';
import type { Checkpoint } from '../core/safetensors.js';
import type { ConfigSection } from './config.js';
import { BatchDecoder, type AttentionKind, type BatchDecoderOptions } from './decoder.js';
import { llmFamily } from './registry.js';
import { parseRopeScaling, RotaryEmbedding, type RopeScaling } from './rope.js';
import {
  checkLayerCount,
  checkShapes,
  configDim,
  scaledDim,
  type ConfigOrigin,
  type ExpectedTensor,
} from './shapes.js';

export type LlmFamily = 'llama' | 'qwen2' | 'internlm2' | 'phi3';

/** How a family names and packs its weights. */
export interface LlmVariant {
  embedTokens: string;
  layers: string;
  finalNorm: string;
  /** Relative to the LLM root (`language_model.`): `lm_head` or `output`. */
  lmHead: string;
  inputNorm: string;
  postAttentionNorm: string;
  /** Separate projections, or one packed matrix with its row layout. */
  attention:
    | { q: string; k: string; v: string; o: string }
    | { packed: string; layout: 'qkv' | 'grouped-per-kv-head'; o: string };
  mlp: { gate: string; up: string; down: string } | { packedGateUp: string; down: string };
}

const LLAMA_NAMES: LlmVariant = {
  embedTokens: 'model.embed_tokens',
  layers: 'model.layers',
  finalNorm: 'model.norm',
  lmHead: 'lm_head',
  inputNorm: 'input_layernorm',
  postAttentionNorm: 'post_attention_layernorm',
  attention: { q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj', o: 'self_attn.o_proj' },
  mlp: { gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj' },
};

export const LLM_VARIANTS: Record<LlmFamily, LlmVariant> = {
  llama: LLAMA_NAMES,
  // Qwen2's q/k/v biases are found in the checkpoint; names are LLaMA's.
  qwen2: LLAMA_NAMES,
  internlm2: {
    embedTokens: 'model.tok_embeddings',
    layers: 'model.layers',
    finalNorm: 'model.norm',
    lmHead: 'output',
    inputNorm: 'attention_norm',
    postAttentionNorm: 'ffn_norm',
    attention: { packed: 'attention.wqkv', layout: 'grouped-per-kv-head', o: 'attention.wo' },
    mlp: { gate: 'feed_forward.w1', up: 'feed_forward.w3', down: 'feed_forward.w2' },
  },
  phi3: {
    ...LLAMA_NAMES,
    attention: { packed: 'self_attn.qkv_proj', layout: 'qkv', o: 'self_attn.o_proj' },
    mlp: { packedGateUp: 'mlp.gate_up_proj', down: 'mlp.down_proj' },
  },
};

export interface LlmConfig {
  family: LlmFamily;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  rope: RopeScaling;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
  /** Where the fields came from (messages of the shape checks). */
  origin: ConfigOrigin;
}

export function parseLlmConfig(section: ConfigSection): LlmConfig {
  const family = llmFamily(section);
  const hiddenAct = section.string('hidden_act', 'silu');
  if (hiddenAct !== 'silu') section.fail('hidden_act', `'${hiddenAct}' is not supported (expected 'silu')`);
  const hiddenSize = section.positiveInteger('hidden_size');
  const numAttentionHeads = section.positiveInteger('num_attention_heads');
  const numKeyValueHeads = section.positiveInteger('num_key_value_heads', numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0)
    section.fail('num_key_value_heads', `${numKeyValueHeads} does not divide num_attention_heads ${numAttentionHeads}`);
  if (!section.has('head_dim') && hiddenSize % numAttentionHeads !== 0)
    section.fail(
      'num_attention_heads',
      `${numAttentionHeads} does not divide hidden_size ${hiddenSize} (and no head_dim is given)`,
    );
  const headDim = section.positiveInteger('head_dim', hiddenSize / numAttentionHeads);
  // Rotate-half RoPE pairs the two halves of each head.
  if (headDim % 2 !== 0) section.fail('head_dim', `${headDim} must be even (rotary embeddings rotate half of it)`);
  const ropeParameters = section.optionalSection('rope_parameters');
  const ropeTheta = section.has('rope_theta')
    ? section.positiveNumber('rope_theta')
    : (ropeParameters?.positiveNumber('rope_theta', 10000) ?? 10000);
  const maxPositionEmbeddings = section.positiveInteger('max_position_embeddings', 2048);
  const eos = section.raw.eos_token_id;
  return {
    family,
    vocabSize: section.positiveInteger('vocab_size'),
    hiddenSize,
    intermediateSize: section.positiveInteger('intermediate_size'),
    numHiddenLayers: section.positiveInteger('num_hidden_layers'),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: section.positiveNumber('rms_norm_eps', 1e-6),
    ropeTheta,
    rope: parseRopeScaling(section, maxPositionEmbeddings),
    maxPositionEmbeddings,
    tieWordEmbeddings: section.boolean('tie_word_embeddings', false),
    bosTokenId: section.has('bos_token_id') ? section.integer('bos_token_id') : null,
    eosTokenId: Array.isArray(eos) ? (eos as number[]) : typeof eos === 'number' ? eos : null,
    origin: section.origin,
  };
}

/** The checkpoint shapes the config implies for the decoder under `root`, lm_head included when given. */
function decoderShapes(
  root: Scope,
  config: LlmConfig,
  variant: LlmVariant,
  lmHead?: { scope: Scope; name: string },
): ExpectedTensor[] {
  const field = (key: string, value: number) => configDim(config.origin, key, value);
  const V = field('vocab_size', config.vocabSize);
  const H = field('hidden_size', config.hiddenSize);
  const I = field('intermediate_size', config.intermediateSize);
  const D = config.headDim;
  const heads = (key: string, n: number) => ({
    value: n * D,
    field: `${field(key, n).field} × head_dim`,
    terms: `${n} × ${D}`,
  });
  const q = heads('num_attention_heads', config.numAttentionHeads);
  const kv = heads('num_key_value_heads', config.numKeyValueHeads);
  const out: ExpectedTensor[] = [
    { key: root.key(`${variant.embedTokens}.weight`), dims: [V, H] },
    { key: root.key(`${variant.finalNorm}.weight`), dims: [H] },
  ];
  if (lmHead) out.push({ key: lmHead.scope.key(`${lmHead.name}.weight`), dims: [V, H] });
  const attention = variant.attention;
  const mlp = variant.mlp;
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const key = (name: string) => root.key(`${variant.layers}.${i}.${name}.weight`);
    out.push({ key: key(variant.inputNorm), dims: [H] }, { key: key(variant.postAttentionNorm), dims: [H] });
    if ('q' in attention) {
      out.push(
        { key: key(attention.q), dims: [q, H] },
        { key: key(attention.k), dims: [kv, H] },
        { key: key(attention.v), dims: [kv, H] },
      );
    } else {
      const at = config.origin.at ? `${config.origin.at}.` : '';
      const rows = {
        value: q.value + 2 * kv.value,
        field: `(${at}num_attention_heads + 2 × num_key_value_heads) × head_dim`,
        terms: `(${config.numAttentionHeads} + 2 × ${config.numKeyValueHeads}) × ${D}`,
      };
      out.push({ key: key(attention.packed), dims: [rows, H] });
    }
    out.push({ key: key(attention.o), dims: [H, q] });
    if ('packedGateUp' in mlp) out.push({ key: key(mlp.packedGateUp), dims: [scaledDim(2, I), H] });
    else out.push({ key: key(mlp.gate), dims: [I, H] }, { key: key(mlp.up), dims: [I, H] });
    out.push({ key: key(mlp.down), dims: [H, I] });
  }
  return out;
}

export interface DecoderGraphOptions {
  /** Output `logits` for the selected positions through this projection; without it only `hidden` is output. */
  lmHead?: { scope: Scope; name: string };
  /** Runs after each block's self-attention residual (QLLaMA inserts its cross-attention here). */
  afterSelfAttention?: (layerIndex: number, layer: Scope, x: string, batchSeq: string) => string;
  /** `gqa` (default): causal attention over per-row cache lengths; `masked`: an additive bias input instead. */
  attention?: AttentionKind;
}

/**
 * Builds the decoder graph on `root` (the LLM's prefix in the checkpoint, e.g. `language_model`). Outputs `hidden`
 * (final-normed states of the `logit_indices` rows), `logits` with an lm_head, and the new positions' `new_keys` /
 * `new_values` [layers, batch, seq, kvHeads·headDim] (RoPE applied to the keys).
 */
export function buildDecoder(
  g: GraphBuilder,
  root: Scope,
  config: LlmConfig,
  variant: LlmVariant,
  options: DecoderGraphOptions,
): void {
  const H = config.hiddenSize;
  const heads = config.numAttentionHeads;
  const kvHeads = config.numKeyValueHeads;
  const D = config.headDim;
  const lookup = (key: string) => (g.hasWeight(key) ? g.weightShape(key) : undefined);
  checkShapes(config.origin, lookup, decoderShapes(root, config, variant, options.lmHead));
  checkLayerCount(config.origin, lookup, configDim(config.origin, 'num_hidden_layers', config.numHiddenLayers), (i) =>
    root.key(`${variant.layers}.${i}.${variant.inputNorm}.weight`),
  );
  const gqa = (options.attention ?? 'gqa') === 'gqa';
  const embeds = g.input('inputs_embeds', 'float32', ['batch', 'seq', H]);
  // cos/sin rows computed once per decoder (any RoPE scaling) and each new token's row index into them.
  const cos = g.input('rope_cos', 'float32', ['rows', D / 2]);
  const sin = g.input('rope_sin', 'float32', ['rows', D / 2]);
  const ropeRows = g.input('rope_rows', 'int64', ['batch', 'seq']);
  const logitIndices = g.input('logit_indices', 'int64', ['selected']);
  const seqlensK = gqa ? g.input('seqlens_k', 'int32', ['batch']) : '';
  const totalLength = gqa ? g.input('total_sequence_length', 'int32', []) : '';
  const mask = gqa ? '' : g.input('attention_bias', 'float32', ['batch', 1, 'seq', 'total']);

  const batchSeq = g.slice(g.node('Shape', [embeds]), [0], [2], [0]);
  const rowsShape = (n: number) => g.concat([batchSeq, g.constInt64([n * D])], 0);
  const headsShape = (n: number) => g.concat([batchSeq, g.constInt64([n, D])], 0);
  const toHeads = (x: string, n: number) => g.transpose(g.node('Reshape', [x, headsShape(n)]), [0, 2, 1, 3]); // [B, n, S, D]
  // Rotate-half RoPE on [B, S, n·D] in one fused node.
  const rotate = (x: string, n: number) =>
    g.node(
      'RotaryEmbedding',
      [g.node('Reshape', [x, rowsShape(n)]), ropeRows, cos, sin],
      { interleaved: 0 },
      {
        domain: 'com.microsoft',
      },
    );

  const newKeys: string[] = [];
  const newValues: string[] = [];
  let x = g.reshape(embeds, [-1, H]);
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const layer = root.scope(`${variant.layers}.${i}`);
    const h = layer.rmsNorm(x, variant.inputNorm, config.rmsNormEps);
    const [q, k, v] = projectQkv(g, layer, h, variant, config);
    const pastKey = g.input(`past_key.${i}`, 'float32', ['batch', kvHeads, 'max', D]);
    const pastValue = g.input(`past_value.${i}`, 'float32', ['batch', kvHeads, 'max', D]);
    const qr = rotate(q, heads);
    const kr = rotate(k, kvHeads);
    const v3 = g.node('Reshape', [v, rowsShape(kvHeads)]);
    newKeys.push(g.node('Unsqueeze', [kr, g.constInt64([0])]));
    newValues.push(g.node('Unsqueeze', [v3, g.constInt64([0])]));
    let merged: string;
    if (gqa) {
      // The present outputs are not used: the caller keeps the cache and writes new_keys/new_values into it.
      const [attended] = g.nodeMulti(
        'GroupQueryAttention',
        [qr, kr, v3, pastKey, pastValue, seqlensK, totalLength],
        { num_heads: heads, kv_num_heads: kvHeads, scale: { float: 1 / Math.sqrt(D) } },
        { domain: 'com.microsoft', count: 3 },
      );
      merged = g.reshape(attended, [-1, heads * D]);
    } else {
      const [attended] = g.nodeMulti(
        'Attention',
        [toHeads(qr, heads), toHeads(kr, kvHeads), toHeads(v3, kvHeads), mask, pastKey, pastValue],
        { scale: { float: 1 / Math.sqrt(D) } },
        { count: 3 },
      );
      merged = g.reshape(g.transpose(attended, [0, 2, 1, 3]), [-1, heads * D]);
    }
    x = g.add(x, layer.linear(merged, variant.attention.o));
    if (options.afterSelfAttention) x = options.afterSelfAttention(i, layer, x, batchSeq);
    const m = layer.rmsNorm(x, variant.postAttentionNorm, config.rmsNormEps);
    let gate: string, up: string;
    if ('packedGateUp' in variant.mlp) {
      [gate, up] = g.nodeMulti(
        'Split',
        [layer.linear(m, variant.mlp.packedGateUp), g.constInt64([config.intermediateSize, config.intermediateSize])],
        { axis: 1 },
        { count: 2 },
      );
    } else {
      gate = layer.linear(m, variant.mlp.gate);
      up = layer.linear(m, variant.mlp.up);
    }
    x = g.add(x, layer.linear(g.mul(g.silu(gate), up), variant.mlp.down));
  }
  g.output(g.concat(newKeys, 0), 'new_keys', 'float32');
  g.output(g.concat(newValues, 0), 'new_values', 'float32');
  const normed = root.rmsNorm(x, variant.finalNorm, config.rmsNormEps);
  const selected = g.gather(normed, logitIndices, 0);
  g.output(selected, 'hidden', 'float32');
  if (options.lmHead) g.output(options.lmHead.scope.linear(selected, options.lmHead.name), 'logits', 'float32');
}

function projectQkv(
  g: GraphBuilder,
  layer: Scope,
  h: string,
  variant: LlmVariant,
  config: LlmConfig,
): [string, string, string] {
  const { numAttentionHeads: heads, numKeyValueHeads: kvHeads, headDim: D } = config;
  const attention = variant.attention;
  if ('q' in attention)
    return [layer.linear(h, attention.q), layer.linear(h, attention.k), layer.linear(h, attention.v)];
  const packed = layer.linear(h, attention.packed);
  if (attention.layout === 'qkv') {
    return g.nodeMulti(
      'Split',
      [packed, g.constInt64([heads * D, kvHeads * D, kvHeads * D])],
      { axis: 1 },
      { count: 3 },
    ) as [string, string, string];
  }
  // InternLM2: rows are grouped per KV head as [q × (heads/kvHeads), k, v], each D wide.
  const groups = heads / kvHeads;
  const grouped = g.reshape(packed, [-1, kvHeads, groups + 2, D]);
  const q = g.reshape(g.slice(grouped, [0], [groups], [2]), [-1, heads * D]);
  const k = g.reshape(g.slice(grouped, [groups], [groups + 1], [2]), [-1, kvHeads * D]);
  const v = g.reshape(g.slice(grouped, [groups + 1], [groups + 2], [2]), [-1, kvHeads * D]);
  return [q, k, v];
}

/** A causal language model ready to run. */
export class CausalLM {
  readonly rotary: RotaryEmbedding;

  private constructor(
    readonly config: LlmConfig,
    readonly checkpoint: Checkpoint,
    readonly prefix: string,
    readonly variant: LlmVariant,
    readonly attention: AttentionKind,
    /** Inputs a graph built with extra inputs gets when a run does not give them (QLLaMA: no vision states). */
    readonly defaultFeeds: ((batch: number, seq: number) => Feeds) | undefined,
    private readonly session: ModelSession,
  ) {
    this.rotary = new RotaryEmbedding(config.headDim, config.ropeTheta, config.rope);
  }

  /**
   * `prefix`: where the LLM sits in the checkpoint (`language_model`, or `` for a bare LLM); `lmHeadPrefix` when
   * lm_head lives elsewhere (the *-hf layout keeps it at the root).
   */
  static async load(
    checkpoint: Checkpoint,
    config: LlmConfig,
    options: {
      prefix?: string;
      variant?: LlmVariant;
      lmHeadPrefix?: string;
      session?: SessionOptions;
      configureGraph?: (g: GraphBuilder) => void;
      /** Build without the lm_head (embedding models only need `hidden`). */
      withoutLmHead?: boolean;
      afterSelfAttention?: DecoderGraphOptions['afterSelfAttention'];
      attention?: AttentionKind;
      defaultFeeds?: (batch: number, seq: number) => Feeds;
      graphName?: string;
    } = {},
  ): Promise<CausalLM> {
    const prefix = options.prefix ?? '';
    const variant = options.variant ?? LLM_VARIANTS[config.family];
    // GroupQueryAttention needs head_dim % 8 == 0 (real models have 64 or 128; small test models may not).
    const attention = options.attention ?? (config.headDim % 8 === 0 ? 'gqa' : 'masked');
    const g = new GraphBuilder(
      options.graphName ?? `decoder_${config.family}`,
      checkpoint,
      await graphTarget(options.session),
    );
    options.configureGraph?.(g);
    const root = g.scope(prefix);
    buildDecoder(g, root, config, variant, {
      lmHead: options.withoutLmHead ? undefined : lmHeadOf(checkpoint, root, variant, options.lmHeadPrefix),
      afterSelfAttention: options.afterSelfAttention,
      attention,
    });
    const session = await createSession(g, options.session);
    return new CausalLM(config, checkpoint, prefix, variant, attention, options.defaultFeeds, session);
  }

  /** Positions a sequence may hold: `max_position_embeddings`. */
  get contextLength(): number {
    return this.config.maxPositionEmbeddings;
  }

  /**
   * Per-sequence KV caches for up to `maxSequences` sequences of up to `maxLength` positions, decoded together
   * (see `decoder.ts`).
   */
  batchDecoder(options: BatchDecoderOptions): BatchDecoder {
    return new BatchDecoder(this, options);
  }

  /** Embedding rows for token ids, read from the checkpoint (asynchronously) without loading the table. */
  embedTokens(ids: readonly number[]): Promise<Float32Array> {
    const key = this.prefix
      ? `${this.prefix}.${this.variant.embedTokens}.weight`
      : `${this.variant.embedTokens}.weight`;
    return this.checkpoint.readRowsFloat32(key, ids);
  }

  /** One graph run (for `BatchDecoder`). */
  run(feeds: Feeds, outputs: string[]): Promise<Record<string, Tensor>> {
    return this.session.run(feeds, outputs);
  }

  /** Writes the onnxruntime profile of a model loaded with `session.profileFilePrefix`. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** The output projection: lm_head where the checkpoint has one, else the tied input embedding. */
function lmHeadOf(
  checkpoint: Checkpoint,
  root: Scope,
  variant: LlmVariant,
  lmHeadPrefix?: string,
): { scope: Scope; name: string } {
  if (lmHeadPrefix !== undefined) return { scope: root.graph.scope(lmHeadPrefix), name: 'lm_head' };
  if (root.has(`${variant.lmHead}.weight`)) return { scope: root, name: variant.lmHead };
  if (root.has(`${variant.embedTokens}.weight`)) return { scope: root, name: variant.embedTokens };
  throw new ModelLoadError(
    `${checkpoint.dir}: no '${root.key(variant.lmHead)}.weight' and no tied embedding '${root.key(variant.embedTokens)}.weight'`,
  );
}
