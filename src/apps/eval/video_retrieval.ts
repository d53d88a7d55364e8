/** Video–text retrieval as InternVL's video_retrieval/test_msrvtt.py runs it (MSR-VTT protocol). */
import fs from 'node:fs';
import { resolveInside } from '../../core/node/contained_path.js';
import { UsageError } from '../../core/errors.js';
import { readJsonFile } from '../../core/json.js';
import { matrix, retrievalScores, type Matrix } from '../../core/matrix.js';
import type { RgbImage } from '../../processing/image.js';
import type { FfmpegOptions } from '../../processing/video.js';
import type { ImageTransform } from '../../tasks/clip.js';
import { DEFAULT_VIDEO_FRAMES, embedVideo } from '../../tasks/video.js';
import { DatasetError } from '../../core/errors.js';
import { meanRecall, msrvttRetrievalMetrics } from './metrics.js';
import type { EvalResult } from './report.js';
import { fileKey } from './embedding_cache.js';
import { encodeTextsCached, openCache } from './encoders.js';
import { datasetLabel, settings, withModel, type CacheStats, type EvalCommonOptions } from './run.js';

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
