/** Zero-shot image classification as CLIP_benchmark runs it for InternVL-C/G (acc1, acc5, mean per-class recall). */
import fs from 'node:fs';
import path from 'node:path';

import { UsageError } from '../../core/errors.js';
import { ensembleClassEmbeddings, matrix, zeroShotLogits, type Matrix } from '../../core/matrix.js';
import type { RgbImage } from '../../processing/image.js';
import { fillTemplate } from '../../tasks/clip.js';
import { loadClassNames, loadTemplates, readStringList, ZEROSHOT_LANGUAGES } from '../../tasks/zeroshot_prompts.js';
import { DatasetError } from '../../core/errors.js';
import { readImageFolder } from './datasets/image_folder.js';
import { openWebDataset } from './datasets/webdataset.js';
import { zeroShotClassificationMetrics } from './metrics.js';
import type { EvalResult } from './report.js';
import { fileKey } from './embedding_cache.js';
import { decode, encodeTextsCached, imageEncoder } from './encoders.js';
import { datasetLabel, settings, withModel, type EvalCommonOptions } from './run.js';

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
