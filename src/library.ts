/**
 * The platform-neutral library: what `internvl-ts` (Node, `index.ts`) and `internvl-ts/web` (browser,
 * `web/index.ts`) both export. Each entry adds its platform's implementations of the seams (core/platform.ts).
 */
export * from './core/errors.js';
export {
  Checkpoint,
  SafetensorsFile,
  encodeSafetensors,
  readEntry,
  type DType,
  type TensorEntry,
} from './core/safetensors.js';
export { MemoryByteSource, HttpByteSource, type ByteSource, type HttpByteSourceOptions } from './core/bytes.js';
export { files, type FileSystem } from './core/io.js';
export {
  createSession,
  runtimeBackend,
  setThreadBudget,
  Tensor,
  type RuntimeBackend,
  type WeightPlacement,
  type SessionOptions,
} from './core/session.js';
export { useQuantizedLinears } from './core/quantize.js';
export * from './core/matrix.js';
export { floatTensor, type FloatTensor } from './core/tensor.js';

export {
  InternVisionModel,
  parseInternVisionConfig,
  type InternVisionConfig,
  type VisionOutput,
} from './models/intern_vit.js';
export { CausalLM, parseLlmConfig, LLM_VARIANTS, type LlmConfig, type LlmFamily } from './models/llm.js';
export {
  BatchDecoder,
  type BatchDecoderOptions,
  type PrefillOptions,
  type Sequence,
  type SequencePrefix,
  type TokenInput,
} from './models/decoder.js';
export { InternVLChatModel, parseInternVLChatConfig, type InternVLChatConfig } from './models/internvl_chat.js';
export {
  InternVLClipModel,
  parseInternVLClipConfig,
  type InternVLClipConfig,
  type ClipMode,
} from './models/internvl_clip.js';
export { readConfig } from './models/config.js';
export {
  ARCHITECTURES,
  LLM_FAMILIES,
  architectureOf,
  detectArchitecture,
  requireCapability,
  type Architecture,
  type ArchitectureEntry,
  type Capability,
} from './models/registry.js';

export { loadImage, toCHWFloat, IMAGENET_MEAN, IMAGENET_STD, type RgbImage } from './processing/image.js';
export { resizeBicubicPillow } from './processing/resample.js';
export { dynamicTiles, preprocessForChat, preprocessForClip } from './processing/tiling.js';
export { loadVideoFrames, sampleChatFrameIndices, sampleMsrvttFrameIndices } from './processing/video.js';
export { imageDecoder, videoDecoder, type ImageDecoder, type VideoDecoder } from './processing/decoders.js';
export { loadTokenizer, type Tokenizer } from './processing/tokenizers/index.js';
export { encodeClipTexts, preCaption } from './processing/tokenizers/clip_text.js';
export { getTemplate, buildPrompt, listTemplates } from './processing/templates.js';

export {
  loadChatPipeline,
  Conversation,
  type ChatPipeline,
  type VisualInput,
  type ChatTurnResult,
} from './tasks/chat.js';
export {
  loadClipPipeline,
  encodeImages,
  encodeTexts,
  classifyImages,
  buildZeroShotClassifier,
  classifyEmbeddings,
  type ClassifyProgress,
  fillTemplate,
  type ClipPipeline,
} from './tasks/clip.js';
export type { ImageSource } from './tasks/image_source.js';
export { classifyVideos, encodeVideos, embedVideo, videoTextRetrieval } from './tasks/video.js';
export { captionImage, type CaptionOptions } from './tasks/caption.js';
export {
  generate,
  generateBatch,
  streamTokens,
  beamSearch,
  checkGenerationOptions,
  newTokenBudget,
  type DecoderSource,
  type GenerationOptions,
  type GenerationResult,
  type Prompt,
} from './tasks/generation.js';
export { loadLanguageModel } from './tasks/language_model.js';
export { loadImageEmbedder, embedImages, embedImagesAligned } from './tasks/embed.js';
export { loadTemplates, loadClassNames } from './tasks/zeroshot_prompts.js';
