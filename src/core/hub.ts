/**
 * `--model` as a local folder or a Hugging Face repo id (`org/name` or `org/name@revision`).
 *
 * Files go to the standard Hugging Face cache (`models--org--name/{blobs,snapshots,refs}`) so that Python's
 * huggingface_hub and this tool share one copy of multi-gigabyte checkpoints. Only the files a model needs are
 * fetched (configs, tokenizer, safetensors), each blob is downloaded once, interrupted downloads resume with
 * HTTP Range, and LFS blobs are checked against their sha256.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HubError, ModelLoadError, UsageError } from './errors.js';

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
  /** Attempts after the first on a dropped connection, a timeout or a 5xx/429; default 5. */
  retries?: number;
  /** Give up on a request that sends nothing for this long; default 60 s. */
  timeoutMs?: number;
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

const DEFAULT_ENDPOINT = 'https://huggingface.co';
const DEFAULT_RETRIES = 5;
const DEFAULT_TIMEOUT_MS = 60_000;
const HEAD_CONCURRENCY = 4;
const MAX_REDIRECTS = 10;
/** A lock not refreshed for this long belongs to a process that died. */
const LOCK_STALE_MS = 5 * 60_000;
const LOCK_HEARTBEAT_MS = 30_000;
const LOCK_POLL_MS = 200;

const COMMIT_RE = /^[0-9a-f]{40}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
const REPO_PART_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

// ---------------------------------------------------------------------------------------------------------
// Environment

function envFlag(name: string): boolean {
  const v = process.env[name]?.trim().toUpperCase();
  return v === '1' || v === 'ON' || v === 'YES' || v === 'TRUE';
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p;
}

function envPath(name: string): string | undefined {
  const v = process.env[name];
  return v ? expandHome(v) : undefined;
}

/** $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (as huggingface_hub). */
export function hfHome(): string {
  return envPath('HF_HOME') ?? path.join(envPath('XDG_CACHE_HOME') ?? path.join(os.homedir(), '.cache'), 'huggingface');
}

export function hubCacheDir(cacheDir?: string): string {
  return cacheDir ?? envPath('HF_HUB_CACHE') ?? envPath('HUGGINGFACE_HUB_CACHE') ?? path.join(hfHome(), 'hub');
}

