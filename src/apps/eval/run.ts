/**
 * The evaluation harness behind `internvl eval`: zero-shot classification and image–text retrieval as
 * CLIP_benchmark runs them for InternVL-C/G, and MSR-VTT-style video–text retrieval as InternVL's
 * video_retrieval/test_msrvtt.py does.
 *
 * Image, video and text embeddings are cached on disk (see {@link EmbeddingCache}), so trying other prompt
 * templates, class names or a second metric never re-encodes the images: on the 14B model the image side is
 * most of the time of an ImageNet run.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { storageError } from '../../core/node/atomic_write.js';
import { resolveInside } from '../../core/node/contained_path.js';
import { InternalError, StorageError, UsageError } from '../../core/errors.js';
import { resolveModelDir, type DownloadProgress } from '../../core/hub.js';
import { readJsonFile } from '../../core/json.js';
import { ensembleClassEmbeddings, matrix, retrievalScores, zeroShotLogits, type Matrix } from '../../core/matrix.js';
import type { ProgressReporter } from '../../core/progress.js';
import { defaultCacheDir } from '../../core/node/weight_cache.js';
import type { SessionOptions } from '../../core/session.js';
import type { ClipMode } from '../../models/internvl_clip.js';
import { loadImage, type RgbImage } from '../../processing/image.js';
import type { FfmpegOptions } from '../../processing/video.js';
import {
  encodeImages,
  encodeTexts,
  fillTemplate,
  loadClipPipeline,
  type ClipPipeline,
  type ImageTransform,
} from '../../tasks/clip.js';
import { DEFAULT_VIDEO_FRAMES, embedVideo } from '../../tasks/video.js';
import { loadClassNames, loadTemplates, readStringList, ZEROSHOT_LANGUAGES } from '../../tasks/zeroshot_prompts.js';
import { DatasetError } from '../../core/errors.js';
import { preCaption } from '../../processing/tokenizers/clip_text.js';
import { openWebDataset, readCaptionDataset, readImageFolder } from './datasets.js';
import { meanRecall, msrvttRetrievalMetrics, retrievalRecall, zeroShotClassificationMetrics } from './metrics.js';
import type { EvalResult } from './report.js';

// ---------------------------------------------------------------------------------------------------------
// Class names and templates: the built-in sets (assets/zeroshot/, through tasks/zeroshot_prompts) or user files.

export const LANGUAGES = ZEROSHOT_LANGUAGES;
export type Language = (typeof LANGUAGES)[number];

export function checkLanguage(language: string): Language {
  if (!(LANGUAGES as readonly string[]).includes(language)) {
    throw new UsageError(
      `unknown language '${language}' (built-in class names and templates: ${LANGUAGES.join(', ')})`,
    );
  }
  return language as Language;
}

// ---------------------------------------------------------------------------------------------------------
// The model as the harness sees it (an interface, so tests can count or fake the encoder calls).

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

// ---------------------------------------------------------------------------------------------------------
// Embedding cache.

const CACHE_MAGIC = Buffer.from('IVLEMB02', 'latin1');
const CACHE_HEADER = 16;
const KEY_BYTES = 32;
/** Each record ends with the first bytes of sha256(key hash ‖ values), so flipped or torn records are skipped. */
const CHECK_BYTES = 8;

/**
 * Embeddings on disk, one folder per namespace (model identity, embedding kind, mode, transform, image size,
 * frames…), keyed by a string per item (a file's real path + size + mtime, a prompt…).
 *
 * Each process appends to its own segment file (`*.emb`: a 16-byte header with the dimension, then fixed-size
 * records of sha256(key), D float32 and a check), and readers load every segment of the namespace. So two runs at
 * once never write the same file; a run killed mid-write leaves a partial last record, and a record whose bytes
 * changed fails its check: readers skip both, and the embedding is computed again.
 * Values are stored exactly, so a cached run gives bit-identical results.
 */
export class EmbeddingCache {
  private readonly index = new Map<string, { buf: Buffer; offset: number }>();
  private segment: string | null = null;

  private constructor(
    readonly dir: string,
    readonly dim: number,
  ) {}

  /** Opens (creating) the namespace folder under `root` and loads its segments. */
  static open(root: string, namespace: Record<string, unknown>, dim: number): EmbeddingCache {
    const nsJson = JSON.stringify(namespace);
    const dir = path.join(root, createHash('sha256').update(nsJson).digest('hex').slice(0, 32));
    try {
      fs.mkdirSync(dir, { recursive: true });
      const meta = path.join(dir, 'namespace.json');
      // For whoever looks inside the cache; never read back.
      if (!fs.existsSync(meta)) fs.writeFileSync(meta, `${JSON.stringify(namespace, null, 2)}\n`);
    } catch (e) {
      throw cacheError(root, e);
    }
    const cache = new EmbeddingCache(dir, dim);
    cache.load();
    return cache;
  }

