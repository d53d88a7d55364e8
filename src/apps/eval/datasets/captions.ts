/** Caption files for retrieval: Karpathy JSON, CLIP_benchmark's COCO / Flickr / multilingual-COCO files, JSON(L). */
import { dirname } from 'node:path';

import { DatasetError } from '../../../core/errors.js';
import { preCaption } from '../../../processing/tokenizers/clip_text.js';

import { resolveInside } from '../../../core/node/contained_path.js';

import { pyStrip, readBytes, readJson, readJsonLines, readText } from './files.js';

export interface CaptionImage {
  key: string;
  path: string;
  captions: string[];
  readImage(): Promise<Buffer>;
}

export interface CaptionDataset {
  source: string;
  images: CaptionImage[];
  /** All captions, image by image. */
  texts: string[];
  /** textImageIndex[t] = index of the image caption t describes. */
  textImageIndex: Int32Array;
}

export interface CaptionDatasetOptions {
  /** Folder the image paths are relative to; the annotation file's folder by default. */
  imageRoot?: string;
  /**
   * Only for the Karpathy `{images: [...]}` form, which holds every split: keep the images of this split
   * ('test' by default; null keeps all).
   */
  split?: string | null;
  /** Apply CLIP_benchmark's {@link preCaption} (InternVL's fork does for flickr30k and mscoco_captions). */
  preCaption?: boolean | { maxWords: number };
}

export function str(v: unknown): v is string {
  return typeof v === 'string';
}

/**
 * Reads a retrieval annotation file. Recognised forms:
 * - JSON list `[{image, caption: string | string[]}]` (BLIP / Karpathy test files), or the same objects one per
 *   line in a `.jsonl` file;
 * - Karpathy `{images: [{filename, filepath?, split, sentences: [{raw}]}]}`;
 * - COCO captions `{images: [{id, file_name}], annotations: [{image_id, caption}]}` (CLIP_benchmark's
 *   coco_*_karpathy.json; images sorted by id, captions in file order, as torchvision's CocoCaptions);
 * - `{image_paths: [...], annotations: [...]}` (CLIP_benchmark's multilingual_mscoco_captions-{lang}.json,
 *   one caption per image);
 * - text `flickr30k_*_karpathy.txt`: a header line, then `name.jpg,caption` lines, grouped by image in
 *   first-seen order (split at the first `.jpg,`, as CLIP_benchmark's Flickr reader).
 */
