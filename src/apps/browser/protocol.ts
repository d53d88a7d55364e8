/** What the harness page and the Node side exchange (plain data: it crosses `page.evaluate`). */
import type { WeightFormat } from '../../core/quantize/formats.js';
import type { LoadImageOptions } from '../../processing/image.js';
import type { WebDevice, WeightProgress } from '../../web/runtime.js';
import type { FixtureReport } from '../verify/compare.js';
import type { RunOptions } from '../verify/registry.js';

/** One fixture verified in the page: its report, or the user error that stopped it (name and message). */
export type VerifyOutcome = { report: FixtureReport } | { error: { name: string; message: string } };

/** An image decoded in the page: interleaved RGB bytes, base64. */
export interface DecodedImage {
  width: number;
  height: number;
  rgb: string;
}

/** A video sampled and decoded in the page: the frame table's count and rate, the chosen frames (RGB, base64). */
export interface DecodedVideo {
  frameCount: number;
  fps: number;
  indices: number[];
  frames: string[];
}

/** How `bench web` measures a chat model in the page (as `bench chat` does in Node). */
export interface ChatBenchRequest {
  llm: WeightFormat;
  vision: WeightFormat;
  /** Warm time-to-first-token runs after the cold one. */
  runs: number;
  questionTokens: number;
  decodeTokens: number;
}

/** Raw timings (seconds; decode steps in ms): the Node side takes medians. */
export interface ChatBenchTimings {
  loadSeconds: number;
  coldSeconds: number;
  visionSeconds: number[];
  prefillSeconds: number[];
  promptTokens: number;
  decodeStepMs: number[];
}

/** The functions the harness page puts on `globalThis.internvl`. */
export interface HarnessApi {
  /** Plugs the browser platform in on the onnxruntime-web module given. */
  setup(
    ort: unknown,
    options: { device: WebDevice; threads?: number },
  ): Promise<{ device: WebDevice; threads: number }>;
  verify(url: string, options: RunOptions): Promise<VerifyOutcome>;
  decodeImage(url: string, options: LoadImageOptions): Promise<DecodedImage>;
  videoFrames(url: string, numFrames: number): Promise<DecodedVideo>;
  /** The weight-placement events since the last call (see web/runtime.ts). */
  progress(): Promise<WeightProgress[]>;
  /** Flips one byte in each of the first `count` weight-store entries; returns how many entries the store holds. */
  damageStore(count: number): Promise<number>;
  benchChat(url: string, request: ChatBenchRequest): Promise<ChatBenchTimings>;
}
