/**
 * Zero-shot prompt templates and class names. The built-in sets are the files the InternVL evaluation uses
 * (CLIP_benchmark's, shipped in `assets/zeroshot/`): `{lang}_zeroshot_classification_templates.json` and
 * `{lang}_classnames.json`, keyed by dataset. User files: `.txt` (one per line), a JSON list, or such a table.
 */
import { DatasetError, UsageError } from '../core/errors.js';
import { errorCode, files } from '../core/io.js';
import { readJsonFile } from '../core/json.js';

export const ZEROSHOT_LANGUAGES = ['en', 'cn', 'jp', 'ar', 'it'] as const;

export type ListKind = 'classnames' | 'templates';

const WHAT: Record<ListKind, string> = { classnames: 'class-names file', templates: 'templates file' };

async function assetPath(file: string): Promise<string> {
  // Same relative path from src/tasks (tsx) and dist/tasks (built).
  return (await files.get()).fromUrl(new URL(`../../assets/zeroshot/${file}`, import.meta.url).href);
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await (await files.get()).readText(path);
  } catch (e) {
    throw new DatasetError(`cannot read ${what} ${path}: ${errorCode(e) ?? (e as Error).message}`);
  }
}

function readJson(path: string, what: string): Promise<unknown> {
  return readJsonFile(path, { error: DatasetError, what });
}

/**
 * A CLIP_benchmark table (`{dataset: [strings]}`) at `dataset`. For templates, a dataset that is not listed falls
 * back to the `imagenet1k` list as CLIP_benchmark does; class names have no fallback. A `wds/`, `tfds/` or `vtab/`
 * prefix is dropped from the name first.
 */
export async function loadDatasetStrings(path: string, dataset: string, kind: ListKind): Promise<string[]> {
  const what = WHAT[kind];
  const json = await readJson(path, what);
  if (!json || typeof json !== 'object' || Array.isArray(json)) {
    throw new DatasetError(`${what} ${path} must be a JSON object mapping dataset names to lists of strings`);
  }
  const table = json as Record<string, unknown>;
  const name = /^(wds|tfds|vtab)\//.test(dataset) ? dataset.slice(dataset.lastIndexOf('/') + 1) : dataset;
  let list = table[name];
  if (list === undefined && kind === 'templates') list = table.imagenet1k;
  if (list === undefined) {
    const keys = Object.keys(table);
    throw new DatasetError(
      `${what} ${path} has no entry "${name}" (it has: ${keys.slice(0, 12).join(', ')}${keys.length > 12 ? ', …' : ''})`,
    );
  }
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) {
    throw new DatasetError(`${what} ${path}: entry "${name}" is not a list of strings`);
  }
  return list as string[];
}

/**
 * A list of strings from a user file: `.txt` = one per line (blank lines dropped, ends stripped); JSON = a list,
 * or a CLIP_benchmark table read at `dataset`.
 */
export async function readStringList(file: string, kind: ListKind, dataset = 'imagenet1k'): Promise<string[]> {
  const what = WHAT[kind];
  let list: string[];
  if (/\.json$/i.test(file)) {
    const json = await readJson(file, what);
    if (Array.isArray(json)) {
      if (!json.every((s) => typeof s === 'string'))
        throw new DatasetError(`${what} ${file} must be a list of strings`);
      list = json as string[];
    } else {
      list = await loadDatasetStrings(file, dataset, kind);
    }
  } else {
    list = (await readText(file, what))
      .split(/\r\n|\r|\n/)
      .map((l) => l.trim())
      .filter((l) => l.length > 0);
  }
  if (list.length === 0) throw new DatasetError(`${what} ${file} holds no entries`);
  return list;
}

async function resolve(spec: string, kind: ListKind, dataset: string): Promise<string[]> {
  if ((ZEROSHOT_LANGUAGES as readonly string[]).includes(spec)) {
    const file = kind === 'templates' ? `${spec}_zeroshot_classification_templates.json` : `${spec}_classnames.json`;
    return loadDatasetStrings(await assetPath(file), dataset, kind);
  }
  const fs = await files.get();
  if (!(await fs.isFile(spec)) && !(await fs.isDirectory(spec))) {
    throw new UsageError(
      `${kind === 'templates' ? 'templates' : 'class names'} '${spec}' is neither a built-in language (${ZEROSHOT_LANGUAGES.join(', ')}) nor a file`,
    );
  }
  return readStringList(spec, kind, dataset);
}

/** Prompt templates (`{c}` marks the class name): a built-in language or a file. */
export function loadTemplates(spec: string, dataset = 'imagenet1k'): Promise<string[]> {
  return resolve(spec, 'templates', dataset);
}

/** Class names in class-index order: a built-in language or a file. */
export function loadClassNames(spec: string, dataset = 'imagenet1k'): Promise<string[]> {
  return resolve(spec, 'classnames', dataset);
}