  private get recordBytes(): number {
    return KEY_BYTES + 4 * this.dim + CHECK_BYTES;
  }

  private load(): void {
    let names: string[];
    try {
      names = fs
        .readdirSync(this.dir)
        .filter((n) => n.endsWith('.emb'))
        .sort();
    } catch (e) {
      throw cacheError(this.dir, e);
    }
    for (const name of names) {
      let buf: Buffer;
      try {
        buf = fs.readFileSync(path.join(this.dir, name));
      } catch {
        continue; // a segment another run is creating right now, or one deleted under us
      }
      if (buf.length < CACHE_HEADER || !buf.subarray(0, 8).equals(CACHE_MAGIC) || buf.readUInt32LE(8) !== this.dim)
        continue;
      const count = Math.floor((buf.length - CACHE_HEADER) / this.recordBytes);
      for (let i = 0; i < count; i++) {
        const offset = CACHE_HEADER + i * this.recordBytes;
        const body = buf.subarray(offset, offset + KEY_BYTES + 4 * this.dim);
        if (!recordCheck(body).equals(buf.subarray(offset + body.length, offset + this.recordBytes))) continue;
        this.index.set(buf.toString('hex', offset, offset + KEY_BYTES), { buf, offset: offset + KEY_BYTES });
      }
    }
  }

  get size(): number {
    return this.index.size;
  }

  get(key: string): Float32Array | undefined {
    const hit = this.index.get(hashKey(key));
    if (!hit) return undefined;
    // Copy through bytes: the record's offset in a pooled Buffer need not be 4-byte aligned.
    const bytes = new Uint8Array(4 * this.dim);
    bytes.set(hit.buf.subarray(hit.offset, hit.offset + 4 * this.dim));
    return new Float32Array(bytes.buffer);
  }

  /** Appends entries (one write, so a concurrent reader sees whole records or a skippable partial one). */
  put(entries: readonly (readonly [string, Float32Array])[]): void {
    if (entries.length === 0) return;
    const buf = Buffer.alloc(entries.length * this.recordBytes);
    entries.forEach(([key, value], i) => {
      if (value.length !== this.dim)
        throw new InternalError(`cannot cache a ${value.length}-dim embedding in a ${this.dim}-dim cache`);
      const offset = i * this.recordBytes;
      Buffer.from(hashKey(key), 'hex').copy(buf, offset);
      Buffer.from(value.buffer, value.byteOffset, value.byteLength).copy(buf, offset + KEY_BYTES);
      const body = buf.subarray(offset, offset + KEY_BYTES + 4 * this.dim);
      recordCheck(body).copy(buf, offset + body.length);
    });
    try {
      if (this.segment === null) {
        const header = Buffer.alloc(CACHE_HEADER);
        CACHE_MAGIC.copy(header, 0);
        header.writeUInt32LE(this.dim, 8);
        const name = `${Date.now().toString(36)}-${process.pid}-${randomBytes(4).toString('hex')}.emb`;
        fs.writeFileSync(path.join(this.dir, name), header, { flag: 'wx' });
        this.segment = path.join(this.dir, name);
      }
      fs.appendFileSync(this.segment, buf);
    } catch (e) {
      throw cacheError(this.segment ?? this.dir, e);
    }
    entries.forEach(([key], i) => this.index.set(hashKey(key), { buf, offset: i * this.recordBytes + KEY_BYTES }));
  }
}

function recordCheck(body: Uint8Array): Buffer {
  return createHash('sha256').update(body).digest().subarray(0, CHECK_BYTES);
}

function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

