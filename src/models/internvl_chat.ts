/**
 * InternVL-Chat: InternViT → pixel shuffle → `mlp1` projector → language model, whose `<IMG_CONTEXT>` token
 * embeddings are replaced by the image features. Loads the original remote-code layout (`InternVLChatModel`:
 * `vision_model.`, `mlp1.{0,1,3}`, `language_model.`) and transformers' native `*-hf` layout
 * (`InternVLForConditionalGeneration`: `model.vision_tower.`, `model.multi_modal_projector.`, `model.language_model.`,
 * `lm_head`) into the same code; only names differ.
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
import type { FloatTensor } from '../core/tensor.js';
import { ConfigError, InternalError, UsageError } from '../core/errors.js';
import { Checkpoint } from '../core/safetensors.js';
import { readConfig, type ConfigSection } from './config.js';
import {
  buildInternVisionEncoder,
  parseInternVisionConfig,
  resizePositionEmbedding,
  type InternVisionConfig,
} from './intern_vit.js';
import { CausalLM, parseLlmConfig, type LlmConfig } from './llm.js';
import {
  architectureOf,
  inputImageSize,
  layoutSection,
  requireCapability,
  visionTowerPrefix,
  type ArchitectureEntry,
  type ProjectorLayout,
} from './registry.js';
import { checkBuffer, checkShapes, configDim, scaledDim } from './shapes.js';

export interface InternVLChatConfig {
  layout: 'remote' | 'hf';
  vision: InternVisionConfig;
  llm: LlmConfig;
  /** Tile size fed to the ViT (`force_image_size`, else the ViT's image size). */
  imageSize: number;
  /** Which ViT hidden state feeds the projector (−1 = last). */
  selectLayer: number;
  psVersion: 'v1' | 'v2';
  downsampleRatio: number;
  /** Conversation template name (remote layout), e.g. `Hermes-2`. */
  template: string | null;
  /** Extra system message from config.json, overriding the template's. */
  systemMessage: string | null;
  useThumbnail: boolean;
  minDynamicPatch: number;
  maxDynamicPatch: number;
  dynamicImageSize: boolean;
  /** `<IMG_CONTEXT>` id when the config knows it (*-hf `image_token_id`); else from the tokenizer. */
  imageTokenId: number | null;
}

export function parseInternVLChatConfig(
  config: ConfigSection,
  entry: ArchitectureEntry = architectureOf(config),
): InternVLChatConfig {
  const layout = entry.name === 'InternVLForConditionalGeneration' ? 'hf' : 'remote';
  const vision = parseInternVisionConfig(layoutSection(config, entry.vision!.section));
  const llm = parseLlmConfig(layoutSection(config, entry.language!.section));
  const psVersion = config.string('ps_version', 'v2');
  if (psVersion !== 'v1' && psVersion !== 'v2') config.fail('ps_version', `must be 'v1' or 'v2', got '${psVersion}'`);
  const downsampleRatio = config.number('downsample_ratio', 0.5);
  if (downsampleRatio !== 0.5)
    config.fail('downsample_ratio', `${downsampleRatio} is not supported (InternVL uses 0.5)`);
  const imageSize = inputImageSize(config, vision);
  const minDynamicPatch = config.positiveInteger('min_dynamic_patch', 1);
  const maxDynamicPatch = config.positiveInteger('max_dynamic_patch', 12);
  if (maxDynamicPatch < minDynamicPatch)
    config.fail('max_dynamic_patch', `${maxDynamicPatch} is below min_dynamic_patch ${minDynamicPatch}`);
  const side = imageSize / vision.patchSize;
  checkBuffer(
    config.origin,
    'force_image_size',
    imageSize,
    (1 + side * side) * vision.hiddenSize,
    'the position embeddings',
  );
  // The tiles of one image (and the thumbnail) are one pixel buffer.
  checkBuffer(
    config.origin,
    'max_dynamic_patch',
    maxDynamicPatch,
    (maxDynamicPatch + 1) * 3 * imageSize * imageSize,
    'the tiles of one image',
  );
  return {
    layout,
    vision,
    llm,
    imageSize,
    selectLayer: config.integer(layout === 'hf' ? 'vision_feature_layer' : 'select_layer', -1),
    psVersion,
    downsampleRatio,
    template: config.optionalString('template') ?? null,
    systemMessage: config.optionalString('system_message') ?? null,
    useThumbnail: config.boolean('use_thumbnail', true),
    minDynamicPatch,
    maxDynamicPatch,
    dynamicImageSize: config.boolean('dynamic_image_size', true),
    imageTokenId: config.has('image_token_id') ? config.integer('image_token_id') : null,
  };
}

