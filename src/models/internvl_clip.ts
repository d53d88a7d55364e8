/**
 * InternVL-C and InternVL-G (InternVL-14B-224px: `InternVLModel`): InternViT-6B + QLLaMA.
 * - InternVL-C image embedding: `clip_projector` attention pooling over the ViT tokens.
 * - InternVL-G image embedding: QLLaMA over the 96 `query_tokens` alone (bidirectional), cross-attending to the ViT
 *   tokens on every `cross_attention_frequency`-th layer, pooled by `clip_projector2`; summed with InternVL-C's
 *   embedding after normalizing both.
 * - Text embedding: QLLaMA over the text alone (causal + padding), last real token @ `text_projection`.
 * QLLaMA is the project's LLaMA decoder (`llm.ts`) with the cross-attention inserted after self-attention.
 */
import { GraphBuilder, type Scope } from '../core/graph.js';
import {
  asFloatTensor,
  createSession,
  graphTarget,
  Tensor,
  type Feeds,
  type ModelSession,
  type SessionOptions,
} from '../core/session.js';
import { floatTensor, type FloatTensor } from '../core/tensor.js';
import { ConfigError, UsageError } from '../core/errors.js';
import { Checkpoint } from '../core/safetensors.js';
import { l2normalize, matrix } from '../core/matrix.js';
import { readConfig, type ConfigSection } from './config.js';
import {
  buildInternVisionEncoder,
  parseInternVisionConfig,
  resizePositionEmbedding,
  type InternVisionConfig,
} from './intern_vit.js';
import { ARCHITECTURES, inputImageSize, requireCapability, visionTowerPrefix } from './registry.js';
import { CausalLM, parseLlmConfig, type LlmConfig } from './llm.js';
import type { BatchDecoder, BatchDecoderOptions } from './decoder.js';
import { checkBuffer, checkShapes, configDim, type ConfigOrigin } from './shapes.js';

export interface InternVLClipConfig {
  vision: InternVisionConfig;
  qllama: LlmConfig;
  clipEmbedDim: number;
  attnPoolNumHeads: number;
  numQueryToken: number;
  crossAttentionFrequency: number;
  /** The input size: `force_image_size` for the fine-tuned 364 px models, else the ViT's. */
  imageSize: number;
  /** Where the root fields came from (messages of the shape checks). */
  origin: ConfigOrigin;
}

export function parseInternVLClipConfig(config: ConfigSection): InternVLClipConfig {
  const vision = parseInternVisionConfig(config.section(ARCHITECTURES.InternVLModel.vision!.section!));
  const qllamaSection = config.section('qllama_config');
  // The official QLLaMA hardcodes rotary base 10000 whatever its config says.
  const qllama = { ...parseLlmConfig(qllamaSection), ropeTheta: 10000, rope: { type: 'default' as const } };
  const parsed: InternVLClipConfig = {
    vision,
    qllama,
    clipEmbedDim: config.positiveInteger('clip_embed_dim', 768),
    attnPoolNumHeads: config.positiveInteger('attn_pool_num_heads', 16),
    numQueryToken: config.positiveInteger('num_query_token', qllamaSection.positiveInteger('num_query_token', 96)),
    crossAttentionFrequency: qllamaSection.positiveInteger('cross_attention_frequency', 2),
    imageSize: inputImageSize(config, vision),
    origin: config.origin,
  };
  for (const [width, what] of [
    [vision.hiddenSize, 'vision_config.hidden_size'],
    [qllama.hiddenSize, 'qllama_config.hidden_size'],
  ] as const) {
    if (width % parsed.attnPoolNumHeads !== 0)
      config.fail('attn_pool_num_heads', `${parsed.attnPoolNumHeads} does not divide ${what} ${width}`);
  }
  if (parsed.imageSize % vision.patchSize !== 0)
    config.fail('force_image_size', `${parsed.imageSize} is not a multiple of the patch size ${vision.patchSize}`);
  const side = parsed.imageSize / vision.patchSize;
  checkBuffer(
    config.origin,
    'force_image_size',
    parsed.imageSize,
    (1 + side * side) * vision.hiddenSize,
    'the position embeddings',
  );
  return parsed;
}

