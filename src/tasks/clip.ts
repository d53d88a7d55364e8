/**
 * InternVL-C/G tasks as CLIP_benchmark runs them: image and text embeddings, zero-shot classification with
 * prompt-template ensembling, and image–text retrieval.
 * - Text: `'summarize:' + text`, BOS + EOS, right padding with 0 to 80 tokens (`encodeClipTexts`).
 * - Images: classification = Resize(224, short side, bicubic) + CenterCrop; retrieval = Resize((224, 224)).
 * - Classifier: per class, every template's embedding normalized, averaged, renormalized; logits = 100 · x @ W.
 */
import type { ResolveModelOptions } from '../core/hub.js';
import { modelResolver } from '../core/io.js';
import { ensembleClassEmbeddings, matrix, zeroShotLogits, type Matrix } from '../core/matrix.js';
import { UsageError } from '../core/errors.js';
import { InternVLClipModel, type ClipMode } from '../models/internvl_clip.js';
import { preprocessForClip } from '../processing/tiling.js';
import { encodeClipTexts } from '../processing/tokenizers/clip_text.js';
import { loadTokenizer, type Tokenizer } from '../processing/tokenizers/index.js';
import { decodeImageSource, imageSourceName, type ImageSource } from './image_source.js';

export interface ClipPipeline {
  model: InternVLClipModel;
  tokenizer: Tokenizer;
}

/** Loads a model folder or Hugging Face repo id, as `--model`. */
export async function loadClipPipeline(
  idOrPath: string,
  options: Parameters<typeof InternVLClipModel.load>[1] & { hub?: ResolveModelOptions } = {},
): Promise<ClipPipeline> {
  const dir = await (await modelResolver.get())(idOrPath, options.hub);
  const [model, tokenizer] = await Promise.all([InternVLClipModel.load(dir, options), loadTokenizer(dir)]);
  return { model, tokenizer };
}

export type ImageTransform = 'classification' | 'retrieval';

export interface BatchOptions {
  batchSize?: number;
  onProgress?: (done: number, total: number) => void;
}

/** A batch size of 0, a fraction or NaN would never finish the loop over the inputs. */
function checkBatchSize(batchSize: number): number {
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new UsageError(`batchSize must be an integer >= 1, got ${batchSize}`);
  return batchSize;
}

/** Text embeddings [N, D] (not normalized), as `encode_text`. */
export async function encodeTexts(
  pipeline: ClipPipeline,
  texts: readonly string[],
  options: BatchOptions = {},
): Promise<Matrix> {
  if (!Array.isArray(texts))
    throw new UsageError(`encodeTexts takes an array of texts, got ${typeof texts} (for one text: [text])`);
  const D = pipeline.model.config.clipEmbedDim;
  const out = new Float32Array(texts.length * D);
  const batchSize = checkBatchSize(options.batchSize ?? 32);
  for (let start = 0; start < texts.length; start += batchSize) {
    const { ids } = encodeClipTexts(pipeline.tokenizer, texts.slice(start, start + batchSize));
    const { embeds } = await pipeline.model.encodeText(ids);
    out.set(embeds.data, start * D);
    options.onProgress?.(Math.min(start + batchSize, texts.length), texts.length);
  }
  return matrix(out, texts.length, D);
}

/**
 * Image embeddings [N, D] (not normalized; mode G is the sum of two unit vectors), as `encode_image`. Paths and
 * encoded bytes are decoded one batch at a time.
 */
export async function encodeImages(
  pipeline: ClipPipeline,
  images: readonly ImageSource[],
  options: BatchOptions & {
    mode?: ClipMode;
    transform?: ImageTransform;
    /** For paths and bytes: apply the EXIF orientation of photos (default true; the official code does not). */
    applyExifOrientation?: boolean;
  } = {},
): Promise<Matrix> {
  if (!Array.isArray(images))
    throw new UsageError(`encodeImages takes an array of images, got ${typeof images} (for one image: [image])`);
  const mode = options.mode ?? 'C';
  if (mode !== 'C' && mode !== 'G') throw new UsageError(`mode must be 'C' or 'G', got ${JSON.stringify(mode)}`);
  const transform = options.transform ?? 'classification';
  if (transform !== 'classification' && transform !== 'retrieval')
    throw new UsageError(`transform must be 'classification' or 'retrieval', got ${JSON.stringify(transform)}`);
  const { model } = pipeline;
  const S = model.config.imageSize;
  const D = model.config.clipEmbedDim;
  const out = new Float32Array(images.length * D);
  const batchSize = checkBatchSize(options.batchSize ?? 8);
  for (let start = 0; start < images.length; start += batchSize) {
    const batch = images.slice(start, start + batchSize);
    const pixels = new Float32Array(batch.length * 3 * S * S);
    for (const [i, source] of batch.entries()) {
      const name = imageSourceName(source, start + i);
      const image = await decodeImageSource(source, name, options.applyExifOrientation ?? true);
      preprocessForClip(image, transform, S, pixels, i * 3 * S * S);
    }
    out.set((await model.encodeImage(pixels, batch.length, mode)).data, start * D);
    options.onProgress?.(Math.min(start + batchSize, images.length), images.length);
  }
  return matrix(out, images.length, D);
}

