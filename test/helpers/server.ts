/** In-process servers for the server tests: `internvl serve` on 127.0.0.1:0, and a loopback media host. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer, type InternVLServer, type ServerOptions } from '../../src/apps/server/server.js';

export interface RunningServer {
  url: string;
  server: InternVLServer;
  close(): Promise<void>;
}

export const LOAD = { weights: 'fp32', session: {}, maxBatch: 4, maxQueue: 16 } as const;

/** Starts a server (models load in the background unless `waitReady`). */
export async function startServer(
  options: Partial<ServerOptions> & Pick<ServerOptions, 'models'>,
  waitReady = true,
): Promise<RunningServer> {
  const server = createServer({ load: { ...LOAD, session: {} }, logFormat: 'none', ...options });
  const url = await server.listen({ host: '127.0.0.1', port: 0 });
  if (waitReady) await server.context.host.ready;
  return { url, server, close: () => server.close(1) };
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A plain HTTP server on 127.0.0.1 answering with `handler` (media for the SSRF tests). */
export async function startMediaHost(handler: Handler): Promise<{ url: string; close(): Promise<void> }> {
  const host = http.createServer(handler);
  await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve));
  const { port } = host.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        host.closeAllConnections();
        host.close(() => resolve());
      }),
  };
}

/** POSTs JSON and returns status, headers and the parsed body. */
export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: any }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON: kept as text */
  }
  return { status: response.status, headers: response.headers, body: parsed };
}
