/**
 * Image embeddings: the pooled output (CLS token of the last hidden state) of a model's InternViT tower, or, for
 * InternVL-C/G, the aligned embedding that matches the text embeddings (`embedImagesAligned`).
 *
 * Works on any folder with an InternViT: an InternVisionModel checkpoint, or the vision tower (`vision_model.`,
 * or `model.vision_tower.` in the `*-hf` layout) of an InternVL-Chat / InternVL-C/G checkpoint. Preprocessing is
 * the official single-tile transform: Pillow bicubic resize to the model's square input size, ToTensor, ImageNet
 * normalisation (no crop, no tiling).
 */
import fs from 'node:fs';
import { ModelLoadError, UsageError } from '../core/errors.js';
import { resolveModelDir, type ResolveModelOptions } from '../core/hub.js';
import type { SessionOptions } from '../core/runtime.js';
import { Checkpoint } from '../core/safetensors.js';
import { detectArchitecture, readConfig, type Architecture, type ConfigSection } from '../models/config.js';
import {
  HF_VISION_NAMES,
  InternVisionModel,
  parseInternVisionConfig,
  REMOTE_VISION_NAMES,
  type VisionNames,
} from '../models/intern_vit.js';
import { loadImage, type RgbImage } from '../processing/image.js';
import { preprocessForClip } from '../processing/tiling.js';
import type { GraphBuilder } from '../core/graph.js';
import type { ClipMode } from '../models/internvl_clip.js';
import { encodeImages, type ClipPipeline } from './clip.js';

export interface ImageEmbedder {
  /** The local folder the model was loaded from. */
  readonly dir: string;
  readonly architecture: Architecture;
  /** Side of the square input images are resized to. */
  readonly imageSize: number;
  /** Width of an embedding. */
  readonly dim: number;
  readonly vision: InternVisionModel;
  release(): Promise<void>;
}

export interface LoadImageEmbedderOptions {
  session?: SessionOptions;
  /** For Hugging Face repo ids (download, revision, offline). */
  hub?: ResolveModelOptions;
  /** Runs on the vision graph before it is built (e.g. `useQuantizedLinears`). */
  configureGraph?: (g: GraphBuilder) => void;
}

interface VisionLayout {
  section: ConfigSection;
  prefix: string;
  names: VisionNames;
  imageSize: number;
}

function visionLayout(config: ConfigSection, architecture: Architecture, checkpoint: Checkpoint): VisionLayout {
  switch (architecture) {
    case 'InternVisionModel': {
      const vision = parseInternVisionConfig(config);
      return { section: config, prefix: '', names: REMOTE_VISION_NAMES, imageSize: vision.imageSize };
    }
    case 'InternVLChatModel': {
      const section = config.section('vision_config');
      // Chat models run the tower at force_image_size when set (it may differ from the pretraining size).
      const imageSize = config.has('force_image_size')
        ? config.integer('force_image_size')
        : parseInternVisionConfig(section).imageSize;
      return { section, prefix: 'vision_model', names: REMOTE_VISION_NAMES, imageSize };
    }
    case 'InternVLModel': {
      const section = config.section('vision_config');
      return {
        section,
        prefix: 'vision_model',
        names: REMOTE_VISION_NAMES,
        imageSize: parseInternVisionConfig(section).imageSize,
      };
    }
    case 'InternVLForConditionalGeneration': {
      const section = config.section('vision_config');
      // transformers ≥ 4.52 nests the tower under `model.`; earlier conversions did not.
      const prefix = checkpoint.has(`model.vision_tower.${HF_VISION_NAMES.classEmbedding}`)
        ? 'model.vision_tower'
        : 'vision_tower';
      return { section, prefix, names: HF_VISION_NAMES, imageSize: parseInternVisionConfig(section).imageSize };
    }
    case 'CausalLM':
      throw new ModelLoadError(
        `${config.file}: this is a language model without a vision tower; image embeddings need an InternViT or InternVL checkpoint`,
      );
  }
}

/** Loads the vision tower of a model folder or Hugging Face repo id. */
export async function loadImageEmbedder(
  idOrPath: string,
  options: LoadImageEmbedderOptions = {},
): Promise<ImageEmbedder> {
  const dir = await resolveModelDir(idOrPath, options.hub);
  const config = readConfig(dir);
  const architecture = detectArchitecture(config);
  const checkpoint = Checkpoint.open(dir);
  const layout = visionLayout(config, architecture, checkpoint);
  const visionConfig = parseInternVisionConfig(layout.section);
  if (layout.imageSize % visionConfig.patchSize !== 0) {
    throw new ModelLoadError(
      `${config.file}: image size ${layout.imageSize} is not a multiple of the patch size ${visionConfig.patchSize}`,
    );
  }
  const vision = await InternVisionModel.load(checkpoint, visionConfig, {
    prefix: layout.prefix,
    names: layout.names,
    session: options.session,
    configureGraph: options.configureGraph,
  });
  return {
    dir,
    architecture,
    imageSize: layout.imageSize,
    dim: visionConfig.hiddenSize,
    vision,
    release: () => vision.release(),
  };
}