function cacheError(where: string, e: unknown): StorageError {
  const known = storageError(e, where);
  const why =
    known instanceof StorageError
      ? known.message
      : `cannot use the embedding cache in ${where}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  return new StorageError(`${why} (choose another with --cache-dir, or --no-cache)`, { cause: e });
}

/** `$INTERNVL_CACHE/embeddings`, else `~/.cache/internvl-ts/embeddings`. */
export function defaultEmbeddingCacheDir(): string {
  return path.join(defaultCacheDir(), 'embeddings');
}

/** Cache key of a file: real path, size, mtime. Editing or replacing the file changes it. */
export function fileKey(file: string): string {
  let real: string;
  let st: fs.Stats;
  try {
    real = fs.realpathSync(file);
    st = fs.statSync(real);
  } catch (e) {
    throw new DatasetError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return `file:${real}:${st.size}:${st.mtimeMs}`;
}

// ---------------------------------------------------------------------------------------------------------
// Encoding with the cache.

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

const SILENT: ProgressReporter = { update() {}, log() {}, finish() {} };

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

interface Ctx extends Settings {
  model: EvalModel;
}

function settings(o: EvalCommonOptions): Settings {
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
    progress: o.progress ?? (() => SILENT),
  };
}

async function withModel(s: Settings, source: ModelSource): Promise<Ctx> {
  return { ...s, model: typeof source === 'function' ? await source() : source };
}

function openCache(ctx: Ctx, namespace: Record<string, unknown>): EmbeddingCache | null {
  if (ctx.cacheDir === null || ctx.model.identity === null) return null;
  return EmbeddingCache.open(
    ctx.cacheDir,
    { version: 1, model: ctx.model.identity, dim: ctx.model.dim, ...namespace },
    ctx.model.dim,
  );
}

/**
 * Collects image embeddings in input order; cache misses are decoded and encoded `batchSize` at a time, so a
 * large dataset is never held in memory as pixels.
 */
class ImageEncoder {
  private readonly rows: Float32Array[] = [];
  private pending: { index: number; key: string; name: string; load: () => Promise<RgbImage> }[] = [];
  readonly stats: CacheStats = { encoded: 0, cached: 0 };

  constructor(
    private readonly ctx: Ctx,
    private readonly cache: EmbeddingCache | null,
    private readonly transform: ImageTransform,
    private readonly bar: ProgressReporter,
    private readonly total: number | undefined,
  ) {}

  async add(key: string, name: string, load: () => Promise<RgbImage>): Promise<void> {
    const index = this.rows.length;
    this.rows.push(new Float32Array(0));
    const hit = this.cache?.get(key);
    if (hit) {
      this.rows[index] = hit;
      this.stats.cached++;
      this.tick(name);
      return;
    }
    this.pending.push({ index, key, name, load });
    if (this.pending.length >= this.ctx.batchSize) await this.flush();
  }

  private tick(name: string): void {
    this.bar.update(this.stats.cached + this.stats.encoded, this.total, name);
  }

  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    const images = await Promise.all(batch.map((p) => p.load()));
    const { model } = this.ctx;
    const emb = await model.encodeImages(images, {
      mode: this.ctx.mode,
      transform: this.transform,
      batchSize: this.ctx.batchSize,
    });
    if (emb.rows !== images.length || emb.cols !== model.dim) {
      throw new InternalError(
        `image encoder returned ${emb.rows}x${emb.cols} embeddings for ${images.length} images (dim ${model.dim})`,
      );
    }
    const entries: [string, Float32Array][] = batch.map((p, i) => {
      const row = emb.data.slice(i * emb.cols, (i + 1) * emb.cols);
      this.rows[p.index] = row;
      return [p.key, row];
    });
    this.cache?.put(entries);
    this.stats.encoded += batch.length;
    this.tick(batch[batch.length - 1].name);
  }

  async finish(): Promise<Matrix> {
    await this.flush();
    this.bar.finish();
    const D = this.ctx.model.dim;
    const out = new Float32Array(this.rows.length * D);
    this.rows.forEach((r, i) => out.set(r, i * D));
    return matrix(out, this.rows.length, D);
  }
}

function imageEncoder(ctx: Ctx, transform: ImageTransform, total: number | undefined): ImageEncoder {
  const cache = openCache(ctx, { kind: 'image', mode: ctx.mode, transform, imageSize: ctx.model.imageSize });
  return new ImageEncoder(ctx, cache, transform, ctx.progress('encoding images'), total);
}

/** Text embeddings with the cache (keyed by the exact text; the same for modes C and G). */
async function encodeTextsCached(
  ctx: Ctx,
  texts: readonly string[],
  label: string,
  batchSize: number,
): Promise<{ embeddings: Matrix; stats: CacheStats }> {
  const cache = openCache(ctx, { kind: 'text' });
  const D = ctx.model.dim;
  const out = new Float32Array(texts.length * D);
  const missing: number[] = [];
  texts.forEach((t, i) => {
    const hit = cache?.get(t);
    if (hit) out.set(hit, i * D);
    else missing.push(i);
  });
  const bar = ctx.progress(label);
  const cached = texts.length - missing.length;
  bar.update(cached, texts.length);
  if (missing.length > 0) {
    const emb = await ctx.model.encodeTexts(
      missing.map((i) => texts[i]),
      {
        batchSize,
        onProgress: (done) => bar.update(cached + done, texts.length),
      },
    );
    if (emb.rows !== missing.length || emb.cols !== D)
      throw new InternalError(
        `text encoder returned ${emb.rows}x${emb.cols} embeddings for ${missing.length} texts (dim ${D})`,
      );
    const entries: [string, Float32Array][] = missing.map((ti, j) => {
      const row = emb.data.slice(j * D, (j + 1) * D);
      out.set(row, ti * D);
      return [texts[ti], row];
    });
    cache?.put(entries);
  }
  bar.finish();
  return { embeddings: matrix(out, texts.length, D), stats: { encoded: missing.length, cached } };
}

function decode(name: string, bytes: () => Promise<Uint8Array>): () => Promise<RgbImage> {
  // The official transforms open images with PIL and never apply EXIF orientation.
  return async () => loadImage(await bytes(), { name, applyExifOrientation: false });
}

// ---------------------------------------------------------------------------------------------------------
// Datasets.

/** 'folder' (ImageNet-style) or 'wds' (CLIP_benchmark webdataset export with a `<split>/` of tar shards). */
export function detectImageDataset(root: string, split = 'test'): 'folder' | 'wds' {
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
  } catch {
    throw new DatasetError(`dataset not found: ${root}`);
  }
  if (!st.isDirectory())
    throw new DatasetError(
      `dataset ${root} is a file; zero-shot classification needs an ImageNet-style folder or a webdataset folder`,
    );
  const splitDir = path.join(root, split);
  try {
    const names = fs.readdirSync(splitDir);
    if (names.some((n) => n.endsWith('.tar') || n === 'nshards.txt')) return 'wds';
  } catch {
    // no split folder: an image folder
  }
  return 'folder';
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

function datasetLabel(p: string): string {
  return path.basename(path.resolve(p)).replace(/\.(json|txt)$/i, '');
}

// ---------------------------------------------------------------------------------------------------------
// Zero-shot classification.

export interface ZeroShotOptions extends EvalCommonOptions {
  /** ImageNet-style folder or webdataset folder. */
  dataset: string;
  /** Webdataset split (default 'test'). */
  split?: string;
  /** A `.txt`/`.json` file or a list; default: see {@link runZeroShot}. */
  classNames?: string | readonly string[];
  /** A `.txt`/`.json` file or a list; default: the built-in imagenet1k templates of `language`. */
  templates?: string | readonly string[];
  /** Built-in class names and templates to use (en, cn, jp, ar, it). */
  language?: string;
  /** Entry of CLIP_benchmark `{dataset: [...]}` JSON files (default 'imagenet1k'). */
  key?: string;
}

export interface ZeroShotRun {
  result: EvalResult;
  /** [images, classes] = 100 · normalize(image) @ classifierᵀ. */
  logits: Matrix;
  targets: Int32Array;
  classNames: string[];
  templates: string[];
  /** Item names (relative paths or webdataset keys), in row order. */
  items: string[];
  /** [images, D], not normalised. */
  imageEmbeddings: Matrix;
  /** [classes, D], rows unit norm. */
  classifier: Matrix;
}

const WNID = /^n\d{8}$/;

/** The class sub-folders of an image folder, symlinked ones included (as readImageFolder counts them). */
function classFolders(root: string): string[] {
  return fs
    .readdirSync(root, { withFileTypes: true })
    .filter((e) => {
      if (e.isDirectory()) return true;
      if (!e.isSymbolicLink()) return false;
      try {
        return fs.statSync(path.join(root, e.name)).isDirectory();
      } catch {
        return false;
      }
    })
    .map((e) => e.name);
}

/**
 * CLIP_benchmark zero-shot classification. Class names: `classNames`, else the built-in list of `language`,
 * else (webdataset) its classnames.txt, else, for a folder of 1000 wnid folders, the built-in English ImageNet
 * names, else the folder names. Templates: `templates`, else the built-in list of `language`, else (webdataset)
 * its zeroshot_classification_templates.txt, else the built-in English ImageNet templates.
 * Images use the classification transform (Resize short side + CenterCrop).
 */
export async function runZeroShot(options: ZeroShotOptions): Promise<ZeroShotRun> {
  const s = settings(options);
  const started = Date.now();
  const language = options.language === undefined ? undefined : checkLanguage(options.language);
  const key = options.key ?? 'imagenet1k';
  const split = options.split ?? 'test';
  const kind = detectImageDataset(options.dataset, split);

  const userList = async (v: string | readonly string[] | undefined, k: 'classnames' | 'templates') =>
    v === undefined ? undefined : typeof v === 'string' ? readStringList(v, k, key) : [...v];
  // A JSON class-names file for a folder goes to readImageFolder as it is: it also understands folder→name maps.
  const folderJsonNames =
    kind === 'folder' && typeof options.classNames === 'string' && /\.json$/i.test(options.classNames);
  const userClassNames = folderJsonNames ? undefined : await userList(options.classNames, 'classnames');
  let templates = await userList(options.templates, 'templates');
  const langNames = language ? await loadClassNames(language) : undefined;

  let classNames: string[];
  let itemsSource: AsyncGenerator<{ key: string; name: string; label: number; load: () => Promise<RgbImage> }>;
  let total: number | undefined;
  if (kind === 'folder') {
    let names: string | string[] | undefined = folderJsonNames
      ? (options.classNames as string)
      : (userClassNames ?? langNames);
    const dirs = classFolders(options.dataset);
    if (!names && dirs.length === 1000 && dirs.every((d) => WNID.test(d))) names = await loadClassNames('en');
    if (Array.isArray(names)) {
      const classes = dirs.length;
      const source = userClassNames
        ? typeof options.classNames === 'string'
          ? options.classNames
          : 'the class-name list'
        : `the built-in ${language ?? 'en'} ImageNet class-name list`;
      if (names.length !== classes)
        throw new DatasetError(
          `${source} has ${names.length} names but ${options.dataset} has ${classes} class folders; pass matching --classnames`,
        );
    }
    const ds = await readImageFolder(options.dataset, names ? { classNames: names, classNamesKey: options.key } : {});
    classNames = ds.classNames;
    const items = options.limit ? ds.items.slice(0, options.limit) : ds.items;
    total = items.length;
    itemsSource = (async function* () {
      for (const it of items)
        yield { key: fileKey(it.path), name: it.key, label: it.label, load: decode(it.path, () => it.readImage()) };
    })();
  } else {
    const ds = await openWebDataset(options.dataset, { split });
    if (ds.type !== 'classification')
      throw new DatasetError(
        `${options.dataset} is a ${ds.type} webdataset; zero-shot classification needs a classification one`,
      );
    const names = userClassNames ?? langNames ?? ds.classnames ?? undefined;
    if (!names) throw new DatasetError(`${options.dataset} has no classnames.txt; pass --classnames or --language`);
    if (ds.classnames && names.length !== ds.classnames.length) {
      const source = userClassNames ? String(options.classNames) : `the built-in ${language} ImageNet class-name list`;
      throw new DatasetError(
        `${source} has ${names.length} names but ${options.dataset}/classnames.txt has ${ds.classnames.length}`,
      );
    }
    classNames = names;
    templates ??= language ? undefined : (ds.templates ?? undefined);
    const shardKeys = new Map(ds.shards.map((shard) => [shard, fileKey(shard)]));
    const limit = options.limit ?? Infinity;
    itemsSource = (async function* () {
      let n = 0;
      for await (const it of ds.items()) {
        if (n++ >= limit) return;
        const name = `${path.basename(it.shard)}/${it.key}`;
        yield {
          key: `wds:${shardKeys.get(it.shard)}#${it.key}`,
          name,
          label: it.label!,
          load: decode(name, async () => it.image),
        };
      }
    })();
  }
  templates ??= await loadTemplates(language ?? 'en');
  if (templates.length === 0) throw new UsageError('no prompt templates');
  // Fill every prompt before any encoding, so that a bad template fails at once.
  const prompts = classNames.flatMap((c) => templates.map((t) => fillTemplate(t, c)));

  const ctx = await withModel(s, options.model);
  const text = await encodeTextsCached(ctx, prompts, 'building the classifier', Math.max(ctx.batchSize, 32));
  const D = ctx.model.dim;
  const T = templates.length;
  const classifier = ensembleClassEmbeddings(
    classNames.map((_, c) => matrix(text.embeddings.data.slice(c * T * D, (c + 1) * T * D), T, D)),
  );

  const enc = imageEncoder(ctx, 'classification', total);
  const targets: number[] = [];
  const itemNames: string[] = [];
  for await (const it of itemsSource) {
    if (!Number.isInteger(it.label) || it.label < 0 || it.label >= classNames.length) {
      throw new DatasetError(`${it.name}: label ${it.label} is outside the ${classNames.length} class names`);
    }
    targets.push(it.label);
    itemNames.push(it.name);
    await enc.add(it.key, it.name, it.load);
  }
  const imageEmbeddings = await enc.finish();
  if (imageEmbeddings.rows === 0) throw new DatasetError(`no images in ${options.dataset}`);
  const logits = zeroShotLogits(imageEmbeddings, classifier, 100);
  const targetArray = Int32Array.from(targets);
  const metrics = zeroShotClassificationMetrics(logits, targetArray);
  const result: EvalResult = {
    model: `${ctx.model.name} (InternVL-${ctx.mode})`,
    dataset: options.datasetName ?? datasetLabel(options.dataset),
    task: 'zeroshot_classification',
    language: language ?? 'en',
    metrics: { ...metrics },
    extra: {
      mode: ctx.mode,
      dataset_path: options.dataset,
      dataset_format: kind === 'folder' ? 'image-folder' : 'webdataset',
      images: imageEmbeddings.rows,
      classes: classNames.length,
      templates: T,
      transform: 'classification',
      images_encoded: enc.stats.encoded,
      images_from_cache: enc.stats.cached,
      texts_encoded: text.stats.encoded,
      texts_from_cache: text.stats.cached,
      seconds: (Date.now() - started) / 1000,
    },
  };
  return { result, logits, targets: targetArray, classNames, templates, items: itemNames, imageEmbeddings, classifier };
}

