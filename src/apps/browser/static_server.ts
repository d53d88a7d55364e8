/**
 * A static file server on 127.0.0.1 for the browser harness and `internvl serve --web`: local folders mounted under
 * URL prefixes, plus files held in memory (page bundles). It answers range requests (206, what the browser's
 * safetensors reader needs), lists folders as JSON (marked by the LISTING_HEADER the browser file system looks
 * for), and sends the cross-origin isolation headers that let onnxruntime-web use threads (SharedArrayBuffer).
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { LISTING_HEADER } from '../../web/files.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.mp4': 'video/mp4',
  '.webm': 'video/webm',
};

const ISOLATION = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export interface StaticServer {
  /** `http://<host>:<port>` */
  readonly origin: string;
  /** Serves the folder (or file) `local` under `/prefix/…`; returns the URL of its root. */
  mount(prefix: string, local: string): string;
  /** Serves bytes held in memory at `urlPath` (e.g. `/index.html`). */
  put(urlPath: string, body: string | Uint8Array, type?: string): string;
  close(): Promise<void>;
}

/** Listens on 127.0.0.1 and a free port unless told otherwise. */
export async function startStaticServer(listen: { host?: string; port?: number } = {}): Promise<StaticServer> {
  const mounts = new Map<string, string>();
  const memory = new Map<string, { body: Buffer; type: string }>();
  const server = http.createServer((request, response) => {
    try {
      handle(request, response);
    } catch (error) {
      response.writeHead(500, ISOLATION).end(String((error as Error).message));
    }
  });

  const handle = (request: http.IncomingMessage, response: http.ServerResponse) => {
    const urlPath = decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname);
    if (request.method !== 'GET' && request.method !== 'HEAD') return void response.writeHead(405, ISOLATION).end();
    const inMemory = memory.get(urlPath);
    if (inMemory) return sendBytes(request, response, inMemory.body, inMemory.type);
    const local = localPath(urlPath);
    if (!local) return void response.writeHead(404, ISOLATION).end();
    const stat = fs.statSync(local, { throwIfNoEntry: false });
    if (!stat) return void response.writeHead(404, ISOLATION).end();
    if (stat.isDirectory()) {
      const names = fs.readdirSync(local).sort();
      const body = Buffer.from(JSON.stringify(names));
      return sendBytes(request, response, body, TYPES['.json'], { [LISTING_HEADER]: '1' });
    }
    sendFile(request, response, local, stat.size);
  };

  /** The file a URL names inside a mount, or null (unknown prefix, or a path leaving the mounted folder). */
  const localPath = (urlPath: string): string | null => {
    for (const [prefix, root] of mounts) {
      if (urlPath !== prefix && !urlPath.startsWith(`${prefix}/`)) continue;
      const rest = urlPath.slice(prefix.length).replace(/^\/+/, '');
      const full = path.resolve(root, rest);
      return full === root || full.startsWith(`${root}${path.sep}`) ? full : null;
    }
    return null;
  };

  const host = listen.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port ?? 0, host, resolve);
  });
  const origin = `http://${host.includes(':') ? `[${host}]` : host}:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    mount(prefix, local) {
      const clean = `/${prefix.replace(/^\/+|\/+$/g, '')}`;
      mounts.set(clean, path.resolve(local));
      return `${origin}${clean}`;
    },
    put(urlPath, body, type) {
      memory.set(urlPath, {
        body: typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength),
        type: type ?? TYPES[path.extname(urlPath)] ?? 'application/octet-stream',
      });
      return `${origin}${urlPath}`;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` → [first, last], or null when absent or unsatisfiable. */
function parseRange(header: string | undefined, size: number): [number, number] | null | 'invalid' {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'invalid';
  let first: number;
  let last: number;
  if (m[1] === '') {
    first = Math.max(0, size - Number(m[2]));
    last = size - 1;
  } else {
    first = Number(m[1]);
    last = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  return first > last || first >= size ? 'invalid' : [first, last];
}

function headers(type: string, extra: Record<string, string> = {}): Record<string, string> {
  return { ...ISOLATION, 'Content-Type': type, 'Accept-Ranges': 'bytes', 'Cache-Control': 'no-store', ...extra };
}

function sendBytes(
  request: http.IncomingMessage,
  response: http.ServerResponse,
  body: Buffer,
  type: string,
  extra?: Record<string, string>,
): void {
  const range = parseRange(request.headers.range, body.byteLength);
  if (range === 'invalid')
    return void response.writeHead(416, { ...ISOLATION, 'Content-Range': `bytes */${body.byteLength}` }).end();
  const [first, last] = range ?? [0, body.byteLength - 1];
  response.writeHead(range ? 206 : 200, {
    ...headers(type, extra),
    'Content-Length': String(last - first + 1),
    ...(range ? { 'Content-Range': `bytes ${first}-${last}/${body.byteLength}` } : {}),
  });
  response.end(request.method === 'HEAD' ? undefined : body.subarray(first, last + 1));
}

function sendFile(request: http.IncomingMessage, response: http.ServerResponse, file: string, size: number): void {
  const range = parseRange(request.headers.range, size);
  if (range === 'invalid')
    return void response.writeHead(416, { ...ISOLATION, 'Content-Range': `bytes */${size}` }).end();
  const [first, last] = range ?? [0, size - 1];
  response.writeHead(range ? 206 : 200, {
    ...headers(TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream'),
    'Content-Length': String(Math.max(0, last - first + 1)),
    ...(range ? { 'Content-Range': `bytes ${first}-${last}/${size}` } : {}),
  });
  if (request.method === 'HEAD' || size === 0) return void response.end();
  fs.createReadStream(file, { start: first, end: last }).pipe(response);
}
