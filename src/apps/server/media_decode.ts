/** Images and videos of requests: fetched under the media policy, then decoded with the pixel-bomb guard. */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadImage, type RgbImage } from '../../processing/image.js';
import { loadVideoFrames } from '../../processing/video.js';
import type { ServeSettings } from './context.js';
import { fetchMedia } from './media.js';

export async function loadMediaImage(url: string, settings: ServeSettings, signal: AbortSignal): Promise<RgbImage> {
  const media = await fetchMedia(url, settings.media, signal);
  // The header's dimensions are checked against the limit before any pixel is decoded.
  return loadImage(media.bytes, { name: media.name, maxPixels: settings.maxImagePixels });
}

/** Frames sampled as the official chat code samples them (`get_index` segments), one tile each. */
export async function loadMediaVideo(
  url: string,
  settings: ServeSettings,
  frames: number,
  signal: AbortSignal,
): Promise<RgbImage[]> {
  const media = await fetchMedia(url, settings.media, signal);
  // ffmpeg reads files: the bytes go to a private temp folder, removed afterwards.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'internvl-video-'));
  try {
    const file = path.join(dir, 'video');
    await fs.writeFile(file, media.bytes, { mode: 0o600 });
    return (await loadVideoFrames(file, { sampling: 'chat', numFrames: frames })).frames;
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
