/**
 * The search index in the server: `POST /v1/search` (a text or image query, k, an SQL filter → ranked JSON),
 * the web page at `/`, and the indexed images (`/v1/search/images/<id>`, `?thumb=1` for a small JPEG).
 *
 * Images are served by row id only: the id is looked up in the table and the row's own URI is read, so a request
 * can reach no file that was not indexed (no path in the URL, nothing to traverse). Queries run one at a time
 * (the model's sessions are shared).
 */
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { readImageHeaderSize } from '../../processing/image.js';
import type { ServerContext } from '../server/context.js';
import { ApiError, badRequest } from '../server/errors.js';
import { DEFAULT_MEDIA_POLICY, fetchMedia, type MediaPolicy } from '../server/media.js';
import { SEARCH_PAGE } from './page.js';
import type { SearchIndex } from './search_index.js';
import { readSource } from './sources.js';

const searchSchema = {
  body: {
    type: 'object',
    properties: {
      query: { type: 'string', minLength: 1, maxLength: 4096 },
      /** A data URI, an http(s) URL, or a local path the media policy allows. */
      image: { type: 'string', minLength: 1 },
      k: { type: 'integer', minimum: 1, maximum: 1000 },
      where: { type: 'string', maxLength: 4096 },
    },
    additionalProperties: false,
  },
} as const;

interface SearchBody {
  query?: string;
  image?: string;
  k?: number;
  where?: string;
}

const ID = /^[0-9a-f]{32}$/;
const THUMB_SIDE = 256;

/** The search routes for one index; with no server context (a bare fastify app) media are data URIs only. */
export function searchPlugin(index: SearchIndex) {
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(work: () => Promise<T>): Promise<T> => {
    const run = chain.then(work, work);
    chain = run.catch(() => {});
    return run;
  };
  return async (app: FastifyInstance, context?: ServerContext): Promise<void> => {
    const media: MediaPolicy | null = context?.settings.media ?? null;
    app.get('/', { config: { public: true } }, async (_request, reply) =>
      reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(SEARCH_PAGE),
    );
    app.get('/v1/search', async () => ({
      object: 'search.index',
      table: index.store.name,
      model: index.stamp.model,
      mode: index.stamp.mode,
      weights: index.stamp.weights,
      dim: index.stamp.dim,
      rows: await index.store.count(),
      ann_index: await index.store.hasAnnIndex(),
    }));
    app.post<{ Body: SearchBody }>('/v1/search', { schema: searchSchema }, async (request) => {
      const { query, image, k = 10, where } = request.body;
      if ((query === undefined) === (image === undefined))
        throw badRequest("give either 'query' (text) or 'image', not both", query ? 'image' : 'query');
      const started = performance.now();
      let bytes: Uint8Array | undefined;
      if (image !== undefined) {
        if (!media && !image.startsWith('data:')) throw badRequest("'image' must be a data: URI here", 'image');
        bytes = (await fetchMedia(image, media ?? DEFAULT_MEDIA_POLICY)).bytes;
      }
      const results = await serial(() =>
        index.search(bytes ? { image: bytes } : { text: query! }, { k, where: where?.trim() || undefined }),
      );
      return {
        object: 'list',
        table: index.store.name,
        took_ms: Math.round(performance.now() - started),
        data: results.map((r) => ({
          ...r,
          image_url: `/v1/search/images/${r.id}`,
          thumbnail_url: `/v1/search/images/${r.id}?thumb=1`,
        })),
      };
    });
    app.get<{ Params: { id: string }; Querystring: { thumb?: string } }>(
      '/v1/search/images/:id',
      async (request, reply) => {
        const { id } = request.params;
        const [row] = ID.test(id) ? await index.store.get([id]) : [];
        if (!row) throw new ApiError(404, 'not_found_error', `no indexed image ${id}`, 'id', 'not_found');
        let bytes: Buffer;
        try {
          bytes = await readSource(row.uri);
        } catch {
          throw new ApiError(404, 'not_found_error', `indexed image ${id} is gone from ${row.uri}`, 'id', 'gone');
        }
        reply.header('cache-control', 'private, max-age=300');
        if (request.query.thumb) {
          const thumb = await sharp(bytes, { limitInputPixels: 200_000_000 })
            .rotate()
            .resize(THUMB_SIDE, THUMB_SIDE, { fit: 'inside', withoutEnlargement: true })
            .jpeg({ quality: 80 })
            .toBuffer()
            .catch(() => null);
          if (!thumb) throw new ApiError(422, 'invalid_request_error', `indexed image ${id} cannot be decoded now`);
          return reply.type('image/jpeg').send(thumb);
        }
        const format = readImageHeaderSize(bytes)?.format ?? 'octet-stream';
        return reply
          .type(format === 'octet-stream' ? 'application/octet-stream' : `image/${format}`)
          .header('x-content-type-options', 'nosniff')
          .send(bytes);
      },
    );
  };
}
