/** Image and text encoding through the embedding cache: only misses reach the model, a batch at a time. */
import { InternalError } from '../../core/errors.js';
import { matrix, type Matrix } from '../../core/matrix.js';
import type { ProgressReporter } from '../../core/progress.js';
import { loadImage, type RgbImage } from '../../processing/image.js';
import type { ImageTransform } from '../../tasks/clip.js';
import { EmbeddingCache } from './embedding_cache.js';
import type { CacheStats, EvalContext } from './run.js';

export function openCache(ctx: EvalContext, namespace: Record<string, unknown>): EmbeddingCache | null {
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
export class ImageEncoder {
  private readonly rows: Float32Array[] = [];
  private pending: { index: number; key: string; name: string; load: () => Promise<RgbImage> }[] = [];
  readonly stats: CacheStats = { encoded: 0, cached: 0 };

  constructor(
    private readonly ctx: EvalContext,
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

export function imageEncoder(ctx: EvalContext, transform: ImageTransform, total: number | undefined): ImageEncoder {
  const cache = openCache(ctx, { kind: 'image', mode: ctx.mode, transform, imageSize: ctx.model.imageSize });
  return new ImageEncoder(ctx, cache, transform, ctx.progress('encoding images'), total);
}

/** Text embeddings with the cache (keyed by the exact text; the same for modes C and G). */
export async function encodeTextsCached(
  ctx: EvalContext,
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

export function decode(name: string, bytes: () => Promise<Uint8Array>): () => Promise<RgbImage> {
  // The official transforms open images with PIL and never apply EXIF orientation.
  return async () => loadImage(await bytes(), { name, applyExifOrientation: false });
}
