/**
 * InternViT, the InternVL vision encoder: both families in one module tree.
 * - InternViT-6B style: RMSNorm, QK-RMSNorm over all heads together (before the head split), no qkv bias.
 * - InternViT-300M style: LayerNorm with bias, qkv bias, no QK-norm.
 * Pre-norm blocks with layer scale (`ls1`, `ls2`), exact GELU, no final norm; pooled output = the CLS token.
 *
 * The module tree mirrors the checkpoint (`embeddings.*`, `encoder.layers.{i}.{norm1,attn.qkv,…}`); the `*-hf`
 * layout (transformers' native port) differs only by names, listed in `HF_VISION_NAMES`.
 */
import { GraphBuilder, type Scope } from '../core/graph.js';
import {
  asFloatTensor,
  createSession,
  graphTarget,
  Tensor,
  type ModelSession,
  type SessionOptions,
} from '../core/session.js';
import { floatTensor, type FloatTensor } from '../core/tensor.js';
import { interpolateBicubic } from '../core/interpolate.js';
import { ConfigError, UsageError } from '../core/errors.js';
import type { Checkpoint } from '../core/safetensors.js';
import type { ConfigSection } from './config.js';
import {
  checkLayerCount,
  checkShapes,
  configDim,
  scaledDim,
  type ConfigOrigin,
  type ExpectedTensor,
} from './shapes.js';

export interface InternVisionConfig {
  hiddenSize: number;
  numAttentionHeads: number;
  numHiddenLayers: number;
  intermediateSize: number;
  patchSize: number;
  /** The size the position embeddings were trained for. */
  imageSize: number;
  normType: 'rms_norm' | 'layer_norm';
  layerNormEps: number;
  qkNormalization: boolean;
  qkvBias: boolean;
  /** Where the fields came from (messages of the shape checks). */
  origin: ConfigOrigin;
}

/** Module names of a checkpoint layout. */
export interface VisionNames {
  classEmbedding: string;
  patchEmbedding: string;
  positionEmbedding: string;
  layers: string;
  norm1: string;
  norm2: string;
  ls1: string;
  ls2: string;
  /** Packed q,k,v projection (`attn.qkv`) or separate ones (`[q_proj, k_proj, v_proj]`). */
  qkv: string | [string, string, string];
  qNorm: string;
  kNorm: string;
  proj: string;
  fc1: string;
  fc2: string;
}

export const REMOTE_VISION_NAMES: VisionNames = {
  classEmbedding: 'embeddings.class_embedding',
  patchEmbedding: 'embeddings.patch_embedding',
  positionEmbedding: 'embeddings.position_embedding',
  layers: 'encoder.layers',
  norm1: 'norm1',
  norm2: 'norm2',
  ls1: 'ls1',
  ls2: 'ls2',
  qkv: 'attn.qkv',
  qNorm: 'attn.q_norm',
  kNorm: 'attn.k_norm',
  proj: 'attn.proj',
  fc1: 'mlp.fc1',
  fc2: 'mlp.fc2',
};

export const HF_VISION_NAMES: VisionNames = {
  classEmbedding: 'embeddings.cls_token',
  patchEmbedding: 'embeddings.patch_embeddings.projection',
  positionEmbedding: 'embeddings.position_embeddings',
  layers: 'encoder.layer',
  norm1: 'layernorm_before',
  norm2: 'layernorm_after',
  ls1: 'lambda_1',
  ls2: 'lambda_2',
  qkv: ['attention.q_proj', 'attention.k_proj', 'attention.v_proj'],
  qNorm: 'attention.q_norm',
  kNorm: 'attention.k_norm',
  proj: 'attention.projection_layer',
  fc1: 'mlp.fc1',
  fc2: 'mlp.fc2',
};