export function hubEndpoint(endpoint?: string): string {
  return (endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
}

/** Option, else HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN), else the file `huggingface-cli login` writes. */
export function hubToken(token?: string): string | undefined {
  const t = token ?? process.env.HF_TOKEN ?? process.env.HUGGING_FACE_HUB_TOKEN;
  if (t !== undefined) return t.trim() || undefined;
  const file = envPath('HF_TOKEN_PATH') ?? path.join(hfHome(), 'token');
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export function isHubOffline(offline?: boolean): boolean {
  return offline ?? (envFlag('HF_HUB_OFFLINE') || envFlag('TRANSFORMERS_OFFLINE'));
}

// ---------------------------------------------------------------------------------------------------------
// Names and paths

/** `org/name` or `org/name@revision` → its parts; undefined for anything else (such as a path). */
export function parseRepoId(s: string): { repoId: string; revision?: string } | undefined {
  const at = s.indexOf('@');
  const id = at < 0 ? s : s.slice(0, at);
  const revision = at < 0 ? undefined : s.slice(at + 1);
  const parts = id.split('/');
  if (parts.length !== 2) return undefined;
  // The Hub forbids `--` and `..` in names; refusing them also keeps `models--a--b` folder names unambiguous.
  for (const p of parts)
    if (!REPO_PART_RE.test(p) || p.includes('--') || p.includes('..') || p.length > 96) return undefined;
  if (revision !== undefined && !isSafeRelPath(revision)) return undefined;
  return revision === undefined ? { repoId: id } : { repoId: id, revision };
}

/** `{cache}/models--org--name`, the folder huggingface_hub uses for a model repo. */
export function repoCacheDir(repoId: string, cacheDir?: string): string {
  return path.join(hubCacheDir(cacheDir), ['models', ...repoId.split('/')].join('--'));
}

/** A relative, `/`-separated path that cannot leave its folder: names from the server become paths on disk. */
function isSafeRelPath(p: string): boolean {
  if (p === '' || p.includes('\\') || p.includes('\0')) return false;
  return p.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

function globToRegExp(pattern: string): RegExp {
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

// ---------------------------------------------------------------------------------------------------------
// Entry points

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
  if (!isSafeRelPath(revision)) throw new UsageError(`model ${idOrPath}: invalid revision ${JSON.stringify(revision)}`);

  const cacheDir = hubCacheDir(options.cacheDir);
  const repoDir = repoCacheDir(parsed.repoId, cacheDir);
  if (isHubOffline(options.offline))
    return resolveOffline(parsed.repoId, revision, cacheDir, repoDir, options.allowPatterns);

  const ctx: Ctx = {
    repoId: parsed.repoId,
    revision,
    endpoint: hubEndpoint(options.endpoint),
    token: hubToken(options.token),
    fetch: options.fetchImpl ?? fetch,
    retries: options.retries ?? DEFAULT_RETRIES,
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  };
  return resolveOnline(ctx, repoDir, options.allowPatterns, options.onProgress);
}

/**
 * The real file behind a snapshot path (snapshot entries are symlinks into `blobs/`). onnxruntime refuses
 * external-data files reached through a symlink that leaves the model folder, so the runtime opens this.
 */
export async function realModelFilePath(snapshotPath: string): Promise<string> {
  try {
    return await fs.realpath(snapshotPath);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'missing (a cache entry whose blob was deleted?)' : (e as Error).message;
    throw new ModelLoadError(`${snapshotPath}: ${why}`, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Offline

async function resolveOffline(
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
  if (!commit || !isSafeRelPath(commit) || commit.includes('/')) {
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

// ---------------------------------------------------------------------------------------------------------
// HTTP

interface Ctx {
  repoId: string;
  revision: string;
  endpoint: string;
  token: string | undefined;
  fetch: typeof fetch;
  retries: number;
  timeoutMs: number;
}

/** A failure worth another attempt: dropped connection, timeout, 5xx, 429. */
class TransientError extends Error {}
/** The host cannot be reached at all (refused, unknown, no route): retrying will not help. */
class UnreachableError extends Error {
  constructor(
    readonly origin: string,
    message: string,
  ) {
    super(message);
  }
}

/** Aborts a request that goes quiet; `touch` on each chunk keeps a slow but live download going. */
class IdleTimer {
  readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  timedOut = false;
  constructor(readonly ms: number) {
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.controller.abort();
    }, ms);
  }
  touch(): void {
    this.timer.refresh();
  }
  stop(): void {
    clearTimeout(this.timer);
  }
}

const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
]);

function errorCode(e: unknown): string | undefined {
  for (let c: unknown = e, depth = 0; c && depth < 5; c = (c as { cause?: unknown }).cause, depth++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

function describe(e: unknown): string {
  const code = errorCode(e);
  const msgs: string[] = [];
  for (let c: unknown = e, depth = 0; c && depth < 5; c = (c as { cause?: unknown }).cause, depth++) {
    const m = (c as { message?: unknown }).message;
    if (typeof m === 'string' && m && !msgs.includes(m)) msgs.push(m);
  }
  const text = msgs.join(': ') || String(e);
  return code && !text.includes(code) ? `${code}, ${text}` : text;
}

/** Turns a fetch/stream failure into TransientError or UnreachableError. */
function networkError(e: unknown, url: string, idle: IdleTimer): Error {
  const origin = new URL(url).origin;
  if (idle.timedOut) return new TransientError(`no data from ${origin} for ${idle.ms / 1000} s`);
  const code = errorCode(e);
  if (code && UNREACHABLE_CODES.has(code)) return new UnreachableError(origin, `${code}`);
  return new TransientError(`connection to ${origin} failed (${describe(e)})`);
}

function headersFor(ctx: Ctx, url: string, extra: Record<string, string>): Record<string, string> {
  const h: Record<string, string> = {
    // A compressed answer would make Content-Length and Range offsets refer to the wrong bytes.
    'Accept-Encoding': 'identity',
    'User-Agent': 'internvl-ts (huggingface-hub-compatible cache)',
    ...extra,
  };
  // The Hub redirects LFS files to a CDN with a signed URL; the token must not leak to that other host.
  if (ctx.token && new URL(url).origin === new URL(ctx.endpoint).origin) h.Authorization = `Bearer ${ctx.token}`;
  return h;
}

/**
 * A request that follows redirects itself, so the Authorization header is sent to the Hub only. With
 * `stopAtLinked`, a redirect that already carries the file's metadata (X-Linked-Etag: the Hub's answer for
 * LFS files) is returned as is, so a HEAD does not touch the CDN.
 */
async function send(
  ctx: Ctx,
  url: string,
  method: 'GET' | 'HEAD',
  extra: Record<string, string>,
  stopAtLinked: boolean,
): Promise<{ res: Response; url: string; idle: IdleTimer }> {
  const idle = new IdleTimer(ctx.timeoutMs);
  let current = url;
  try {
    for (let hop = 0; ; hop++) {
      let res: Response;
      try {
        res = await ctx.fetch(current, {
          method,
          headers: headersFor(ctx, current, extra),
          redirect: 'manual',
          signal: idle.controller.signal,
        });
      } catch (e) {
        throw networkError(e, current, idle);
      }
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        if (stopAtLinked && res.headers.get('x-linked-etag')) return { res, url: current, idle };
        await res.body?.cancel().catch(() => {});
        if (hop >= MAX_REDIRECTS) throw new HubError(`${ctx.repoId}: more than ${MAX_REDIRECTS} redirects from ${url}`);
        current = new URL(location, current).toString();
        continue;
      }
      return { res, url: current, idle };
    }
  } catch (e) {
    idle.stop();
    throw e;
  }
}

function httpFailure(ctx: Ctx, res: Response, what: string): Error {
  const status = res.status;
  const code = res.headers.get('x-error-code');
  if (status === 429 || status === 408 || status >= 500) {
    return new TransientError(`HTTP ${status}${res.statusText ? ` ${res.statusText}` : ''}`);
  }
  let cause: string;
  if (status === 401 || status === 403) {
    cause = 'needs a token (HF_TOKEN)';
    if (code === 'GatedRepo')
      cause += '; it is a gated repo: accept its terms on the Hub with the account of the token';
    else if (ctx.token) cause += '; the token sent was refused or has no access to this repo';
    else cause += '; the Hub also answers this for repos that do not exist';
  } else if (status === 404) {
    cause = 'no such repo or file';
    if (code === 'RevisionNotFound') cause += ` (no revision ${ctx.revision})`;
    else if (code === 'EntryNotFound') cause += ' (no such file in the repo)';
    else if (code === 'RepoNotFound') cause += ' (no such repo)';
  } else {
    cause = res.statusText || 'unexpected answer';
  }
  return new HubError(`${what}: HTTP ${status}, ${cause}`);
}

/**
 * Runs `attempt` until it succeeds, retrying TransientErrors with backoff; turns what is left into HubErrors
 * that say what failed and what to do.
 */
async function withRetries<T>(ctx: Ctx, what: string, attempt: () => Promise<T>, onGiveUp = ''): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (e) {
      if (e instanceof UnreachableError) {
        throw new HubError(
          `${what}: cannot reach ${e.origin} (${e.message}); use a local folder or set HF_HUB_OFFLINE=1 with a filled cache`,
          { cause: e },
        );
      }
      if (!(e instanceof TransientError)) throw e;
      if (i >= ctx.retries) {
        throw new HubError(`${what}: ${e.message}, ${i + 1} attempts${onGiveUp}`, { cause: e });
      }
      await sleep(Math.min(500 * 2 ** i, 8000));
    }
  }
}

function resolveUrl(ctx: Ctx, rev: string, file: string): string {
  return `${ctx.endpoint}/${ctx.repoId}/resolve/${encodeURIComponent(rev)}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

// ---------------------------------------------------------------------------------------------------------
// Online

interface RemoteFile {
  path: string;
  etag: string;
  size: number | undefined;
  /** X-Repo-Commit of the HEAD answer. */
  commit: string | undefined;
  /** Revision put in the download URL: the listed commit when known. */
  rev: string;
}

async function listRepo(ctx: Ctx): Promise<{ sha: string | undefined; files: string[] }> {
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
      if (sha !== undefined && !COMMIT_RE.test(sha) && !/^[0-9A-Za-z._-]+$/.test(sha)) {
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

async function headFile(ctx: Ctx, rev: string, file: string): Promise<RemoteFile> {
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
  ctx: Ctx,
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
    if (!isSafeRelPath(f)) throw new HubError(`${where}: the Hub listed an unsafe file name ${JSON.stringify(f)}`);
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
  if (!commit || !/^[0-9A-Za-z._-]+$/.test(commit)) {
    throw new HubError(`${where}: the Hub gave no commit hash (neither sha in the file list nor X-Repo-Commit)`);
  }
  const snapshotDir = snapshotFor(commit);
  const blobsDir = path.join(repoDir, 'blobs');
  await fs.mkdir(blobsDir, { recursive: true });

  const toFetch: RemoteFile[] = [];
  for (const r of remotes) if (!(await blobComplete(path.join(blobsDir, r.etag), r.size))) toFetch.push(r);
  const overall = { done: 0, total: toFetch.reduce((s, r) => s + (r.size ?? 0), 0) };
  const fetching = new Set(toFetch);

  for (const r of remotes) {
    const blobPath = path.join(blobsDir, r.etag);
    if (fetching.has(r)) await downloadBlob(ctx, r, blobPath, overall, onProgress);
    await linkIntoSnapshot(snapshotDir, r.path, blobPath);
  }
  await fs.mkdir(snapshotDir, { recursive: true });
  if (ctx.revision !== commit) await writeAtomic(path.join(repoDir, 'refs', ctx.revision), commit);
  return snapshotDir;
}

async function blobComplete(blobPath: string, size: number | undefined): Promise<boolean> {
  try {
    const st = await fs.stat(blobPath);
    return st.isFile() && (size === undefined || st.size === size);
  } catch {
    return false;
  }
}

/** Points `snapshots/{commit}/{file}` at the blob with a relative link, as huggingface_hub does, so the cache can be moved. */
async function linkIntoSnapshot(snapshotDir: string, file: string, blobPath: string): Promise<void> {
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

async function writeAtomic(file: string, content: string): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await fs.writeFile(tmp, content);
  await fs.rename(tmp, file);
}

// ---------------------------------------------------------------------------------------------------------
// Blob download

/**
 * An O_EXCL lock file beside the blob, so two processes never write the same `.incomplete`. The holder
 * refreshes its mtime; one left unrefreshed for LOCK_STALE_MS belongs to a process that died and is taken.
 */
async function acquireLock(lockPath: string): Promise<() => Promise<void>> {
  for (;;) {
    try {
      const fh = await fs.open(lockPath, 'wx');
      try {
        await fh.writeFile(`${process.pid} ${os.hostname()} ${new Date().toISOString()}\n`);
      } finally {
        await fh.close();
      }
      const beat = setInterval(() => {
        const t = new Date();
        fs.utimes(lockPath, t, t).catch(() => {});
      }, LOCK_HEARTBEAT_MS);
      beat.unref();
      return async () => {
        clearInterval(beat);
        await fs.rm(lockPath, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    try {
      const st = await fs.stat(lockPath);
      if (Date.now() - st.mtimeMs > LOCK_STALE_MS) {
        await fs.rm(lockPath, { force: true });
        continue;
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw e;
    }
    await sleep(LOCK_POLL_MS);
  }
}

async function fileSize(p: string): Promise<number | undefined> {
  try {
    return (await fs.stat(p)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function hashFilePrefix(p: string, bytes: number): Promise<Hash> {
  const h = createHash('sha256');
  if (bytes > 0) {
    for await (const chunk of createReadStream(p, { start: 0, end: bytes - 1 })) h.update(chunk as Buffer);
  }
  return h;
}

async function downloadBlob(
  ctx: Ctx,
  file: RemoteFile,
  blobPath: string,
  overall: { done: number; total: number },
  onProgress: ((e: DownloadProgress) => void) | undefined,
): Promise<void> {
  const part = `${blobPath}.incomplete`;
  const what = `cannot download ${file.path} from ${ctx.repoId}@${ctx.revision}`;
  const verifySha = SHA256_RE.test(file.etag);
  const release = await acquireLock(`${blobPath}.lock`);
  try {
    // Bytes on disk and their running sha256, carried across attempts so a resume does not re-read the file.
    const state = { offset: 0, hash: undefined as Hash | undefined, counted: 0 };
    const emit = (fileDone: boolean) => {
      overall.done += state.offset - state.counted;
      state.counted = state.offset;
      onProgress?.({
        repo: ctx.repoId,
        file: file.path,
        bytesDone: state.offset,
        totalBytes: file.size,
        fileDone,
        overallBytesDone: overall.done,
        overallTotalBytes: overall.total,
      });
    };
    // Another process may have finished it while we waited for the lock.
    if (await blobComplete(blobPath, file.size)) {
      state.offset = file.size ?? 0;
      emit(true);
      return;
    }
    await fs.rm(blobPath, { force: true });

    const restart = async () => {
      await fs.writeFile(part, '');
      state.offset = 0;
      state.hash = verifySha ? createHash('sha256') : undefined;
    };

    await withRetries(
      ctx,
      what,
      async () => {
        const onDisk = (await fileSize(part)) ?? 0;
        if (file.size !== undefined && onDisk > file.size) {
          await restart();
        } else if (onDisk !== state.offset || (verifySha && !state.hash)) {
          state.offset = onDisk;
          state.hash = verifySha ? await hashFilePrefix(part, onDisk) : undefined;
        }
        emit(false);
        if (file.size !== undefined && state.offset === file.size) return;
        await fetchInto(ctx, file, part, state, restart, () => emit(false));
      },
      `; run again to resume from the ${part} kept so far`,
    );

    const size = (await fileSize(part)) ?? 0;
    if (file.size !== undefined && size !== file.size) {
      await fs.rm(part, { force: true });
      throw new HubError(`${what}: got ${size} bytes, expected ${file.size}; the partial file was deleted, run again`);
    }
    if (verifySha) {
      const digest = (state.hash ?? (await hashFilePrefix(part, size))).digest('hex');
      if (digest !== file.etag) {
        await fs.rm(part, { force: true });
        throw new HubError(
          `${what}: sha256 mismatch (expected ${file.etag}, got ${digest}); the corrupt download was deleted, run again`,
        );
      }
    }
    await fs.rename(part, blobPath);
    emit(true);
  } finally {
    await release();
  }
}

/** One GET of the rest of the file, appended to `part`. Throws TransientError when worth another attempt. */
async function fetchInto(
  ctx: Ctx,
  file: RemoteFile,
  part: string,
  state: { offset: number; hash: Hash | undefined },
  restart: () => Promise<void>,
  progress: () => void,
): Promise<void> {
  const url = resolveUrl(ctx, file.rev, file.path);
  const what = `cannot download ${file.path} from ${ctx.repoId}@${ctx.revision}`;
  const resumeFrom = state.offset;
  const {
    res,
    url: finalUrl,
    idle,
  } = await send(ctx, url, 'GET', resumeFrom > 0 ? { Range: `bytes=${resumeFrom}-` } : {}, false);
  try {
    if (res.status === 416) {
      await res.body?.cancel().catch(() => {});
      await restart();
      throw new TransientError(`the server refused to resume at byte ${resumeFrom}`);
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw httpFailure(ctx, res, what);
    }
    if (res.status === 206) {
      const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== resumeFrom) {
        await res.body?.cancel().catch(() => {});
        await restart();
        throw new TransientError(`the server answered another range than bytes=${resumeFrom}-`);
      }
    } else if (resumeFrom > 0) {
      // 200 to a Range request: the server sends the whole file, so start over.
      await restart();
      progress();
    }
    if (!res.body) throw new TransientError('empty answer');

    const fh = await fs.open(part, 'a');
    try {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        idle.touch();
        await fh.write(chunk);
        state.hash?.update(chunk);
        state.offset += chunk.length;
        progress();
      }
    } catch (e) {
      if (e instanceof HubError) throw e;
      throw networkError(e, finalUrl, idle);
    } finally {
      await fh.close();
    }
    if (file.size !== undefined && state.offset < file.size) {
      throw new TransientError(`the connection closed at byte ${state.offset} of ${file.size}`);
    }
  } finally {
    idle.stop();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers

async function isDir(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isFile();
  } catch {
    return false;
  }
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