/** The heads' shapes: the pooling blocks, text projection, query tokens and where QLLaMA cross-attends. */
function checkClipShapes(checkpoint: Checkpoint, config: InternVLClipConfig): void {
  const lookup = (key: string) => (checkpoint.has(key) ? checkpoint.entry(key).shape : undefined);
  const D = configDim(config.origin, 'clip_embed_dim', config.clipEmbedDim);
  const Cv = configDim(config.vision.origin, 'hidden_size', config.vision.hiddenSize);
  const H = configDim(config.qllama.origin, 'hidden_size', config.qllama.hiddenSize);
  const Q = configDim(config.origin, 'num_query_token', config.numQueryToken);
  checkShapes(config.origin, lookup, [
    { key: 'clip_projector.cross_attn.q.weight', dims: [Cv, Cv] },
    { key: 'clip_projector.cross_attn.proj.weight', dims: [D, Cv] },
    { key: 'clip_projector2.cross_attn.q.weight', dims: [H, H] },
    { key: 'clip_projector2.cross_attn.proj.weight', dims: [D, H] },
    { key: 'text_projection', dims: [H, D] },
    { key: 'query_tokens', dims: [1, Q, H] },
    ...Array.from({ length: config.qllama.numHiddenLayers }, (_, i) => ({
      key: `qllama.model.layers.${i}.cross_attn.k_proj.weight`,
      dims: [H, Cv],
    })),
  ]);
  const frequency = configDim(config.qllama.origin, 'cross_attention_frequency', config.crossAttentionFrequency);
  for (let i = 0; i < config.qllama.numHiddenLayers; i++) {
    const key = `qllama.model.layers.${i}.cross_attn.k_proj.weight`;
    if ((i % frequency.value === 0) !== checkpoint.has(key))
      throw new ConfigError(
        `${config.origin.file}: ${frequency.field} ${frequency.value} but ${key} is ${checkpoint.has(key) ? 'present' : 'missing'}`,
      );
  }
}

/** The pooling blocks' LayerNorm eps (PyTorch's default, set explicitly in the official code). */
const POOLING_NORM_EPS = 1e-5;

/**
 * `AttentionPoolingBlock`: one query (the mean of all tokens, CLS included) attends over the tokens; three
 * LayerNorms (q, k, v), biased q/k/v projections, output projection. [B, N, D] → [B, out].
 */
function buildAttentionPooling(g: GraphBuilder, block: Scope, tokens: string, dim: number, heads: number): string {
  const query = g.reduceMean(tokens, [1]);
  const norm = (x: string, name: string) => block.layerNorm(x, name, POOLING_NORM_EPS);
  const attn = block.scope('cross_attn');
  const project = (x: string, name: string) =>
    g.add(g.node('MatMul', [x, g.transpose(attn.weight(`${name}.weight`), [1, 0])]), attn.weight(`${name}_bias`));
  const q = project(norm(query, 'norm1_q'), 'q');
  const k = project(norm(tokens, 'norm1_k'), 'k');
  const v = project(norm(tokens, 'norm1_v'), 'v');
  const pooled = g.multiHeadAttention(q, k, v, { heads, headSize: dim / heads, scale: (dim / heads) ** -0.5 });
  return attn.linear(g.reshape(pooled, [-1, dim]), 'proj');
}

export type ClipMode = 'C' | 'G';

export class InternVLClipModel {
  private captionModel: Promise<CausalLM> | null = null;

  private constructor(
    readonly dir: string,
    readonly config: InternVLClipConfig,
    readonly checkpoint: Checkpoint,
    private readonly vision: ModelSession,
    readonly qllama: CausalLM,
    private readonly queryPooling: ModelSession,
    private readonly positions: Float32Array,
    private readonly textProjection: Float32Array,
    readonly logitScale: number,
    private readonly qllamaSession: SessionOptions | undefined,
    private readonly configureQllamaGraph: ((g: GraphBuilder) => void) | undefined,
  ) {}