/**
 * A prompt template filled as CLIP_benchmark's `template.format(c=label)`: `{c}` is the label, `{{` and `}}` are
 * literal braces; `{}` (positional, as some template files write it) is the label too.
 */
export function fillTemplate(template: string, label: string): string {
  let slots = 0;
  const filled = template.replace(/\{\{|\}\}|\{([^{}]*)\}/g, (match, field: string | undefined) => {
    if (match === '{{') return '{';
    if (match === '}}') return '}';
    if (field !== 'c' && field !== '')
      throw new UsageError(
        `template ${JSON.stringify(template)} has a field {${field}}; only {c} (or {}) is filled in`,
      );
    slots++;
    return label;
  });
  if (slots === 0) throw new UsageError(`template ${JSON.stringify(template)} has no {c} or {} for the label`);
  return filled;
}

/** The zero-shot classifier [classes, D], rows unit norm. */
export async function buildZeroShotClassifier(
  pipeline: ClipPipeline,
  labels: readonly string[],
  templates: readonly string[],
  options: BatchOptions = {},
): Promise<Matrix> {
  if (labels.length === 0) throw new UsageError('no labels to classify into');
  if (templates.length === 0) throw new UsageError('no prompt templates');
  const prompts = labels.flatMap((label) => templates.map((t) => fillTemplate(t, label)));
  const embeddings = await encodeTexts(pipeline, prompts, options);
  const D = embeddings.cols;
  const perClass = labels.map((_, c) =>
    matrix(embeddings.data.slice(c * templates.length * D, (c + 1) * templates.length * D), templates.length, D),
  );
  return ensembleClassEmbeddings(perClass);
}

export interface Classification {
  /** [images, classes] = 100 · normalize(image) @ classifierᵀ. */
  logits: Matrix;
  /** Softmax of each row. */
  probs: Matrix;
}

export function classifyEmbeddings(imageEmbeddings: Matrix, classifier: Matrix): Classification {
  const logits = zeroShotLogits(imageEmbeddings, classifier, 100);
  const probs = new Float32Array(logits.data.length);
  for (let r = 0; r < logits.rows; r++) {
    const row = logits.data.subarray(r * logits.cols, (r + 1) * logits.cols);
    const max = Math.max(...row);
    let sum = 0;
    row.forEach((v, c) => {
      const e = Math.exp(v - max);
      probs[r * logits.cols + c] = e;
      sum += e;
    });
    for (let c = 0; c < logits.cols; c++) probs[r * logits.cols + c] /= sum;
  }
  return { logits, probs: matrix(probs, logits.rows, logits.cols) };
}

/**
 * Progress of a zero-shot classification: first the prompts (labels × templates) are encoded, then the images
 * (or videos); each stage counts from 0 to its own total.
 */
export type ClassifyProgress = (done: number, total: number, stage: 'prompts' | 'images' | 'videos') => void;

export async function classifyImages(
  pipeline: ClipPipeline,
  images: readonly ImageSource[],
  labels: readonly string[],
  options: Omit<BatchOptions, 'onProgress'> & {
    templates?: readonly string[];
    mode?: ClipMode;
    applyExifOrientation?: boolean;
    onProgress?: ClassifyProgress;
  } = {},
): Promise<Classification> {
  const { onProgress, templates, ...imageOptions } = options;
  const classifier = await buildZeroShotClassifier(pipeline, labels, templates ?? ['{c}'], {
    batchSize: options.batchSize,
    onProgress: onProgress && ((done, total) => onProgress(done, total, 'prompts')),
  });
  const embeddings = await encodeImages(pipeline, images, {
    ...imageOptions,
    transform: 'classification',
    onProgress: onProgress && ((done, total) => onProgress(done, total, 'images')),
  });
  return classifyEmbeddings(embeddings, classifier);
}
