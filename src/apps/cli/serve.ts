/** `internvl serve --model <dir|id>[=name] …`: the OpenAI-compatible server (see src/apps/server/). */
import fs from 'node:fs';
import { DEFAULT_MAX_LENGTH, DEFAULT_PREFILL_CHUNK } from '../server/scheduler.js';
import { parseCommandArgs } from './args.js';
import type { Command } from './registry.js';
import { STORAGE_OPTIONS, storageOptionsArg, storageUsage } from './storage_arg.js';

const USAGE = `Usage: internvl serve (--model <dir|id>[=name] [--model ...] | --index <db>) [options]

An OpenAI-compatible HTTP server that keeps models loaded: /v1/chat/completions (InternVL-Chat; streaming),
/v1/embeddings and /v1/classify (InternVL-C/G; InternViT pooled features), /v1/models, /tokenize, /detokenize,
/health (503 while loading, then 200) and /metrics (Prometheus). With --index: POST /v1/search over a table built
by 'internvl index', and the search web page at /. Stops gracefully on SIGTERM/SIGINT.

Options:
  --model <dir|id>[=name]   a model folder or Hugging Face repo id, served under <name> (default: its last path
                            component); repeatable                       (required unless --index)
  --index <db>              serve this search index (a folder or s3://… URI): /v1/search and the page at /
  --index-table <name>      the table, when the database holds several
${storageUsage(28)}
  --host <addr>             address to listen on (default 127.0.0.1)
  --port <n>                port (default 8080; 0 picks a free one)
  --api-key <key>           required as 'Authorization: Bearer <key>' on every route but /health
  --api-key-file <file>     the same, read from a file (first line)
  --weights <f>             chat LLM weights: fp32 (default), int8, int4, int4+int8; vision towers and QLLaMA
                            use int8 unless fp32
  --threads <n>             onnxruntime threads (default: all cores)
  --max-batch <n>           chat sequences generating at once per model (default 4)
  --max-queue <n>           requests waiting per model before 429 (default 16)
  --max-model-len <n>       positions per chat request, prompt + answer (default 8192, capped by the model's
                            context); the KV caches grow with the requests up to --max-batch × this
  --prefill-chunk <n>       prompt positions prefilled between two decode steps of running requests (default 512)
  --timeout <s>             per-request time limit (default 600)
  --shutdown-timeout <s>    on SIGTERM/SIGINT, how long running requests may finish (default 10)
  --max-body-mb <n>         largest request body (default 64; 413 above)
  --allow-private-media     let media URLs reach loopback/private/link-local addresses (tests, LANs)
  --allowed-media-domains <a,b>  media URLs only from these domains (and their subdomains)
  --allowed-local-media-path <dir>  serve file:// URLs and absolute paths under this folder (default: none)
  --max-media-mb <n>        largest media download (default 20)
  --media-timeout <s>       time limit of one media download (default 10)
  --max-redirects <n>       redirects followed per media URL (default 3)
  --max-image-pixels <n>    largest decoded image (default 40000000)
  --max-total-tiles <n>     tiles of all images of one chat request (default 48)
  --video-frames <n>        frames sampled from a video_url without num_frames (default 8)
  --cors <origin>           allow this origin (repeatable; '*' for any); CORS is off by default
  --log-format <f>          one line per request: text (default), json, or none
  --offline                 never download (also HF_HUB_OFFLINE=1)
  -h, --help                show this help
`;

export const serveCommand: Command = {
  name: 'serve',
  summary: 'an OpenAI-compatible server (chat with streaming, embeddings, classify) that keeps models loaded',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'serve',
        usage: USAGE,
        options: {
          model: { type: 'string', multiple: true },
          index: { type: 'string' },
          'index-table': { type: 'string' },
          ...STORAGE_OPTIONS,
          host: { type: 'string' },
          port: { type: 'string' },
          'api-key': { type: 'string' },
          'api-key-file': { type: 'string' },
          weights: { type: 'string' },
          threads: { type: 'string' },
          'max-batch': { type: 'string' },
          'max-queue': { type: 'string' },
          'max-model-len': { type: 'string' },
          'prefill-chunk': { type: 'string' },
          timeout: { type: 'string' },
          'shutdown-timeout': { type: 'string' },
          'max-body-mb': { type: 'string' },
          'allow-private-media': { type: 'boolean' },
          'allowed-media-domains': { type: 'string' },
          'allowed-local-media-path': { type: 'string' },
          'max-media-mb': { type: 'string' },
          'media-timeout': { type: 'string' },
          'max-redirects': { type: 'string' },
          'max-image-pixels': { type: 'string' },
          'max-total-tiles': { type: 'string' },
          'video-frames': { type: 'string' },
          cors: { type: 'string', multiple: true },
          'log-format': { type: 'string' },
          offline: { type: 'boolean' },
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
    const host = parsed.string('host', '127.0.0.1');
    const port = parsed.integer('port', 8080, { min: 0, max: 65535 });
    const shutdownSeconds = parsed.integer('shutdown-timeout', 10, { min: 0 });
    const logFormat = parsed.choice('log-format', ['text', 'json', 'none'] as const, 'text');
    const weights = parsed.choice('weights', ['fp32', 'int8', 'int4', 'int4+int8'] as const, 'fp32');

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
        maxBatch: parsed.integer('max-batch', 4, { min: 1, max: 64 }),
        maxQueue: parsed.integer('max-queue', 16, { min: 0 }),
        maxLength: parsed.integer('max-model-len', DEFAULT_MAX_LENGTH, { min: 1 }),
        prefillChunk: parsed.integer('prefill-chunk', DEFAULT_PREFILL_CHUNK, { min: 1 }),
        offline: parsed.flag('offline') || undefined,
      },
      settings: {
        timeoutSeconds: parsed.integer('timeout', 600, { min: 1 }),
        maxImagePixels: parsed.integer('max-image-pixels', 40_000_000, { min: 1 }),
        maxTotalTiles: parsed.integer('max-total-tiles', 48, { min: 1 }),
        videoFrames: parsed.integer('video-frames', 8, { min: 1, max: 64 }),
        media: {
          allowPrivate: parsed.flag('allow-private-media'),
          allowedDomains: domains
            ? domains
                .split(',')
                .map((d) => d.trim().toLowerCase())
                .filter(Boolean)
            : null,
          allowedLocalPath: localPath ?? null,
          maxBytes: parsed.integer('max-media-mb', 20, { min: 1 }) * mb,
          timeoutMs: parsed.integer('media-timeout', 10, { min: 1 }) * 1000,
          maxRedirects: parsed.integer('max-redirects', 3, { min: 0, max: 20 }),
        },
      },
      apiKey,
      bodyLimit: parsed.integer('max-body-mb', 64, { min: 1 }) * mb,
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
