/**
 * Sessions that run in a worker thread. onnxruntime-node runs a session synchronously on the JavaScript thread
 * that calls it, so in one thread two sessions never overlap and nothing else (HTTP, timers, other models) runs
 * meanwhile. A session created here lives in its own worker: its runs leave the calling thread free and overlap
 * with other sessions' runs (the server encodes a new request's images this way while others decode).
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { InferenceSession } from 'onnxruntime-common';
import { RuntimeError } from '../errors.js';
import { Tensor, type Feeds, type SessionHandle } from '../session.js';

type WireData = Float32Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Uint16Array | Float64Array;

/** A tensor as it crosses the thread boundary (structured clone). */
export interface WireTensor {
  type: 'float32' | 'float16' | 'int32' | 'int64' | 'uint8' | 'int8' | 'bool' | 'float64';
  data: WireData;
  dims: number[];
}

export type WorkerRequest =
  | { kind: 'run'; id: number; feeds: Record<string, WireTensor>; outputs?: string[] }
  | { kind: 'release' };

export type WorkerReply =
  | { kind: 'ready' }
  | { kind: 'failed'; message: string }
  | { kind: 'result'; id: number; results: Record<string, WireTensor> }
  | { kind: 'error'; id: number; message: string };

/**
 * The worker's script: plain JavaScript (a worker does not inherit the TypeScript loader the tests and the dev
 * CLI run under), given onnxruntime-node's resolved path. It creates the session and answers run requests (see
 * WorkerRequest/WorkerReply) until told to release it.
 */
const WORKER_SCRIPT = `
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.runtime);
(async () => {
  let session;
  try {
    session = await ort.InferenceSession.create(workerData.model, workerData.options);
  } catch (error) {
    parentPort.postMessage({ kind: 'failed', message: error.message });
    return;
  }
  parentPort.on('message', async (request) => {
    if (request.kind === 'release') {
      await session.release();
      parentPort.close();
      return;
    }
    try {
      const feeds = {};
      for (const [name, t] of Object.entries(request.feeds)) feeds[name] = new ort.Tensor(t.type, t.data, t.dims);
      const out = request.outputs ? await session.run(feeds, request.outputs) : await session.run(feeds);
      const results = {};
      const transfer = new Set();
      for (const [name, t] of Object.entries(out)) {
        results[name] = { type: t.type, data: t.data, dims: [...t.dims] };
        if (t.data.buffer instanceof ArrayBuffer) transfer.add(t.data.buffer);
      }
      parentPort.postMessage({ kind: 'result', id: request.id, results }, [...transfer]);
    } catch (error) {
      parentPort.postMessage({ kind: 'error', id: request.id, message: error.message });
    }
  });
  parentPort.postMessage({ kind: 'ready' });
})();
`;
const RUNTIME_PATH = createRequire(import.meta.url).resolve('onnxruntime-node');

export async function createWorkerSession(
  model: Uint8Array,
  options: InferenceSession.SessionOptions,
): Promise<SessionHandle> {
  const worker = new Worker(WORKER_SCRIPT, { eval: true, workerData: { model, options, runtime: RUNTIME_PATH } });
  const pending = new Map<number, { resolve: (r: Record<string, Tensor>) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  let failure: Error | null = null;
  const fail = (error: Error) => {
    failure ??= error;
    for (const { reject } of pending.values()) reject(error);
    pending.clear();
  };
  await new Promise<void>((resolve, reject) => {
    worker.on('message', (reply: WorkerReply) => {
      if (reply.kind === 'ready') resolve();
      else if (reply.kind === 'failed') reject(new RuntimeError(reply.message));
      else {
        const waiter = pending.get(reply.id);
        pending.delete(reply.id);
        if (pending.size === 0) worker.unref();
        if (reply.kind === 'error') waiter?.reject(new Error(reply.message));
        else
          waiter?.resolve(
            Object.fromEntries(
              Object.entries(reply.results).map(([name, t]) => [name, new Tensor(t.type, t.data as never, t.dims)]),
            ),
          );
      }
    });
    worker.once('error', (error) => {
      reject(error);
      fail(error);
    });
    worker.once('exit', (code) => {
      const error = new RuntimeError(`the session's worker thread exited (code ${code})`);
      reject(error);
      fail(error);
    });
  });
  // An idle worker does not keep the process alive; one with a run in flight does.
  worker.unref();
  return {
    run(feeds: Feeds, outputs?: string[]) {
      if (failure) return Promise.reject(failure);
      const id = nextId++;
      const wire: Record<string, WireTensor> = {};
      for (const [name, t] of Object.entries(feeds))
        wire[name] = { type: t.type as WireTensor['type'], data: t.data as WireData, dims: [...t.dims] };
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        worker.ref();
        worker.postMessage({ kind: 'run', id, feeds: wire, outputs } satisfies WorkerRequest);
      });
    },
    async release() {
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      worker.postMessage({ kind: 'release' } satisfies WorkerRequest);
      worker.ref();
      await exited;
    },
  };
}
