/** `internvl serve --model <dir|id>[=name] …`: the OpenAI-compatible server (see src/apps/server/). */
import fs from 'node:fs';
import { DEFAULT_MAX_LENGTH, DEFAULT_PREFILL_CHUNK } from '../server/scheduler.js';
import { DEFAULT_VISUAL_CACHE_MB } from '../../tasks/visual_cache.js';
import { parseCommandArgs, THREADS_OPTION } from './args.js';
import { MODEL_OPTIONS, weightsOption } from './model_arg.js';
import type { Command } from './registry.js';
import { STORAGE_OPTIONS, storageOptionsArg } from './storage_arg.js';

export const serveCommand: Command = {
  name: 'serve',
  summary: 'an OpenAI-compatible server (chat with streaming, embeddings, classify) that keeps models loaded',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'serve',
        synopsis: 'serve (--model <dir|id>[=name] [--model ...] | --index <db>) [options]',
        description: `An OpenAI-compatible HTTP server that keeps models loaded: /v1/chat/completions (InternVL-Chat; streaming),
/v1/embeddings and /v1/classify (InternVL-C/G; InternViT pooled features), /v1/models, /tokenize, /detokenize,
/health (503 while loading, then 200) and /metrics (Prometheus). With --index: POST /v1/search over a table built
by 'internvl index', and the search web page at /. Stops gracefully on SIGTERM/SIGINT.`,
        options: {
          model: {
            type: 'string',
            multiple: true,
            value: '<dir|id>[=name]',
            help: 'a model folder or Hugging Face repo id, served under <name> (default: its last path component); repeatable (required unless --index)',
          },
          index: {
            type: 'string',
            value: 'db',
            help: 'serve this search index (a folder or s3://… URI): /v1/search and the page at /',
          },
          'index-table': { type: 'string', value: 'name', help: 'the table, when the database holds several' },
          ...STORAGE_OPTIONS,
          host: { type: 'string', value: 'addr', help: 'address to listen on', default: '127.0.0.1' },
          port: { type: 'string', value: 'n', help: 'port (0 picks a free one)', default: 8080 },
          'api-key': {
            type: 'string',
            value: 'key',
            help: "required as 'Authorization: Bearer <key>' on every route but /health",
          },
          'api-key-file': { type: 'string', value: 'file', help: 'the same, read from a file (first line)' },
          weights: weightsOption(
            'chat LLM weights: fp32, int8, int4, int4+int8; vision towers and QLLaMA use int8 unless fp32',
          ),
          threads: THREADS_OPTION,
          'vision-threads': {
            type: 'string',
            value: 'n',
            help: "threads of chat models' vision towers, which encode new images beside the decoding (default: half of --threads)",
          },
          'vision-cache-mb': {
            type: 'string',
            value: 'n',
            help: "MiB of image embeddings each chat model keeps, so a conversation's images are encoded once, not every turn (0: none)",
            default: DEFAULT_VISUAL_CACHE_MB,
          },
          'max-batch': { type: 'string', value: 'n', help: 'chat sequences generating at once per model', default: 4 },
          'max-queue': { type: 'string', value: 'n', help: 'requests waiting per model before 429', default: 16 },
          'max-model-len': {
            type: 'string',
            value: 'n',
            help: "positions per chat request, prompt + answer, capped by the model's context; the KV caches grow with the requests up to --max-batch × this",
            default: DEFAULT_MAX_LENGTH,
          },
          'prefill-chunk': {
            type: 'string',
            value: 'n',
            help: 'prompt positions prefilled between two decode steps of running requests',
            default: DEFAULT_PREFILL_CHUNK,
          },
          timeout: { type: 'string', value: 's', help: 'per-request time limit', default: 600 },
          'shutdown-timeout': {
            type: 'string',
            value: 's',
            help: 'on SIGTERM/SIGINT, how long running requests may finish',
            default: 10,
          },
          'max-body-mb': { type: 'string', value: 'n', help: 'largest request body (413 above)', default: 64 },
          'allow-private-media': {
            type: 'boolean',
            help: 'let media URLs reach loopback/private/link-local addresses (tests, LANs)',
          },
          'allowed-media-domains': {
            type: 'string',
            value: 'a,b',
            help: 'media URLs only from these domains (and their subdomains)',
          },
          'allowed-local-media-path': {
            type: 'string',
            value: 'dir',
            help: 'serve file:// URLs and absolute paths under this folder (default: none)',
          },
          'max-media-mb': { type: 'string', value: 'n', help: 'largest media download', default: 20 },
          'media-timeout': { type: 'string', value: 's', help: 'time limit of one media download', default: 10 },
          'max-redirects': { type: 'string', value: 'n', help: 'redirects followed per media URL', default: 3 },
          'max-image-pixels': { type: 'string', value: 'n', help: 'largest decoded image', default: 40_000_000 },
          'max-total-tiles': {
            type: 'string',
            value: 'n',
            help: 'tiles of all images of one chat request',
            default: 48,
          },
          'video-frames': {
            type: 'string',
            value: 'n',
            help: 'frames sampled from a video_url without num_frames',
            default: 8,
          },
          cors: {
            type: 'string',
            multiple: true,
            value: 'origin',
            help: "allow this origin (repeatable; '*' for any); CORS is off by default",
          },
          'log-format': {
            type: 'string',
            value: 'f',
            help: 'one line per request: text, json, or none',
            default: 'text',
          },
          offline: MODEL_OPTIONS.offline,
        },
      },
      args,
    );
    if (!parsed) return 0;
    const models = (parsed.values.model as string[] | undefined) ?? [];
    const indexDb = parsed.string('index');
    if (models.length === 0 && indexDb === undefined) parsed.fail('--model (or --index) is required');
    if (parsed.values['api-key'] !== undefined && parsed.values['api-key-file'] !== undefined)
      parsed.fail('give --api-key or --api-key-file, not both');
    const keyFile = parsed.string('api-key-file');
    let apiKey = parsed.string('api-key') ?? null;
    if (keyFile !== undefined) {
      try {
        apiKey = fs.readFileSync(keyFile, 'utf8').split(/\r?\n/)[0].trim();
      } catch (error) {
        parsed.fail(`cannot read --api-key-file '${keyFile}' (${(error as NodeJS.ErrnoException).code ?? error})`);
      }
      if (!apiKey) parsed.fail(`--api-key-file '${keyFile}' is empty`);
    }
    const localPath = parsed.string('allowed-local-media-path');
    if (localPath !== undefined && !fs.statSync(localPath, { throwIfNoEntry: false })?.isDirectory())
      parsed.fail(`--allowed-local-media-path '${localPath}' is not a folder`);
    const mb = 1024 * 1024;
    const domains = parsed.string('allowed-media-domains');
    const host = parsed.string('host');
    const port = parsed.integer('port', { min: 0, max: 65535 });
    const shutdownSeconds = parsed.integer('shutdown-timeout', { min: 0 });
    const logFormat = parsed.choice('log-format', ['text', 'json', 'none'] as const);
    const weights = parsed.choice('weights', ['fp32', 'int8', 'int4', 'int4+int8'] as const);

    const [{ createServer }, { parseModelSpec }, { InternVLError }] = await Promise.all([
      import('../server/server.js'),
      import('../server/models.js'),
      import('../../core/errors.js'),
    ]);
    let plugins: import('../server/context.js').ServerPlugin[] = [];
    let searchIndex: import('../search/search_index.js').SearchIndex | null = null;
    if (indexDb !== undefined) {
      const [{ openIndex }, { searchPlugin }] = await Promise.all([
        import('../search/search_index.js'),
        import('../search/server.js'),
      ]);
      searchIndex = await openIndex(indexDb, {
        table: parsed.string('index-table'),
        storageOptions: storageOptionsArg(parsed),
        session: { threads: parsed.threads() },
      });
      plugins = [searchPlugin(searchIndex)];
    }
    const server = createServer({
      models: models.map(parseModelSpec),
      load: {
        weights,
        session: { threads: parsed.threads() },
        visionThreads: parsed.integer('vision-threads', { min: 1 }),
        visualCacheBytes: parsed.integer('vision-cache-mb', { min: 0 }) * 2 ** 20,
        maxBatch: parsed.integer('max-batch', { min: 1, max: 64 }),
        maxQueue: parsed.integer('max-queue', { min: 0 }),
        maxLength: parsed.integer('max-model-len', { min: 1 }),
        prefillChunk: parsed.integer('prefill-chunk', { min: 1 }),
        offline: parsed.flag('offline') || undefined,
      },
      settings: {
        timeoutSeconds: parsed.integer('timeout', { min: 1 }),
        maxImagePixels: parsed.integer('max-image-pixels', { min: 1 }),
        maxTotalTiles: parsed.integer('max-total-tiles', { min: 1 }),
        videoFrames: parsed.integer('video-frames', { min: 1, max: 64 }),
        media: {
          allowPrivate: parsed.flag('allow-private-media'),
          allowedDomains: domains
            ? domains
                .split(',')
                .map((d) => d.trim().toLowerCase())
                .filter(Boolean)
            : null,
          allowedLocalPath: localPath ?? null,
          maxBytes: parsed.integer('max-media-mb', { min: 1 }) * mb,
          timeoutMs: parsed.integer('media-timeout', { min: 1 }) * 1000,
          maxRedirects: parsed.integer('max-redirects', { min: 0, max: 20 }),
        },
      },
      apiKey,
      bodyLimit: parsed.integer('max-body-mb', { min: 1 }) * mb,
      corsOrigins: (parsed.values.cors as string[] | undefined) ?? [],
      logFormat,
      plugins,
    });
    const say = (line: string) => process.stderr.write(`${line}\n`);
    const url = await server.listen({ host, port });
    say(`internvl serve: listening on ${url} (loading ${models.length} model(s))`);
    return new Promise<number>((resolve) => {
      let closing = false;
      const stop = (code: number) => {
        if (closing) return;
        closing = true;
        server
          .close(shutdownSeconds)
          .then(() => searchIndex?.close())
          .then(
            () => resolve(code),
            (error) => {
              say(`internvl serve: error while closing: ${(error as Error).stack ?? error}`);
              resolve(70);
            },
          );
      };
      const onSignal = (signal: string) => {
        if (closing) {
          say(`internvl serve: ${signal} again, exiting now`);
          process.exit(130);
        }
        say(`internvl serve: ${signal}: finishing running requests (up to ${shutdownSeconds} s)`);
        stop(0);
      };
      process.on('SIGTERM', () => onSignal('SIGTERM'));
      process.on('SIGINT', () => onSignal('SIGINT'));
      server.context.host.ready.then(
        () => say(`internvl serve: ready (${server.context.host.names.join(', ')})`),
        (error) => {
          if (error instanceof InternVLError) say(`error: ${error.message.replace(/\s*\n\s*/g, ' ')}`);
          else say(`internvl serve: internal error while loading (a bug):\n${(error as Error).stack ?? error}`);
          stop(error instanceof InternVLError ? 2 : 70);
        },
      );
    });
  },
};
