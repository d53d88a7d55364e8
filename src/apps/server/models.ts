/**
 * The models a server keeps loaded, each addressed by its name. Loading starts after the server listens (`/health`
 * says 503 until every model is ready) and happens one model at a time, so that the event loop keeps answering.
 */
import os from 'node:os';
import path from 'node:path';
import { resolveModelDir } from '../../core/hub.js';
import { ModelLoadError } from '../../core/errors.js';
import { weightFormatHook, type WeightFormat } from '../../core/quantize/formats.js';
import type { SessionOptions } from '../../core/session.js';
import { readConfig } from '../../models/config.js';
import { detectArchitecture } from '../../models/registry.js';
import type { ChatPipeline } from '../../tasks/chat.js';
import type { ClipPipeline } from '../../tasks/clip.js';
import type { ImageEmbedder } from '../../tasks/embed.js';
import { DEFAULT_VISUAL_CACHE_MB, VisualEmbeddingCache } from '../../tasks/visual_cache.js';
import { BatchScheduler } from './scheduler.js';

export interface ChatModel {
  kind: 'chat';
  name: string;
  dir: string;
  pipeline: ChatPipeline;
  scheduler: BatchScheduler;
  /** Image token embeddings by tile content: a conversation's images are encoded once, not every turn. */
  visualCache: VisualEmbeddingCache;
}

/** InternVL-C/G (InternVL-14B-224px): text and image embeddings, zero-shot classification. */
export interface ClipModel {
  kind: 'clip';
  name: string;
  dir: string;
  pipeline: ClipPipeline;
}

/** An InternViT: pooled image features. */
export interface VisionModel {
  kind: 'vision';
  name: string;
  dir: string;
  embedder: ImageEmbedder;
}

export type ServedModel = ChatModel | ClipModel | VisionModel;

export interface ModelSpec {
  /** A folder or a Hugging Face repo id. */
  source: string;
  /** The name requests use (default: the folder's or repo's last path component). */
  name?: string;
}

export interface LoadSettings {
  /** Chat models' LLM weights; vision towers and QLLaMA use int8 unless this is fp32. */
  weights: WeightFormat;
  session: SessionOptions;
  /**
   * Intra-op threads of chat models' vision towers, which encode new requests' images beside the running decode
   * steps (default: half of `session.threads` or of the cores, at least 1, so that encoding and decoding do not oversubscribe the cores).
   */
  visionThreads?: number;
  /** Bytes of image token embeddings each chat model keeps (default 256 MiB; 0: none). */
  visualCacheBytes?: number;
  maxBatch: number;
  maxQueue: number;
  /** Positions per chat sequence (prompt + answer), capped by each model's context (default 8192). */
  maxLength?: number;
  /** Prompt positions prefilled between two decode steps of the running requests (default 512). */
  prefillChunk?: number;
  offline?: boolean;
}

export type ModelLoader = (spec: ModelSpec, name: string, settings: LoadSettings) => Promise<ServedModel>;

/** `dir[=name]` as `--model` takes it. */
export function parseModelSpec(text: string): ModelSpec {
  const at = text.lastIndexOf('=');
  if (at > 0) return { source: text.slice(0, at), name: text.slice(at + 1) };
  return { source: text };
}

export function defaultModelName(spec: ModelSpec): string {
  return spec.name ?? path.basename(spec.source.replace(/@[^/]*$/, '').replace(/\/+$/, ''));
}

export class ModelHost {
  private readonly models = new Map<string, ServedModel>();
  private failure: unknown = null;
  readonly ready: Promise<void>;

  constructor(
    readonly specs: readonly ModelSpec[],
    settings: LoadSettings,
    loader: ModelLoader = loadServedModel,
  ) {
    const names = specs.map(defaultModelName);
    const duplicate = names.find((n, i) => names.indexOf(n) !== i);
    if (duplicate !== undefined)
      throw new ModelLoadError(`two models are named '${duplicate}'; name them with --model <dir>=<name>`);
    this.ready = (async () => {
      for (const [i, spec] of specs.entries()) this.models.set(names[i], await loader(spec, names[i], settings));
    })();
    this.ready.catch((error) => {
      this.failure = error;
    });
  }

  get names(): string[] {
    return this.specs.map(defaultModelName);
  }

  get state(): 'loading' | 'ready' | 'failed' {
    if (this.failure) return 'failed';
    return this.models.size === this.specs.length ? 'ready' : 'loading';
  }

  get(name: string): ServedModel | undefined {
    return this.models.get(name);
  }

  all(): ServedModel[] {
    return [...this.models.values()];
  }

  async release(): Promise<void> {
    await this.ready.catch(() => {});
    for (const model of this.models.values()) {
      if (model.kind === 'chat') {
        model.scheduler.close();
        await model.pipeline.model.release();
      } else if (model.kind === 'clip') await model.pipeline.model.release();
      else await model.embedder.release();
    }
    this.models.clear();
  }
}

function defaultVisionThreads(session: SessionOptions): number {
  return Math.max(1, Math.floor((session.threads ?? os.availableParallelism()) / 2));
}

/** Loads one model by what its config.json says it is. */
export async function loadServedModel(spec: ModelSpec, name: string, settings: LoadSettings): Promise<ServedModel> {
  const dir = await resolveModelDir(spec.source, { offline: settings.offline });
  const architecture = detectArchitecture(await readConfig(dir));
  const towerWeights = weightFormatHook(settings.weights === 'fp32' ? 'fp32' : 'int8');
  switch (architecture) {
    case 'InternVLChatModel':
    case 'InternVLForConditionalGeneration': {
      const { loadChatPipeline } = await import('../../tasks/chat.js');
      const pipeline = await loadChatPipeline(dir, {
        // The vision tower runs in a thread of its own: a new request's images are encoded while the running
        // requests keep decoding (onnxruntime-node would otherwise block the JavaScript thread for the encoding).
        session: {
          ...settings.session,
          threads: settings.visionThreads ?? defaultVisionThreads(settings.session),
          offThread: true,
        },
        llmSession: settings.session,
        configureLlmGraph: weightFormatHook(settings.weights),
        configureVisionGraph: towerWeights,
      });
      const scheduler = new BatchScheduler(pipeline.model.language, settings);
      const visualCache = new VisualEmbeddingCache(
        pipeline,
        settings.visualCacheBytes ?? DEFAULT_VISUAL_CACHE_MB * 2 ** 20,
      );
      return { kind: 'chat', name, dir, pipeline, scheduler, visualCache };
    }
    case 'InternVLModel': {
      const { loadClipPipeline } = await import('../../tasks/clip.js');
      const pipeline = await loadClipPipeline(dir, {
        session: settings.session,
        configureVisionGraph: towerWeights,
        configureQllamaGraph: towerWeights,
      });
      return { kind: 'clip', name, dir, pipeline };
    }
    case 'InternVisionModel': {
      const { loadImageEmbedder } = await import('../../tasks/embed.js');
      const embedder = await loadImageEmbedder(dir, { session: settings.session, configureGraph: towerWeights });
      return { kind: 'vision', name, dir, embedder };
    }
    case 'CausalLM':
      throw new ModelLoadError(`${dir}: a bare language model is not served (give an InternVL or InternViT model)`);
  }
}

/** What a model can do, as /v1/models reports it. */
export function capabilities(model: ServedModel): string[] {
  switch (model.kind) {
    case 'chat':
      return ['chat', 'vision'];
    case 'clip':
      return ['embeddings', 'vision', 'classify'];
    case 'vision':
      return ['embeddings', 'vision'];
  }
}
