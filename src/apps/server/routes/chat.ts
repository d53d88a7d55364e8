/**
 * `POST /v1/chat/completions`, OpenAI's shape: text, image and video parts in any user turn, system messages,
 * history; the plain answer or SSE chunks (`chat.completion.chunk` deltas, a final chunk with `finish_reason`, a
 * usage chunk with `choices: []` when `stream_options.include_usage`, then `data: [DONE]`).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import crypto from 'node:crypto';
import { renderChatPrompt, type PromptMessage, type PromptVisual } from '../../../tasks/chat_prompt.js';
import {
  AnswerText,
  chatGenerationOptions,
  embedPrompt,
  prepareVisuals,
  promptFormat,
  type VisualItem,
} from '../../../tasks/chat.js';
import type { GenerationOptions } from '../../../tasks/generation.js';
import { UsageError } from '../../../core/errors.js';
import { abortError, type ServerContext } from '../context.js';
import { ApiError, badRequest, describeError } from '../errors.js';
import { loadMediaImage, loadMediaVideo } from '../media_decode.js';
import type { ChatModel } from '../models.js';

/** Tiles per image for OpenAI's `detail`, as LMDeploy maps it (`auto`: the model's max_dynamic_patch). */
const DETAIL_TILES: Record<string, number> = { low: 6, medium: 12, high: 24 };

const urlPart = (extra: Record<string, unknown>) => ({
  anyOf: [{ type: 'string' }, { type: 'object', required: ['url'], properties: { url: { type: 'string' }, ...extra } }],
});

const partSchema = {
  type: 'object',
  required: ['type'],
  properties: {
    type: { enum: ['text', 'image_url', 'video_url'] },
    text: { type: 'string' },
    image_url: urlPart({
      detail: { enum: ['auto', 'low', 'medium', 'high'] },
      max_dynamic_patch: { type: 'integer', minimum: 1, maximum: 64 },
    }),
    video_url: urlPart({ num_frames: { type: 'integer', minimum: 1, maximum: 64 } }),
  },
} as const;

const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: 'null' }] });

export const chatSchema = {
  body: {
    type: 'object',
    required: ['messages'],
    properties: {
      model: { type: 'string' },
      messages: {
        type: 'array',
        minItems: 1,
        items: {
          type: 'object',
          required: ['role'],
          properties: {
            role: { enum: ['system', 'developer', 'user', 'assistant'] },
            content: nullable({ anyOf: [{ type: 'string' }, { type: 'array', items: partSchema }] }),
            name: { type: 'string' },
          },
        },
      },
      stream: nullable({ type: 'boolean' }),
      stream_options: nullable({ type: 'object', properties: { include_usage: { type: 'boolean' } } }),
      max_tokens: nullable({ type: 'integer', minimum: 0 }),
      max_completion_tokens: nullable({ type: 'integer', minimum: 0 }),
      temperature: nullable({ type: 'number', minimum: 0, maximum: 2 }),
      top_p: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 1 }),
      top_k: nullable({ type: 'integer', minimum: -1 }),
      seed: nullable({ type: 'integer' }),
      stop: nullable({ anyOf: [{ type: 'string' }, { type: 'array', maxItems: 16, items: { type: 'string' } }] }),
      repetition_penalty: nullable({ type: 'number', exclusiveMinimum: 0 }),
      frequency_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
      presence_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
      n: nullable({ type: 'integer', minimum: 1 }),
      logprobs: nullable({ type: 'boolean' }),
      /** vLLM's extension: the prompt's and the answer's token ids in the response. */
      return_token_ids: nullable({ type: 'boolean' }),
      /** vLLM's extension: no stop token before this many tokens. */
      min_tokens: nullable({ type: 'integer', minimum: 0 }),
    },
  },
} as const;

type UrlValue = string | { url: string; detail?: string; max_dynamic_patch?: number; num_frames?: number };

interface ChatPart {
  type: 'text' | 'image_url' | 'video_url';
  text?: string;
  image_url?: UrlValue;
  video_url?: UrlValue;
}

export interface ChatBody {
  model?: string;
  messages: Array<{ role: string; content?: string | ChatPart[] | null }>;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  repetition_penalty?: number | null;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  n?: number | null;
  logprobs?: boolean | null;
  return_token_ids?: boolean | null;
  min_tokens?: number | null;
}

