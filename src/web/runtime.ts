/**
 * The browser runtime backend: onnxruntime-web, given by the app (`import * as ort from 'onnxruntime-web'`), so the
 * library bundle holds no onnxruntime build and the app picks one (wasm, WebGPU) and where its `.wasm` files live.
 *
 * onnxruntime-web cannot map files: a graph's weights are handed over as external-data buffers, which it copies
 * into its heap while the session is created. Weights used as stored are read with one range request per run of
 * neighbouring tensors (a safetensors file stores a layer's tensors side by side), and each tensor is a view into
 * that run, so no per-tensor copy is made in JavaScript. Converted and quantized weights are produced (or taken
 * from the weight store, see weight_store.ts) one at a time.
 */
import type { InferenceSession } from 'onnxruntime-common';
import type { ByteSource } from '../core/bytes.js';
import { RuntimeError } from '../core/errors.js';
import { ELEM_BYTES, type WeightLocation, type WeightRequest } from '../core/graph.js';
import type { RuntimeBackend } from '../core/session.js';
import type { WeightStore } from './weight_store.js';

export type WebDevice = 'wasm' | 'webgpu';

export interface WebRuntimeOptions {
  /** Execution provider: `webgpu` (falls back to wasm for unsupported operators) or `wasm`. */
  device: WebDevice;
  /** Where converted and quantized weights are kept between page loads (default: produced on every load). */
  weightStore?: WeightStore;
  /** Called after each weight of a graph is in place (read, converted, or taken from the store). */
  onProgress?: (event: WeightProgress) => void;
}

/** Progress of placing one graph's weights (a model has a few graphs: vision, language model, …). */
export interface WeightProgress {
  graph: string;
  /** How the last weight came: `read` as stored in the checkpoint, `convert`ed now, or from the `store`. */
  kind: 'read' | 'convert' | 'store';
  /** Weights of this graph placed so far, of `total`. */
  done: number;
  total: number;
  /** Bytes placed so far, of `totalBytes`. */
  bytes: number;
  totalBytes: number;
}

/** Neighbouring tensors closer than this are read in one request (the gap is read and dropped). */
const MAX_GAP = 1 << 20;
/** No single read is larger: one ArrayBuffer per run, and memory is the scarce resource in a tab. */
const MAX_RUN = 256 << 20;

export function webRuntime(ort: RuntimeBackend['ort'], options: WebRuntimeOptions): RuntimeBackend {
  return {
    ort,
    defaultThreads: ort.env.wasm.numThreads ?? 1,
    executionProviders: [options.device],
    placeWeights: async (graphName, requests, sessionOptions) => {
      const files: Array<{ path: string; data: Uint8Array }> = [];
      const where = new Map<string, WeightLocation>();
      const total = requests.length;
      const totalBytes = requests.reduce((sum, r) => sum + byteSize(r), 0);
      let done = 0;
      let bytes = 0;
      const progress = (r: WeightRequest, kind: WeightProgress['kind']) => {
        bytes += byteSize(r);
        done++;
        sessionOptions.onProgress?.(done, total);
        options.onProgress?.({ graph: graphName, kind, done, total, bytes, totalBytes });
      };
      for (const run of neighbouringRuns(requests.filter((r) => r.inPlace))) {
        const path = `run${files.length}.bin`;
        files.push({ path, data: await run.source.read(run.offset, run.length) });
        for (const r of run.requests) {
          where.set(r.name, { location: path, offset: r.inPlace!.offset - run.offset, length: r.inPlace!.length });
          progress(r, 'read');
        }
      }
      for (const r of requests.filter((r) => !r.inPlace)) {
        const path = `w${files.length}.bin`;
        const { bytes: data, stored } = options.weightStore
          ? await options.weightStore.get(r)
          : { bytes: await r.produce(), stored: false };
        if (data.byteLength !== byteSize(r))
          throw new RuntimeError(`weight ${r.name}: produced ${data.byteLength} bytes, expected ${byteSize(r)}`);
        files.push({ path, data });
        where.set(r.name, { location: path, offset: 0, length: data.byteLength });
        progress(r, stored ? 'store' : 'convert');
      }
      return {
        locate: (r) => {
          const location = where.get(r.name);
          if (!location) throw new RuntimeError(`graph ${graphName}: weight ${r.name} was not placed`);
          return location;
        },
        sessionOptions: { externalData: files } satisfies InferenceSession.SessionOptions,
      };
    },
  };
}

function byteSize(request: WeightRequest): number {
  return request.dims.reduce((a, b) => a * b, 1) * ELEM_BYTES[request.type];
}

interface Run {
  source: ByteSource;
  offset: number;
  length: number;
  requests: WeightRequest[];
}

/** In-place weights grouped into runs of one source with gaps ≤ MAX_GAP and lengths ≤ MAX_RUN. */
export function neighbouringRuns(requests: WeightRequest[]): Run[] {
  const bySource = new Map<ByteSource, WeightRequest[]>();
  for (const r of requests) {
    const list = bySource.get(r.inPlace!.source) ?? [];
    list.push(r);
    bySource.set(r.inPlace!.source, list);
  }
  const runs: Run[] = [];
  for (const [source, list] of bySource) {
    list.sort((a, b) => a.inPlace!.offset - b.inPlace!.offset);
    let run: Run | null = null;
    for (const r of list) {
      const { offset, length } = r.inPlace!;
      const end = Math.max(run ? run.offset + run.length : 0, offset + length);
      if (run && offset - (run.offset + run.length) <= MAX_GAP && end - run.offset <= MAX_RUN) {
        run.length = end - run.offset;
        run.requests.push(r);
      } else {
        run = { source, offset, length, requests: [r] };
        runs.push(run);
      }
    }
  }
  return runs;
}
