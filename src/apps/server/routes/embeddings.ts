/**
 * `POST /v1/embeddings` and `POST /v1/classify`.
 *
 * Embeddings: InternVL-C/G models embed texts (`input`: a string or an array of strings) and images (vLLM's
 * `messages` form: one user message with one image or text part; or `input: [{"image": url}, {"text": "…"}]`).
 * The mode is the model name's suffix (`name:C`, `name:G`) or the `mode` field (default C); text embeddings are the
 * same in both modes. InternViT models embed images only (pooled CLS features). Vectors are as `embed-text` /
 * `embed-image` print them (not normalized unless `normalize: true`).
 *
 * Classify: zero-shot, as `internvl classify`: each label in every template, probabilities per image.
 */
import type { FastifyInstance } from 'fastify';
import { l2normalize, matrix, type Matrix } from '../../../core/matrix.js';
import type { ClipMode } from '../../../models/internvl_clip.js';
import type { RgbImage } from '../../../processing/image.js';
import { classifyImages, encodeImages, encodeTexts } from '../../../tasks/clip.js';
import { embedImages } from '../../../tasks/embed.js';
import { ZEROSHOT_LANGUAGES, loadTemplates } from '../../../tasks/zeroshot_prompts.js';
import type { ServerContext } from '../context.js';
import { badRequest } from '../errors.js';
import { loadMediaImage } from '../media_decode.js';
import type { ClipModel, ServedModel, VisionModel } from '../models.js';

const item = {
  type: 'object',
  properties: { image: { type: 'string' }, text: { type: 'string' } },
  minProperties: 1,
  maxProperties: 1,
} as const;

const embeddingsSchema = {
  body: {
    type: 'object',
    properties: {
      model: { type: 'string' },
      input: {
        anyOf: [
          { type: 'string' },
          { type: 'array', minItems: 1, maxItems: 2048, items: { anyOf: [{ type: 'string' }, item] } },
        ],
      },
      messages: {
        type: 'array',
        minItems: 1,
        maxItems: 1,
        items: {
          type: 'object',
          required: ['role', 'content'],
          properties: {
            role: { const: 'user' },
            content: {
              anyOf: [
                { type: 'string' },
                {
                  type: 'array',
                  minItems: 1,
                  maxItems: 1,
                  items: {
                    type: 'object',
                    required: ['type'],
                    properties: {
                      type: { enum: ['text', 'image_url'] },
                      text: { type: 'string' },
                      image_url: {
                        anyOf: [
                          { type: 'string' },
                          { type: 'object', required: ['url'], properties: { url: { type: 'string' } } },
                        ],
                      },
                    },
                  },
                },
              ],
            },
          },
        },
      },
      encoding_format: { enum: ['float', 'base64'] },
      dimensions: { type: 'integer', minimum: 1 },
      mode: { enum: ['C', 'G'] },
      normalize: { type: 'boolean' },
      user: { type: 'string' },
    },
  },
} as const;

interface EmbeddingsBody {
  model?: string;
  input?: string | Array<string | { image?: string; text?: string }>;
  messages?: Array<{
    role: string;
    content: string | Array<{ type: string; text?: string; image_url?: string | { url: string } }>;
  }>;
  encoding_format?: 'float' | 'base64';
  dimensions?: number;
  mode?: ClipMode;
  normalize?: boolean;
}

type Input = { text: string } | { image: string };

const classifySchema = {
  body: {
    type: 'object',
    required: ['images', 'labels'],
    properties: {
      model: { type: 'string' },
      images: { type: 'array', minItems: 1, maxItems: 64, items: { type: 'string' } },
      labels: { type: 'array', minItems: 1, maxItems: 1000, items: { type: 'string', minLength: 1 } },
      templates: {
        anyOf: [
          { enum: [...ZEROSHOT_LANGUAGES] },
          { type: 'array', minItems: 1, maxItems: 100, items: { type: 'string' } },
        ],
      },
      mode: { enum: ['C', 'G'] },
    },
  },
} as const;

interface ClassifyBody {
  model?: string;
  images: string[];
  labels: string[];
  templates?: string | string[];
  mode?: ClipMode;
}

/** The served model and mode a model name addresses (`name`, `name:C`, `name:G`). */
function resolveModel(
  context: ServerContext,
  name: string | undefined,
  field: ClipMode | undefined,
): { model: ClipModel | VisionModel; mode: ClipMode } {
  const suffix = name ? /^(.*):([CcGg])$/.exec(name) : null;
  const base = suffix && !context.host.get(name!) ? suffix[1] : name;
  const fromName = suffix && base !== name ? (suffix[2].toUpperCase() as ClipMode) : undefined;
  if (fromName && field && fromName !== field)
    throw badRequest(`the model name asks for mode ${fromName} but 'mode' is ${field}`, 'mode');
  const model = context.model(base, ['clip', 'vision']) as ClipModel | VisionModel;
  return { model, mode: fromName ?? field ?? 'C' };
}

