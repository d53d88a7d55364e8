/**
 * Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and the mapping of everything a
 * request can throw onto it: the project's typed errors are the client's fault (4xx), anything else is a bug
 * (500, logged with its stack by the server).
 */
import { InternVLError } from '../../core/errors.js';

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'timeout_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: ErrorType,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (`Retry-After`). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: string | null };
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, 'invalid_request_error', message, param, code);

/** The status and body of any error thrown while answering a request. */
export function describeError(error: unknown): { status: number; body: ErrorBody; headers: Record<string, string> } {
  const body = (e: ApiError): ErrorBody => ({
    error: { message: e.message, type: e.type, param: e.param, code: e.code },
  });
  if (error instanceof ApiError) return { status: error.status, body: body(error), headers: error.headers };
  const fastify = error as { statusCode?: number; code?: string; validation?: unknown; message?: string };
  if (fastify.validation) {
    const param = (fastify as { validation: Array<{ instancePath?: string }> }).validation[0]?.instancePath ?? '';
    return describeError(
      badRequest(fastify.message ?? 'invalid request', param.replace(/^\//, '').replace(/\//g, '.') || null),
    );
  }
  if (fastify.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
    return describeError(new ApiError(413, 'invalid_request_error', 'request body too large', null, 'body_too_large'));
  if (fastify.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return describeError(badRequest('the body must be application/json', null, 'unsupported_media_type'));
  if (fastify.statusCode === 400 && typeof fastify.message === 'string')
    return describeError(badRequest(fastify.message, null, fastify.code ?? null));
  // The request was well formed but its content cannot be processed (an undecodable image, a prompt over the
  // context): the project's typed errors.
  if (error instanceof InternVLError)
    return describeError(new ApiError(422, 'invalid_request_error', error.message, null, 'unprocessable'));
  return describeError(new ApiError(500, 'server_error', 'internal server error (logged)', null, 'internal_error'));
}
