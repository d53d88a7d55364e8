/** Image–text retrieval as CLIP_benchmark runs it for InternVL-C/G (recall@1/5/10 both ways). */
import fs from 'node:fs';
import path from 'node:path';

import { retrievalScores, type Matrix } from '../../core/matrix.js';
import { DatasetError } from '../../core/errors.js';
import { preCaption } from '../../processing/tokenizers/clip_text.js';
import { readCaptionDataset } from './datasets/captions.js';
import { openWebDataset } from './datasets/webdataset.js';
import { meanRecall, retrievalRecall } from './metrics.js';
import type { EvalResult } from './report.js';
import { fileKey } from './embedding_cache.js';
import { decode, encodeTextsCached, type ImageEncoder, imageEncoder } from './encoders.js';
import { datasetLabel, settings, withModel, type EvalContext, type EvalCommonOptions } from './run.js';

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
  let ctx: EvalContext;
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
