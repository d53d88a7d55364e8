/**
 * File names read from files (shard names in `model.safetensors.index.json`, dataset entries, names from the Hub)
 * become paths only through here: relative, without `..`, and — symlinks resolved — inside the folder they belong
 * to, so a checkpoint or dataset cannot make the tool open `/etc/shadow` or a file beside the model.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isSafeRelativeName, quoteName } from '../names.js';

/**
 * The folders a model's files may really live in: the folder itself, and for a Hugging Face cache snapshot
 * (`models--org--name/snapshots/<commit>`, whose entries are symlinks into `../../blobs`) the whole repo folder.
 */
function allowedRoots(realDir: string): string[] {
  const parent = path.dirname(realDir);
  if (path.basename(parent) === 'snapshots' && path.basename(path.dirname(parent)).startsWith('models--'))
    return [realDir, path.dirname(parent)];
  return [realDir];
}

function inside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/**
 * `dir/name` when `name` is a safe relative name whose real path (when it exists) stays inside `dir`; otherwise
 * the reason it is refused. A missing file is returned as is (the caller reports it as missing).
 */
export function resolveInside(dir: string, name: string): { path: string } | { refused: string } {
  if (!isSafeRelativeName(name)) return { refused: `${quoteName(name)} is not a plain relative file name` };
  const joined = path.join(dir, ...name.split('/'));
  let real: string;
  try {
    real = fs.realpathSync(joined);
  } catch {
    return { path: joined };
  }
  const roots = allowedRoots(fs.realpathSync(dir));
  if (!roots.some((root) => inside(root, real)))
    return { refused: `${quoteName(name)} leads outside ${dir} (to ${real})` };
  return { path: joined };
}
