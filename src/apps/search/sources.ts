/**
 * What `internvl index` reads: image files (given, in folders walked recursively, or matched by a glob),
 * webdataset shards (`.tar`: one sample = one image, its `txt` the caption, its `json` the metadata) and caption
 * files (`.json` / `.jsonl` lists of `{image, caption}` and the other forms the eval harness reads). The readers
 * are the eval harness's; this module only turns their items into index sources with a stable URI.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { glob } from 'tinyglobby';
import { DatasetError, UsageError } from '../../core/errors.js';
import { readCaptionDataset } from '../eval/datasets/captions.js';
import { splitLines } from '../eval/datasets/files.js';
import { IMAGE_EXTENSIONS } from '../eval/datasets/image_folder.js';
import { readWdsShard } from '../eval/datasets/webdataset.js';

export interface SourceItem {
  /** Absolute path of the image file, or `<absolute shard path>#<member name>`. */
  uri: string;
  size: number;
  /** ms since the epoch. */
  mtime: number;
  caption: string | null;
  metadata: string | null;
  read(): Promise<Buffer>;
}

export interface SourceScan {
  /** Number of items when known before reading them (tar shards are counted only by reading them). */
  total: number | undefined;
  items(): AsyncGenerator<SourceItem>;
  /** Shards read in full by `items()`: a row of one whose member was not seen is gone. */
  shards: Set<string>;
}

/** The row id of a source: stable, short, and safe in URLs. */
export function sourceId(uri: string): string {
  return createHash('sha256').update(uri).digest('hex').slice(0, 32);
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The file a URI's bytes live in (the shard, for a webdataset member). */
export function sourceFile(uri: string): string {
  const hash = uri.indexOf('.tar#');
  return hash < 0 ? uri : uri.slice(0, hash + 4);
}

/** Reads the bytes of a source URI again (a worker, a thumbnail): the file, or the member of its shard. */
export async function readSource(uri: string): Promise<Buffer> {
  const file = sourceFile(uri);
  if (file === uri) return readFile(uri);
  const member = uri.slice(file.length + 1);
  for await (const sample of readWdsShard(file)) {
    for (const [ext, data] of sample.files) if (`${sample.key}.${ext}` === member) return data;
  }
  throw new DatasetError(`${file}: no member ${member}`);
}

const IMAGE_FILE = new RegExp(`(${IMAGE_EXTENSIONS.map((e) => e.replace('.', '\\.')).join('|')})$`, 'i');
const WDS_IMAGE_EXTS = ['webp', 'png', 'jpg', 'jpeg'];
const GLOB_CHARS = /[*?[{]/;

/** Resolves the command line's inputs (in the order given, folders sorted) into one scan. */
export async function scanSources(inputs: readonly string[]): Promise<SourceScan> {
  if (inputs.length === 0) throw new UsageError('nothing to index: give image files, folders, globs, .tar or .json(l)');
  const files: string[] = [];
  const shards: string[] = [];
  const captionFiles: string[] = [];
  for (const input of inputs) {
    if (GLOB_CHARS.test(input)) {
      const matched = await expandGlob(input);
      if (matched.length === 0) throw new UsageError(`${input}: the pattern matches no file`);
      for (const f of matched) (f.endsWith('.tar') ? shards : files).push(f);
      continue;
    }
    const abs = path.resolve(input);
    const info = await stat(abs).catch(() => null);
    if (!info) throw new UsageError(`${input}: no such file or folder`);
    if (info.isDirectory()) files.push(...(await walk(abs)).filter((f) => IMAGE_FILE.test(f)));
    else if (/\.tar$/i.test(abs)) shards.push(abs);
    else if (/\.jsonl?$/i.test(abs)) captionFiles.push(abs);
    else files.push(abs);
  }
  const captioned = [];
  for (const file of captionFiles) {
    const dataset = await readCaptionDataset(file);
    for (const image of dataset.images)
      captioned.push({ uri: path.resolve(image.path), caption: image.captions.join('\n') || null });
  }
  const plain = files.map((uri) => ({ uri, caption: null }));
  const listed = [...plain, ...captioned];

  async function* items(): AsyncGenerator<SourceItem> {
    for (const { uri, caption } of listed) {
      const info = await stat(uri).catch(() => null);
      // A missing or unreadable file shows up as unreadable when read, with the reason.
      yield {
        uri,
        size: info?.size ?? -1,
        mtime: info?.mtimeMs ?? -1,
        caption,
        metadata: null,
        read: () => readFile(uri),
      };
    }
    for (const shard of shards) {
      const { mtimeMs } = await stat(shard);
      for await (const sample of readWdsShard(shard)) {
        const ext = WDS_IMAGE_EXTS.find((e) => sample.files.has(e));
        if (!ext) continue;
        const data = sample.files.get(ext)!;
        const txt = sample.files.get('txt');
        const json = sample.files.get('json');
        yield {
          uri: `${shard}#${sample.key}.${ext}`,
          size: data.length,
          mtime: mtimeMs,
          caption: txt ? splitLines(txt.toString('utf8')).join('\n') : null,
          metadata: json ? json.toString('utf8') : null,
          read: async () => data,
        };
      }
      scanned.add(shard);
    }
  }
  const scanned = new Set<string>();
  return { total: shards.length > 0 ? undefined : listed.length, items, shards: scanned };
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full)));
    else if (entry.isFile()) out.push(full);
  }
  return out;
}

/** `photos/**\/*.jpg`, `shards/*.tar`, `{a,b}/*.png`: tinyglobby's patterns, from the folder before the first one. */
async function expandGlob(pattern: string): Promise<string[]> {
  const parts = path.resolve(pattern).split(path.sep);
  const firstGlob = parts.findIndex((p) => GLOB_CHARS.test(p));
  const base = parts.slice(0, firstGlob).join(path.sep) || path.sep;
  // As a folder walk does: dot files included, symlinked folders not entered; a folder the pattern names is not
  // expanded to everything under it.
  const matched = await glob(parts.slice(firstGlob).join('/'), {
    cwd: base,
    absolute: true,
    onlyFiles: true,
    expandDirectories: false,
    dot: true,
    followSymbolicLinks: false,
  });
  return matched.map((f) => path.resolve(f)).sort();
}
