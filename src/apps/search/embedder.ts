/**
 * The model side of the index: InternVL-C/G's aligned embeddings (`encodeImages` with the retrieval transform,
 * `encodeTexts`), L2-normalised, and the stamp that identifies which model, mode and weights made them.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ImageError, ModelLoadError } from '../../core/errors.js';
import { resolveModelDir } from '../../core/hub.js';
import { l2normalize, matrix } from '../../core/matrix.js';
import { weightFormatHook } from '../../core/quantize/formats.js';
import type { SessionOptions } from '../../core/session.js';
import { readConfig } from '../../models/config.js';
import { detectArchitecture } from '../../models/registry.js';
import { parseInternVLClipConfig, type ClipMode } from '../../models/internvl_clip.js';
import { loadImage, type RgbImage } from '../../processing/image.js';
import { encodeTexts, loadClipPipeline, type ClipPipeline } from '../../tasks/clip.js';
import { embedImagesAligned } from '../../tasks/embed.js';
import type { Stamp } from './store.js';

export type IndexWeights = 'fp32' | 'int8';

export interface EmbedderOptions {
  mode?: ClipMode;
  weights?: IndexWeights;
  session?: SessionOptions;
}

/** The stamp of a model folder (or repo id) without loading its weights. */
export async function modelStamp(model: string, options: EmbedderOptions = {}): Promise<Stamp> {
  const dir = await resolveModelDir(model);
  const config = await readConfig(dir);
  if (detectArchitecture(config) !== 'InternVLModel')
    throw new ModelLoadError(`${dir}: search needs an InternVL-C/G checkpoint (InternVLModel), not this model`);
  const hash = createHash('sha256').update(fs.readFileSync(path.join(dir, 'config.json')));
  for (const file of fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .sort())
    hash.update(`\0${file}\0${fs.statSync(path.join(dir, file)).size}`);
  return {
    model: fs.existsSync(model) ? path.resolve(model) : model,
    fingerprint: hash.digest('hex'),
    mode: options.mode ?? 'C',
    weights: options.weights ?? 'fp32',
    dim: parseInternVLClipConfig(config).clipEmbedDim,
  };
}

/** Unit-norm rows, one per input, `dim` wide. */
export interface Vectors {
  dim: number;
  data: Float32Array;
}

export class ClipEmbedder {
  private constructor(
    readonly stamp: Stamp,
    private readonly pipeline: ClipPipeline,
  ) {}

  static async load(stamp: Stamp, session?: SessionOptions): Promise<ClipEmbedder> {
    const hook = weightFormatHook(stamp.weights as IndexWeights);
    const pipeline = await loadClipPipeline(await resolveModelDir(stamp.model), {
      session,
      configureVisionGraph: hook,
      configureQllamaGraph: hook,
    });
    return new ClipEmbedder(stamp, pipeline);
  }

  async images(images: readonly RgbImage[], batchSize?: number): Promise<Vectors> {
    const raw = await embedImagesAligned(this.pipeline, images, { mode: this.stamp.mode, batchSize });
    return { dim: raw.dims[1], data: l2normalize(matrix(raw.data, ...raw.dims)).data };
  }

  async texts(texts: readonly string[]): Promise<Vectors> {
    const raw = await encodeTexts(this.pipeline, texts);
    return { dim: raw.cols, data: l2normalize(raw).data };
  }

  async release(): Promise<void> {
    await this.pipeline.model.release();
  }
}

/** Decodes image bytes, or explains why not (for a warning: the index skips such images). */
export async function decodeOrReason(
  bytes: () => Promise<Uint8Array>,
  name: string,
): Promise<{ image: RgbImage } | { reason: string }> {
  try {
    return { image: await loadImage(await bytes(), { name }) };
  } catch (error) {
    if (error instanceof ImageError) return { reason: error.message };
    const code = (error as NodeJS.ErrnoException).code;
    if (code) return { reason: `${name}: cannot read (${code})` };
    throw error;
  }
}

export function vectorRows(vectors: Vectors): Float32Array[] {
  const m = matrix(vectors.data, vectors.data.length / vectors.dim, vectors.dim);
  return Array.from({ length: m.rows }, (_, i) => m.data.slice(i * m.cols, (i + 1) * m.cols));
}
