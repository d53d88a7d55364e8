/**
 * The browser video decoder: frames are numbered and counted as decord does (see processing/video.ts) from the
 * MP4/MOV sample tables, read with range requests; each wanted frame is then shown by a `<video>` element seeked
 * into the middle of that frame's display interval and read back through a canvas. The pixels are the browser's
 * YUV → RGB conversion, so they may differ by a level or two from ffmpeg's; which frame is taken does not.
 *
 * Only ISO BMFF files (MP4, MOV, M4V) with their sample tables in the `moov` box are read; fragmented MP4 and WebM
 * are refused by name.
 */
import type { ByteSource } from '../core/bytes.js';
import { ImageError } from '../core/errors.js';
import { files } from '../core/io.js';
import type { VideoDecoder } from '../processing/decoders.js';
import { errText, type RgbImage } from '../processing/image.js';
import type { VideoInfo } from '../processing/video.js';
import { rgbaToRgb } from './image_decode.js';

/** A video track's frames: presentation times in seconds, in presentation order, and the stream facts. */
export interface FrameTable {
  times: number[];
  /** Seconds each frame is shown (the last one: its own sample duration). */
  durations: number[];
  fps: number;
  duration: number;
  width: number;
  height: number;
  codec: string;
}

export const browserVideoDecoder: VideoDecoder = {
  async probe(path) {
    const table = await readFrameTable(path);
    return videoInfo(path, table);
  },
  async decodeFrames(path, indices) {
    const table = await readFrameTable(path);
    for (const index of indices)
      if (!(Number.isInteger(index) && index >= 0 && index < table.times.length))
        throw new ImageError(`cannot decode frame ${index} of ${path}: it has ${table.times.length} frames`);
    return seekFrames(path, table, indices);
  },
};

function videoInfo(path: string, table: FrameTable): VideoInfo {
  return {
    path,
    frameCount: table.times.length,
    fps: table.fps,
    duration: table.duration,
    width: table.width,
    height: table.height,
    codec: table.codec,
  };
}

export async function readFrameTable(path: string): Promise<FrameTable> {
  let source: ByteSource;
  try {
    source = await (await files.get()).open(path);
  } catch (error) {
    throw new ImageError(`cannot read the video ${path} (${errText(error)})`, { cause: error });
  }
  const moov = await findTopLevelBox(source, 'moov', path);
  return parseMoov(await source.read(moov.offset, moov.size), path);
}

interface Box {
  type: string;
  /** Offset of the box (header included) and its whole size. */
  offset: number;
  size: number;
  /** Offset and size of the payload. */
  body: number;
  bodySize: number;
}

async function findTopLevelBox(source: ByteSource, type: string, path: string): Promise<Box> {
  let offset = 0;
  const seen: string[] = [];
  while (offset + 8 <= source.size) {
    const header = await source.read(offset, Math.min(16, source.size - offset));
    const box = boxAt(header, 0, source.size - offset, path);
    seen.push(box.type);
    if (box.type === type) return { ...box, offset, body: offset + box.body };
    offset += box.size;
  }
  if (seen[0] === '\u001aE\u00df\u00a3' || seen.length === 0)
    throw new ImageError(`${path}: not an MP4/MOV file (the browser video reader reads ISO BMFF only; WebM is not)`);
  throw new ImageError(`${path}: no 'moov' box (boxes: ${seen.slice(0, 8).join(', ')}); not a playable MP4/MOV file`);
}

/** The box starting at `at` inside `bytes` (its size limited by `available`). */
function boxAt(bytes: Uint8Array, at: number, available: number, path: string): Box {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let size = view.getUint32(at);
  const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
  let header = 8;
  if (size === 1) {
    size = Number(view.getBigUint64(at + 8));
    header = 16;
  } else if (size === 0) {
    size = available;
  }
  if (size < header || size > available)
    throw new ImageError(`${path}: box '${type}' has an impossible size ${size} (${available} bytes left)`);
  return { type, offset: at, size, body: at + header, bodySize: size - header };
}

