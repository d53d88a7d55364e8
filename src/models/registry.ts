/**
 * The model registry: every checkpoint architecture this project loads, what it can do, and where its parts live
 * (config sections, checkpoint prefixes, name tables). `detectArchitecture`, the LLM family dispatch of
 * `parseLlmConfig`, the models' loaders, the tasks and the verify runners ask this table instead of re-dispatching.
 *
 * Adding an LLM family = one row in `LLM_FAMILIES` + its graph differences (`LLM_VARIANTS` in llm.ts, next to the
 * decoder they parametrise). Adding a checkpoint layout = one entry in `ARCHITECTURES`.
 */
import { ConfigError, ModelLoadError } from '../core/errors.js';
import type { Checkpoint } from '../core/safetensors.js';
import type { ConfigSection } from './config.js';
import { HF_VISION_NAMES, REMOTE_VISION_NAMES, type InternVisionConfig, type VisionNames } from './intern_vit.js';
import { LLM_VARIANTS, type LlmFamily, type LlmVariant } from './llm.js';

/** The checkpoint architectures this project runs. */
export type Architecture =
  | 'InternVisionModel'
  | 'InternVLChatModel'
  | 'InternVLModel'
  | 'InternVLForConditionalGeneration'
  | 'CausalLM';

/** What a checkpoint can be used for: chat, InternVL-C/G (`clip`), vision features, text generation (`lm`). */
export type Capability = 'chat' | 'clip' | 'vision' | 'lm';

/** The LLM families, by the `architectures` / `model_type` names of their configs. */
export const LLM_FAMILIES: ReadonlyArray<{ architecture: string; modelType: string; family: LlmFamily }> = [
  { architecture: 'LlamaForCausalLM', modelType: 'llama', family: 'llama' },
  { architecture: 'Qwen2ForCausalLM', modelType: 'qwen2', family: 'qwen2' },
  { architecture: 'InternLM2ForCausalLM', modelType: 'internlm2', family: 'internlm2' },
  { architecture: 'Phi3ForCausalLM', modelType: 'phi3', family: 'phi3' },
  { architecture: 'MistralForCausalLM', modelType: 'mistral', family: 'llama' },
  // InternLM3 is LLaMA's graph under LLaMA's names.
  { architecture: 'InternLM3ForCausalLM', modelType: 'internlm3', family: 'llama' },
];

/** Where a vision tower lives. */
export interface VisionTowerLayout {
  /** Config section of the ViT (`null`: the root config is the ViT's). */
  section: string | null;
  /** Checkpoint prefix candidates, in order: the first that holds the class embedding is used. */
  prefixes: readonly string[];
  names: VisionNames;
}

/** Where a language model lives. */
export interface LanguageLayout {
  /** Config section of the LLM (`null`: the root config). */
  section: string | null;
  prefix: string;
  variant: (family: LlmFamily) => LlmVariant;
  /** Where lm_head sits when not under `prefix` (the *-hf layout keeps it at the root). */
  lmHeadPrefix?: string;
}

/** The chat projector (`mlp1` in the remote code): LayerNorm → Linear → GELU → Linear. */
export interface ProjectorLayout {
  prefix: string;
  norm: string;
  linear1: string;
  linear2: string;
}

export interface ArchitectureEntry {
  name: Architecture;
  capabilities: readonly Capability[];
  vision?: VisionTowerLayout;
  language?: LanguageLayout;
  projector?: ProjectorLayout;
}

const familyVariant = (family: LlmFamily) => LLM_VARIANTS[family];

/** The native *-hf port has no `model.` level inside the language model. */
function stripModelPrefix(variant: LlmVariant): LlmVariant {
  const strip = (name: string) => name.replace(/^model\./, '');
  return {
    ...variant,
    embedTokens: strip(variant.embedTokens),
    layers: strip(variant.layers),
    finalNorm: strip(variant.finalNorm),
  };
}

export const ARCHITECTURES: Readonly<Record<Architecture, ArchitectureEntry>> = {
  InternVisionModel: {
    name: 'InternVisionModel',
    capabilities: ['vision'],
    vision: { section: null, prefixes: [''], names: REMOTE_VISION_NAMES },
  },
  // The original remote-code layout.
  InternVLChatModel: {
    name: 'InternVLChatModel',
    capabilities: ['chat', 'vision', 'lm'],
    vision: { section: 'vision_config', prefixes: ['vision_model'], names: REMOTE_VISION_NAMES },
    language: { section: 'llm_config', prefix: 'language_model', variant: familyVariant },
    projector: { prefix: 'mlp1', norm: '0', linear1: '1', linear2: '3' },
  },
  // transformers' native port (*-hf checkpoints).
  InternVLForConditionalGeneration: {
    name: 'InternVLForConditionalGeneration',
    capabilities: ['chat', 'vision', 'lm'],
    // transformers ≥ 4.52 nests the tower under `model.`; earlier conversions did not.
    vision: { section: 'vision_config', prefixes: ['model.vision_tower', 'vision_tower'], names: HF_VISION_NAMES },
    language: {
      section: 'text_config',
      prefix: 'model.language_model',
      variant: (family) => stripModelPrefix(LLM_VARIANTS[family]),
      lmHeadPrefix: '',
    },
    projector: { prefix: 'model.multi_modal_projector', norm: 'layer_norm', linear1: 'linear_1', linear2: 'linear_2' },
  },
  // InternVL-C/G (InternVL-14B): the ViT, QLLaMA (`qllama.`, see internvl_clip.ts) and the contrastive heads.
  InternVLModel: {
    name: 'InternVLModel',
    capabilities: ['clip', 'vision'],
    vision: { section: 'vision_config', prefixes: ['vision_model'], names: REMOTE_VISION_NAMES },
  },
  CausalLM: {
    name: 'CausalLM',
    capabilities: ['lm'],
    language: { section: null, prefix: '', variant: familyVariant },
  },
};

