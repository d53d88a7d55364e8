/** File helpers of the dataset readers, with the Python semantics the reference code relies on. */
import { readFile, stat } from 'node:fs/promises';

import { DatasetError } from '../../../core/errors.js';
import { PY_WHITESPACE } from '../../../core/python.js';
import { parseJson, readJsonFile } from '../../../core/json.js';

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
export function pyStrip(s: string): string {
  return s.replace(PY_STRIP, '');
}

export async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new DatasetError(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export function readJson(path: string, what: string): Promise<unknown> {
  return readJsonFile(path, { error: DatasetError, what });
}

/** JSON Lines: one value per non-blank line, as a list. */
export async function readJsonLines(path: string, what: string): Promise<unknown[]> {
  return splitLines(await readText(path, what)).flatMap((line, i) =>
    line.trim() ? [parseJson(line, path, { error: DatasetError, what, firstLine: i + 1 })] : [],
  );
}

export async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

export function readBytes(path: string): () => Promise<Buffer> {
  return async () => {
    try {
      return await readFile(path);
    } catch (e) {
      throw new DatasetError(`cannot read image ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
}