/** A media part of a user turn, before fetching. */
interface MediaRef {
  kind: 'image' | 'video';
  url: string;
  maxTiles?: number;
  frames?: number;
}

/** The messages as the prompt renderer takes them, and the media each user turn carries, in order. */
function parseMessages(body: ChatBody): { messages: PromptMessage[]; media: MediaRef[][] } {
  const messages: PromptMessage[] = [];
  const media: MediaRef[][] = [];
  body.messages.forEach((m, i) => {
    const role = m.role === 'developer' ? 'system' : (m.role as PromptMessage['role']);
    const parts: ChatPart[] = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : (m.content ?? []);
    const texts: string[] = [];
    const refs: MediaRef[] = [];
    parts.forEach((part, j) => {
      const param = `messages.${i}.content.${j}`;
      if (part.type === 'text') {
        if (typeof part.text !== 'string') throw badRequest('a text part needs a text', `${param}.text`);
        texts.push(part.text);
        return;
      }
      const value = part.type === 'image_url' ? part.image_url : part.video_url;
      if (value === undefined) throw badRequest(`a ${part.type} part needs its ${part.type}`, `${param}.${part.type}`);
      if (role !== 'user') throw badRequest('only user messages may carry images or videos', param);
      const url = typeof value === 'string' ? value : value.url;
      if (part.type === 'video_url') {
        refs.push({ kind: 'video', url, frames: typeof value === 'string' ? undefined : value.num_frames });
        return;
      }
      const detail = typeof value === 'string' ? undefined : value.detail;
      const explicit = typeof value === 'string' ? undefined : value.max_dynamic_patch;
      refs.push({ kind: 'image', url, maxTiles: explicit ?? (detail ? DETAIL_TILES[detail] : undefined) });
    });
    messages.push({ role, text: texts.join('\n'), images: refs.length });
    media.push(refs);
  });
  return { messages, media };
}

/** Per-image tile caps within the request's total budget (the thumbnail tile counted). */
export function tileCaps(requested: readonly number[], total: number, thumbnail: boolean): number[] {
  const worst = (cap: number) => (thumbnail && cap > 1 ? cap + 1 : cap);
  if (requested.reduce((n, cap) => n + worst(cap), 0) <= total) return [...requested];
  if (requested.length > total)
    throw badRequest(`${requested.length} images exceed the server's budget of ${total} tiles per request`);
  const share = Math.floor(total / requested.length);
  // A cap above 1 may add a thumbnail tile: leave room for it.
  const fair = thumbnail ? (share > 2 ? share - 1 : 1) : share;
  return requested.map((cap) => Math.min(cap, fair));
}

function generationOptions(body: ChatBody): { options: GenerationOptions; maxTokens: number | undefined } {
  if ((body.n ?? 1) !== 1) throw badRequest('only n = 1 is supported', 'n');
  if (body.logprobs) throw badRequest('logprobs are not supported', 'logprobs');
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  const temperature = body.temperature ?? undefined;
  const topP = body.top_p ?? undefined;
  const topK = body.top_k !== undefined && body.top_k !== null && body.top_k > 0 ? body.top_k : undefined;
  // Greedy unless asked to sample: as the official chat examples (and `internvl chat`) decode.
  const doSample = temperature !== undefined ? temperature > 0 : (topP !== undefined && topP < 1) || topK !== undefined;
  return {
    maxTokens,
    options: {
      doSample,
      temperature: doSample ? temperature : undefined,
      topP,
      topK,
      seed: body.seed ?? 0,
      repetitionPenalty: body.repetition_penalty ?? undefined,
      frequencyPenalty: body.frequency_penalty ?? undefined,
      presencePenalty: body.presence_penalty ?? undefined,
      minNewTokens: body.min_tokens ?? undefined,
    },
  };
}