  static async load(
    dir: string,
    options: {
      session?: SessionOptions;
      qllamaSession?: SessionOptions;
      /** Runs on the vision graph before the model is built into it (e.g. `useQuantizedLinears`). */
      configureVisionGraph?: (g: GraphBuilder) => void;
      /** The same for the QLLaMA graphs. */
      configureQllamaGraph?: (g: GraphBuilder) => void;
    } = {},
  ): Promise<InternVLClipModel> {
    const raw = await readConfig(dir);
    const visionLayout = requireCapability(raw, 'clip').vision!;
    const config = parseInternVLClipConfig(raw);
    const checkpoint = await Checkpoint.open(dir);
    const visionPrefix = visionTowerPrefix(visionLayout, checkpoint);
    checkClipShapes(checkpoint, config);

    // Vision tower + InternVL-C head in one graph: outputs the ViT tokens and the C embedding.
    const g = new GraphBuilder('internvl_c', checkpoint, await graphTarget(options.session));
    options.configureVisionGraph?.(g);
    const { lastHiddenState } = buildInternVisionEncoder(g, g.scope(visionPrefix), config.vision, visionLayout.names);
    g.output(lastHiddenState, 'last_hidden_state');
    g.output(
      buildAttentionPooling(
        g,
        g.scope('clip_projector'),
        lastHiddenState,
        config.vision.hiddenSize,
        config.attnPoolNumHeads,
      ),
      'image_embeds_c',
    );
    const vision = await createSession(g, options.session);

    const qllama = await loadQllama(checkpoint, config, {
      withoutLmHead: true,
      session: options.qllamaSession ?? options.session,
      configureGraph: options.configureQllamaGraph,
    });

    const p = new GraphBuilder('clip_projector2', checkpoint, await graphTarget(options.session));
    const queries = p.input('query_features', 'float32', ['batch', config.numQueryToken, config.qllama.hiddenSize]);
    p.output(
      buildAttentionPooling(p, p.scope('clip_projector2'), queries, config.qllama.hiddenSize, config.attnPoolNumHeads),
      'image_embeds_g',
    );
    const queryPooling = await createSession(p, options.session);

    const side = config.imageSize / config.vision.patchSize;
    const positions = resizePositionEmbedding(
      (await checkpoint.readFloat32(`${visionPrefix}.${visionLayout.names.positionEmbedding}`)).data,
      config.vision.hiddenSize,
      side,
      side,
    );
    const logitScale = (await checkpoint.readFloat32('logit_scale')).data[0];
    return new InternVLClipModel(
      dir,
      config,
      checkpoint,
      vision,
      qllama,
      queryPooling,
      positions,
      (await checkpoint.readFloat32('text_projection')).data,
      logitScale,
      options.qllamaSession ?? options.session,
      options.configureQllamaGraph,
    );
  }

  /** ViT tokens [B, 1+g², C] and the InternVL-C embedding [B, D] (not normalized) of [B, 3, S, S] pixels. */
  async encodeVision(pixelValues: Float32Array, batch: number): Promise<{ tokens: FloatTensor; embedsC: FloatTensor }> {
    const S = this.config.imageSize;
    if (pixelValues.length !== batch * 3 * S * S)
      throw new UsageError(`pixel values must be [${batch}, 3, ${S}, ${S}]`);
    const C = this.config.vision.hiddenSize;
    const result = await this.vision.run({
      pixel_values: new Tensor('float32', pixelValues, [batch, 3, S, S]),
      position_embedding: new Tensor('float32', this.positions, [1, this.positions.length / C, C]),
    });
    return { tokens: asFloatTensor(result.last_hidden_state), embedsC: asFloatTensor(result.image_embeds_c) };
  }

  /** QLLaMA output at the 96 queries, [B, 96, H], given the ViT tokens [B, 1+g², C]. */
  async queryFeatures(visionTokens: FloatTensor): Promise<FloatTensor> {
    const Q = this.config.numQueryToken;
    const H = this.config.qllama.hiddenSize;
    const batch = visionTokens.dims[0];
    const out = new Float32Array(batch * Q * H);
    const perImage = visionTokens.data.length / batch;
    const decoder = this.qllama.batchDecoder({ maxSequences: 1, maxLength: Q });
    for (let b = 0; b < batch; b++) {
      const sequence = decoder.addSequence();
      const hidden = await decoder.prefill(
        sequence,
        { embeds: await this.queryTokens() },
        {
          allPositions: true,
          output: 'hidden',
          ...this.visionPrefill(visionTokens.data.subarray(b * perImage, (b + 1) * perImage), Q),
        },
      );
      out.set(hidden, b * Q * H);
      decoder.removeSequence(sequence);
    }
    return floatTensor(out, [batch, Q, H]);
  }

  /**
   * Image embeddings [B, clipEmbedDim]: mode C = `clip_projector` output (not normalized, as `encode_image`);
   * mode G = normalize(clip_projector2(queries)) + normalize(C).
   */
  async encodeImage(pixelValues: Float32Array, batch: number, mode: ClipMode): Promise<FloatTensor> {
    const { tokens, embedsC } = await this.encodeVision(pixelValues, batch);
    if (mode === 'C') return embedsC;
    const queries = await this.queryFeatures(tokens);
    const result = await this.queryPooling.run({
      query_features: new Tensor('float32', queries.data, queries.dims),
    });
    const D = this.config.clipEmbedDim;
    const embedsG = unitRows(result.image_embeds_g.data as Float32Array, D);
    const c = unitRows(embedsC.data, D);
    return floatTensor(
      embedsG.map((value, i) => value + c[i]),
      [batch, D],
    );
  }

