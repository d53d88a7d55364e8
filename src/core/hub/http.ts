/**
 * HTTP to the Hub: redirects followed by hand (the token goes to the Hub only, never to the CDN), an idle timeout
 * that aborts a quiet request and says it is waiting, and retries with backoff for what is worth retrying.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { HubError } from '../errors.js';

const MAX_REDIRECTS = 10;

/** One resolution against the Hub: whom to ask, how, and how long to wait. */
export interface HubContext {
  repoId: string;
  revision: string;
  endpoint: string;
  token: string | undefined;
  fetch: typeof fetch;
  retries: number;
  timeoutMs: number;
  /** One-line notices for the user (waiting, retrying, falling back to the cache). */
  notice: (line: string) => void;
}

/** A failure worth another attempt: dropped connection, timeout, 5xx, 429. */
export class TransientError extends Error {}
/** The host cannot be reached at all (refused, unknown, no route): retrying will not help. */
export class UnreachableError extends Error {
  constructor(
    readonly origin: string,
    message: string,
  ) {
    super(message);
  }
}

/** A quiet request is reported this soon (or at half the timeout), and as often, so a stall never looks like a hang. */
const QUIET_NOTICE_MS = 5_000;

/**
 * Aborts a request that goes quiet for `ms`; `touch` on each chunk keeps a slow but live download going. While no
 * data comes it says so through `notice`, every QUIET_NOTICE_MS (or half the timeout, if shorter).
 */
export class IdleTimer {
  readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly watch: NodeJS.Timeout;
  private last = Date.now();
  timedOut = false;
  constructor(
    readonly ms: number,
    what: string,
    notice: (line: string) => void,
  ) {
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.controller.abort();
    }, ms);
    const every = Math.min(QUIET_NOTICE_MS, ms / 2);
    this.watch = setTimeout(() => {
      const quiet = ((Date.now() - this.last) / 1000).toFixed(1);
      notice(`waiting for ${what}: no data for ${quiet} s (giving up after ${ms / 1000} s)`);
      this.watch.refresh();
    }, every);
    this.watch.unref();
  }
  touch(): void {
    this.last = Date.now();
    this.timer.refresh();
    this.watch.refresh();
  }
  stop(): void {
    clearTimeout(this.timer);
    clearTimeout(this.watch);
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

export function errorCode(e: unknown): string | undefined {
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
export function networkError(e: unknown, url: string, idle: IdleTimer): Error {
  const origin = new URL(url).origin;
  if (idle.timedOut) return new TransientError(`no data from ${origin} for ${idle.ms / 1000} s`);
  const code = errorCode(e);
  if (code && UNREACHABLE_CODES.has(code)) return new UnreachableError(origin, `${code}`);
  return new TransientError(`connection to ${origin} failed (${describe(e)})`);
}

function headersFor(ctx: HubContext, url: string, extra: Record<string, string>): Record<string, string> {
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
export async function send(
  ctx: HubContext,
  url: string,
  method: 'GET' | 'HEAD',
  extra: Record<string, string>,
  stopAtLinked: boolean,
): Promise<{ res: Response; url: string; idle: IdleTimer }> {
  const idle = new IdleTimer(ctx.timeoutMs, new URL(url).origin, ctx.notice);
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

export function httpFailure(ctx: HubContext, res: Response, what: string): Error {
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
export async function withRetries<T>(
  ctx: HubContext,
  what: string,
  attempt: () => Promise<T>,
  onGiveUp = '',
): Promise<T> {
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
      const pause = Math.min(500 * 2 ** i, 8000);
      ctx.notice(`${what}: ${e.message}; retrying in ${pause / 1000} s (attempt ${i + 2} of ${ctx.retries + 1})`);
      await sleep(pause);
    }
  }
}

export function resolveUrl(ctx: HubContext, rev: string, file: string): string {
  return `${ctx.endpoint}/${ctx.repoId}/resolve/${encodeURIComponent(rev)}/${file.split('/').map(encodeURIComponent).join('/')}`;
}