export function chatRoutes(app: FastifyInstance, context: ServerContext): void {
  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: chatSchema }, async (request, reply) => {
    const started = performance.now();
    const model = context.model(request.body.model, ['chat']) as ChatModel;
    request.stats.model = model.name;
    const { pipeline } = model;
    const body = request.body;
    const { options, maxTokens } = generationOptions(body);
    const { messages, media } = parseMessages(body);
    // The conversation's shape is checked before anything is fetched.
    try {
      renderChatPrompt(
        promptFormat(pipeline),
        messages,
        media.flat().map((): PromptVisual => ({ kind: 'image', tiles: 1 })),
      );
    } catch (error) {
      if (error instanceof UsageError) throw badRequest(error.message, 'messages');
      throw error;
    }
    const stops = body.stop === undefined || body.stop === null ? [] : [body.stop].flat().filter(Boolean);
    const ticket = model.scheduler.reserve();
    const scope = context.scope(request, reply);
    // Stopping at a stop string ends generation as a disconnect would.
    const stopper = new AbortController();
    const signal = AbortSignal.any([scope.signal, stopper.signal]);
    try {
      const fetched = await fetchVisuals(context, model, media, signal);
      fetched.counts.forEach((count, i) => {
        messages[i].images = count;
      });
      let promptIds: number[] = [];
      const job = {
        options: chatGenerationOptions(pipeline, { ...options, signal }),
        prepare: async () => {
          const prepared = prepareVisuals(pipeline, fetched.items);
          const text = renderChatPrompt(promptFormat(pipeline), messages, prepared.visuals);
          const ids = pipeline.tokenizer.encode(text);
          const prompt = await embedPrompt(pipeline, ids, await model.visualCache.encode(prepared));
          const { contextLength } = model.scheduler;
          const room = contextLength - prompt.ids.length;
          if (room <= 0 || (maxTokens !== undefined && maxTokens > room))
            throw new ApiError(
              400,
              'invalid_request_error',
              `the prompt has ${prompt.ids.length} tokens and ${maxTokens ?? 1} more were asked; a request may take ${contextLength} tokens (the model's context or the server's --max-model-len; use fewer images or tiles, or a shorter conversation)`,
              'messages',
              'context_length_exceeded',
            );
          // Without max_tokens the answer may fill the context.
          job.options.maxNewTokens = maxTokens ?? room;
          request.stats.promptTokens = prompt.ids.length;
          promptIds = prompt.ids;
          return prompt;
        },
      };
      const generation = ticket.start(job);
      const answer = new AnswerText(pipeline, stops);
      const id = `chatcmpl-${crypto.randomBytes(12).toString('hex')}`;
      const created = Math.floor(Date.now() / 1000);
      const includeUsage = body.stream === true && body.stream_options?.include_usage === true;
      const chunk = (delta: Record<string, unknown>, finishReason: string | null = null, extra = {}) => ({
        id,
        object: 'chat.completion.chunk',
        created,
        model: model.name,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason, ...extra }],
        ...(includeUsage ? { usage: null } : {}),
      });
      const sse = body.stream === true ? new EventStream(reply, context) : null;
      const ids: number[] = [];
      let last = started;
      const labels = { model_name: model.name };
      try {
        for await (const token of generation.tokens) {
          const now = performance.now();
          if (ids.length === 0) {
            request.stats.ttftMs = now - started;
            context.metrics.timeToFirstToken.observe(labels, (now - started) / 1000);
            sse?.send(chunk({ role: 'assistant', content: '' }));
          } else context.metrics.interTokenLatency.observe(labels, (now - last) / 1000);
          last = now;
          ids.push(token);
          const delta = answer.push(token);
          if (delta) sse?.send(chunk({ content: delta }));
          if (answer.stopped) {
            stopper.abort();
            break;
          }
        }
      } catch (error) {
        if (!sse?.started) throw error;
        sse.fail(error, request);
        return reply;
      }
      const outcome = await generation.outcome;
      const cause = scope.cause();
      if (cause && !answer.stopped) {
        if (cause === 'client') return reply;
        if (!sse?.started) throw abortError(cause);
        sse.fail(abortError(cause), request);
        return reply;
      }
      const finishReason = answer.stopped || outcome.finishReason === 'stop' ? 'stop' : 'length';
      const usage = {
        prompt_tokens: outcome.promptTokens,
        completion_tokens: ids.length,
        total_tokens: outcome.promptTokens + ids.length,
      };
      request.stats.completionTokens = ids.length;
      context.metrics.promptTokens.inc(labels, outcome.promptTokens);
      context.metrics.generationTokens.inc(labels, ids.length);
      context.metrics.queueTime.observe(labels, outcome.queueSeconds);
      context.metrics.requestSuccess.inc({ ...labels, finished_reason: finishReason });
      context.metrics.e2eLatency.observe(labels, (performance.now() - started) / 1000);
      const tokenIds = body.return_token_ids ? { token_ids: ids } : {};
      if (sse) {
        if (!sse.started) sse.send(chunk({ role: 'assistant', content: '' }));
        const tail = answer.flush();
        if (tail) sse.send(chunk({ content: tail }));
        sse.send(chunk({}, finishReason, tokenIds));
        if (includeUsage)
          sse.send({ id, object: 'chat.completion.chunk', created, model: model.name, choices: [], usage });
        sse.end();
        return reply;
      }
      return {
        id,
        object: 'chat.completion',
        created,
        model: model.name,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: answer.response() },
            logprobs: null,
            finish_reason: finishReason,
            ...tokenIds,
          },
        ],
        usage,
        ...(body.return_token_ids ? { prompt_token_ids: promptIds } : {}),
      };
    } finally {
      ticket.release();
      scope.close();
    }
  });
}