  /**
   * QLLaMA text hidden states [B, L, H] and text embeddings [B, clipEmbedDim] for right-padded ids
   * (pad 0), taking the hidden state of the last non-pad token.
   */
  async encodeText(ids: number[][]): Promise<{ hidden: FloatTensor; embeds: FloatTensor }> {
    const B = ids.length;
    const L = ids[0]?.length ?? 0;
    if (B === 0 || L === 0 || ids.some((row) => row.length !== L))
      throw new UsageError('encodeText needs a non-empty batch of equal-length (padded) id rows');
    const H = this.config.qllama.hiddenSize;
    const D = this.config.clipEmbedDim;
    const hidden = new Float32Array(B * L * H);
    const embeds = new Float32Array(B * D);
    const decoder = this.qllama.batchDecoder({ maxSequences: 1, maxLength: L });
    for (let b = 0; b < B; b++) {
      const length = ids[b].reduce((n, id) => n + (id > 0 ? 1 : 0), 0);
      const sequence = decoder.addSequence();
      const rows = await decoder.prefill(
        sequence,
        { ids: ids[b] },
        { allPositions: true, output: 'hidden', padding: L - length },
      );
      decoder.removeSequence(sequence);
      hidden.set(rows, b * L * H);
      const last = rows.subarray(Math.max(length - 1, 0) * H, Math.max(length, 1) * H);
      for (let d = 0; d < D; d++) {
        let sum = 0;
        for (let h = 0; h < H; h++) sum += last[h] * this.textProjection[h * D + d];
        embeds[b * D + d] = sum;
      }
    }
    return { hidden: floatTensor(hidden, [B, L, H]), embeds: floatTensor(embeds, [B, D]) };
  }

  /** The 96 learned query embeddings, [96, H]. */
  async queryTokens(): Promise<Float32Array> {
    return (await this.checkpoint.readFloat32('query_tokens')).data;
  }

  /**
   * QLLaMA with its lm_head for captioning (`InternVLModel.generate`), as a decoder source whose sequences start with
   * the 96 queries: they see each other both ways and cross-attend to `visionTokens` [1+g², C]; the prompt that
   * follows is causal and sees the queries; later steps run from the KV cache without cross-attention. Its lm_head
   * graph is built on first use (the embedding paths do not need it).
   */
  async captionDecoder(visionTokens: FloatTensor): Promise<{
    config: LlmConfig;
    contextLength: number;
    batchDecoder(options: BatchDecoderOptions): BatchDecoder;
  }> {
    this.captionModel ??= loadQllama(this.checkpoint, this.config, {
      withoutLmHead: false,
      session: this.qllamaSession,
      configureGraph: this.configureQllamaGraph,
    });
    const lm = await this.captionModel;
    const Q = this.config.numQueryToken;
    if (visionTokens.dims[0] !== 1)
      throw new UsageError(`captionDecoder takes the ViT tokens of one image, got a batch of ${visionTokens.dims[0]}`);
    const prefix = { embeds: await this.queryTokens(), options: this.visionPrefill(visionTokens.data, Q) };
    return {
      config: lm.config,
      contextLength: lm.contextLength - Q,
      batchDecoder: (options) => lm.batchDecoder({ ...options, prefix }),
    };
  }

  /**
   * Prefill options for a run whose first `queries` positions are the queries of one image: bidirectional among
   * themselves, cross-attending to its ViT tokens [1+g², C].
   */
  private visionPrefill(
    visionTokens: Float32Array,
    queries: number,
  ): { bidirectional: number; extraFeeds: (batch: number, seq: number) => Feeds } {
    const Cv = this.config.vision.hiddenSize;
    const vision = new Tensor('float32', visionTokens, [1, visionTokens.length / Cv, Cv]);
    return {
      bidirectional: queries,
      extraFeeds: (_, seq) => ({
        vision_hidden_states: vision,
        cross_attention_rows: new Tensor('float32', new Float32Array(seq).fill(1, 0, queries), [seq, 1]),
      }),
    };
  }

