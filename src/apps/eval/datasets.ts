/**
 * Dataset readers for the zero-shot evaluations. They list items and read image bytes only when asked, so a
 * 50k-image folder or a multi-GB shard never sits in memory; decoding the bytes is the image module's job.
 *
 * - ImageNet-style folders (torchvision ImageFolder order),
 * - caption files for retrieval (Karpathy JSON, CLIP_benchmark's COCO / Flickr / multilingual-COCO files),
 * - CLIP_benchmark webdataset exports (tar shards + classnames.txt / zeroshot_classification_templates.txt).
 */
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { DatasetError, InternVLError, UsageError } from '../../core/errors.js';
import { PY_WHITESPACE } from '../../core/python.js';
import { preCaption } from '../../processing/tokenizers/clip_text.js';

import { resolveInside } from '../../core/node/contained_path.js';
import { parseJson, readJsonFile } from '../../core/json.js';

// ---------------------------------------------------------------------------------------------------------
// Small helpers that mirror Python semantics where the reference code relies on them.

/** Python's str ordering (by code point), which `sorted()` uses; UTF-8 byte order is the same order. */
export function comparePython(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Python's `str.splitlines()` (no keepends): all of Python's line boundaries, no trailing empty line. */
export function splitLines(text: string): string[] {
  if (text === '') return [];
  const parts = text.split(/\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/);
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

// Python's str.isspace() set; JS \s differs (it has U+FEFF, lacks U+001C–U+001F and U+0085).
const PY_STRIP = new RegExp(`^[${PY_WHITESPACE}]+|[${PY_WHITESPACE}]+$`, 'g');

/** Python's `str.strip()` with no argument. */
function pyStrip(s: string): string {
  return s.replace(PY_STRIP, '');
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new DatasetError(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function readJson(path: string, what: string): Promise<unknown> {
  return readJsonFile(path, { error: DatasetError, what });
}

/** JSON Lines: one value per non-blank line, as a list. */
async function readJsonLines(path: string, what: string): Promise<unknown[]> {
  return splitLines(await readText(path, what)).flatMap((line, i) =>
    line.trim() ? [parseJson(line, path, { error: DatasetError, what, firstLine: i + 1 })] : [],
  );
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function readBytes(path: string): () => Promise<Buffer> {
  return async () => {
    try {
      return await readFile(path);
    } catch (e) {
      throw new DatasetError(`cannot read image ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
}

// ---------------------------------------------------------------------------------------------------------
// ImageNet-style folders.

/** torchvision's IMG_EXTENSIONS, matched case-insensitively. */
export const IMAGE_EXTENSIONS: readonly string[] = [
  '.jpg',
  '.jpeg',
  '.png',
  '.ppm',
  '.bmp',
  '.pgm',
  '.tif',
  '.tiff',
  '.webp',
];

export interface ImageFolderOptions {
  /**
   * Display names for the classes: a JSON file path, a list (one per class in sorted folder order), or a
   * map from folder name (wnid) to name. A JSON file may hold a list, a folder→name map, a CLIP_benchmark
   * `{dataset: [names]}` table (pick the entry with `classNamesKey`, default `imagenet1k`), or Keras'
   * `{"0": [wnid, name], …}` index. Without it the folder names are used.
   */
  classNames?: string | readonly string[] | Readonly<Record<string, string>>;
  classNamesKey?: string;
  /**
   * The folder names (wnids) the `classNames` list is indexed by, when the folder holds only some of them:
   * ImageNet-A/-R/ObjectNet-style subsets, named through the 1000-class list as CLIP_benchmark does.
   */
  classNamesWnids?: readonly string[];
  /** Accepted file extensions (lower-case, with the dot); torchvision's list by default. */
  extensions?: readonly string[];
}

export interface ImageFolderItem {
  /** Path relative to the root, with '/' separators. */
  key: string;
  path: string;
  label: number;
  readImage(): Promise<Buffer>;
}

export interface ImageFolderDataset {
  root: string;
  /** Folder names in label order. */
  classes: string[];
  /** Display names in label order (for the prompt templates). */
  classNames: string[];
  items: ImageFolderItem[];
}

async function listDirEntries(dir: string): Promise<{ dirs: string[]; files: string[] }> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw new DatasetError(`cannot list folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const dirs: string[] = [];
  const files: string[] = [];
  for (const e of entries) {
    let isDirectory = e.isDirectory();
    // os.walk(followlinks=True) and os.scandir().is_dir() follow symlinks.
    if (e.isSymbolicLink()) isDirectory = await isDir(join(dir, e.name));
    (isDirectory ? dirs : files).push(e.name);
  }
  return { dirs, files };
}

/** All (dir, files) of a tree, like `sorted(os.walk(top, followlinks=True))`. */
async function walkSorted(top: string, rel: string, out: { rel: string; files: string[] }[], depth = 0): Promise<void> {
  if (depth > 64) throw new DatasetError(`folder tree under ${top} is deeper than 64 levels (symlink loop?)`);
  const { dirs, files } = await listDirEntries(rel ? join(top, rel) : top);
  out.push({ rel, files });
  for (const d of dirs) await walkSorted(top, rel ? `${rel}/${d}` : d, out, depth + 1);
}

async function resolveClassNames(classes: string[], opts: ImageFolderOptions, root: string): Promise<string[]> {
  const spec = opts.classNames;
  if (spec === undefined) return [...classes];
  let source = 'the classNames option';
  let value: unknown = spec;
  if (typeof spec === 'string') {
    source = spec;
    value = await readJson(spec, 'class-names file');
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      const entries = Object.entries(value as Record<string, unknown>);
      if (entries.length > 0 && entries.every(([, v]) => Array.isArray(v) && v.every((s) => typeof s === 'string'))) {
        const keras = entries.every(([k, v]) => /^\d+$/.test(k) && (v as string[]).length === 2);
        if (keras) {
          const map: Record<string, string> = {};
          for (const [, v] of entries) map[(v as string[])[0]] = (v as string[])[1];
          value = map;
        } else {
          const key = opts.classNamesKey ?? (entries.length === 1 ? entries[0][0] : 'imagenet1k');
          value = (value as Record<string, unknown>)[key];
          if (value === undefined) {
            throw new DatasetError(`class-names file ${spec} has no entry "${key}"; pick one with classNamesKey`);
          }
          source = `${spec} ["${key}"]`;
        }
      }
    }
  }
  if (Array.isArray(value)) {
    if (!value.every((s) => typeof s === 'string')) throw new DatasetError(`class names in ${source} must be strings`);
    const list = value as string[];
    if (opts.classNamesWnids) {
      if (opts.classNamesWnids.length !== list.length) {
        throw new UsageError(
          `classNamesWnids has ${opts.classNamesWnids.length} entries but ${source} has ${list.length} names`,
        );
      }
      const pos = new Map(opts.classNamesWnids.map((w, i) => [w, i]));
      return classes.map((c) => {
        const i = pos.get(c);
        if (i === undefined) throw new DatasetError(`class folder ${c} of ${root} is not in classNamesWnids`);
        return list[i];
      });
    }
    if (list.length !== classes.length) {
      throw new DatasetError(
        `${source} has ${list.length} class names but ${root} has ${classes.length} class folders`,
      );
    }
    return [...list];
  }
  if (value && typeof value === 'object') {
    const map = value as Record<string, unknown>;
    return classes.map((c) => {
      const n = map[c];
      if (typeof n !== 'string') throw new DatasetError(`${source} has no name for class folder ${c}`);
      return n;
    });
  }
  throw new DatasetError(`${source} must be a list of class names or a map from folder name to class name`);
}

/**
 * Reads a folder of class sub-folders as torchvision's ImageFolder: classes are the sub-folders sorted by
 * code point, labels their positions; each class folder is walked recursively (symlinks followed), in sorted
 * order, keeping files with an image extension. A class folder with no image is an error, as there.
 */
export async function readImageFolder(root: string, opts: ImageFolderOptions = {}): Promise<ImageFolderDataset> {
  if (!(await isDir(root))) throw new DatasetError(`image folder not found: ${root}`);
  const exts = (opts.extensions ?? IMAGE_EXTENSIONS).map((e) => e.toLowerCase());
  const classes = (await listDirEntries(root)).dirs.sort(comparePython);
  if (classes.length === 0) throw new DatasetError(`no class sub-folders in ${root}`);
  const items: ImageFolderItem[] = [];
  const empty: string[] = [];
  for (let label = 0; label < classes.length; label++) {
    const cls = classes[label];
    const walked: { rel: string; files: string[] }[] = [];
    await walkSorted(join(root, cls), '', walked);
    // sorted(os.walk(...)) orders by the directory path string.
    walked.sort((a, b) =>
      comparePython(a.rel === '' ? cls : `${cls}/${a.rel}`, b.rel === '' ? cls : `${cls}/${b.rel}`),
    );
    const before = items.length;
    for (const { rel, files } of walked) {
      for (const f of files.sort(comparePython)) {
        const lower = f.toLowerCase();
        if (!exts.some((e) => lower.endsWith(e))) continue;
        const key = rel ? `${cls}/${rel}/${f}` : `${cls}/${f}`;
        const path = join(root, key);
        items.push({ key, path, label, readImage: readBytes(path) });
      }
    }
    if (items.length === before) empty.push(cls);
  }
  if (empty.length) {
    throw new DatasetError(
      `no image files (${exts.join(' ')}) in class folder${empty.length > 1 ? 's' : ''} ${empty.slice(0, 5).join(', ')}${empty.length > 5 ? ', …' : ''} of ${root}`,
    );
  }
  const classNames = await resolveClassNames(classes, opts, root);
  return { root, classes, classNames, items };
}

// ---------------------------------------------------------------------------------------------------------
// Caption datasets for retrieval.

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

function str(v: unknown): v is string {
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

// ---------------------------------------------------------------------------------------------------------
// Streaming POSIX tar reader.

export interface TarEntry {
  name: string;
  /** 'file', 'directory', 'symlink', 'link' or 'other' (devices, fifos…). */
  type: 'file' | 'directory' | 'symlink' | 'link' | 'other';
  size: number;
  /** The member's bytes (empty for non-files). */
  data: Buffer;
  /** Byte offset of the member's header in the archive, for error messages. */
  offset: number;
}

/** Pulls exact byte counts out of a chunked stream. */
class ChunkReader {
  private chunks: Buffer[] = [];
  private avail = 0;
  private done = false;
  position = 0;

  constructor(private readonly it: AsyncIterator<Buffer>) {}

  /** Returns n bytes, or fewer only at end of stream. */
  async read(n: number): Promise<Buffer> {
    while (this.avail < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else if (r.value.length) {
        this.chunks.push(r.value);
        this.avail += r.value.length;
      }
    }
    const take = Math.min(n, this.avail);
    let out: Buffer;
    if (this.chunks.length && this.chunks[0].length >= take) {
      out = this.chunks[0].subarray(0, take);
      this.chunks[0] = this.chunks[0].subarray(take);
      if (this.chunks[0].length === 0) this.chunks.shift();
    } else {
      out = Buffer.allocUnsafe(take);
      let o = 0;
      while (o < take) {
        const c = this.chunks[0];
        const k = Math.min(c.length, take - o);
        c.copy(out, o, 0, k);
        o += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.avail -= take;
    this.position += take;
    return out;
  }

  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const b = await this.read(Math.min(left, 1 << 20));
      if (b.length === 0) break;
      left -= b.length;
    }
    return n - left;
  }
}

function cString(b: Buffer, start: number, len: number): string {
  const end = b.indexOf(0, start);
  return b.toString('utf8', start, end === -1 || end > start + len ? start + len : end);
}

/** Octal ASCII, or GNU base-256 when the top bit of the first byte is set. */
function tarNumber(b: Buffer, start: number, len: number): number {
  if (b[start] & 0x80) {
    let v = b[start] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[start + i];
    return v;
  }
  const s = b
    .toString('latin1', start, start + len)
    .replace(/[\0 ]+$/, '')
    .replace(/^[ ]+/, '')
    .replace(/\0.*$/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return NaN;
  return parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = tarNumber(h, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : h[i];
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  // Some old tar writers summed signed chars.
  return stored === unsigned || stored === signed;
}

function parsePax(data: Buffer, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break;
    const sp = data.indexOf(0x20, pos);
    const len = sp === -1 ? NaN : Number(data.toString('latin1', pos, sp));
    if (!Number.isInteger(len) || len <= 0 || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new DatasetError(`bad pax extended header in ${where}`);
    }
    const rec = data.toString('utf8', sp + 1, pos + len - 1);
    const eq = rec.indexOf('=');
    if (eq <= 0) throw new DatasetError(`bad pax record "${rec.slice(0, 40)}" in ${where}`);
    out[rec.slice(0, eq)] = rec.slice(eq + 1);
    pos += len;
  }
  return out;
}

/**
 * Streams the members of a POSIX (ustar/pax) or GNU tar file: 512-byte blocks, pax `path`/`size` overrides
 * (per-member and global), GNU long names. Member data is read into memory one member at a time.
 */
export async function* readTar(path: string): AsyncGenerator<TarEntry> {
  let stream;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error('not a file');
    stream = createReadStream(path, { highWaterMark: 1 << 20 });
  } catch (e) {
    throw new DatasetError(
      `cannot read tar file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
  const iter = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const r = new ChunkReader(iter);
  const globalPax: Record<string, string> = {};
  let pax: Record<string, string> | null = null;
  let longName: string | null = null;
  let sawAny = false;
  try {
    for (;;) {
      const offset = r.position;
      const h = await r.read(512);
      if (h.length === 0) {
        if (!sawAny) throw new DatasetError(`empty tar file: ${path}`);
        return; // EOF without the two zero blocks: tolerated, as GNU tar does
      }
      if (h.length < 512) throw new DatasetError(`truncated tar file ${path} (partial header at byte ${offset})`);
      if (h.every((b) => b === 0)) return;
      if (!checksumOk(h)) {
        throw new DatasetError(
          sawAny ? `corrupt tar header at byte ${offset} of ${path}` : `not a tar file (bad header checksum): ${path}`,
        );
      }
      sawAny = true;
      const typeflag = String.fromCharCode(h[156] || 0x30);
      let size = tarNumber(h, 124, 12);
      const magic = h.toString('latin1', 257, 263);
      let name = cString(h, 0, 100);
      if (magic === 'ustar\0') {
        const prefix = cString(h, 345, 155);
        if (prefix) name = `${prefix}/${name}`;
      }
      const ext = { ...globalPax, ...(pax ?? {}) };
      if (ext.size !== undefined && typeflag !== 'x' && typeflag !== 'g') size = Number(ext.size);
      if (!Number.isFinite(size) || size < 0)
        throw new DatasetError(`bad member size in tar header at byte ${offset} of ${path}`);
      const padded = Math.ceil(size / 512) * 512;

      const readData = async (): Promise<Buffer> => {
        const data = await r.read(size);
        if (data.length < size)
          throw new DatasetError(`truncated tar file ${path} (member "${name}" at byte ${offset})`);
        const pad = padded - size;
        if (pad && (await r.skip(pad)) < pad)
          throw new DatasetError(`truncated tar file ${path} (member "${name}" at byte ${offset})`);
        return data;
      };

      if (typeflag === 'x' || typeflag === 'g') {
        const rec = parsePax(await readData(), `${path} at byte ${offset}`);
        if (typeflag === 'g') Object.assign(globalPax, rec);
        else pax = rec;
        continue;
      }
      if (typeflag === 'L' || typeflag === 'K') {
        const d = await readData();
        const end = d.indexOf(0);
        // Only long names matter here; long link targets ('K') are read and dropped.
        if (typeflag === 'L') longName = d.toString('utf8', 0, end === -1 ? d.length : end);
        continue;
      }
      if (longName !== null) name = longName;
      if (ext.path !== undefined) name = ext.path;
      pax = null;
      longName = null;
      let type: TarEntry['type'];
      switch (typeflag) {
        case '0':
        case '7':
          type = 'file';
          break;
        case '5':
          type = 'directory';
          break;
        case '2':
          type = 'symlink';
          break;
        case '1':
          type = 'link';
          break;
        default:
          type = 'other';
      }
      if (type === 'file') {
        yield { name, type, size, data: await readData(), offset };
      } else {
        // Links and directories carry no data; anything else with a size is skipped whole.
        if (padded && (await r.skip(padded)) < padded)
          throw new DatasetError(`truncated tar file ${path} (member "${name}" at byte ${offset})`);
        yield { name, type, size, data: Buffer.alloc(0), offset };
      }
    }
  } catch (e) {
    if (e instanceof InternVLError) throw e;
    throw new DatasetError(
      `cannot read tar file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  } finally {
    stream.destroy();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Webdataset shards.

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

export type WdsDatasetType = 'classification' | 'retrieval' | 'multilabel';

/** Image extensions in the order CLIP_benchmark looks for them. */
const WDS_IMAGE_EXTS = ['webp', 'png', 'jpg', 'jpeg'] as const;

export interface WdsItem {
  key: string;
  shard: string;
  imageExt: string;
  image: Buffer;
  /** Classification: the `cls` label. */
  label?: number;
  /** Retrieval: the `txt` member split into lines (Python splitlines). */
  captions?: string[];
  /** Multilabel: the raw `npy` member (not decoded here). */
  npy?: Buffer;
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
  const type: WdsDatasetType =
    typeName === 'retrieval' ? 'retrieval' : typeName === 'multilabel' ? 'multilabel' : 'classification';
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
      } else if (type === 'multilabel') {
        const npy = s.files.get('npy');
        if (!npy) throw new DatasetError(`${where} has no npy labels`);
        item.npy = npy;
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
      if (js) {
        try {
          item.json = JSON.parse(js.toString('utf8'));
        } catch (e) {
          throw new DatasetError(`${where}: json member is not valid JSON: ${(e as Error).message.split('\n')[0]}`);
        }
      }
      yield item;
    }
  }

  return { root, split, type, shards, classnames, templates, samples, items };
}
