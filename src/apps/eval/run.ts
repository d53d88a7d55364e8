/**
 * The evaluation harness behind `internvl eval` (zeroshot.ts, retrieval.ts, video_retrieval.ts): the model as the
 * harness sees it, the settings every evaluation shares, and the checks of its inputs. Image, video and text
 * embeddings are cached on disk (embedding_cache.ts, encoders.ts), so trying other prompt templates, class names or
 * a second metric never re-encodes the images: on the 14B model the image side is most of the time of an ImageNet
 * run.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { UsageError } from '../../core/errors.js';
import { resolveModelDir, type DownloadProgress } from '../../core/hub.js';
import type { Matrix } from '../../core/matrix.js';
import { SILENT_PROGRESS, type ProgressReporter } from '../../core/progress.js';
import type { SessionOptions } from '../../core/session.js';
import type { ClipMode } from '../../models/internvl_clip.js';
import type { RgbImage } from '../../processing/image.js';
import {
  encodeImages,
  encodeTexts,
  loadClipPipeline,
  type ClipPipeline,
  type ImageTransform,
} from '../../tasks/clip.js';
import { DatasetError } from '../../core/errors.js';
import { defaultEmbeddingCacheDir } from './embedding_cache.js';

export interface EncodeImagesRequest {
  mode: ClipMode;
  transform: ImageTransform;
  batchSize: number;
}

export interface EvalModel {
  /** Shown in reports (the folder name or the Hub id). */
  name: string;
  /** Identity of the weights, config and tokenizer for the embedding cache; null never caches. */
  identity: string | null;
  imageSize: number;
  dim: number;
  /** [images, D], not normalised (as `encode_image`). */
  encodeImages(images: readonly RgbImage[], request: EncodeImagesRequest): Promise<Matrix>;
  /** [texts, D], not normalised; `'summarize:'` is added by the tokenizer side. */
  encodeTexts(
    texts: readonly string[],
    options: { batchSize: number; onProgress?: (done: number, total: number) => void },
  ): Promise<Matrix>;
  release(): Promise<void>;
}

// Everything in a model folder that changes what an embedding is; Python files and READMEs do not.
const IDENTITY_FILE =
  /^(config\.json|.+\.safetensors|model\.safetensors\.index\.json|tokenizer\.(model|json)|tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json)$/;

/**
 * Cache identity of a model folder: the real path, size and mtime of its config, weight and tokenizer files.
 * Real paths make a Hugging Face snapshot (symlinks into blobs/) and a copy of the same blobs different models,
 * which costs a re-encode but never serves stale embeddings; re-downloading or editing a file changes its mtime.
 */
export function modelIdentity(dir: string): string {
  let names: string[];
  try {
    names = fs
      .readdirSync(dir)
      .filter((n) => IDENTITY_FILE.test(n))
      .sort();
  } catch (e) {
    throw new DatasetError(
      `cannot list model folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
  const parts = names.map((name) => {
    const real = fs.realpathSync(path.join(dir, name));
    const st = fs.statSync(real);
    return [name, real, st.size, st.mtimeMs];
  });
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 32);
}

export function evalModelFromPipeline(pipeline: ClipPipeline, name: string, identity: string | null): EvalModel {
  return {
    name,
    identity,
    imageSize: pipeline.model.config.imageSize,
    dim: pipeline.model.config.clipEmbedDim,
    encodeImages: (images, r) =>
      encodeImages(pipeline, images, { mode: r.mode, transform: r.transform, batchSize: r.batchSize }),
    encodeTexts: (texts, o) => encodeTexts(pipeline, texts, o),
    release: () => pipeline.model.release(),
  };
}

export interface LoadEvalModelOptions {
  offline?: boolean;
  session?: SessionOptions;
  onDownload?: (e: DownloadProgress) => void;
}

/** Loads an InternVL-C/G checkpoint (folder or Hub id) for evaluation. */
export async function loadEvalModel(idOrPath: string, options: LoadEvalModelOptions = {}): Promise<EvalModel> {
  const dir = await resolveModelDir(idOrPath, { offline: options.offline, onProgress: options.onDownload });
  const pipeline = await loadClipPipeline(dir, { session: options.session });
  const isFolder = dir === idOrPath;
  return evalModelFromPipeline(
    pipeline,
    isFolder ? path.basename(path.resolve(idOrPath)) : idOrPath,
    modelIdentity(dir),
  );
}

/** A loaded model, or a loader the run calls once the dataset has been checked (so bad input fails fast). */
export type ModelSource = EvalModel | (() => Promise<EvalModel>);

export interface EvalCommonOptions {
  model: ModelSource;
  /** InternVL-C (default) or InternVL-G. */
  mode?: ClipMode;
  /** Images (or texts) per forward pass; default 8 images, 32 texts. */
  batchSize?: number;
  /** Evaluate only the first N images (videos). */
  limit?: number;
  /** Cache folder; default {@link defaultEmbeddingCacheDir}; null turns the cache off. */
  cacheDir?: string | null;
  /** Progress bars, one per stage; silent by default. */
  progress?: (label: string) => ProgressReporter;
  /** Dataset name in the report; default the file or folder name. */
  datasetName?: string;
}

export interface CacheStats {
  encoded: number;
  cached: number;
}

interface Settings {
  mode: ClipMode;
  batchSize: number;
  cacheDir: string | null;
  progress: (label: string) => ProgressReporter;
}

export interface EvalContext extends Settings {
  model: EvalModel;
}

export function settings(o: EvalCommonOptions): Settings {
  if (o.limit !== undefined && (!Number.isInteger(o.limit) || o.limit < 1))
    throw new UsageError(`limit must be an integer >= 1, got ${o.limit}`);
  if (o.batchSize !== undefined && (!Number.isInteger(o.batchSize) || o.batchSize < 1))
    throw new UsageError(`batch size must be an integer >= 1, got ${o.batchSize}`);
  const mode = o.mode ?? 'C';
  if (mode !== 'C' && mode !== 'G') throw new UsageError(`mode must be C or G, got ${String(mode)}`);
  return {
    mode,
    batchSize: o.batchSize ?? 8,
    cacheDir: o.cacheDir === null ? null : (o.cacheDir ?? defaultEmbeddingCacheDir()),
    progress: o.progress ?? (() => SILENT_PROGRESS),
  };
}

export async function withModel(s: Settings, source: ModelSource): Promise<EvalContext> {
  return { ...s, model: typeof source === 'function' ? await source() : source };
}

/** Fails with a one-line error when an input path does not exist (the CLI checks before loading the model). */
export function checkInputPath(p: string, what: string, expect?: 'file' | 'folder'): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new DatasetError(`${what} not found: ${p}`);
  }
  if (expect === 'folder' && !st.isDirectory()) throw new DatasetError(`${what} is not a folder: ${p}`);
  if (expect === 'file' && !st.isFile()) throw new DatasetError(`${what} is not a file: ${p}`);
}

export function datasetLabel(p: string): string {
  return path.basename(path.resolve(p)).replace(/\.(json|txt)$/i, '');
}