export function parseInternVisionConfig(section: ConfigSection): InternVisionConfig {
  const normType = section.string('norm_type', 'rms_norm');
  if (normType !== 'rms_norm' && normType !== 'layer_norm')
    section.fail('norm_type', `must be 'rms_norm' or 'layer_norm', got '${normType}'`);
  const hiddenAct = section.string('hidden_act', 'gelu');
  if (hiddenAct !== 'gelu') section.fail('hidden_act', `'${hiddenAct}' is not supported (InternViT uses exact 'gelu')`);
  const config: InternVisionConfig = {
    hiddenSize: section.positiveInteger('hidden_size'),
    numAttentionHeads: section.positiveInteger('num_attention_heads'),
    numHiddenLayers: section.positiveInteger('num_hidden_layers'),
    intermediateSize: section.positiveInteger('intermediate_size'),
    patchSize: section.positiveSize('patch_size'),
    imageSize: section.positiveSize('image_size'),
    normType,
    layerNormEps: section.positiveNumber('layer_norm_eps', 1e-6),
    qkNormalization: section.has('use_qk_norm')
      ? section.boolean('use_qk_norm')
      : section.boolean('qk_normalization', false),
    qkvBias: section.has('attention_bias') ? section.boolean('attention_bias') : section.boolean('qkv_bias', true),
    origin: section.origin,
  };
  if (config.hiddenSize % config.numAttentionHeads !== 0) {
    throw new ConfigError(
      `${section.file}: hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ${config.numAttentionHeads}`,
    );
  }
  if (config.imageSize % config.patchSize !== 0)
    section.fail('image_size', `${config.imageSize} is not a multiple of patch_size ${config.patchSize}`);
  return config;
}

/** The checkpoint shapes the config implies; `key` maps a module-relative name to its checkpoint key. */
function visionShapes(config: InternVisionConfig, key: (name: string) => string, names: VisionNames): ExpectedTensor[] {
  const field = (key: string, value: number) => configDim(config.origin, key, value);
  const C = field('hidden_size', config.hiddenSize);
  const I = field('intermediate_size', config.intermediateSize);
  const P = field('patch_size', config.patchSize);
  const grid = config.imageSize / config.patchSize;
  const at = config.origin.at ? `${config.origin.at}.` : '';
  const tokens = {
    value: 1 + grid * grid,
    field: `1 + (${at}image_size / patch_size)²`,
    terms: `1 + (${config.imageSize} / ${config.patchSize})²`,
  };
  const out: ExpectedTensor[] = [
    { key: key(names.classEmbedding), dims: [1, 1, C] },
    { key: key(`${names.patchEmbedding}.weight`), dims: [C, 3, P, P] },
    { key: key(names.positionEmbedding), dims: [1, tokens, C] },
  ];
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const layer = key(`${names.layers}.${i}.`);
    const qkv =
      typeof names.qkv === 'string'
        ? [{ key: `${layer}${names.qkv}.weight`, dims: [scaledDim(3, C), C] }]
        : names.qkv.map((n) => ({ key: `${layer}${n}.weight`, dims: [C, C] }));
    out.push(
      { key: `${layer}${names.norm1}.weight`, dims: [C] },
      ...qkv,
      { key: `${layer}${names.proj}.weight`, dims: [C, C] },
      { key: `${layer}${names.ls1}`, dims: [C] },
      { key: `${layer}${names.norm2}.weight`, dims: [C] },
      { key: `${layer}${names.fc1}.weight`, dims: [I, C] },
      { key: `${layer}${names.fc2}.weight`, dims: [C, I] },
      { key: `${layer}${names.ls2}`, dims: [C] },
    );
    if (config.qkNormalization)
      out.push(
        { key: `${layer}${names.qNorm}.weight`, dims: [C] },
        { key: `${layer}${names.kNorm}.weight`, dims: [C] },
      );
  }
  return out;
}

export interface VisionGraphOptions {
  /** Run only the first N blocks (`select_layer` −k drops the last k−1). Default: all. */
  numLayers?: number;
  /** Also output `hidden_states.{i}` for i = 0 (embeddings) … numLayers. */
  allHiddenStates?: boolean;
}

/**
 * Adds the encoder to a graph. Inputs `pixel_values` [B,3,H,W] and `position_embedding` [1, 1+h·w, C] (resized in
 * JavaScript for the input size); returns the value of the last computed hidden state, [B, 1+h·w, C].
 */