/** An image file path, encoded bytes, or decoded pixels (named in progress and results by `name`). */
export type ImageSource = string | RgbImage | { name: string; image: RgbImage | Uint8Array };

export interface EmbedImagesOptions {
  /** Called after each image with the number done so far. */
  onProgress?: (done: number, total: number, name: string) => void;
  /** Images per forward pass (default 1: memory grows with the batch, speed barely does on CPU). */
  batchSize?: number;
  /** Apply the EXIF orientation of photos (default true; the official code does not). */
  applyExifOrientation?: boolean;
}

export interface ImageEmbeddings {
  /** One name per image, in input order. */
  names: string[];
  /** [images, dim]. */
  dims: [number, number];
  /** Row-major [images, dim]. */
  data: Float32Array;
}

/** Pooled vision features of each image. Decoding errors are ImageErrors naming the file. */
export async function embedImages(
  model: ImageEmbedder,
  images: readonly ImageSource[],
  options: EmbedImagesOptions = {},
): Promise<ImageEmbeddings> {
  const batchSize = options.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new UsageError(`embedImages: batchSize must be a positive integer, got ${batchSize}`);
  const size = model.imageSize;
  const perImage = 3 * size * size;
  const names = images.map(sourceName);
  const data = new Float32Array(images.length * model.dim);
  for (let start = 0; start < images.length; start += batchSize) {
    const count = Math.min(batchSize, images.length - start);
    const pixels = new Float32Array(count * perImage);
    for (let i = 0; i < count; i++) {
      const image = await decode(images[start + i], names[start + i], options.applyExifOrientation ?? true);
      // Resize to size×size (Pillow bicubic) and normalise: the InternVL-C/G retrieval transform.
      preprocessForClip(image, 'retrieval', size, pixels, i * perImage);
    }
    const output = await model.vision.forward(pixels, [count, 3, size, size]);
    data.set(output.poolerOutput.data, start * model.dim);
    for (let i = 0; i < count; i++) options.onProgress?.(start + i + 1, images.length, names[start + i]);
  }
  return { names, dims: [images.length, model.dim], data };
}

/**
 * InternVL-C/G's aligned image embeddings (`encode_image`, not normalized: mode G is the sum of two unit vectors),
 * the ones that match `encodeTexts`: the retrieval transform (square resize), as the index and CLIP_benchmark's
 * retrieval use.
 */
export async function embedImagesAligned(
  pipeline: ClipPipeline,
  images: readonly ImageSource[],
  options: EmbedImagesOptions & { mode?: ClipMode } = {},
): Promise<ImageEmbeddings> {
  const batchSize = options.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new UsageError(`embedImagesAligned: batchSize must be a positive integer, got ${batchSize}`);
  const names = images.map(sourceName);
  const dim = pipeline.model.config.clipEmbedDim;
  const data = new Float32Array(images.length * dim);
  for (let start = 0; start < images.length; start += batchSize) {
    const count = Math.min(batchSize, images.length - start);
    const decoded: RgbImage[] = [];
    for (let i = 0; i < count; i++)
      decoded.push(await decode(images[start + i], names[start + i], options.applyExifOrientation ?? true));
    const embeds = await encodeImages(pipeline, decoded, { mode: options.mode, transform: 'retrieval', batchSize });
    data.set(embeds.data, start * dim);
    for (let i = 0; i < count; i++) options.onProgress?.(start + i + 1, images.length, names[start + i]);
  }
  return { names, dims: [images.length, dim], data };
}

function sourceName(source: ImageSource, index: number): string {
  if (typeof source === 'string') return source;
  if ('name' in source && typeof source.name === 'string') return source.name;
  return `<image ${index}>`;
}

async function decode(source: ImageSource, name: string, applyExifOrientation: boolean): Promise<RgbImage> {
  if (typeof source === 'string') return loadImage(source, { applyExifOrientation });
  if ('image' in source) {
    return source.image instanceof Uint8Array ? loadImage(source.image, { name, applyExifOrientation }) : source.image;
  }
  return source;
}

/** Expands folders to the image files directly inside them (sorted), so that `embed-image photos/` works. */
export function expandImagePaths(paths: readonly string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    let isDir = false;
    try {
      isDir = fs.statSync(p).isDirectory();
    } catch {
      /* not found: loadImage reports it with the file name */
    }
    if (!isDir) {
      out.push(p);
      continue;
    }
    const files = fs
      .readdirSync(p)
      .filter((f) => IMAGE_FILE.test(f))
      .sort();
    if (files.length === 0) throw new UsageError(`${p}: folder holds no image files (${IMAGE_FILE.source})`);
    out.push(...files.map((f) => `${p.replace(/\/+$/, '')}/${f}`));
  }
  return out;
}

const IMAGE_FILE = /\.(jpe?g|png|webp|gif|bmp|tiff?|avif|heic)$/i;
