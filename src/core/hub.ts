/**
 * `--model` as a local folder or a Hugging Face repo id (`org/name` or `org/name@revision`).
 *
 * Files go to the standard Hugging Face cache (`models--org--name/{blobs,snapshots,refs}`) so that Python's
 * huggingface_hub and this tool share one copy of multi-gigabyte checkpoints. Only the files a model needs are
 * fetched (configs, tokenizer, safetensors), each blob is downloaded once, interrupted downloads resume with
 * HTTP Range, and LFS blobs are checked against their sha256. When the Hub cannot be reached, a complete cached
 * snapshot is used with a notice, as huggingface_hub does. The parts: hub/env.ts (environment, cache paths),
 * hub/http.ts (requests, timeouts, retries), hub/blob.ts (one locked, resumed, verified download),
 * hub/snapshot.ts (snapshots, globs, offline resolution).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { storageError, writeFileAtomic } from './node/atomic_write.js';
import { isSafeRelativeName } from './names.js';
import { HubError, ModelLoadError, UsageError } from './errors.js';
import { blobComplete, downloadBlob, type RemoteFile } from './hub/blob.js';
import {
  blobLockPath,
  hubCacheDir,
  hubEndpoint,
  hubRetries,
  hubTimeoutMs,
  hubToken,
  isHubOffline,
  parseRepoId,
  repoCacheDir,
} from './hub/env.js';
import {
  errorCode,
  httpFailure,
  networkError,
  resolveUrl,
  send,
  TransientError,
  UnreachableError,
  withRetries,
  type HubContext,
} from './hub/http.js';
import { globToRegExp, isFile, linkIntoSnapshot, resolveOffline } from './hub/snapshot.js';

export interface DownloadProgress {
  /** Repo id, `org/name`. */
  repo: string;
  /** Path of the file inside the repo. */
  file: string;
  /** Bytes of this file on disk so far (a resumed download starts above 0). */
  bytesDone: number;
  /** Size of this file, when the server said. */
  totalBytes: number | undefined;
  /** This file is complete (verified and in place). */
  fileDone: boolean;
  /** Bytes on disk so far over every file this call downloads. */
  overallBytesDone: number;
  /** Total size of every file this call downloads (files already cached are not counted). */
  overallTotalBytes: number;
}

export interface ResolveModelOptions {
  /** Branch, tag or commit; default `main`. `org/name@rev` in the id sets it too. */
  revision?: string;
  /** Cache root; default HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Access token; default HF_TOKEN, else the $HF_HOME/token file. */
  token?: string;
  /** Never touch the network; default HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1. */
  offline?: boolean;
  /** Hub URL; default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /**
   * Globs selecting the repo files to fetch, replacing the default set. `*` and `?` stay inside one folder,
   * `**` crosses folders, a pattern ending in `/` takes a whole folder.
   */
  allowPatterns?: string[];
  onProgress?: (e: DownloadProgress) => void;
  fetchImpl?: typeof fetch;
  /** Attempts after the first on a dropped connection, a timeout or a 5xx/429; default INTERNVL_HUB_RETRIES, else 5. */
  retries?: number;
  /** Give up on a request that sends nothing for this long; default HF_HUB_DOWNLOAD_TIMEOUT (s), else 60 s. */
  timeoutMs?: number;
  /**
   * One-line notices: waiting for a quiet server or another process's download, retrying, using the cache because
   * the Hub cannot be reached. Default: stderr.
   */
  onNotice?: (line: string) => void;
}

/** What a model needs; custom Python code (*.py) and pickled weights (*.bin, *.pth) are left on the Hub. */
export const DEFAULT_ALLOW_PATTERNS: readonly string[] = Object.freeze([
  'config.json',
  'generation_config.json',
  'preprocessor_config.json',
  'tokenizer.json',
  'tokenizer.model',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
  'chat_template.json',
  'chat_template.jinja',
  'model.safetensors.index.json',
  '*.safetensors',
]);

const HEAD_CONCURRENCY = 4;
const COMMIT_RE = /^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$/;

/**
 * A folder holding the model's files: `idOrPath` itself when it is an existing directory, else the cache
 * snapshot of the Hub repo it names (downloading what is missing, unless offline).
 */
