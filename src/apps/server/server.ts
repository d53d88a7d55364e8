/**
 * `internvl serve`: an OpenAI-compatible HTTP server (fastify) over the models of a `ModelHost`. The server
 * listens before the models load (`/health` answers 503, then 200); every route but `/health` needs the API key
 * when one is set; errors have OpenAI's shape; one log line per request.
 */
import crypto from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { ServerContext, type ServeSettings, type ServerPlugin } from './context.js';
import { ApiError, describeError } from './errors.js';
import { DEFAULT_MEDIA_POLICY } from './media.js';
import { Metrics } from './metrics.js';
import { ModelHost, type LoadSettings, type ModelLoader, type ModelSpec } from './models.js';
import { chatRoutes } from './routes/chat.js';
import { embeddingRoutes } from './routes/embeddings.js';
import { infoRoutes } from './routes/info.js';

export interface ServerOptions {
  models: readonly ModelSpec[];
  load: LoadSettings;
  settings?: Partial<ServeSettings>;
  /** Required on every route but /health when set. */
  apiKey?: string | null;
  /** Largest request body, bytes (413 above). */
  bodyLimit?: number;
  /** Origins allowed by CORS (none: CORS off). */
  corsOrigins?: readonly string[];
  logFormat?: 'json' | 'text' | 'none';
  /** Where log lines go (default stderr). */
  log?: (line: string) => void;
  /** Replaces the model loader (tests). */
  loader?: ModelLoader;
  /** Extra routes (e.g. search), registered with the same auth, error shape and logs. */
  plugins?: readonly ServerPlugin[];
}

export const DEFAULT_SETTINGS: ServeSettings = {
  media: DEFAULT_MEDIA_POLICY,
  maxImagePixels: 40_000_000,
  maxTotalTiles: 48,
  timeoutSeconds: 600,
  videoFrames: 8,
};

export interface InternVLServer {
  app: FastifyInstance;
  context: ServerContext;
  /** Resolves with the URL once listening (models load in the background: see `context.host.ready`). */
  listen(options: { host: string; port: number }): Promise<string>;
  /**
   * Stops accepting requests, lets running ones finish for up to `graceSeconds`, then cancels the rest, and
   * releases the models.
   */
  close(graceSeconds?: number): Promise<void>;
}

export function createServer(options: ServerOptions): InternVLServer {
  const settings: ServeSettings = { ...DEFAULT_SETTINGS, ...options.settings };
  const app = Fastify({
    bodyLimit: options.bodyLimit ?? 64 * 1024 * 1024,
    logger: false,
    // Schemas validate as written: no type coercion, no silently dropped fields.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  let host: ModelHost | null = null;
  const queues = () =>
    (host?.all() ?? []).flatMap((m) =>
      m.kind === 'chat'
        ? [
            {
              model: m.name,
              running: m.scheduler.running,
              waiting: m.scheduler.waiting,
              ...m.scheduler.stats,
              visualCacheHits: m.visualCache.stats.hits,
              visualCacheMisses: m.visualCache.stats.misses,
            },
          ]
        : [],
    );
  const metrics = new Metrics(queues);
  host = new ModelHost(options.models, options.load, options.loader);
  host.ready.catch(() => {});
  const write = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const context = new ServerContext(host, metrics, settings, write);
  const format = options.logFormat ?? 'text';

  app.decorateRequest('stats', null as never);
  app.addHook('onRequest', async (request, reply) => {
    request.stats = {};
    const started = performance.now();
    reply.raw.once('close', () => {
      const status = reply.raw.headersSent ? reply.raw.statusCode : 499;
      const handler = request.routeOptions.url ?? 'unmatched';
      metrics.httpRequests.inc({ method: request.method, handler, status: String(status) });
      if (format === 'none') return;
      const s = request.stats;
      const entry = {
        time: new Date().toISOString(),
        id: request.id,
        method: request.method,
        path: request.url.split('?')[0],
        status,
        model: s.model,
        prompt_tokens: s.promptTokens,
        completion_tokens: s.completionTokens,
        ttft_ms: s.ttftMs === undefined ? undefined : Math.round(s.ttftMs),
        duration_ms: Math.round(performance.now() - started),
        aborted: s.aborted ?? (reply.raw.writableFinished ? undefined : 'client'),
      };
      write(format === 'json' ? JSON.stringify(entry) : textLine(entry));
    });
    const origin = request.headers.origin;
    if (origin && options.corsOrigins?.some((o) => o === '*' || o === origin)) {
      reply.header('access-control-allow-origin', origin);
      reply.header('vary', 'origin');
      if (request.method === 'OPTIONS') {
        reply.header('access-control-allow-methods', 'GET, POST, OPTIONS');
        reply.header('access-control-allow-headers', 'authorization, content-type');
        reply.header('access-control-max-age', '600');
        return reply.code(204).send();
      }
    }
    if (options.apiKey && !request.routeOptions.config?.public && !keyMatches(request.headers, options.apiKey))
      throw new ApiError(401, 'authentication_error', 'invalid or missing API key', null, 'invalid_api_key');
  });
  app.setErrorHandler((error, request, reply) => {
    const { status, body, headers } = describeError(error);
    if (status >= 500 && !(error instanceof ApiError)) context.logError(error, request);
    return reply.code(status).headers(headers).send(body);
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({
      error: {
        message: `no route ${request.method} ${request.url.split('?')[0]}`,
        type: 'not_found_error',
        param: null,
        code: 'not_found',
      },
    }),
  );
  app.register(async (scope) => {
    infoRoutes(scope, context);
    chatRoutes(scope, context);
    embeddingRoutes(scope, context);
    for (const plugin of options.plugins ?? []) await plugin(scope, context);
  });

  return {
    app,
    context,
    async listen({ host: address, port }) {
      return app.listen({ host: address, port });
    },
    async close(graceSeconds = 10) {
      const timer = setTimeout(() => context.abortAll(), graceSeconds * 1000);
      try {
        await app.close();
      } finally {
        clearTimeout(timer);
        context.abortAll();
        await context.host.release();
      }
    },
  };
}

/** Constant-time comparison of the presented key (`Authorization: Bearer K`) with the server's. */
function keyMatches(headers: Record<string, string | string[] | undefined>, key: string): boolean {
  const header = headers.authorization;
  const presented = typeof header === 'string' ? /^Bearer\s+(.+)$/i.exec(header)?.[1]?.trim() : undefined;
  if (presented === undefined) return false;
  // Digests have one length, so timingSafeEqual compares without leaking the key's length or prefix.
  const digest = (s: string) => crypto.createHash('sha256').update(s).digest();
  return crypto.timingSafeEqual(digest(presented), digest(key));
}

function textLine(entry: Record<string, unknown>): string {
  const { time, method, path, status, duration_ms, ...rest } = entry;
  const extra = Object.entries(rest)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `${time} ${method} ${path} ${status} ${duration_ms}ms${extra ? ` ${extra}` : ''}`;
}
