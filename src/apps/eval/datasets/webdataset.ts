/** CLIP_benchmark webdataset exports: tar shards grouped into samples, plus classnames.txt / templates. */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { parseJson } from '../../../core/json.js';
import { DatasetError } from '../../../core/errors.js';

import { comparePython, exists, isDir, pyStrip, readText, splitLines } from './files.js';
import { readTar } from './tar.js';

export interface WdsSample {
  /** webdataset's `__key__`: the member path up to the first dot of its base name. */
  key: string;
  shard: string;
  /** Members by extension (lower-case, without the leading dot: 'jpg', 'cls', 'seg.png'…). */
  files: Map<string, Buffer>;
}

/** webdataset's base_plus_ext: key = path up to the first '.' of the base name, extension = the rest. */
function splitKey(name: string): [string, string] | null {
  const m = /^((?:.*\/|)[^.]+)[.]([^/]*)$/.exec(name);
  return m ? [m[1], m[2]] : null;
}

/**
 * Groups the files of one tar shard into samples by key, in archive order, as webdataset's
 * tarfile_to_samples does: consecutive members with the same key form one sample; names without an
 * extension and top-level `__*__` meta files are skipped; an extension repeated inside a sample is an error.
 */
export async function* readWdsShard(path: string): AsyncGenerator<WdsSample> {
  let cur: WdsSample | null = null;
  for await (const e of readTar(path)) {
    if (e.type !== 'file') continue;
    if (!e.name.includes('/') && e.name.startsWith('__') && e.name.endsWith('__')) continue;
    if (/^__[^/]*__($|\/)/.test(e.name)) continue;
    const kv = splitKey(e.name);
    if (!kv) continue;
    const [key, ext] = [kv[0], kv[1].toLowerCase()];
    if (!cur || cur.key !== key) {
      if (cur) yield cur;
      cur = { key, shard: path, files: new Map() };
    }
    if (cur.files.has(ext))
      throw new DatasetError(`duplicate member "${e.name}" (extension ${ext}) for key ${key} in ${path}`);
    cur.files.set(ext, e.data);
  }
  if (cur) yield cur;
}

export type WdsDatasetType = 'classification' | 'retrieval';

/** Image extensions in the order CLIP_benchmark looks for them. */
export const WDS_IMAGE_EXTS = ['webp', 'png', 'jpg', 'jpeg'] as const;

export interface WdsItem {
  key: string;
  shard: string;
  imageExt: string;
  image: Buffer;
  /** Classification: the `cls` label. */
  label?: number;
  /** Retrieval: the `txt` member split into lines (Python splitlines). */
  captions?: string[];
  /** A `json` member, parsed, when present. */
  json?: unknown;
  files: Map<string, Buffer>;
}

export interface WdsDataset {
  root: string;
  split: string;
  type: WdsDatasetType;
  shards: string[];
  /** classnames.txt (stripped, blank lines dropped), or null when absent. */
  classnames: string[] | null;
  /** zeroshot_classification_templates.txt, or null when absent. */
  templates: string[] | null;
  /** Raw samples, shard by shard. */
  samples(): AsyncGenerator<WdsSample>;
  /** Samples decoded into image bytes + label / captions, as CLIP_benchmark's `to_tuple`. */
  items(): AsyncGenerator<WdsItem>;
}

async function optionalLines(path: string, what: string): Promise<string[] | null> {
  if (!(await exists(path))) return null;
  return splitLines(await readText(path, what))
    .map(pyStrip)
    .filter((l) => l.length > 0);
}

/**
 * Opens a CLIP_benchmark webdataset export:
 * `root/{split}/nshards.txt`, `root/{split}/0.tar …`, and optionally `root/classnames.txt`,
 * `root/zeroshot_classification_templates.txt`, `root/dataset_type.txt` (default classification).
 * Without nshards.txt, every `*.tar` of the split folder is used, in numeric-then-name order.
 */