// ---------------------------------------------------------------------------------------------------------
// Image–text retrieval.

export interface RetrievalOptions extends EvalCommonOptions {
  /** A caption file (Karpathy JSON, COCO captions, `[{image, caption}]`, Flickr txt) or a retrieval webdataset folder. */
  dataset: string;
  /** Folder the caption file's image paths are relative to (default: the file's folder). */
  imageRoot?: string;
  /** Karpathy split (default 'test'), or the webdataset split. */
  split?: string;
  /** CLIP_benchmark's pre_caption (default on; off with `xtd`). */
  preCaption?: boolean;
  /** XTD10 protocol: report image→text R@10 only. */
  xtd?: boolean;
}

export interface RetrievalRun {
  result: EvalResult;
  /** [texts, images] cosine similarities. */
  scores: Matrix;
  texts: string[];
  textImageIndex: Int32Array;
  images: string[];
}

/** The order InternVL's tables use: image→text R@1/5/10, then text→image R@1/5/10. */
const RETRIEVAL_ORDER = [1, 5, 10]
  .map((k) => `text_retrieval_recall@${k}`)
  .concat([1, 5, 10].map((k) => `image_retrieval_recall@${k}`));

/**
 * CLIP_benchmark zero-shot retrieval: retrieval transform (Resize((224, 224))), scores = text @ imageᵀ of
 * normalised embeddings, `text_retrieval_recall@K` = image→text, `image_retrieval_recall@K` = text→image, a hit
 * when any positive is in the top K; `mean_recall` = the mean of the six.
 */