export async function resolveModelDir(idOrPath: string, options: ResolveModelOptions = {}): Promise<string> {
  try {
    const st = await fs.stat(idOrPath);
    if (st.isDirectory()) return idOrPath;
    throw new ModelLoadError(
      `model ${idOrPath}: is a file; give the folder that holds config.json, or a Hub repo id (org/name)`,
    );
  } catch (e) {
    if (e instanceof ModelLoadError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR')
      throw new ModelLoadError(`model ${idOrPath}: ${(e as Error).message}`, { cause: e });
  }
  const looksLikePath = /^(?:\.{1,2}[\\/]|[\\/~]|[A-Za-z]:)/.test(idOrPath) || idOrPath.includes('\\');
  const parsed = looksLikePath ? undefined : parseRepoId(idOrPath);
  if (!parsed) {
    throw new ModelLoadError(
      `model ${idOrPath}: no such folder, and not a Hugging Face repo id (org/name or org/name@revision)`,
    );
  }
  if (parsed.revision !== undefined && options.revision !== undefined && parsed.revision !== options.revision) {
    throw new UsageError(`model ${idOrPath}: revision @${parsed.revision} conflicts with revision ${options.revision}`);
  }
  const revision = parsed.revision ?? options.revision ?? 'main';
  if (!isSafeRelativeName(revision))
    throw new UsageError(`model ${idOrPath}: invalid revision ${JSON.stringify(revision)}`);

  const cacheDir = hubCacheDir(options.cacheDir);
  const repoDir = repoCacheDir(parsed.repoId, cacheDir);
  if (isHubOffline(options.offline))
    return resolveOffline(parsed.repoId, revision, cacheDir, repoDir, options.allowPatterns);

  const notice = options.onNotice ?? ((line: string) => process.stderr.write(`${line}\n`));
  const ctx: HubContext = {
    repoId: parsed.repoId,
    revision,
    endpoint: hubEndpoint(options.endpoint),
    token: hubToken(options.token),
    fetch: options.fetchImpl ?? fetch,
    retries: hubRetries(options.retries),
    timeoutMs: hubTimeoutMs(options.timeoutMs),
    notice,
  };
  try {
    return await resolveOnline(ctx, cacheDir, repoDir, options.allowPatterns, options.onProgress);
  } catch (error) {
    if (!(error instanceof HubError && isNetworkFailure(error.cause))) throw error;
    // As huggingface_hub: no network, but the cache holds what is needed.
    const cached = await resolveOffline(parsed.repoId, revision, cacheDir, repoDir, options.allowPatterns).catch(
      () => undefined,
    );
    if (cached === undefined) throw error;
    notice(`cannot reach ${ctx.endpoint} (${error.cause.message}); using the cached snapshot ${cached}`);
    return cached;
  }
}

function isNetworkFailure(e: unknown): e is Error {
  return e instanceof UnreachableError || e instanceof TransientError;
}

// ---------------------------------------------------------------------------------------------------------
// Online

async function listRepo(ctx: HubContext): Promise<{ sha: string | undefined; files: string[] }> {
  const url = `${ctx.endpoint}/api/models/${ctx.repoId}/revision/${encodeURIComponent(ctx.revision)}`;
  const what = `cannot list the files of ${ctx.repoId}@${ctx.revision}`;
  return withRetries(ctx, what, async () => {
    const { res, idle } = await send(ctx, url, 'GET', { Accept: 'application/json' }, false);
    try {
      if (!res.ok) {
        await res.body?.cancel().catch(() => {});
        throw httpFailure(ctx, res, what);
      }
      let body: unknown;
      try {
        body = await res.json();
      } catch (e) {
        if (idle.timedOut || errorCode(e)) throw networkError(e, url, idle);
        throw new HubError(`${what}: the answer of ${url} is not JSON`, { cause: e });
      }
      const info = body as { sha?: unknown; siblings?: unknown };
      if (!Array.isArray(info.siblings))
        throw new HubError(`${what}: the answer of ${url} has no file list (siblings)`);
      const files = info.siblings
        .map((s) => (s as { rfilename?: unknown }).rfilename)
        .filter((f): f is string => typeof f === 'string');
      const sha = typeof info.sha === 'string' ? info.sha : undefined;
      if (sha !== undefined && !COMMIT_RE.test(sha)) {
        throw new HubError(`${what}: the Hub answered an invalid commit ${JSON.stringify(sha)}`);
      }
      return { sha, files };
    } finally {
      idle.stop();
    }
  });
}

function normalizeEtag(v: string): string {
  return v.trim().replace(/^W\//, '').replace(/^"|"$/g, '');
}

async function headFile(ctx: HubContext, rev: string, file: string): Promise<RemoteFile> {
  const url = resolveUrl(ctx, rev, file);
  const what = `cannot download ${file} from ${ctx.repoId}@${ctx.revision}`;
  return withRetries(ctx, what, async () => {
    const { res, idle } = await send(ctx, url, 'HEAD', {}, true);
    idle.stop();
    const redirected = res.status >= 300 && res.status < 400;
    if (!res.ok && !redirected) throw httpFailure(ctx, res, what);
    const rawEtag = res.headers.get('x-linked-etag') ?? res.headers.get('etag');
    if (!rawEtag) throw new HubError(`${what}: the server sent no ETag, so the file cannot be cached`);
    const etag = normalizeEtag(rawEtag);
    // The etag names the blob on disk; anything path-like from a server is refused.
    if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(etag))
      throw new HubError(`${what}: unusable ETag ${JSON.stringify(rawEtag)}`);
    // On a redirect, Content-Length is that of the redirect's own body, not of the file.
    const sizeHeader = res.headers.get('x-linked-size') ?? (redirected ? null : res.headers.get('content-length'));
    const size = sizeHeader !== null && /^\d+$/.test(sizeHeader.trim()) ? Number(sizeHeader) : undefined;
    return { path: file, etag, size, commit: res.headers.get('x-repo-commit') ?? undefined, rev };
  });
}

async function resolveOnline(
  ctx: HubContext,
  cacheDir: string,
  repoDir: string,
  allowPatterns: string[] | undefined,
  onProgress: ((e: DownloadProgress) => void) | undefined,
): Promise<string> {
  const where = `${ctx.repoId}@${ctx.revision}`;
  const listing = await listRepo(ctx);
  const patterns = allowPatterns ?? DEFAULT_ALLOW_PATTERNS;
  const regexes = patterns.map(globToRegExp);
  const wanted = listing.files.filter((f) => regexes.some((r) => r.test(f)));
  for (const f of wanted) {
    if (!isSafeRelativeName(f)) throw new HubError(`${where}: the Hub listed an unsafe file name ${JSON.stringify(f)}`);
  }
  if (wanted.length === 0) {
    throw new ModelLoadError(`${where}: no file in the repo matches ${patterns.join(', ')}`);
  }
  if (!allowPatterns && !wanted.includes('config.json')) {
    throw new ModelLoadError(
      `${where}: the repo has no config.json, so it is not a model checkpoint this tool can load`,
    );
  }

  // Pinning every request to the listed commit keeps the snapshot consistent if the branch moves meanwhile.
  let commit = listing.sha;
  const snapshotFor = (c: string) => path.join(repoDir, 'snapshots', c);
  const todo = commit
    ? await filterAsync(wanted, async (f) => !(await isFile(path.join(snapshotFor(commit!), f))))
    : wanted;

  const remotes = await mapPool(todo, HEAD_CONCURRENCY, (f) => headFile(ctx, commit ?? ctx.revision, f));
  commit ??= remotes.find((r) => r.commit)?.commit;
  if (!commit || !COMMIT_RE.test(commit)) {
    throw new HubError(`${where}: the Hub gave no commit hash (neither sha in the file list nor X-Repo-Commit)`);
  }
  const snapshotDir = snapshotFor(commit);
  const blobsDir = path.join(repoDir, 'blobs');
  try {
    await fs.mkdir(blobsDir, { recursive: true });
  } catch (error) {
    throw storageError(error, blobsDir);
  }

  const toFetch: RemoteFile[] = [];
  for (const r of remotes) if (!(await blobComplete(path.join(blobsDir, r.etag), r.size))) toFetch.push(r);
  const overall = { done: 0, total: toFetch.reduce((s, r) => s + (r.size ?? 0), 0) };
  const fetching = new Set(toFetch);

  for (const r of remotes) {
    const blobPath = path.join(blobsDir, r.etag);
    if (fetching.has(r)) {
      const lock = blobLockPath(ctx.repoId, r.etag, cacheDir);
      await downloadBlob(ctx, r, blobPath, lock, overall, (p) =>
        onProgress?.({
          repo: ctx.repoId,
          file: r.path,
          totalBytes: r.size,
          overallTotalBytes: overall.total,
          ...p,
        }),
      );
    }
    await linkIntoSnapshot(snapshotDir, r.path, blobPath);
  }
  try {
    await fs.mkdir(snapshotDir, { recursive: true });
  } catch (error) {
    throw storageError(error, snapshotDir);
  }
  if (ctx.revision !== commit)
    await writeFileAtomic(path.join(repoDir, 'refs', ctx.revision), commit, { makeFolder: true });
  return snapshotDir;
}

async function filterAsync<T>(items: T[], pred: (t: T) => Promise<boolean>): Promise<T[]> {
  const keep = await Promise.all(items.map(pred));
  return items.filter((_, i) => keep[i]);
}

async function mapPool<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