function children(bytes: Uint8Array, parent: Box, path: string): Box[] {
  const out: Box[] = [];
  for (let at = parent.body; at + 8 <= parent.body + parent.bodySize; ) {
    const box = boxAt(bytes, at, parent.body + parent.bodySize - at, path);
    out.push(box);
    at += box.size;
  }
  return out;
}

function child(bytes: Uint8Array, parent: Box, type: string, path: string): Box | undefined {
  return children(bytes, parent, path).find((b) => b.type === type);
}

/** The first video track's frame table from the bytes of a `moov` box. */
export function parseMoov(bytes: Uint8Array, path: string): FrameTable {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const moov = boxAt(bytes, 0, bytes.byteLength, path);
  const need = (parent: Box, type: string): Box => {
    const box = child(bytes, parent, type, path);
    if (!box) throw new ImageError(`${path}: the video track has no '${type}' box`);
    return box;
  };
  const mvhd = need(moov, 'mvhd');
  const movieTimescale = view.getUint32(mvhd.body + (bytes[mvhd.body] === 1 ? 20 : 12));
  for (const trak of children(bytes, moov, path).filter((b) => b.type === 'trak')) {
    const mdia = need(trak, 'mdia');
    const hdlr = need(mdia, 'hdlr');
    if (String.fromCharCode(...bytes.subarray(hdlr.body + 8, hdlr.body + 12)) !== 'vide') continue;
    const mdhd = need(mdia, 'mdhd');
    const timescale = view.getUint32(mdhd.body + (bytes[mdhd.body] === 1 ? 20 : 12));
    const stbl = need(need(mdia, 'minf'), 'stbl');
    const stsd = need(stbl, 'stsd');
    const entry = stsd.body + 8;
    const codec = String.fromCharCode(...bytes.subarray(entry + 4, entry + 8));
    const width = view.getUint16(entry + 32);
    const height = view.getUint16(entry + 34);

    const decodeTimes: number[] = [];
    const deltas: number[] = [];
    const stts = need(stbl, 'stts');
    let time = 0;
    for (let i = 0, at = stts.body + 8; i < view.getUint32(stts.body + 4); i++, at += 8) {
      const count = view.getUint32(at);
      const delta = view.getUint32(at + 4);
      for (let k = 0; k < count; k++, time += delta) {
        decodeTimes.push(time);
        deltas.push(delta);
      }
    }
    if (decodeTimes.length === 0)
      throw new ImageError(`${path}: the video track lists no samples (fragmented MP4 is not supported)`);
    const offsets = new Array<number>(decodeTimes.length).fill(0);
    const ctts = child(bytes, stbl, 'ctts', path);
    if (ctts) {
      const signed = bytes[ctts.body] === 1;
      let sample = 0;
      for (let i = 0, at = ctts.body + 8; i < view.getUint32(ctts.body + 4); i++, at += 8) {
        const count = view.getUint32(at);
        const offset = signed ? view.getInt32(at + 4) : view.getUint32(at + 4);
        for (let k = 0; k < count && sample < offsets.length; k++) offsets[sample++] = offset;
      }
    }
    const { mediaStart, delay } = editList(bytes, view, trak, movieTimescale, path);
    const order = decodeTimes.map((t, i) => ({ pts: t + offsets[i], delta: deltas[i] })).sort((a, b) => a.pts - b.pts);
    const times = order.map((s) => (s.pts - mediaStart) / timescale + delay);
    const durations = order.map((s, i) => (i + 1 < order.length ? order[i + 1].pts - s.pts : s.delta) / timescale);
    const duration = time / timescale;
    return { times, durations, fps: duration > 0 ? times.length / duration : 0, duration, width, height, codec };
  }
  throw new ImageError(`${path}: the file has no video track`);
}

