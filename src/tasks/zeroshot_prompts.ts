/**
 * The zero-shot prompt templates and class names the InternVL evaluation uses (CLIP_benchmark's files, shipped in
 * `assets/zeroshot/`): `{lang}_zeroshot_classification_templates.json` and `{lang}_classnames.json`, keyed by dataset.
 * A name selects a built-in language set; a path reads a .json (list, or keyed by dataset) or .txt (one per line).
 */
import fs from 'node:fs';
import { UsageError } from '../core/errors.js';

export const ZEROSHOT_LANGUAGES = ['en', 'cn', 'jp', 'ar', 'it'] as const;

function assetPath(file: string): URL {
  // Same relative path from src/tasks (tsx) and dist/tasks (built).
  return new URL(`../../assets/zeroshot/${file}`, import.meta.url);
}

function readList(source: string | URL, what: string, dataset: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(source, 'utf8');
  } catch (error) {
    throw new UsageError(`${String(source)}: cannot read ${what} (${(error as NodeJS.ErrnoException).code ?? error})`);
  }
  if (String(source).endsWith('.txt')) return text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${String(source)}: ${what} file is not valid JSON (${(error as Error).message})`);
  }
  const list = Array.isArray(parsed) ? parsed : (parsed as Record<string, unknown>)[dataset];
  if (!Array.isArray(list) || !list.every((t) => typeof t === 'string')) {
    throw new UsageError(`${String(source)}: expected a list of strings${Array.isArray(parsed) ? '' : ` under "${dataset}"`}`);
  }
  return list as string[];
}

function resolve(spec: string, suffix: string, what: string, dataset: string): string[] {
  if ((ZEROSHOT_LANGUAGES as readonly string[]).includes(spec)) return readList(assetPath(`${spec}_${suffix}.json`), what, dataset);
  if (!fs.existsSync(spec)) {
    throw new UsageError(`${what} '${spec}' is neither a built-in language (${ZEROSHOT_LANGUAGES.join(', ')}) nor a file`);
  }
  return readList(spec, what, dataset);
}

/** Prompt templates (`{c}` marks the class name). */
export function loadTemplates(spec: string, dataset = 'imagenet1k'): string[] {
  return resolve(spec, 'zeroshot_classification_templates', 'templates', dataset);
}

/** Class names, in class-index order. */
export function loadClassNames(spec: string, dataset = 'imagenet1k'): string[] {
  return resolve(spec, 'classnames', 'class names', dataset);
}