export function buildInternVisionEncoder(
  g: GraphBuilder,
  scope: Scope,
  config: InternVisionConfig,
  names: VisionNames,
  options: VisionGraphOptions = {},
): { lastHiddenState: string; hiddenStates: string[] } {
  const C = config.hiddenSize;
  const lookup = (key: string) => (g.hasWeight(key) ? g.weightShape(key) : undefined);
  const key = (name: string) => scope.key(name);
  checkShapes(config.origin, lookup, visionShapes(config, key, names));
  // Only the blocks the graph runs must be there (a benchmark's checkpoint may hold fewer than the config's).
  const numLayers = options.numLayers ?? config.numHiddenLayers;
  checkLayerCount(config.origin, lookup, configDim(config.origin, 'num_hidden_layers', numLayers), (i) =>
    key(`${names.layers}.${i}.${names.norm1}.weight`),
  );
  const pixels = g.input('pixel_values', 'float32', ['batch', 3, 'height', 'width']);
  const positions = g.input('position_embedding', 'float32', [1, 'tokens', C]);

  const patchScope = scope.scope(names.patchEmbedding);
  const patches = g.node('Conv', [pixels, patchScope.weight('weight'), patchScope.weight('bias')], {
    kernel_shape: [config.patchSize, config.patchSize],
    strides: [config.patchSize, config.patchSize],
  });
  const patchTokens = g.transpose(g.reshape(patches, [0, 0, -1]), [0, 2, 1]); // [B, h·w, C], row-major grid
  const batch = g.slice(g.node('Shape', [pixels]), [0], [1], [0]);
  const clsShape = g.concat([batch, g.constInt64([1, C])], 0);
  const cls = g.node('Expand', [scope.weight(names.classEmbedding), clsShape]);
  const embeddings = g.add(g.concat([cls, patchTokens], 1), positions);

  const shape3d = g.node('Shape', [embeddings]);
  const to2d = (x: string) => g.reshape(x, [-1, C]);
  const to3d = (x: string) => g.node('Reshape', [x, shape3d]);

  const hiddenStates = [embeddings];
  let x = to2d(embeddings);
  const norm = (s: Scope, input: string, name: string) =>
    config.normType === 'rms_norm'
      ? s.rmsNorm(input, name, config.layerNormEps)
      : s.layerNorm(input, name, config.layerNormEps);

  for (let i = 0; i < numLayers; i++) {
    const layer = scope.scope(`${names.layers}.${i}`);
    const h = norm(layer, x, names.norm1);
    let q: string, k: string, v: string;
    if (typeof names.qkv === 'string') {
      const qkv = layer.linear(h, names.qkv);
      [q, k, v] = g.nodeMulti('Split', [qkv, g.constInt64([C, C, C])], { axis: 1 }, { count: 3 });
    } else {
      [q, k, v] = names.qkv.map((name) => layer.linear(h, name)) as [string, string, string];
    }
    if (config.qkNormalization) {
      q = layer.rmsNorm(q, names.qNorm, config.layerNormEps);
      k = layer.rmsNorm(k, names.kNorm, config.layerNormEps);
    }
    const attended = g.multiHeadAttention(to3d(q), to3d(k), to3d(v), {
      heads: config.numAttentionHeads,
      headSize: C / config.numAttentionHeads,
    });
    const attnOut = layer.linear(to2d(attended), names.proj);
    x = g.add(x, g.mul(attnOut, layer.weight(names.ls1)));
    const mlp = layer.linear(g.gelu(layer.linear(norm(layer, x, names.norm2), names.fc1)), names.fc2);
    x = g.add(x, g.mul(mlp, layer.weight(names.ls2)));
    hiddenStates.push(to3d(x));
  }
  return { lastHiddenState: hiddenStates[hiddenStates.length - 1], hiddenStates };
}

export interface VisionOutput {
  /** [B, 1+h·w, C] after the last computed block. */
  lastHiddenState: FloatTensor;
  /** [B, C]: the CLS token of `lastHiddenState`. */
  poolerOutput: FloatTensor;
  /** Index 0 = embeddings, i = after block i (only with `allHiddenStates`). */
  hiddenStates?: FloatTensor[];
}

/** The vision encoder as a runnable model. */
export class InternVisionModel {
  private readonly positionCache = new Map<string, Float32Array>();

  private constructor(
    readonly config: InternVisionConfig,
    private readonly checkpoint: Checkpoint,
    private readonly prefix: string,
    private readonly names: VisionNames,
    private readonly session: ModelSession,
    private readonly options: VisionGraphOptions,
  ) {}