export async function openWebDataset(root: string, opts: { split?: string } = {}): Promise<WdsDataset> {
  const split = opts.split ?? 'test';
  const splitDir = join(root, split);
  if (!(await isDir(splitDir))) throw new DatasetError(`webdataset split folder not found: ${splitDir}`);
  let shards: string[];
  const nshardsPath = join(splitDir, 'nshards.txt');
  if (await exists(nshardsPath)) {
    const txt = pyStrip(await readText(nshardsPath, 'shard count file'));
    const n = Number(txt);
    if (!/^\d+$/.test(txt) || n < 1)
      throw new DatasetError(`${nshardsPath} must hold a positive shard count, got "${txt.slice(0, 20)}"`);
    shards = Array.from({ length: n }, (_, i) => join(splitDir, `${i}.tar`));
    for (const s of shards)
      if (!(await exists(s))) throw new DatasetError(`missing shard ${s} (${nshardsPath} says ${n})`);
  } else {
    const names = (await readdir(splitDir)).filter((f) => f.endsWith('.tar'));
    const num = (f: string) => (/^\d+\.tar$/.test(f) ? Number(f.slice(0, -4)) : Infinity);
    names.sort((a, b) => num(a) - num(b) || comparePython(a, b));
    if (names.length === 0) throw new DatasetError(`no .tar shards in ${splitDir}`);
    shards = names.map((f) => join(splitDir, f));
  }
  const typeLines = await optionalLines(join(root, 'dataset_type.txt'), 'dataset type file');
  const typeName = (typeLines?.[0] ?? 'classification').toLowerCase();
  // CLIP_benchmark's third kind, multilabel (npy labels, mean average precision), has no evaluation here.
  if (typeName === 'multilabel')
    throw new DatasetError(`${root}: multilabel webdatasets are not evaluated (dataset_type.txt says multilabel)`);
  const type: WdsDatasetType = typeName === 'retrieval' ? 'retrieval' : 'classification';
  const classnames =
    type === 'retrieval' ? null : await optionalLines(join(root, 'classnames.txt'), 'class-names file');
  const templates =
    type === 'retrieval'
      ? null
      : await optionalLines(join(root, 'zeroshot_classification_templates.txt'), 'templates file');

  async function* samples(): AsyncGenerator<WdsSample> {
    for (const s of shards) yield* readWdsShard(s);
  }

  async function* items(): AsyncGenerator<WdsItem> {
    for await (const s of samples()) {
      const where = `sample ${s.key} of ${s.shard}`;
      const imageExt = WDS_IMAGE_EXTS.find((e) => s.files.has(e));
      if (!imageExt)
        throw new DatasetError(
          `${where} has no image (${WDS_IMAGE_EXTS.join('/')}); members: ${[...s.files.keys()].join(', ')}`,
        );
      const item: WdsItem = { key: s.key, shard: s.shard, imageExt, image: s.files.get(imageExt)!, files: s.files };
      if (type === 'retrieval') {
        const txt = s.files.get('txt');
        if (!txt) throw new DatasetError(`${where} has no txt captions`);
        item.captions = splitLines(txt.toString('utf8'));
      } else {
        const cls = s.files.get('cls');
        if (!cls) throw new DatasetError(`${where} has no cls label`);
        const t = pyStrip(cls.toString('utf8'));
        if (!/^[+-]?\d+$/.test(t)) throw new DatasetError(`${where}: cls "${t.slice(0, 20)}" is not an integer`);
        item.label = Number(t);
        if (classnames && (item.label < 0 || item.label >= classnames.length)) {
          throw new DatasetError(
            `${where}: label ${item.label} is outside the ${classnames.length} classes of classnames.txt`,
          );
        }
      }
      const js = s.files.get('json');
      if (js) item.json = parseJson(js.toString('utf8'), `${where}: json member`, { error: DatasetError });
      yield item;
    }
  }

  return { root, split, type, shards, classnames, templates, samples, items };
}
