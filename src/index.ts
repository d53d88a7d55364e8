/**
 * internvl-ts: InternVL models in TypeScript on onnxruntime.
 *
 * Tasks (what most users want):
 * - chat: `loadChatPipeline(dir)` + `new Conversation(pipeline)` → `ask` / `stream`
 * - InternVL-C/G: `loadClipPipeline(dir)` → `classifyImages`, `encodeImages`, `encodeTexts`, `retrievalScores`,
 *   `captionImage`; videos: `classifyVideos`, `encodeVideos`, `videoTextRetrieval`
 * - InternViT features: `loadImageEmbedder(dir)` → `embedImages`; InternVL-C/G aligned: `embedImagesAligned`
 * - search: `openIndex(db, {model})` → `index.add(paths)`, `index.search('text' | {image})`
 * Models, processing and core pieces are exported for finer control.
 */
export * from './library.js';

// Node implementations of the platform seams, and Node-only apps.
export { FileByteSource, nodeFileSystem, writeSafetensors } from './core/node/files.js';
export { resolveModelDir, type ResolveModelOptions, type DownloadProgress } from './core/hub.js';
export { nodeRuntime } from './core/node/runtime.js';
export { defaultCacheDir } from './core/node/weight_cache.js';
export { probeVideo, decodeVideoFrames } from './processing/node/video_decode.js';

export type {
  SearchIndex,
  OpenIndexOptions,
  AddOptions,
  IndexSummary,
  SearchQuery,
  SearchOptions,
  SearchResult,
} from './apps/search/search_index.js';
export type { Stamp } from './apps/search/store.js';

/**
 * Opens (with `model`: creates) a search index table in a LanceDB folder or `s3://…` URI. LanceDB is loaded here,
 * not when the package is imported.
 */
export async function openIndex(
  db: string,
  options?: import('./apps/search/search_index.js').OpenIndexOptions,
): Promise<import('./apps/search/search_index.js').SearchIndex> {
  return (await import('./apps/search/search_index.js')).openIndex(db, options);
}

/** A BullMQ worker for `internvl index --queue` (see `internvl worker`). */
export async function startIndexWorker(
  url: string,
  options: import('./apps/search/queue.js').WorkerOptions,
): Promise<{ close(): Promise<void> }> {
  return (await import('./apps/search/queue.js')).startWorker(url, options);
}