  /** `logits_per_image` = exp(logit_scale) · normalize(images) @ normalize(texts)ᵀ, [images, texts]. */
  similarity(imageEmbeds: FloatTensor, textEmbeds: FloatTensor): FloatTensor {
    const D = this.config.clipEmbedDim;
    const images = unitRows(imageEmbeds.data, D);
    const texts = unitRows(textEmbeds.data, D);
    const I = images.length / D;
    const T = texts.length / D;
    const scale = Math.exp(this.logitScale);
    const out = new Float32Array(I * T);
    for (let i = 0; i < I; i++)
      for (let t = 0; t < T; t++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += images[i * D + d] * texts[t * D + d];
        out[i * T + t] = scale * dot;
      }
    return floatTensor(out, [I, T]);
  }

  async release(): Promise<void> {
    const caption = this.captionModel ? await this.captionModel : null;
    await Promise.all([this.vision.release(), this.qllama.release(), this.queryPooling.release(), caption?.release()]);
  }
}

/** Cross-attention switched off: a one-token dummy vision input with every row gated to zero. */
function noVisionFeeds(config: InternVLClipConfig, batch: number, seq: number): Feeds {
  const Cv = config.vision.hiddenSize;
  return {
    vision_hidden_states: new Tensor('float32', new Float32Array(batch * Cv), [batch, 1, Cv]),
    cross_attention_rows: new Tensor('float32', new Float32Array(batch * seq), [batch * seq, 1]),
  };
}

/**
 * QLLaMA: masked attention (its queries attend both ways), cross-attention inputs that default to "no vision".
 */
function loadQllama(
  checkpoint: Checkpoint,
  config: InternVLClipConfig,
  options: {
    withoutLmHead: boolean;
    session?: SessionOptions;
    configureGraph?: (g: GraphBuilder) => void;
  },
): Promise<CausalLM> {
  return CausalLM.load(checkpoint, config.qllama, {
    prefix: 'qllama',
    graphName: options.withoutLmHead ? 'qllama' : 'qllama_lm',
    withoutLmHead: options.withoutLmHead,
    session: options.session,
    configureGraph: options.configureGraph,
    attention: 'masked',
    defaultFeeds: (batch, seq) => noVisionFeeds(config, batch, seq),
    afterSelfAttention: (index, layer, x, batchSeq) =>
      index % config.crossAttentionFrequency === 0 ? addCrossAttention(layer.graph, layer, x, batchSeq, config) : x,
  });
}

/**
 * QLLaMA's cross-attention on a layer: queries (RMSNorm `norm1`) attend to the vision tokens (RMSNorm `norm2`,
 * projected from the vision width), no mask, no RoPE; the update is added only to the rows `cross_attention_rows`
 * selects (the first 96 positions when vision states are given, none otherwise).
 */
function addCrossAttention(
  g: GraphBuilder,
  layer: Scope,
  x: string,
  batchSeq: string,
  config: InternVLClipConfig,
): string {
  const H = config.qllama.hiddenSize;
  const Cv = config.vision.hiddenSize;
  const vision = g.inputs.some((i) => i.name === 'vision_hidden_states')
    ? 'vision_hidden_states'
    : g.input('vision_hidden_states', 'float32', ['batch', 'vision_tokens', Cv]);
  const rows = g.inputs.some((i) => i.name === 'cross_attention_rows')
    ? 'cross_attention_rows'
    : g.input('cross_attention_rows', 'float32', ['rows', 1]);
  const cross = layer.scope('cross_attn');
  const eps = config.qllama.rmsNormEps;
  const q = cross.linear(cross.rmsNorm(x, 'norm1', eps), 'q_proj');
  const visionShape = g.node('Shape', [vision]);
  const normedVision = cross.rmsNorm(g.reshape(vision, [-1, Cv]), 'norm2', eps);
  const kvShape = g.concat([g.slice(visionShape, [0], [2], [0]), g.constInt64([H])], 0);
  const k = g.node('Reshape', [cross.linear(normedVision, 'k_proj'), kvShape]);
  const v = g.node('Reshape', [cross.linear(normedVision, 'v_proj'), kvShape]);
  const q3 = g.node('Reshape', [q, g.concat([batchSeq, g.constInt64([H])], 0)]);
  const heads = config.qllama.numAttentionHeads;
  const attended = g.multiHeadAttention(q3, k, v, { heads, headSize: H / heads });
  const update = cross.linear(g.reshape(attended, [-1, H]), 'o_proj');
  return g.add(x, g.mul(update, rows));
}

function unitRows(values: Float32Array, width: number): Float32Array {
  return l2normalize(matrix(values, values.length / width, width)).data;
}