/** Where the edit list starts the media (its first non-empty edit) and the delay of a leading empty edit. */
function editList(bytes: Uint8Array, view: DataView, trak: Box, movieTimescale: number, path: string) {
  const edts = child(bytes, trak, 'edts', path);
  const elst = edts && child(bytes, edts, 'elst', path);
  let delay = 0;
  if (!elst) return { mediaStart: 0, delay };
  const wide = bytes[elst.body] === 1;
  for (let i = 0, at = elst.body + 8; i < view.getUint32(elst.body + 4); i++, at += wide ? 20 : 12) {
    const segment = wide ? Number(view.getBigUint64(at)) : view.getUint32(at);
    const mediaTime = wide ? Number(view.getBigInt64(at + 8)) : view.getInt32(at + 4);
    if (mediaTime >= 0) return { mediaStart: mediaTime, delay };
    delay += segment / movieTimescale;
  }
  return { mediaStart: 0, delay };
}

/** Each wanted frame through a `<video>` element, in the order asked. */
async function seekFrames(path: string, table: FrameTable, indices: readonly number[]): Promise<RgbImage[]> {
  const video = document.createElement('video');
  video.muted = true;
  video.preload = 'auto';
  video.crossOrigin = 'anonymous';
  const failed = () =>
    new ImageError(`${path}: the browser cannot play this video (${video.error?.message ?? 'no reason given'})`);
  await new Promise<void>((resolve, reject) => {
    video.onloadeddata = () => resolve();
    video.onerror = () => reject(failed());
    video.src = path;
  });
  try {
    const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
    const context = canvas.getContext('2d', { willReadFrequently: true })!;
    const out: RgbImage[] = [];
    // After `loadeddata` the element shows the first frame.
    let shown = 0;
    for (const index of indices) {
      if (index !== shown) await seek(video, table, index, failed);
      shown = index;
      context.drawImage(video, 0, 0);
      const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
      out.push(rgbaToRgb(rgba, canvas.width, canvas.height));
    }
    return out;
  } finally {
    video.removeAttribute('src');
    video.load();
  }
}

/** Animation frames a seek may wait after `seeked` for its frame to be reported before the element is read anyway. */
const PRESENT_PATIENCE = 30;

/**
 * Seeks into the middle of frame `index` and waits until that frame is presented: `seeked` alone can come before
 * the compositor has the new frame (seen with B-frames), so where the browser reports presented frames
 * (`requestVideoFrameCallback`) the wait goes on until one inside the frame's interval is reported, for at most
 * {@link PRESENT_PATIENCE} animation frames after `seeked` (a paused element presents nothing more, so an
 * unexpected timestamp must not wait forever).
 */
function seek(video: HTMLVideoElement, table: FrameTable, index: number, failed: () => ImageError): Promise<void> {
  const start = table.times[index];
  const duration = table.durations[index];
  // Timestamps are compared with a quarter-frame tolerance: the browser rounds them to microseconds.
  const inFrame = (time: number) => time >= start - duration / 4 && time < start + (3 * duration) / 4;
  return new Promise((resolve, reject) => {
    let seeked = false;
    let presented = !('requestVideoFrameCallback' in video);
    let settled = false;
    const settle = () => {
      if (seeked && presented && !settled) {
        settled = true;
        resolve();
      }
    };
    const watch = () =>
      video.requestVideoFrameCallback((_, frame) => {
        presented = inFrame(frame.mediaTime);
        if (presented) settle();
        else if (!settled) watch();
      });
    const waitAfterSeeked = (left: number) =>
      requestAnimationFrame(() => {
        if (settled) return;
        if (left === 0) {
          presented = true;
          settle();
        } else waitAfterSeeked(left - 1);
      });
    if (!presented) watch();
    video.onerror = () => reject(failed());
    video.onseeked = () => {
      seeked = true;
      settle();
      if (!settled) waitAfterSeeked(PRESENT_PATIENCE);
    };
    video.currentTime = start + duration / 2;
  });
}
