/**
 * The harness page (`internvl verify --browser`, the browser tests, the web benchmarks): the Node side hands over
 * onnxruntime-web, then calls these functions through `page.evaluate` and gets plain data back.
 */
import { InternVLError } from '../../../core/errors.js';
import type { RuntimeBackend } from '../../../core/session.js';
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
};

function base64(bytes: Uint8Array): string {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

Object.assign(globalThis, { internvl: harness });
