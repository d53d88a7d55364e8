/**
 * internvl-ts/web: the library in a browser, on onnxruntime-web (WebGPU or wasm). The same loaders and tasks as the
 * Node entry; models are base URLs (a Hub `resolve/<revision>/` URL, or `org/name`), images come from files, blobs,
 * `<img>` elements or pixels.
 *
 * ```ts
 * import * as ort from 'onnxruntime-web';
 * import { useBrowserPlatform, loadChatPipeline, Conversation, loadBrowserImage } from 'internvl-ts/web';
 * ort.env.wasm.wasmPaths = '/ort/';   // where the app serves onnxruntime-web's dist/*.wasm
 * await useBrowserPlatform(ort);
 * const chat = new Conversation(await loadChatPipeline('OpenGVLab/InternVL2-1B'));
 * ```
 */
export * from '../library.js';
export { useBrowserPlatform, detectDevice, hubUrl, type BrowserPlatformOptions } from './platform.js';
export { fetchFileSystem, joinUrl, LISTING_HEADER } from './files.js';
export { webRuntime, type WebDevice, type WebRuntimeOptions, type WeightProgress } from './runtime.js';
export { browserImageDecoder, loadBrowserImage, type BrowserImageSource } from './image_decode.js';
export { browserVideoDecoder, readFrameTable, type FrameTable } from './video_decode.js';
export { opfsWeightStore, type OpfsWeightStoreOptions } from './opfs_store.js';
export type { WeightStore } from './weight_store.js';
export { modelFits, WASM_WEIGHT_BUDGET, type FitEstimate } from './memory.js';
