/** `/health`, `/metrics`, `/v1/models`, `/tokenize`, `/detokenize`. */
import type { FastifyInstance } from 'fastify';
import { renderChatPrompt, type PromptMessage } from '../../../tasks/chat_prompt.js';
import { promptFormat } from '../../../tasks/chat.js';
import type { ServerContext } from '../context.js';
import { badRequest } from '../errors.js';
import { capabilities } from '../models.js';

const CREATED = Math.floor(Date.now() / 1000);

const tokenizeSchema = {
  body: {
    type: 'object',
    properties: {
      model: { type: 'string' },
      /** llama-server's field. */
      content: { type: 'string' },
      /** vLLM's field. */
      prompt: { type: 'string' },
      messages: {
        type: 'array',
        minItems: 1,
        items: {
          type: 'object',
          required: ['role', 'content'],
          properties: { role: { enum: ['system', 'developer', 'user', 'assistant'] }, content: { type: 'string' } },
        },
      },
      add_special: { type: 'boolean' },
      with_pieces: { type: 'boolean' },
    },
  },
} as const;

const detokenizeSchema = {
  body: {
    type: 'object',
    required: ['tokens'],
    properties: {
      model: { type: 'string' },
      tokens: { type: 'array', items: { type: 'integer', minimum: 0 } },
    },
  },
} as const;

export function infoRoutes(app: FastifyInstance, context: ServerContext): void {
  app.get('/health', { config: { public: true } }, async (_request, reply) => {
    const state = context.host.state;
    return reply.code(state === 'ready' ? 200 : 503).send({ status: state === 'ready' ? 'ok' : state });
  });

  app.get('/metrics', async (_request, reply) =>
    reply.type('text/plain; version=0.0.4; charset=utf-8').send(context.metrics.render()),
  );

  app.get('/v1/models', async () => ({
    object: 'list',
    data: context.host.all().map((m) => ({
      id: m.name,
      object: 'model',
      created: CREATED,
      owned_by: 'internvl-ts',
      root: m.dir,
      capabilities: capabilities(m),
      ...(m.kind === 'chat' ? { max_model_len: m.pipeline.model.config.llm.maxPositionEmbeddings } : {}),
    })),
  }));

  app.post<{
    Body: {
      model?: string;
      content?: string;
      prompt?: string;
      messages?: Array<{ role: string; content: string }>;
      add_special?: boolean;
      with_pieces?: boolean;
    };
  }>('/tokenize', { schema: tokenizeSchema }, async (request) => {
    const model = context.model(request.body.model, ['chat']);
    if (model.kind !== 'chat') throw new Error('unreachable');
    request.stats.model = model.name;
    const { pipeline } = model;
    const given = [request.body.content, request.body.prompt, request.body.messages].filter((v) => v !== undefined);
    if (given.length !== 1) throw badRequest("give exactly one of 'content', 'prompt' or 'messages'");
    const messages = request.body.messages;
    const text =
      messages !== undefined
        ? renderChatPrompt(
            promptFormat(pipeline),
            messages.map(
              (m): PromptMessage => ({
                role: m.role === 'developer' ? 'system' : (m.role as PromptMessage['role']),
                text: m.content,
              }),
            ),
            [],
          )
        : (request.body.content ?? request.body.prompt ?? '');
    const ids = pipeline.tokenizer.encode(text, { addSpecialTokens: request.body.add_special ?? true });
    const tokens = request.body.with_pieces ? ids.map((id) => ({ id, piece: pipeline.tokenizer.decode([id]) })) : ids;
    return { tokens, count: ids.length, max_model_len: pipeline.model.config.llm.maxPositionEmbeddings };
  });

  app.post<{ Body: { model?: string; tokens: number[] } }>(
    '/detokenize',
    { schema: detokenizeSchema },
    async (request) => {
      const model = context.model(request.body.model, ['chat']);
      if (model.kind !== 'chat') throw new Error('unreachable');
      request.stats.model = model.name;
      const vocab = model.pipeline.model.config.llm.vocabSize;
      const bad = request.body.tokens.findIndex((t) => t >= vocab);
      if (bad >= 0)
        throw badRequest(`token ${request.body.tokens[bad]} is outside the vocabulary (${vocab})`, `tokens.${bad}`);
      const content = model.pipeline.tokenizer.decode(request.body.tokens);
      // llama-server answers `content`, vLLM `prompt`.
      return { content, prompt: content };
    },
  );
}
