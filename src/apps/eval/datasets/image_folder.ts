/** ImageNet-style folders (torchvision ImageFolder order): items listed, image bytes read only when asked. */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { DatasetError, UsageError } from '../../../core/errors.js';

import { comparePython, isDir, readBytes, readJson } from './files.js';

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