export async function runRetrieval(options: RetrievalOptions): Promise<RetrievalRun> {
  const s = settings(options);
  const started = Date.now();
  const xtd = options.xtd ?? false;
  // InternVL's CLIP_benchmark applies pre_caption to flickr30k / mscoco_captions, not to the multilingual XTD set.
  const pre = options.preCaption ?? !xtd;
  let st: fs.Stats;
  try {
    st = fs.statSync(options.dataset);
  } catch {
    throw new DatasetError(`dataset not found: ${options.dataset}`);
  }
  const texts: string[] = [];
  const index: number[] = [];
  const imageNames: string[] = [];
  let enc: ImageEncoder;
  let ctx: Ctx;
  if (st.isDirectory()) {
    const ds = await openWebDataset(options.dataset, { split: options.split ?? 'test' });
    if (ds.type !== 'retrieval')
      throw new DatasetError(
        `${options.dataset} is a ${ds.type} webdataset; retrieval needs one whose dataset_type.txt says retrieval`,
      );
    const shardKeys = new Map(ds.shards.map((shard) => [shard, fileKey(shard)]));
    ctx = await withModel(s, options.model);
    enc = imageEncoder(ctx, 'retrieval', undefined);
    for await (const it of ds.items()) {
      if (options.limit !== undefined && imageNames.length >= options.limit) break;
      const name = `${path.basename(it.shard)}/${it.key}`;
      for (const c of it.captions!) {
        texts.push(pre ? preCaption(c) : c);
        index.push(imageNames.length);
      }
      imageNames.push(name);
      await enc.add(
        `wds:${shardKeys.get(it.shard)}#${it.key}`,
        name,
        decode(name, async () => it.image),
      );
    }
  } else {
    const ds = await readCaptionDataset(options.dataset, {
      imageRoot: options.imageRoot,
      split: options.split,
      preCaption: pre,
    });
    const images = options.limit ? ds.images.slice(0, options.limit) : ds.images;
    for (const im of images) {
      for (const c of im.captions) {
        texts.push(c);
        index.push(imageNames.length);
      }
      imageNames.push(im.key);
    }
    // Missing image files fail here, before the model loads.
    const keys = images.map((im) => fileKey(im.path));
    ctx = await withModel(s, options.model);
    enc = imageEncoder(ctx, 'retrieval', images.length);
    for (let i = 0; i < images.length; i++)
      await enc.add(
        keys[i],
        images[i].key,
        decode(images[i].path, () => images[i].readImage()),
      );
  }
  if (imageNames.length === 0) throw new DatasetError(`no images in ${options.dataset}`);
  if (texts.length === 0) throw new DatasetError(`no captions in ${options.dataset}`);
  const text = await encodeTextsCached(ctx, texts, 'encoding captions', Math.max(ctx.batchSize, 32));
  const imageEmbeddings = await enc.finish();
  const scores = retrievalScores(text.embeddings, imageEmbeddings);
  const textImageIndex = Int32Array.from(index);
  const all = retrievalRecall(scores, textImageIndex, [1, 5, 10]);
  const metrics: Record<string, number> = {};
  if (xtd) {
    metrics['text_retrieval_recall@10'] = all['text_retrieval_recall@10'];
  } else {
    for (const k of RETRIEVAL_ORDER) metrics[k] = all[k];
    metrics.mean_recall = meanRecall(all);
  }
  const result: EvalResult = {
    model: `${ctx.model.name} (InternVL-${ctx.mode})`,
    dataset: options.datasetName ?? datasetLabel(options.dataset),
    task: xtd ? 'zeroshot_retrieval_xtd' : 'zeroshot_retrieval',
    metrics,
    extra: {
      mode: ctx.mode,
      dataset_path: options.dataset,
      dataset_format: st.isDirectory() ? 'webdataset' : 'caption-file',
      images: imageNames.length,
      texts: texts.length,
      pre_caption: pre,
      transform: 'retrieval',
      images_encoded: enc.stats.encoded,
      images_from_cache: enc.stats.cached,
      texts_encoded: text.stats.encoded,
      texts_from_cache: text.stats.cached,
      seconds: (Date.now() - started) / 1000,
    },
  };
  return { result, scores, texts, textImageIndex, images: imageNames };
}