/** The projector's LayerNorm eps: the official `nn.LayerNorm` default, not the ViT's. */
const PROJECTOR_NORM_EPS = 1e-5;

export interface LoadOptions {
  session?: SessionOptions;
  /** Separate options for the language model (e.g. quantized weights). */
  llmSession?: SessionOptions;
  configureLlmGraph?: (g: GraphBuilder) => void;
  configureVisionGraph?: (g: GraphBuilder) => void;
}

export class InternVLChatModel {
  private constructor(
    readonly dir: string,
    readonly config: InternVLChatConfig,
    readonly checkpoint: Checkpoint,
    readonly language: CausalLM,
    /** The vision tower and projector (run by `encodeImages`). */
    readonly vision: ModelSession,
    private readonly positions: Float32Array,
  ) {}

  static async load(dir: string, options: LoadOptions = {}): Promise<InternVLChatModel> {
    const raw = await readConfig(dir);
    const entry = requireCapability(raw, 'chat');
    const config = parseInternVLChatConfig(raw, entry);
    const checkpoint = await Checkpoint.open(dir);
    const visionLayout = entry.vision!;
    const languageLayout = entry.language!;
    const visionPrefix = visionTowerPrefix(visionLayout, checkpoint);

    const tokensPerSide = config.imageSize / config.vision.patchSize;
    if (!Number.isInteger(tokensPerSide) || tokensPerSide % 2 !== 0) {
      throw new ConfigError(
        `${raw.file}: image size ${config.imageSize} / patch ${config.vision.patchSize} must give an even grid for pixel shuffle`,
      );
    }
    const layers = config.vision.numHiddenLayers;
    const numLayers = config.selectLayer < 0 ? layers + 1 + config.selectLayer : config.selectLayer;
    if (numLayers < 0 || numLayers > layers)
      throw new ConfigError(`${raw.file}: select_layer ${config.selectLayer} is outside 0…${layers}`);

    const g = new GraphBuilder('vision_projector', checkpoint, await graphTarget(options.session));
    options.configureVisionGraph?.(g);
    const { lastHiddenState } = buildInternVisionEncoder(g, g.scope(visionPrefix), config.vision, visionLayout.names, {
      numLayers,
    });
    g.output(buildProjector(g, lastHiddenState, config, entry.projector!), 'vit_embeds', 'float32');
    const vision = await createSession(g, options.session);

    const positions = resizePositionEmbedding(
      (await checkpoint.readFloat32(`${visionPrefix}.${visionLayout.names.positionEmbedding}`)).data,
      config.vision.hiddenSize,
      tokensPerSide,
      tokensPerSide,
    );
    const language = await CausalLM.load(checkpoint, config.llm, {
      prefix: languageLayout.prefix,
      variant: languageLayout.variant(config.llm.family),
      lmHeadPrefix: languageLayout.lmHeadPrefix,
      session: options.llmSession ?? options.session,
      configureGraph: options.configureLlmGraph,
    });
    return new InternVLChatModel(dir, config, checkpoint, language, vision, positions);
  }

  /** Image tokens per tile after pixel shuffle (256 for 448 px tiles with patch 14). */
  get tokensPerTile(): number {
    const side = this.config.imageSize / this.config.vision.patchSize / 2;
    return side * side;
  }