export async function readCaptionDataset(
  annotationPath: string,
  opts: CaptionDatasetOptions = {},
): Promise<CaptionDataset> {
  const root = opts.imageRoot ?? dirname(annotationPath);
  const pairs: { file: string; captions: string[] }[] = [];
  const bad = (why: string) => new DatasetError(`caption file ${annotationPath}: ${why}`);

  if (/\.txt$/i.test(annotationPath)) {
    // Python's text mode reads \r\n, \r and \n as line ends (and only those).
    const lines = (await readText(annotationPath, 'caption file')).split(/\r\n|\r|\n/);
    const byImage = new Map<string, string[]>();
    lines.slice(1).forEach((raw, i) => {
      const line = pyStrip(raw);
      if (!line) return;
      const parts = line.split('.jpg,');
      if (parts.length !== 2) throw bad(`line ${i + 2} is not "<name>.jpg,<caption>"`);
      const img = `${parts[0]}.jpg`;
      if (!byImage.has(img)) byImage.set(img, []);
      byImage.get(img)!.push(parts[1]);
    });
    for (const [file, captions] of byImage) pairs.push({ file, captions });
  } else {
    const json = /\.jsonl$/i.test(annotationPath)
      ? await readJsonLines(annotationPath, 'caption file')
      : await readJson(annotationPath, 'caption file');
    if (Array.isArray(json)) {
      json.forEach((e, i) => {
        const o = e as Record<string, unknown>;
        if (!o || !str(o.image)) throw bad(`entry ${i} has no "image" string`);
        const cap = o.caption;
        const captions = str(cap) ? [cap] : Array.isArray(cap) && cap.every(str) ? (cap as string[]) : null;
        if (!captions) throw bad(`entry ${i} ("${o.image}") has no "caption" string or list of strings`);
        pairs.push({ file: o.image, captions });
      });
    } else if (json && typeof json === 'object') {
      const o = json as Record<string, unknown>;
      if (Array.isArray(o.image_paths) && Array.isArray(o.annotations)) {
        if (o.image_paths.length !== o.annotations.length)
          throw bad(`${o.image_paths.length} image_paths but ${o.annotations.length} annotations`);
        o.image_paths.forEach((p, i) => {
          const c = (o.annotations as unknown[])[i];
          if (!str(p) || !str(c)) throw bad(`image_paths/annotations entry ${i} is not a string`);
          pairs.push({ file: p, captions: [c] });
        });
      } else if (Array.isArray(o.images) && Array.isArray(o.annotations)) {
        const caps = new Map<number, string[]>();
        o.annotations.forEach((a, i) => {
          const r = a as Record<string, unknown>;
          if (!r || typeof r.image_id !== 'number' || !str(r.caption))
            throw bad(`annotation ${i} needs a numeric image_id and a caption`);
          if (!caps.has(r.image_id)) caps.set(r.image_id, []);
          caps.get(r.image_id)!.push(r.caption);
        });
        const imgs = o.images.map((m, i) => {
          const r = m as Record<string, unknown>;
          if (!r || typeof r.id !== 'number' || !str(r.file_name))
            throw bad(`image ${i} needs a numeric id and a file_name`);
          return { id: r.id, file: r.file_name };
        });
        imgs.sort((a, b) => a.id - b.id);
        for (const m of imgs) pairs.push({ file: m.file, captions: caps.get(m.id) ?? [] });
      } else if (Array.isArray(o.images)) {
        const split = opts.split === undefined ? 'test' : opts.split;
        o.images.forEach((m, i) => {
          const r = m as Record<string, unknown>;
          if (!r || !str(r.filename) || !Array.isArray(r.sentences))
            throw bad(`image ${i} needs "filename" and "sentences"`);
          if (split !== null && r.split !== split) return;
          const captions = r.sentences.map((s, j) => {
            const raw = (s as Record<string, unknown>)?.raw;
            if (!str(raw)) throw bad(`image ${i} ("${r.filename}") sentence ${j} has no "raw" string`);
            return raw;
          });
          pairs.push({ file: str(r.filepath) && r.filepath ? `${r.filepath}/${r.filename}` : r.filename, captions });
        });
        if (pairs.length === 0 && split !== null) throw bad(`no image has split "${split}"`);
      } else {
        throw bad(
          'unrecognised layout (expected a list of {image, caption}, {images: [...]}, or {image_paths, annotations})',
        );
      }
    } else {
      throw bad('unrecognised layout');
    }
  }

  const maxWords = opts.preCaption ? (typeof opts.preCaption === 'object' ? opts.preCaption.maxWords : 50) : 0;
  const images: CaptionImage[] = [];
  const texts: string[] = [];
  const index: number[] = [];
  pairs.forEach(({ file, captions }, i) => {
    const caps = maxWords ? captions.map((c) => preCaption(c, maxWords)) : captions;
    // A name from the annotation file must not reach outside the image root (`../`, `/etc/…`, a symlink out).
    const place = resolveInside(root, file);
    if ('refused' in place) throw bad(`image ${place.refused}`);
    const path = place.path;
    images.push({ key: file, path, captions: caps, readImage: readBytes(path) });
    for (const c of caps) {
      texts.push(c);
      index.push(i);
    }
  });
  return { source: annotationPath, images, texts, textImageIndex: Int32Array.from(index) };
}
