/**
 * Plugs the browser implementations into the platform seams (core/platform.ts): onnxruntime-web as the runtime,
 * fetch as the file system, the browser's image and video decoders, Hub repo ids as `resolve/` URLs.
 */
import type { HttpByteSourceOptions } from '../core/bytes.js';
import { RuntimeError } from '../core/errors.js';
import { files, modelResolver } from '../core/io.js';
import { type RuntimeBackend, runtimeBackend } from '../core/session.js';
import { imageDecoder, videoDecoder } from '../processing/decoders.js';
import { fetchFileSystem, joinUrl } from './files.js';
import { browserImageDecoder } from './image_decode.js';
import { type WebDevice, type WeightProgress, webRuntime } from './runtime.js';
import { browserVideoDecoder } from './video_decode.js';
import { opfsWeightStore } from './opfs_store.js';
import type { WeightStore } from './weight_store.js';

export interface BrowserPlatformOptions extends HttpByteSourceOptions {
  /** `auto` (default): WebGPU when `navigator.gpu` gives an adapter, else wasm. */
  device?: WebDevice | 'auto';
  /**
   * wasm threads (onnxruntime-web's `env.wasm.numThreads`). Default: all cores when the page is cross-origin
   * isolated (threads need SharedArrayBuffer), else 1.
   */
  threads?: number;
  /**
   * Converted/quantized weights kept between page loads (weight_store.ts). Default: the Origin Private File System
   * where the browser has one; `null`: none (converted on every load).
   */
  weightStore?: WeightStore | null;
  /** Progress of each graph's weights (download, conversion, store) while a model loads. */
  onProgress?: (event: WeightProgress) => void;
  /** Where Hub repo ids (`org/name`) are fetched from; default https://huggingface.co. */
  hubEndpoint?: string;
}

/**
 * Makes the library run in this page on the given onnxruntime-web module (`import * as ort from 'onnxruntime-web'`,
 * its `env.wasm.wasmPaths` set where the app serves the `.wasm` files). Call once, before loading a model.
 */
export async function useBrowserPlatform(
  ort: RuntimeBackend['ort'],
  options: BrowserPlatformOptions = {},
): Promise<{ device: WebDevice; threads: number }> {
  const device = options.device === undefined || options.device === 'auto' ? await detectDevice() : options.device;
  if (device === 'webgpu' && options.device === 'webgpu' && (await detectDevice()) !== 'webgpu')
    throw new RuntimeError('device webgpu: this browser gives no WebGPU adapter (navigator.gpu); use wasm');
  const isolated = typeof crossOriginIsolated !== 'undefined' && crossOriginIsolated;
  const threads = options.threads ?? (isolated ? navigator.hardwareConcurrency : 1);
  ort.env.wasm.numThreads = threads;
  files.set(fetchFileSystem({ fetch: options.fetch, headers: options.headers }));
  const weightStore =
    options.weightStore === undefined
      ? typeof navigator.storage?.getDirectory === 'function'
        ? opfsWeightStore({ fetch: options.fetch, headers: options.headers })
        : undefined
      : (options.weightStore ?? undefined);
  runtimeBackend.set(webRuntime(ort, { device, weightStore, onProgress: options.onProgress }));
  imageDecoder.set(browserImageDecoder);
  videoDecoder.set(browserVideoDecoder);
  modelResolver.set(async (idOrUrl, hub) => hubUrl(idOrUrl, options.hubEndpoint ?? hub?.endpoint, hub?.revision));
  return { device, threads };
}

/** `webgpu` when the browser gives a WebGPU adapter, else `wasm`. */
export async function detectDevice(): Promise<WebDevice> {
  const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  if (!gpu) return 'wasm';
  try {
    return (await gpu.requestAdapter()) ? 'webgpu' : 'wasm';
  } catch {
    return 'wasm';
  }
}

/** `org/name` or `org/name@revision` → its Hub `resolve/` folder URL; anything else is a folder URL already. */
export function hubUrl(idOrUrl: string, endpoint = 'https://huggingface.co', revision?: string): string {
  const id = /^([\w.-]+\/[\w.-]+)(?:@([\w./-]+))?$/.exec(idOrUrl);
  if (!id) return idOrUrl;
  return `${joinUrl(endpoint, id[1], 'resolve', encodeURIComponent(id[2] ?? revision ?? 'main'))}/`;
}
