/**
 * The cache's snapshots (`snapshots/{commit}/…`, symlinks into `blobs/`): which files a selection (globs) takes,
 * linking a downloaded blob into a snapshot, and resolving a revision from the cache alone (offline, or when the
 * Hub cannot be reached) with a completeness check.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { isSafeRelativeName } from '../names.js';
import { HubError } from '../errors.js';

const COMMIT_RE = /^[0-9a-f]{40}$/;

export function globToRegExp(pattern: string): RegExp {
  const p = pattern.endsWith('/') ? `${pattern}**` : pattern;
  let re = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c === '*') {
      if (p[i + 1] === '*') {
        i++;
        if (p[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else {
          re += '.*';
        }
      } else {
        re += '[^/]*';
      }
    } else if (c === '?') {
      re += '[^/]';
    } else if (c === '[') {
      const end = p.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
      } else {
        let body = p.slice(i + 1, end);
        if (body.startsWith('!')) body = `^${body.slice(1)}`;
        re += `[${body.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else {
      re += c.replace(/[.+^${}()|\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

/** Glob match of a repo path: `*` and `?` stay inside one folder, `**` crosses folders. */
export function matchesGlob(pattern: string, filePath: string): boolean {
  return globToRegExp(pattern).test(filePath);
}

function isGlob(pattern: string): boolean {
  return /[*?[]/.test(pattern) || pattern.endsWith('/');
}

/** Points `snapshots/{commit}/{file}` at the blob with a relative link, as huggingface_hub does, so the cache can be moved. */
export async function linkIntoSnapshot(snapshotDir: string, file: string, blobPath: string): Promise<void> {
  const dest = path.join(snapshotDir, ...file.split('/'));
  await fs.mkdir(path.dirname(dest), { recursive: true });
  const target = path.relative(path.dirname(dest), blobPath);
  // Link under a temporary name, then rename over: atomic, and a concurrent process doing the same is harmless.
  const tmp = `${dest}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await fs.symlink(target, tmp);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // Windows without developer mode cannot make symlinks; a hard link still shares the blob's space.
    if (code !== 'EPERM' && code !== 'EACCES' && code !== 'ENOTSUP') throw e;
    try {
      await fs.link(blobPath, tmp);
    } catch {
      await fs.copyFile(blobPath, tmp);
    }
  }
  try {
    await fs.rename(tmp, dest);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
}

export async function resolveOffline(
  repoId: string,
  revision: string,
  cacheDir: string,
  repoDir: string,
  allowPatterns: string[] | undefined,
): Promise<string> {
  const where = `${repoId}@${revision}`;
  const how = 'offline (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1 or the offline option)';
  let commit: string | undefined;
  if (COMMIT_RE.test(revision) && (await isDir(path.join(repoDir, 'snapshots', revision)))) {
    commit = revision;
  } else {
    try {
      commit = (await fs.readFile(path.join(repoDir, 'refs', revision), 'utf8')).trim();
    } catch {
      commit = undefined;
    }
  }
  if (!commit || !isSafeRelativeName(commit) || commit.includes('/')) {
    throw new HubError(
      `${how}: ${where} is not in the cache ${cacheDir} (no ${path.join(repoDir, 'refs', revision)}); ` +
        `download it once with network access, or give a local folder`,
    );
  }
  const snapshotDir = path.join(repoDir, 'snapshots', commit);
  if (!(await isDir(snapshotDir))) {
    throw new HubError(
      `${how}: ${where} points to commit ${commit} but ${snapshotDir} does not exist; download it once with network access`,
    );
  }
  const missing = await missingSnapshotFiles(snapshotDir, allowPatterns);
  if (missing.length > 0) {
    throw new HubError(
      `${how}: the cached snapshot of ${where} (${snapshotDir}) lacks ${missing.join(', ')}; download it once with network access`,
    );
  }
  return snapshotDir;
}

/** Files in a snapshot, split into those that open and symlinks whose blob is gone. */
async function listSnapshot(dir: string): Promise<{ present: Set<string>; broken: string[] }> {
  const present = new Set<string>();
  const broken: string[] = [];
  async function walk(rel: string): Promise<void> {
    const entries = await fs.readdir(path.join(dir, rel), { withFileTypes: true });
    for (const ent of entries) {
      const r = rel ? `${rel}/${ent.name}` : ent.name;
      if (ent.isDirectory()) {
        await walk(r);
        continue;
      }
      try {
        const st = await fs.stat(path.join(dir, r));
        if (st.isFile()) present.add(r);
        else if (st.isDirectory()) await walk(r);
      } catch {
        broken.push(r);
      }
    }
  }
  await walk('');
  return { present, broken };
}

/**
 * Offline there is no file list to compare with, so completeness is judged from what a model must have:
 * config.json and the weights (every shard the index names), or each requested pattern.
 */
async function missingSnapshotFiles(dir: string, allowPatterns: string[] | undefined): Promise<string[]> {
  const { present, broken } = await listSnapshot(dir);
  const missing = new Set<string>(broken);
  if (allowPatterns) {
    for (const pat of allowPatterns) {
      if (!isGlob(pat)) {
        if (!present.has(pat)) missing.add(pat);
      } else if (![...present].some((f) => matchesGlob(pat, f))) {
        missing.add(`any file matching ${pat}`);
      }
    }
    return [...missing];
  }
  if (!present.has('config.json')) missing.add('config.json');
  const index = 'model.safetensors.index.json';
  if (present.has(index)) {
    let shards: string[] = [];
    try {
      const json = JSON.parse(await fs.readFile(path.join(dir, index), 'utf8')) as {
        weight_map?: Record<string, string>;
      };
      shards = [...new Set(Object.values(json.weight_map ?? {}))];
    } catch {
      missing.add(`${index} (unreadable)`);
    }
    for (const s of shards) if (!present.has(s)) missing.add(s);
  } else if (![...present].some((f) => f.endsWith('.safetensors'))) {
    missing.add('the weights (*.safetensors)');
  }
  return [...missing];
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

export async function isFile(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isFile();
  } catch {
    return false;
  }
}