  static async load(
    checkpoint: Checkpoint,
    config: InternVisionConfig,
    options: {
      prefix?: string;
      names?: VisionNames;
      graph?: VisionGraphOptions;
      session?: SessionOptions;
      /** Runs on the graph before the model is built into it (e.g. `useQuantizedLinears`). */
      configureGraph?: (g: GraphBuilder) => void;
    } = {},
  ): Promise<InternVisionModel> {
    const prefix = options.prefix ?? '';
    const names = options.names ?? REMOTE_VISION_NAMES;
    const graphOptions = options.graph ?? {};
    const g = new GraphBuilder('intern_vit', checkpoint, await graphTarget(options.session));
    options.configureGraph?.(g);
    const { lastHiddenState, hiddenStates } = buildInternVisionEncoder(g, g.scope(prefix), config, names, graphOptions);
    g.output(lastHiddenState, 'last_hidden_state', 'float32');
    if (graphOptions.allHiddenStates) hiddenStates.forEach((h, i) => g.output(h, `hidden_states.${i}`, 'float32'));
    const session = await createSession(g, options.session);
    return new InternVisionModel(config, checkpoint, prefix, names, session, graphOptions);
  }

  /** Position embeddings for an h×w patch grid, cached per size. */
  async positionEmbedding(gridH: number, gridW: number): Promise<Float32Array> {
    const key = `${gridH}x${gridW}`;
    let positions = this.positionCache.get(key);
    if (!positions) {
      const name = this.prefix ? `${this.prefix}.${this.names.positionEmbedding}` : this.names.positionEmbedding;
      const table = (await this.checkpoint.readFloat32(name)).data;
      positions = resizePositionEmbedding(table, this.config.hiddenSize, gridH, gridW);
      this.positionCache.set(key, positions);
    }
    return positions;
  }

  /** Runs the encoder on [B, 3, H, W] pixels (H, W multiples of the patch size). */
  async forward(
    pixelValues: Float32Array,
    dims: [number, number, number, number],
    options: { hiddenStates?: boolean } = {},
  ): Promise<VisionOutput> {
    const [B, channels, H, W] = dims;
    const p = this.config.patchSize;
    if (channels !== 3 || H % p !== 0 || W % p !== 0 || pixelValues.length !== B * 3 * H * W) {
      throw new UsageError(
        `InternViT input must be [B, 3, H, W] with H and W multiples of ${p}; got [${dims}] (${pixelValues.length} values)`,
      );
    }
    const gridH = H / p;
    const gridW = W / p;
    const C = this.config.hiddenSize;
    const tokens = 1 + gridH * gridW;
    const feeds = {
      pixel_values: new Tensor('float32', pixelValues, dims),
      position_embedding: new Tensor('float32', await this.positionEmbedding(gridH, gridW), [1, tokens, C]),
    };
    const wantAll = options.hiddenStates === true;
    if (wantAll && !this.options.allHiddenStates)
      throw new UsageError('this InternVisionModel was loaded without allHiddenStates');
    const layers = this.options.numLayers ?? this.config.numHiddenLayers;
    const names = [
      'last_hidden_state',
      ...(wantAll ? Array.from({ length: layers + 1 }, (_, i) => `hidden_states.${i}`) : []),
    ];
    const result = await this.session.run(feeds, names);
    const last = asFloatTensor(result.last_hidden_state);
    const pooled = new Float32Array(B * C);
    for (let b = 0; b < B; b++) pooled.set(last.data.subarray(b * tokens * C, b * tokens * C + C), b * C);
    return {
      lastHiddenState: last,
      poolerOutput: floatTensor(pooled, [B, C]),
      hiddenStates: wantAll ? names.slice(1).map((n) => asFloatTensor(result[n])) : undefined,
    };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/**
 * The trained [1, 1+g², C] position embeddings for an h×w patch grid: the CLS position as is, the grid resized with
 * PyTorch's bicubic (what the official code does at every forward; the identity at the trained size).
 */
export function resizePositionEmbedding(native: Float32Array, C: number, gridH: number, gridW: number): Float32Array {
  const nativeGrid = Math.round(Math.sqrt(native.length / C - 1));
  const out = new Float32Array((1 + gridH * gridW) * C);
  out.set(native.subarray(0, C));
  // [tokens, C] → [C, g, g] for the channel-major resampler, and back.
  const planes = new Float32Array(C * nativeGrid * nativeGrid);
  for (let t = 0; t < nativeGrid * nativeGrid; t++)
    for (let c = 0; c < C; c++) planes[c * nativeGrid * nativeGrid + t] = native[(1 + t) * C + c];
  const resized = interpolateBicubic(planes, C, nativeGrid, nativeGrid, gridH, gridW);
  for (let t = 0; t < gridH * gridW; t++)
    for (let c = 0; c < C; c++) out[(1 + t) * C + c] = resized[c * gridH * gridW + t];
  return out;
}