// ---------------------------------------------------------------------------------------------------------
// Video–text retrieval (MSR-VTT protocol).

export interface VideoRetrievalOptions extends EvalCommonOptions {
  /** Folder the captions file's video paths are relative to. */
  videos: string;
  /** JSON `[{video, caption}]`: one caption per video, caption i ↔ video i (test_msrvtt.py's metadata). */
  captions: string;
  /** Frames per video (default 8; test_msrvtt.py's default is 1). */
  numFrames?: number;
  /** Dual-softmax re-ranking (default on, as test_msrvtt.py). */
  dualSoftmax?: boolean;
  ffmpeg?: FfmpegOptions;
}

export interface VideoRetrievalRun {
  result: EvalResult;
  /** [texts, videos] cosine similarities, before any dual softmax. */
  scores: Matrix;
  /** [videos, D], rows unit norm. */
  videoEmbeddings: Matrix;
  /** [texts, D], not normalised. */
  textEmbeddings: Matrix;
  entries: { video: string; caption: string }[];
}

async function readVideoCaptions(file: string): Promise<{ video: string; caption: string }[]> {
  const json = await readJsonFile(file, { error: DatasetError, what: 'captions file' });
  if (!Array.isArray(json)) throw new DatasetError(`captions file ${file} must be a JSON list of {video, caption}`);
  return json.map((e, i) => {
    const o = e as Record<string, unknown>;
    if (!o || typeof o.video !== 'string' || typeof o.caption !== 'string')
      throw new DatasetError(`captions file ${file}: entry ${i} needs "video" and "caption" strings`);
    return { video: o.video, caption: o.caption };
  });
}

