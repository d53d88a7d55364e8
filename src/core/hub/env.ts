/**
 * Where the Hugging Face cache and the Hub are, and the knobs of the network, from options and the environment
 * variables huggingface_hub reads (HF_HOME, HF_HUB_CACHE, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE,
 * HF_HUB_DOWNLOAD_TIMEOUT), plus INTERNVL_HUB_RETRIES; and the cache's folder names.
 */
import { readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isSafeRelativeName } from '../names.js';
import { UsageError } from '../errors.js';

const DEFAULT_ENDPOINT = 'https://huggingface.co';
const DEFAULT_RETRIES = 5;
const DEFAULT_TIMEOUT_S = 60;
const REPO_PART_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

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

function envNumber(name: string, min: number): number | undefined {
  const raw = process.env[name]?.trim();
  if (!raw) return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min) throw new UsageError(`${name}=${raw}: expected a number >= ${min}`);
  return v;
}

/** Give up on a request that sends nothing for this long: option, else HF_HUB_DOWNLOAD_TIMEOUT (seconds), else 60 s. */
export function hubTimeoutMs(timeoutMs?: number): number {
  return timeoutMs ?? (envNumber('HF_HUB_DOWNLOAD_TIMEOUT', 0.001) ?? DEFAULT_TIMEOUT_S) * 1000;
}

/** Attempts after the first on a dropped connection, a timeout or a 5xx/429: option, else INTERNVL_HUB_RETRIES, else 5. */
export function hubRetries(retries?: number): number {
  return retries ?? Math.floor(envNumber('INTERNVL_HUB_RETRIES', 0) ?? DEFAULT_RETRIES);
}

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
  if (revision !== undefined && !isSafeRelativeName(revision)) return undefined;
  return revision === undefined ? { repoId: id } : { repoId: id, revision };
}

/** `{cache}/models--org--name`, the folder huggingface_hub uses for a model repo. */
export function repoCacheDir(repoId: string, cacheDir?: string): string {
  return path.join(hubCacheDir(cacheDir), ['models', ...repoId.split('/')].join('--'));
}

/** Where huggingface_hub keeps the lock of a blob download: `{cache}/.locks/models--org--name/{etag}.lock`. */
export function blobLockPath(repoId: string, etag: string, cacheDir?: string): string {
  return path.join(hubCacheDir(cacheDir), '.locks', path.basename(repoCacheDir(repoId, cacheDir)), `${etag}.lock`);
}
