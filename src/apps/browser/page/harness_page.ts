/**
 * The harness page (`internvl verify --browser`, the browser tests, the web benchmarks): the Node side hands over
 * onnxruntime-web, then calls these functions through `page.evaluate` and gets plain data back.
 */
import { InternVLError } from '../../../core/errors.js';
import { weightFormatHook } from '../../../core/quantize/formats.js';
import type { RuntimeBackend } from '../../../core/session.js';
import { InternVLChatModel } from '../../../models/internvl_chat.js';
import { loadImage } from '../../../processing/image.js';
import { loadVideoFrames } from '../../../processing/video.js';
import { useBrowserPlatform } from '../../../web/platform.js';
import { verifyFixture } from '../../verify/index.js';
import type { WeightProgress } from '../../../web/runtime.js';
import type { HarnessApi } from '../protocol.js';

const events: WeightProgress[] = [];
/** The folder of the default weight store (web/opfs_store.ts). */
const STORE_FOLDER = 'internvl-ts-weights';

const harness: HarnessApi = {
  setup: (ort, options) =>
    useBrowserPlatform(ort as RuntimeBackend['ort'], { ...options, onProgress: (event) => events.push(event) }),

  async verify(url, options) {
    try {
      return { report: await verifyFixture(url, options) };
    } catch (error) {
      // A user error is reported like the Node verifier reports it; anything else is a bug and stays a throw.
      if (error instanceof InternVLError) return { error: { name: error.name, message: error.message } };
      throw error;
    }
  },

  /** An image file (URL) through the browser decoder. */
  async decodeImage(url, options) {
    const image = await loadImage(url, options);
    return { width: image.width, height: image.height, rgb: base64(image.data) };
  },

  /** The official chat sampling of a video file (URL), frames through the browser decoder. */
  async videoFrames(url, numFrames) {
    const { info, indices, frames } = await loadVideoFrames(url, { numFrames });
    return { frameCount: info.frameCount, fps: info.fps, indices, frames: frames.map((f) => base64(f.data)) };
  },

  progress: async () => events.splice(0),

  async damageStore(count) {
    const folder = await (await navigator.storage.getDirectory()).getDirectoryHandle(STORE_FOLDER, { create: true });
    const entries: string[] = [];
    for await (const name of folder.keys()) if (name.endsWith('.bin')) entries.push(name);
    for (const name of entries.sort().slice(0, count)) {
      const handle = await folder.getFileHandle(name);
      const bytes = new Uint8Array(await (await handle.getFile()).arrayBuffer());
      bytes[bytes.length >> 1] ^= 0x40;
      const writable = await handle.createWritable();
      await writable.write(bytes);
      await writable.close();
    }
    return entries.length;
  },

  async benchChat(url, request) {
    const started = performance.now();
    const model = await InternVLChatModel.load(url, {
      configureLlmGraph: weightFormatHook(request.llm),
      configureVisionGraph: weightFormatHook(request.vision),
    });
    const loadSeconds = (performance.now() - started) / 1000;
    try {
      const size = model.config.imageSize;
      const pixels = Float32Array.from({ length: 3 * size * size }, (_, i) => Math.sin(i * 12.9898) * 0.5);
      const vocab = model.config.llm.vocabSize;
      const imageTokenId = vocab - 1;
      // The prompt `bench chat` builds: question ids away from the special tokens, the image block in the middle.
      const text = Array.from({ length: request.questionTokens }, (_, i) => 1000 + ((i * 7919) % (vocab - 2000)));
      const half = request.questionTokens >> 1;
      const ids = [...text.slice(0, half), ...Array(model.tokensPerTile).fill(imageTokenId), ...text.slice(half)];
      const decoder = model.language.batchDecoder({ maxSequences: 1, maxLength: ids.length + request.decodeTokens });
      let sequence = decoder.addSequence();
      const firstToken = async () => {
        decoder.removeSequence(sequence);
        sequence = decoder.addSequence();
        const t0 = performance.now();
        const features = await model.extractFeature(pixels, 1);
        const t1 = performance.now();
        const logits = await decoder.prefill(sequence, {
          embeds: await model.embedWithImages(ids, imageTokenId, features),
        });
        return {
          token: argmax(logits.subarray(0, vocab)),
          vision: (t1 - t0) / 1000,
          prefill: (performance.now() - t1) / 1000,
        };
      };
      const cold = performance.now();
      let { token } = await firstToken();
      const coldSeconds = (performance.now() - cold) / 1000;
      const visionSeconds: number[] = [];
      const prefillSeconds: number[] = [];
      for (let r = 0; r < request.runs; r++) {
        const run = await firstToken();
        visionSeconds.push(run.vision);
        prefillSeconds.push(run.prefill);
        token = run.token;
      }
      const decodeStepMs: number[] = [];
      for (let i = 0; i < request.decodeTokens; i++) {
        const t0 = performance.now();
        token = argmax((await decoder.decode([sequence], [token]))[0].subarray(0, vocab));
        decodeStepMs.push(performance.now() - t0);
      }
      return { loadSeconds, coldSeconds, visionSeconds, prefillSeconds, promptTokens: ids.length, decodeStepMs };
    } finally {
      await model.release();
    }
  },
};

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

function base64(bytes: Uint8Array): string {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

Object.assign(globalThis, { internvl: harness });
