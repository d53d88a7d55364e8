/**
 * Image embeddings: the pooled output (CLS token of the last hidden state) of a model's InternViT tower, or, for
 * InternVL-C/G, the aligned embedding that matches the text embeddings (`embedImagesAligned`).
 *
 * Works on any folder with an InternViT: an InternVisionModel checkpoint, or the vision tower (`vision_model.`,
 * or `model.vision_tower.` in the `*-hf` layout) of an InternVL-Chat / InternVL-C/G checkpoint. Preprocessing is
 * the official single-tile transform: Pillow bicubic resize to the model's square input size, ToTensor, ImageNet
 * normalisation (no crop, no tiling).
 */
import { ModelLoadError, UsageError } from '../core/errors.js';
import type { ResolveModelOptions } from '../core/hub.js';
import { files, modelResolver } from '../core/io.js';
import type { SessionOptions } from '../core/session.js';
import type { FloatTensor } from '../core/tensor.js';
import { Checkpoint } from '../core/safetensors.js';
import { readConfig } from '../models/config.js';
import { InternVisionModel, parseInternVisionConfig } from '../models/intern_vit.js';
import {
  architectureOf,
  inputImageSize,
  layoutSection,
  visionTowerPrefix,
  type Architecture,
} from '../models/registry.js';
import { preprocessForClip } from '../processing/tiling.js';
import type { GraphBuilder } from '../core/graph.js';
import type { ClipMode } from '../models/internvl_clip.js';
import { encodeImages, type ClipPipeline } from './clip.js';
import { decodeImageSource, imageSourceName, type ImageSource } from './image_source.js';

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

/** Loads the vision tower of a model folder or Hugging Face repo id. */
export async function loadImageEmbedder(
  idOrPath: string,
  options: LoadImageEmbedderOptions = {},
): Promise<ImageEmbedder> {
  const dir = await (await modelResolver.get())(idOrPath, options.hub);
  const config = await readConfig(dir);
  const entry = architectureOf(config);
  if (!entry.vision) {
    throw new ModelLoadError(
      `${config.file}: this is a language model without a vision tower; image embeddings need an InternViT or InternVL checkpoint`,
    );
  }
  const checkpoint = await Checkpoint.open(dir);
  const visionConfig = parseInternVisionConfig(layoutSection(config, entry.vision.section));
  const imageSize = inputImageSize(config, visionConfig);
  if (imageSize % visionConfig.patchSize !== 0) {
    throw new ModelLoadError(
      `${config.file}: image size ${imageSize} is not a multiple of the patch size ${visionConfig.patchSize}`,
    );
  }
  const vision = await InternVisionModel.load(checkpoint, visionConfig, {
    prefix: visionTowerPrefix(entry.vision, checkpoint),
    names: entry.vision.names,
    session: options.session,
    configureGraph: options.configureGraph,
  });
  return {
    dir,
    architecture: entry.name,
    imageSize,
    dim: visionConfig.hiddenSize,
    vision,
    release: () => vision.release(),
  };
}

export interface EmbedImagesOptions {
  /** Called after each image with the number done so far. */
  onProgress?: (done: number, total: number, name: string) => void;
  /** Images per forward pass (default 1: memory grows with the batch, speed barely does on CPU). */
  batchSize?: number;
  /** Apply the EXIF orientation of photos (default true; the official code does not). */
  applyExifOrientation?: boolean;
}

/** [images, dim], row-major, with one name per image in input order. */
export interface ImageEmbeddings extends FloatTensor {
  dims: [images: number, dim: number];
  names: string[];
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
  const names = images.map(imageSourceName);
  const data = new Float32Array(images.length * model.dim);
  for (let start = 0; start < images.length; start += batchSize) {
    const count = Math.min(batchSize, images.length - start);
    const pixels = new Float32Array(count * perImage);
    for (let i = 0; i < count; i++) {
      const image = await decodeImageSource(images[start + i], names[start + i], options.applyExifOrientation ?? true);
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
  const names = images.map(imageSourceName);
  let reported = 0;
  const { onProgress } = options;
  const embeddings = await encodeImages(pipeline, images, {
    mode: options.mode,
    transform: 'retrieval',
    batchSize,
    applyExifOrientation: options.applyExifOrientation,
    // One call per image, in order, though the encoder reports whole batches.
    onProgress:
      onProgress &&
      ((done, total) => {
        for (; reported < done; reported++) onProgress(reported + 1, total, names[reported]);
      }),
  });
  return { names, dims: [images.length, embeddings.cols], data: embeddings.data };
}

/** Expands folders to the image files directly inside them (sorted), so that `embed-image photos/` works. */
export async function expandImagePaths(paths: readonly string[]): Promise<string[]> {
  const fs = await files.get();
  const out: string[] = [];
  for (const p of paths) {
    // Not found: loadImage reports it with the file name.
    if (!(await fs.isDirectory(p))) {
      out.push(p);
      continue;
    }
    const images = (await fs.list(p)).filter((f) => IMAGE_FILE.test(f)).sort();
    if (images.length === 0) throw new UsageError(`${p}: folder holds no image files (${IMAGE_FILE.source})`);
    out.push(...images.map((f) => `${p.replace(/\/+$/, '')}/${f}`));
  }
  return out;
}

const IMAGE_FILE = /\.(jpe?g|png|webp|gif|bmp|tiff?|avif|heic)$/i;