function parseInputs(body: EmbeddingsBody): Input[] {
  if ((body.input === undefined) === (body.messages === undefined))
    throw badRequest("give either 'input' or 'messages'");
  if (body.messages) {
    const content = body.messages[0].content;
    if (typeof content === 'string') return [{ text: content }];
    const part = content[0];
    if (part.type === 'text') {
      if (typeof part.text !== 'string') throw badRequest('a text part needs a text', 'messages.0.content.0.text');
      return [{ text: part.text }];
    }
    if (part.image_url === undefined) throw badRequest('an image_url part needs its image_url', 'messages.0.content.0');
    return [{ image: typeof part.image_url === 'string' ? part.image_url : part.image_url.url }];
  }
  const input = body.input!;
  return (typeof input === 'string' ? [input] : input).map((v) =>
    typeof v === 'string' ? { text: v } : v.image !== undefined ? { image: v.image } : { text: v.text! },
  );
}

async function embed(
  context: ServerContext,
  model: ClipModel | VisionModel,
  mode: ClipMode,
  inputs: Input[],
  signal: AbortSignal,
): Promise<{ rows: Float32Array[]; tokens: number }> {
  const texts = inputs.flatMap((v) => ('text' in v ? [v.text] : []));
  const urls = inputs.flatMap((v) => ('image' in v ? [v.image] : []));
  if (model.kind === 'vision' && texts.length > 0)
    throw badRequest(`the model '${model.name}' is a vision encoder: it embeds images only`, 'input');
  const images = await Promise.all(urls.map((url) => loadMediaImage(url, context.settings, signal)));
  let textRows: Matrix | null = null;
  let imageRows: Matrix | null = null;
  let tokens = 0;
  if (model.kind === 'clip') {
    if (texts.length > 0) textRows = await encodeTexts(model.pipeline, texts);
    if (images.length > 0) imageRows = await encodeImages(model.pipeline, images, { mode, transform: 'retrieval' });
    for (const text of texts) tokens += model.pipeline.tokenizer.encode(text).length;
  } else {
    const result = await embedImages(
      model.embedder,
      images.map((image: RgbImage, i) => ({ name: urls[i], image })),
    );
    imageRows = matrix(result.data, result.dims[0], result.dims[1]);
  }
  let t = 0;
  let m = 0;
  const row = (rows: Matrix, i: number) => rows.data.slice(i * rows.cols, (i + 1) * rows.cols);
  return { rows: inputs.map((v) => ('text' in v ? row(textRows!, t++) : row(imageRows!, m++))), tokens };
}

function encodeVector(vector: Float32Array, format: 'float' | 'base64'): number[] | string {
  if (format === 'base64') return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64');
  return Array.from(vector);
}

function embeddingDim(model: ServedModel): number {
  if (model.kind === 'clip') return model.pipeline.model.config.clipEmbedDim;
  if (model.kind === 'vision') return model.embedder.dim;
  return 0;
}

export function embeddingRoutes(app: FastifyInstance, context: ServerContext): void {
  app.post<{ Body: EmbeddingsBody }>('/v1/embeddings', { schema: embeddingsSchema }, async (request, reply) => {
    const { model, mode } = resolveModel(context, request.body.model, request.body.mode);
    request.stats.model = model.name;
    const dim = embeddingDim(model);
    if (request.body.dimensions !== undefined && request.body.dimensions !== dim)
      throw badRequest(`the model '${model.name}' gives ${dim}-dimensional embeddings only`, 'dimensions');
    const inputs = parseInputs(request.body);
    const scope = context.scope(request, reply);
    try {
      const { rows, tokens } = await embed(context, model, mode, inputs, scope.signal);
      const vectors = request.body.normalize ? rows.map((r) => l2normalize(matrix(r, 1, r.length)).data) : rows;
      request.stats.promptTokens = tokens;
      return {
        object: 'list',
        model: request.body.model ?? model.name,
        data: vectors.map((v, index) => ({
          object: 'embedding',
          index,
          embedding: encodeVector(v, request.body.encoding_format ?? 'float'),
        })),
        usage: { prompt_tokens: tokens, total_tokens: tokens },
      };
    } finally {
      scope.close();
    }
  });

  app.post<{ Body: ClassifyBody }>('/v1/classify', { schema: classifySchema }, async (request, reply) => {
    const { model, mode } = resolveModel(context, request.body.model, request.body.mode);
    if (model.kind !== 'clip')
      throw badRequest(`the model '${model.name}' cannot classify (it needs an InternVL-C/G text tower)`, 'model');
    request.stats.model = model.name;
    const { labels } = request.body;
    const given = request.body.templates ?? 'en';
    const templates = typeof given === 'string' ? await loadTemplates(given) : given;
    const scope = context.scope(request, reply);
    try {
      const images = await Promise.all(
        request.body.images.map((url) => loadMediaImage(url, context.settings, scope.signal)),
      );
      const { probs, logits } = await classifyImages(model.pipeline, images, labels, { templates, mode });
      const row = (m: Matrix, i: number) => Array.from(m.data.subarray(i * labels.length, (i + 1) * labels.length));
      return {
        object: 'list',
        model: model.name,
        mode,
        labels,
        data: images.map((_, index) => {
          const p = row(probs, index);
          return { index, label: labels[p.indexOf(Math.max(...p))], probs: p, logits: row(logits, index) };
        }),
      };
    } finally {
      scope.close();
    }
  });
}