/**
 * Fetches and decodes a request's media (concurrently), within the tile budget: images keep their requested
 * caps unless together they exceed it; video frames take one tile each. `counts` is each message's visuals.
 */
async function fetchVisuals(
  context: ServerContext,
  model: ChatModel,
  media: MediaRef[][],
  signal: AbortSignal,
): Promise<{ items: VisualItem[]; counts: number[] }> {
  const cfg = model.pipeline.model.config;
  const settings = context.settings;
  const refs = media.flat();
  const decoded = await Promise.all(
    refs.map((ref) =>
      ref.kind === 'image'
        ? loadMediaImage(ref.url, settings, signal).then((image) => [image])
        : loadMediaVideo(ref.url, settings, ref.frames ?? settings.videoFrames, signal),
    ),
  );
  const frames = refs.reduce((n, ref, i) => n + (ref.kind === 'video' ? decoded[i].length : 0), 0);
  const imageRefs = refs.filter((ref) => ref.kind === 'image');
  const requested = imageRefs.map((ref) => (cfg.dynamicImageSize ? (ref.maxTiles ?? cfg.maxDynamicPatch) : 1));
  const budget = settings.maxTotalTiles - frames;
  if (budget < imageRefs.length)
    throw badRequest(`the request needs more than the server's budget of ${settings.maxTotalTiles} tiles`);
  const caps = tileCaps(requested, budget, cfg.useThumbnail);
  let image = 0;
  const items = refs.flatMap((ref, i): VisualItem[] =>
    ref.kind === 'image'
      ? [{ image: decoded[i][0], kind: 'image', maxTiles: caps[image++] }]
      : decoded[i].map((frame) => ({ image: frame, kind: 'frame' })),
  );
  let at = 0;
  const counts = media.map((turn) => {
    const n = turn.reduce((sum, _, r) => sum + decoded[at + r].length, 0);
    at += turn.length;
    return n;
  });
  return { items, counts };
}

/** Server-sent events on the raw response: headers on the first event, `data: [DONE]` at the end. */
class EventStream {
  started = false;

  constructor(
    private readonly reply: FastifyReply,
    private readonly context: ServerContext,
  ) {}

  send(data: unknown): void {
    const raw = this.reply.raw;
    if (!this.started) {
      this.started = true;
      this.reply.hijack();
      raw.writeHead(200, {
        ...(this.reply.getHeaders() as Record<string, string>),
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
    }
    if (!raw.destroyed) raw.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** An error after the stream began: an error event, then the end (as vLLM does). */
  fail(error: unknown, request: FastifyRequest): void {
    const { status, body } = describeError(error);
    if (status >= 500 && !(error instanceof ApiError)) this.context.logError(error, request);
    this.send(body);
    this.end();
  }

  end(): void {
    const raw = this.reply.raw;
    if (!raw.destroyed) raw.end('data: [DONE]\n\n');
  }
}