  /** `extract_feature`: tiles [T, 3, S, S] → image token embeddings [T, tokensPerTile, llmHidden]. */
  async extractFeature(pixelValues: Float32Array, numTiles: number): Promise<FloatTensor> {
    const S = this.config.imageSize;
    if (pixelValues.length !== numTiles * 3 * S * S) {
      throw new UsageError(
        `pixel values hold ${pixelValues.length} values; ${numTiles} tiles of 3×${S}×${S} need ${numTiles * 3 * S * S}`,
      );
    }
    const tokens = this.positions.length / this.config.vision.hiddenSize;
    const result = await this.vision.run({
      pixel_values: new Tensor('float32', pixelValues, [numTiles, 3, S, S]),
      position_embedding: new Tensor('float32', this.positions, [1, tokens, this.config.vision.hiddenSize]),
    });
    return asFloatTensor(result.vit_embeds);
  }

  /**
   * Token embeddings [ids, hidden] (the decoder's input) with every `<IMG_CONTEXT>` position replaced, in order, by
   * the image token embeddings of {@link extractFeature} ([tiles, tokensPerTile, hidden]).
   */
  async embedWithImages(
    ids: readonly number[],
    imageTokenId: number,
    imageFeatures: FloatTensor | null,
  ): Promise<Float32Array> {
    const H = this.config.llm.hiddenSize;
    const embeds = await this.language.embedTokens(ids);
    const imageEmbeds = imageFeatures?.data ?? null;
    let next = 0;
    const available = imageEmbeds ? imageEmbeds.length / H : 0;
    ids.forEach((id, position) => {
      if (id !== imageTokenId) return;
      if (next >= available)
        throw new InternalError(`the prompt has more <IMG_CONTEXT> tokens than image features (${available})`);
      embeds.set(imageEmbeds!.subarray(next * H, (next + 1) * H), position * H);
      next++;
    });
    if (next !== available)
      throw new InternalError(`the prompt has ${next} <IMG_CONTEXT> tokens but the images give ${available} features`);
    return embeds;
  }

  async release(): Promise<void> {
    await this.vision.release();
    await this.language.release();
  }
}

/** Pixel shuffle (downsample 0.5) and the MLP projector on [T, 1+A·B, C] → [T, A·B/4, llmHidden]. */
function buildProjector(
  g: GraphBuilder,
  hidden: string,
  config: InternVLChatConfig,
  projector: ProjectorLayout,
): string {
  const C = config.vision.hiddenSize;
  const side = config.imageSize / config.vision.patchSize;
  const patches = g.slice(hidden, [1], [1 + side * side], [1]);
  // Token (r, c) with r = 2i + a, c = 2j + b lands in cell (i, j) at channel block (a, b); v2 orders cells
  // row-major (i, j), v1 transposed (j, i).
  const grid = g.reshape(patches, [-1, side / 2, 2, side / 2, 2, C]);
  const perm = config.psVersion === 'v2' ? [0, 1, 3, 2, 4, 5] : [0, 3, 1, 2, 4, 5];
  const shuffled = g.reshape(g.transpose(grid, perm), [-1, 4 * C]);
  const p = g.scope(projector.prefix);
  checkProjectorShapes(g, p, config, projector);
  const normed = p.layerNorm(shuffled, projector.norm, PROJECTOR_NORM_EPS);
  const projected = p.linear(g.gelu(p.linear(normed, projector.linear1)), projector.linear2);
  return g.reshape(projected, [-1, (side / 2) * (side / 2), config.llm.hiddenSize]);
}

/** mlp1: LayerNorm(4C) → Linear(4C → LLM hidden) → GELU → Linear(LLM hidden → LLM hidden); 4 = 1 / downsample². */
function checkProjectorShapes(g: GraphBuilder, p: Scope, config: InternVLChatConfig, projector: ProjectorLayout): void {
  const C4 = scaledDim(4, configDim(config.vision.origin, 'hidden_size', config.vision.hiddenSize));
  const H = configDim(config.llm.origin, 'hidden_size', config.llm.hiddenSize);
  const { norm, linear1, linear2 } = projector;
  checkShapes(config.vision.origin, (key) => (g.hasWeight(key) ? g.weightShape(key) : undefined), [
    { key: p.key(`${norm}.weight`), dims: [C4] },
    { key: p.key(`${linear1}.weight`), dims: [H, C4] },
    { key: p.key(`${linear2}.weight`), dims: [H, H] },
  ]);
}
