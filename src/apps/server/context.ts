/**
 * What every route of the server shares: the loaded models, the metrics, the settings, and the scope of each
 * request (one AbortSignal that fires on client disconnect, timeout or shutdown, and the figures its log line
 * reports).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';
import type { MediaPolicy } from './media.js';
import type { Metrics } from './metrics.js';
import type { ModelHost, ServedModel } from './models.js';

export interface ServeSettings {
  media: MediaPolicy;
  /** Decoded-pixel limit of one image (decompression-bomb guard). */
  maxImagePixels: number;
  /** Tiles of all images of one request together. */
  maxTotalTiles: number;
  /** Per-request time limit, seconds. */
  timeoutSeconds: number;
  /** Video frames sampled when a `video_url` part does not say. */
  videoFrames: number;
}

/** Figures of one request for its log line. */
export interface RequestStats {
  model?: string;
  promptTokens?: number;
  completionTokens?: number;
  ttftMs?: number;
  /** Why generation ended early: `client` (disconnect), `timeout`, `shutdown`. */
  aborted?: string;
}

export type AbortCause = 'client' | 'timeout' | 'shutdown';

export interface RequestScope {
  signal: AbortSignal;
  /** Why the signal fired, or null. */
  cause(): AbortCause | null;
  /** Ends the scope (timers, listeners, the shutdown registry). */
  close(): void;
}

export class ServerContext {
  private readonly scopes = new Set<(cause: AbortCause) => void>();
  private shuttingDown = false;

  constructor(
    readonly host: ModelHost,
    readonly metrics: Metrics,
    readonly settings: ServeSettings,
    /** Writes one log line. */
    readonly log: (line: string) => void,
  ) {}

  /** An internal error, with its stack (the client is told only that it happened). */
  logError(error: unknown, request: FastifyRequest): void {
    this.log(`error in ${request.method} ${request.url}: ${(error as Error)?.stack ?? String(error)}`);
  }

  /** The model a request names, ready, or a 404/503 ApiError. */
  model(name: string | undefined, wanted: ServedModel['kind'][]): ServedModel {
    if (this.host.state !== 'ready')
      throw new ApiError(503, 'server_error', 'the models are still loading', null, 'loading');
    const candidates = this.host.all().filter((m) => wanted.includes(m.kind));
    if (name === undefined || name === '') {
      if (candidates.length === 1) return candidates[0];
      throw new ApiError(
        400,
        'invalid_request_error',
        `'model' is required (served: ${this.host.names.join(', ')})`,
        'model',
      );
    }
    const model = this.host.get(name);
    if (!model)
      throw new ApiError(
        404,
        'not_found_error',
        `the model '${name}' does not exist (served: ${this.host.names.join(', ')})`,
        'model',
        'model_not_found',
      );
    if (!wanted.includes(model.kind))
      throw new ApiError(400, 'invalid_request_error', `the model '${name}' does not support this endpoint`, 'model');
    return model;
  }

  /** A signal for the work of one request: client disconnect, the per-request timeout, or shutdown. */
  scope(request: FastifyRequest, reply: FastifyReply): RequestScope {
    const controller = new AbortController();
    let cause: AbortCause | null = null;
    const abort = (why: AbortCause) => {
      if (cause) return;
      cause = why;
      request.stats.aborted = why;
      controller.abort(why);
    };
    const onClose = () => {
      if (!reply.raw.writableFinished) abort('client');
    };
    reply.raw.on('close', onClose);
    const timer = setTimeout(() => abort('timeout'), this.settings.timeoutSeconds * 1000);
    timer.unref();
    this.scopes.add(abort);
    if (this.shuttingDown) abort('shutdown');
    return {
      signal: controller.signal,
      cause: () => cause,
      close: () => {
        clearTimeout(timer);
        reply.raw.off('close', onClose);
        this.scopes.delete(abort);
      },
    };
  }

  /** Ends the work of every request still running. */
  abortAll(): void {
    this.shuttingDown = true;
    for (const abort of this.scopes) abort('shutdown');
  }
}

/** The error a request answers when its scope was aborted (a client that left gets nothing). */
export function abortError(cause: AbortCause): ApiError {
  if (cause === 'timeout')
    return new ApiError(504, 'timeout_error', 'the request took longer than the server allows', null, 'timeout');
  if (cause === 'shutdown')
    return new ApiError(503, 'server_error', 'the server is shutting down', null, 'shutting_down');
  return new ApiError(499, 'invalid_request_error', 'the client closed the connection', null, 'client_closed');
}

/** Route plugins added to a server (e.g. `/v1/search`): they see the same context, auth and error shape. */
export type ServerPlugin = (app: FastifyInstance, context: ServerContext) => Promise<void> | void;

declare module 'fastify' {
  interface FastifyRequest {
    stats: RequestStats;
  }
  interface FastifyContextConfig {
    /** Served without the API key (`/health`). */
    public?: boolean;
  }
}