const WHAT: Record<Capability, string> = {
  chat: 'a chat model',
  clip: 'an InternVL-C/G (InternVLModel) checkpoint',
  vision: 'a vision tower',
  lm: 'a language model to generate with',
};

export function detectArchitecture(config: ConfigSection): Architecture {
  const architectures = Array.isArray(config.raw.architectures) ? (config.raw.architectures as string[]) : [];
  const modelType = typeof config.raw.model_type === 'string' ? config.raw.model_type : '';
  for (const name of architectures) {
    if (name !== 'CausalLM' && name in ARCHITECTURES) return name as Architecture;
    if (LLM_FAMILIES.some((f) => f.architecture === name)) return 'CausalLM';
  }
  // InternVL-14B (InternVLModel) and the *-hf chat checkpoints share model_type 'internvl'; only the former has QLLaMA.
  if (modelType === 'internvl')
    return config.has('qllama_config') ? 'InternVLModel' : 'InternVLForConditionalGeneration';
  if (modelType === 'internvl_chat') return 'InternVLChatModel';
  if (modelType === 'intern_vit_6b' || modelType === 'intern_vit') return 'InternVisionModel';
  if (LLM_FAMILIES.some((f) => f.modelType === modelType)) return 'CausalLM';
  throw new ModelLoadError(
    `${config.file}: unknown architecture ${JSON.stringify(architectures)} / model_type ${JSON.stringify(modelType)}; ` +
      'supported: InternVisionModel, InternVLModel (InternVL-C/G), InternVLChatModel, InternVLForConditionalGeneration (*-hf), ' +
      LLM_FAMILIES.map((f) => f.architecture).join(', '),
  );
}

export function architectureOf(config: ConfigSection): ArchitectureEntry {
  return ARCHITECTURES[detectArchitecture(config)];
}

/** The entry of a config whose architecture can do `capability`; a ModelLoadError naming the folder otherwise. */
export function requireCapability(config: ConfigSection, capability: Capability): ArchitectureEntry {
  const entry = architectureOf(config);
  if (!entry.capabilities.includes(capability)) {
    const able = Object.values(ARCHITECTURES)
      .filter((e) => e.capabilities.includes(capability))
      .map((e) => e.name);
    throw new ModelLoadError(
      `${config.file}: ${entry.name} is not ${WHAT[capability]} (that needs ${able.join(', ')})`,
    );
  }
  return entry;
}

/** The config section a layout names (`null`: the root). */
export function layoutSection(config: ConfigSection, section: string | null): ConfigSection {
  return section === null ? config : config.section(section);
}

/** The LLM family of a language-model config section (by `architectures`, else `model_type`). */
export function llmFamily(section: ConfigSection): LlmFamily {
  const architectures = Array.isArray(section.raw.architectures) ? (section.raw.architectures as string[]) : [];
  const modelType = section.optionalString('model_type') ?? '';
  const family =
    architectures.map((a) => LLM_FAMILIES.find((f) => f.architecture === a)?.family).find(Boolean) ??
    LLM_FAMILIES.find((f) => f.modelType === modelType)?.family;
  if (!family) {
    throw new ConfigError(
      `${section.file}: ${section.at || 'config'} describes an unsupported language model ` +
        `(architectures ${JSON.stringify(architectures)}, model_type '${modelType}'); supported: ${LLM_FAMILIES.map((f) => f.architecture).join(', ')}`,
    );
  }
  return family;
}

/** The checkpoint prefix of a vision tower: the first candidate that holds the class embedding. */
export function visionTowerPrefix(layout: VisionTowerLayout, checkpoint: Checkpoint): string {
  const key = (prefix: string) => (prefix ? `${prefix}.${layout.names.classEmbedding}` : layout.names.classEmbedding);
  return layout.prefixes.find((p) => checkpoint.has(key(p))) ?? layout.prefixes[0];
}

/**
 * The square input size a model runs its vision tower at: `force_image_size` when set (an integer or `[s, s]`; the
 * fine-tuned models run at a size other than the ViT's pretraining one), else the ViT's `image_size`.
 */
export function inputImageSize(config: ConfigSection, vision: InternVisionConfig): number {
  return config.has('force_image_size') ? config.positiveSize('force_image_size') : vision.imageSize;
}