/**
 * test_msrvtt.py: captions as they are (`'summarize:'` prefix, no pre_caption), F frames per video by the MSR-VTT
 * rule, frames through the classification transform (≈ CLIPImageProcessor), frame embeddings averaged and
 * normalised; t2v / v2t R@1/5/10 with dual softmax unless turned off; `mean_recall` = the mean of the six.
 */
export async function runVideoRetrieval(options: VideoRetrievalOptions): Promise<VideoRetrievalRun> {
  const s = settings(options);
  const started = Date.now();
  const numFrames = options.numFrames ?? DEFAULT_VIDEO_FRAMES;
  if (!Number.isInteger(numFrames) || numFrames < 1)
    throw new UsageError(`frames must be an integer >= 1, got ${numFrames}`);
  const dsl = options.dualSoftmax ?? true;
  let isDir = false;
  try {
    isDir = fs.statSync(options.videos).isDirectory();
  } catch {
    throw new DatasetError(`video folder not found: ${options.videos}`);
  }
  if (!isDir) throw new DatasetError(`not a folder: ${options.videos}`);
  let entries = await readVideoCaptions(options.captions);
  if (options.limit) entries = entries.slice(0, options.limit);
  if (entries.length === 0) throw new DatasetError(`no videos in ${options.captions}`);
  const paths = entries.map((e) => {
    const place = resolveInside(options.videos, e.video);
    if ('refused' in place) throw new DatasetError(`captions file ${options.captions}: video ${place.refused}`);
    return place.path;
  });
  const keys = paths.map((p) => fileKey(p));
  const ctx = await withModel(s, options.model);

  const text = await encodeTextsCached(
    ctx,
    entries.map((e) => e.caption),
    'encoding captions',
    Math.max(ctx.batchSize, 32),
  );
  const transform: ImageTransform = 'classification';
  const cache = openCache(ctx, {
    kind: 'video',
    mode: ctx.mode,
    transform,
    imageSize: ctx.model.imageSize,
    frames: numFrames,
    sampling: 'msrvtt',
  });
  const D = ctx.model.dim;
  const out = new Float32Array(entries.length * D);
  const stats: CacheStats = { encoded: 0, cached: 0 };
  // Encoded clips the MSR-VTT rule cannot take F frames from (sampled by segments instead of failing the eval).
  let segmentSampled = 0;
  const bar = ctx.progress('encoding videos');
  const encodeFrames = (frames: readonly RgbImage[]) =>
    ctx.model.encodeImages(frames, { mode: ctx.mode, transform, batchSize: ctx.batchSize });
  for (let i = 0; i < entries.length; i++) {
    let emb = cache?.get(keys[i]);
    if (emb) {
      stats.cached++;
    } else {
      const video = await embedVideo(paths[i], encodeFrames, { ...options.ffmpeg, numFrames, sampling: 'msrvtt' });
      if (video.sampling !== 'msrvtt') segmentSampled++;
      emb = video.embedding;
      cache?.put([[keys[i], emb]]);
      stats.encoded++;
    }
    out.set(emb, i * D);
    bar.update(i + 1, entries.length, entries[i].video);
  }
  bar.finish();
  const videoEmbeddings = matrix(out, entries.length, D);
  const scores = retrievalScores(text.embeddings, videoEmbeddings);
  const all = msrvttRetrievalMetrics(scores, { dualSoftmax: dsl });
  const metrics: Record<string, number> = {};
  for (const dir of ['t2v', 'v2t'])
    for (const k of [1, 5, 10]) metrics[`${dir}_retrieval_recall@${k}`] = all[`${dir}_retrieval_recall@${k}`];
  metrics.mean_recall = meanRecall(all);
  const result: EvalResult = {
    model: `${ctx.model.name} (InternVL-${ctx.mode})`,
    dataset: options.datasetName ?? datasetLabel(options.captions),
    task: 'video_retrieval',
    metrics,
    extra: {
      mode: ctx.mode,
      videos_path: options.videos,
      captions_path: options.captions,
      videos: entries.length,
      frames: numFrames,
      sampling: 'msrvtt',
      transform,
      dual_softmax: dsl,
      videos_encoded: stats.encoded,
      videos_segment_sampled: segmentSampled,
      videos_from_cache: stats.cached,
      texts_encoded: text.stats.encoded,
      texts_from_cache: text.stats.cached,
      seconds: (Date.now() - started) / 1000,
    },
  };
  return { result, scores, videoEmbeddings, textEmbeddings: text.embeddings, entries };
}
