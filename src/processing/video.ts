/**
 * Video frame sampling and decoding.
 *
 * The two sampling rules reproduce the Python code the InternVL numbers come from, including its rounding:
 * Python's `round()` and NumPy's `np.round()` round halves to even, and `int()` truncates toward zero. A
 * half-up rounding picks different frames (e.g. 21 frames, 8 segments), so these are not interchangeable.
 *
 * Decoding goes through the ffmpeg/ffprobe executables (no native binding to build). Frame k is the k-th
 * frame the decoder produces in presentation order, and the frame count is the number of video packets, which
 * is how decord (used by the official scripts) numbers and counts frames.
 */
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';

import { ImageError, UsageError } from '../core/errors.js';
import type { RgbImage } from './image.js';

/** Python 3 `round(x)` / `np.round(x)` for finite doubles: nearest integer, halves to the even neighbour. */
export function pythonRound(x: number): number {
  const f = Math.floor(x);
  // x - floor(x) is exact for doubles, so the 0.5 comparison is exact too.
  const diff = x - f;
  if (diff < 0.5) return f;
  if (diff > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new UsageError(`${name} must be an integer >= ${min}, got ${v}`);
}

/**
 * Frame indices for InternVL-Chat video input, the `get_index` rule of the model cards / README `load_video`
 * (first_idx 0, max_frame = frameCount - 1):
 *   start = max(0, round(b0·fps)), end = min(round(b1·fps), frameCount - 1), seg = (end - start) / N,
 *   idx_k = int(start + seg/2 + round(seg·k)).
 * Without a bound the official code uses (-100000, 100000) seconds, i.e. the whole video.
 * Indices may repeat when the range holds fewer frames than segments, as in the original.
 */
export function sampleChatFrameIndices(
  frameCount: number,
  fps: number,
  numSegments = 8,
  bound?: readonly [number, number],
): number[] {
  checkCount('frameCount', frameCount, 1);
  checkCount('numSegments', numSegments, 1);
  if (!Number.isFinite(fps) || fps < 0) throw new UsageError(`fps must be a finite number >= 0, got ${fps}`);
  if (bound && (!Number.isFinite(bound[0]) || !Number.isFinite(bound[1]))) {
    throw new UsageError(`video bound must be two finite numbers of seconds, got [${bound[0]}, ${bound[1]}]`);
  }
  const maxFrame = frameCount - 1;
  // No bound is the whole video, also when the stream declares no frame rate (where ±100000 s × 0 fps would
  // collapse the range onto frame 0).
  const startIdx = bound ? Math.max(0, pythonRound(bound[0] * fps)) : 0;
  const endIdx = bound ? Math.min(pythonRound(bound[1] * fps), maxFrame) : maxFrame;
  if (endIdx < startIdx) {
    // Python would go on with a negative segment size and index frames before the range (or wrap around
    // with negative indices); there is no sensible frame to pick.
    throw new UsageError(
      `video bound [${bound?.[0]}, ${bound?.[1]}] s selects no frames of a ${frameCount}-frame video at ${fps} fps`,
    );
  }
  const seg = (endIdx - startIdx) / numSegments;
  const out: number[] = [];
  for (let k = 0; k < numSegments; k++) out.push(Math.trunc(startIdx + seg / 2 + pythonRound(seg * k)));
  return out;
}

/**
 * Frame indices of the MSR-VTT retrieval script: interval = ceil(len / F), ids = arange(0, len, interval) +
 * interval // 2. The script asserts that this yields exactly F ids with the last one inside the video, which
 * fails for many valid clips (10, 25, 30–36, 50, 60, 90 frames with F = 8): those give null, and
 * {@link loadVideoFrames} samples them by segments instead of rejecting them.
 */
export function msrvttFrameIndices(frameCount: number, numFrames = 1): number[] | null {
  checkCount('frameCount', frameCount, 1);
  checkCount('numFrames', numFrames, 1);
  const interval = Math.ceil(frameCount / numFrames);
  const half = Math.floor(interval / 2);
  const out: number[] = [];
  for (let i = 0; i < frameCount; i += interval) out.push(i + half);
  return out.length === numFrames && out[out.length - 1] < frameCount ? out : null;
}

/** {@link msrvttFrameIndices}, throwing where the script's assert would fail. */
export function sampleMsrvttFrameIndices(frameCount: number, numFrames = 1): number[] {
  const out = msrvttFrameIndices(frameCount, numFrames);
  if (!out) {
    throw new UsageError(
      `the MSR-VTT rule cannot sample ${numFrames} frames from a ${frameCount}-frame video ` +
        `(interval ${Math.ceil(frameCount / numFrames)})`,
    );
  }
  return out;
}

/** Paths of the executables; defaults are looked up on PATH. */
export interface FfmpegOptions {
  ffmpeg?: string;
  ffprobe?: string;
}

export interface VideoInfo {
  path: string;
  /** Number of packets of the first video stream: decord's `len(VideoReader)`. */
  frameCount: number;
  /** The stream's avg_frame_rate (decord's `get_avg_fps()`), falling back to r_frame_rate when it is 0/0. */
  fps: number;
  /** Seconds; the stream duration, else the container's, else frameCount / fps. */
  duration: number;
  /** Coded size, before any rotation metadata (decord and {@link decodeVideoFrames} do not rotate). */
  width: number;
  height: number;
  codec: string;
  /** The container's declared frame count, when it has one (often absent or approximate). */
  declaredFrames?: number;
}

interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function missingTool(tool: string, path: string): ImageError {
  return new ImageError(
    `${tool} was not found (needed to read the video ${path}); install it, e.g. \`apt-get install ffmpeg\``,
  );
}

/** ffmpeg's last stderr line, without the `<input path>: ` prefix it often starts with (the message names it). */
function lastLine(text: string, path: string): string {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  if (!lines.length) return 'no error message';
  const l = lines[lines.length - 1];
  return l.startsWith(`${path}: `) ? l.slice(path.length + 2) : l;
}

async function checkFile(path: string): Promise<void> {
  let st;
  try {
    st = await stat(path);
  } catch {
    throw new ImageError(`video file not found: ${path}`);
  }
  if (!st.isFile()) throw new ImageError(`not a video file: ${path}`);
}

function runTool(bin: string, tool: string, args: string[], videoPath: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(
        e.code === 'ENOENT'
          ? missingTool(tool, videoPath)
          : new ImageError(`${tool} failed on ${videoPath}: ${e.message}`),
      );
    });
    child.on('close', (code) => {
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

function parseRate(r: unknown): number {
  if (typeof r !== 'string') return 0;
  const m = /^(-?\d+(?:\.\d+)?)(?:\/(\d+))?$/.exec(r.trim());
  if (!m) return 0;
  const num = Number(m[1]);
  const den = m[2] === undefined ? 1 : Number(m[2]);
  return den === 0 ? 0 : num / den;
}

function parseNum(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v !== 'string' || v === '' || v === 'N/A') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/** Reads the first video stream's frame count, frame rate, duration and size with ffprobe. */
export async function probeVideo(path: string, opts: FfmpegOptions = {}): Promise<VideoInfo> {
  await checkFile(path);
  const args = [
    '-v',
    'error',
    '-select_streams',
    'v:0',
    // Counting packets demuxes the whole file but decodes nothing; it is what decord counts as frames.
    '-count_packets',
    '-show_entries',
    'stream=codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,nb_read_packets,duration:format=duration',
    '-of',
    'json',
    path,
  ];
  const res = await runTool(opts.ffprobe ?? 'ffprobe', 'ffprobe', args, path);
  if (res.code !== 0) throw new ImageError(`cannot read video ${path}: ${lastLine(res.stderr, path)}`);
  let parsed: { streams?: Record<string, unknown>[]; format?: Record<string, unknown> };
  try {
    parsed = JSON.parse(res.stdout.toString('utf8'));
  } catch {
    throw new ImageError(`cannot read video ${path}: ffprobe printed no parsable JSON`);
  }
  const s = parsed.streams?.[0];
  if (!s) throw new ImageError(`no video stream in ${path}`);
  const width = parseNum(s.width) ?? 0;
  const height = parseNum(s.height) ?? 0;
  const frameCount = parseNum(s.nb_read_packets) ?? 0;
  if (width <= 0 || height <= 0 || frameCount <= 0) {
    throw new ImageError(
      `cannot read video ${path}: no decodable video frames (size ${width}x${height}, ${frameCount} packets)`,
    );
  }
  let fps = parseRate(s.avg_frame_rate);
  if (!(fps > 0)) fps = parseRate(s.r_frame_rate);
  const duration = parseNum(s.duration) ?? parseNum(parsed.format?.duration) ?? (fps > 0 ? frameCount / fps : 0);
  const declaredFrames = parseNum(s.nb_frames);
  const info: VideoInfo = {
    path,
    frameCount,
    fps,
    duration,
    width,
    height,
    codec: typeof s.codec_name === 'string' ? s.codec_name : 'unknown',
  };
  if (declaredFrames !== undefined) info.declaredFrames = declaredFrames;
  return info;
}

/** Splits a stream of binary PPM (P6, maxval 255) images, as ffmpeg's image2pipe/ppm writes them. */
class PpmSplitter {
  private buf: Buffer = Buffer.alloc(0);
  readonly frames: RgbImage[] = [];
  error: string | null = null;

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.error) return;
      const hdr = this.parseHeader();
      if (!hdr) return;
      const size = hdr.width * hdr.height * 3;
      if (this.buf.length < hdr.offset + size) return;
      const data = new Uint8Array(size);
      data.set(this.buf.subarray(hdr.offset, hdr.offset + size));
      this.frames.push({ width: hdr.width, height: hdr.height, data });
      this.buf = this.buf.subarray(hdr.offset + size);
    }
  }

  /** Header fields are whitespace-separated tokens followed by exactly one whitespace byte. */
  private parseHeader(): { width: number; height: number; offset: number } | null {
    const b = this.buf;
    const tokens: string[] = [];
    let i = 0;
    while (tokens.length < 4) {
      while (i < b.length && isSpace(b[i])) i++;
      const start = i;
      while (i < b.length && !isSpace(b[i])) i++;
      if (i >= b.length) {
        if (b.length > 64) this.error = 'malformed frame header from ffmpeg';
        return null;
      }
      tokens.push(b.toString('latin1', start, i));
    }
    if (tokens[0] !== 'P6' || tokens[3] !== '255') {
      this.error = `unexpected frame header from ffmpeg: ${tokens.join(' ')}`;
      return null;
    }
    const width = Number(tokens[1]);
    const height = Number(tokens[2]);
    if (!(width > 0 && height > 0)) {
      this.error = `unexpected frame size from ffmpeg: ${tokens[1]}x${tokens[2]}`;
      return null;
    }
    return { width, height, offset: i + 1 };
  }

  get pendingBytes(): number {
    return this.buf.length;
  }
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

// ffmpeg >= 5.1 spells frame-rate passthrough `-fps_mode`, older ones only `-vsync`; remember which works.
const passthroughFlag = new Map<string, string[]>();

function decodeOnce(
  bin: string,
  path: string,
  unique: number[],
  syncArgs: string[],
): Promise<{ frames: RgbImage[]; code: number | null; stderr: string; error: string | null }> {
  // `n` is the index of the decoded frame; commas inside the expression are escaped for the filter parser.
  const select = `select=${unique.map((n) => `eq(n\\,${n})`).join('+')}`;
  const args = [
    '-v',
    'error',
    '-nostdin',
    // decord, which the official code uses, ignores rotation metadata.
    '-noautorotate',
    '-i',
    path,
    '-map',
    '0:v:0',
    '-vf',
    select,
    // Without passthrough the CFR muxer logic would duplicate frames to fill the gaps `select` leaves.
    ...syncArgs,
    '-frames:v',
    String(unique.length),
    '-f',
    'image2pipe',
    '-c:v',
    'ppm',
    '-pix_fmt',
    'rgb24',
    'pipe:1',
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const splitter = new PpmSplitter();
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => splitter.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(
        e.code === 'ENOENT' ? missingTool('ffmpeg', path) : new ImageError(`ffmpeg failed on ${path}: ${e.message}`),
      );
    });
    child.on('close', (code) => {
      let error = splitter.error;
      if (!error && splitter.pendingBytes > 0) error = 'ffmpeg output ended inside a frame';
      resolve({ frames: splitter.frames, code, stderr: Buffer.concat(err).toString('utf8'), error });
    });
  });
}

/**
 * Decodes the frames with the given indices (0-based, decode order = presentation order) as 8-bit RGB.
 * Returns one image per requested index, in the order given; repeated indices share one decode.
 * Throws ImageError when ffmpeg is missing, the file is unreadable, or an index is past the last frame.
 */
export async function decodeVideoFrames(
  path: string,
  indices: readonly number[],
  opts: FfmpegOptions = {},
): Promise<RgbImage[]> {
  for (const n of indices) {
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`frame indices must be integers >= 0, got ${n} (${path})`);
  }
  if (indices.length === 0) return [];
  await checkFile(path);
  const bin = opts.ffmpeg ?? 'ffmpeg';
  const unique = [...new Set(indices)].sort((a, b) => a - b);
  let sync = passthroughFlag.get(bin) ?? ['-fps_mode', 'passthrough'];
  let res = await decodeOnce(bin, path, unique, sync);
  if (res.code !== 0 && /Unrecognized option 'fps_mode'/.test(res.stderr)) {
    sync = ['-vsync', 'passthrough'];
    res = await decodeOnce(bin, path, unique, sync);
  }
  if (res.code !== 0) throw new ImageError(`cannot decode video ${path}: ${lastLine(res.stderr, path)}`);
  passthroughFlag.set(bin, sync);
  if (res.error) throw new ImageError(`cannot decode video ${path}: ${res.error}`);
  if (res.frames.length < unique.length) {
    const missing = unique[res.frames.length];
    throw new ImageError(
      `cannot decode frame ${missing} of ${path}: the decoder produced only ${res.frames.length} of ` +
        `${unique.length} requested frames (index past the last frame, or a damaged stream)`,
    );
  }
  const byIndex = new Map<number, RgbImage>();
  unique.forEach((n, i) => byIndex.set(n, res.frames[i]));
  return indices.map((n) => byIndex.get(n)!);
}

/** 'chat': the README's segment rule `get_index`; 'msrvtt': video_retrieval/test_msrvtt.py. */
export type VideoSampling = 'chat' | 'msrvtt';

export interface LoadVideoOptions extends FfmpegOptions {
  /**
   * Default 'chat'. 'msrvtt' falls back to 'chat' segments (whole video) for a clip the MSR-VTT rule cannot
   * take F frames from; the result's `sampling` says which rule picked the frames.
   */
  sampling?: VideoSampling;
  /** Frames to sample: segments for 'chat' (default 8), F for 'msrvtt' (default 1). */
  numFrames?: number;
  /** [start, end] seconds, 'chat' sampling only. */
  bound?: readonly [number, number];
}

/** Probes, samples with one of the official rules, and decodes. */
export async function loadVideoFrames(
  path: string,
  opts: LoadVideoOptions = {},
): Promise<{ info: VideoInfo; indices: number[]; frames: RgbImage[]; sampling: VideoSampling }> {
  const requested = opts.sampling ?? 'chat';
  if (requested !== 'chat' && requested !== 'msrvtt')
    throw new UsageError(`unknown video sampling '${String(requested)}' (expected 'chat' or 'msrvtt')`);
  if (requested === 'msrvtt' && opts.bound)
    throw new UsageError(`a bound is only supported with 'chat' sampling (${path})`);
  const info = await probeVideo(path, opts);
  const msrvtt = requested === 'msrvtt' ? msrvttFrameIndices(info.frameCount, opts.numFrames ?? 1) : null;
  const sampling: VideoSampling = msrvtt ? 'msrvtt' : 'chat';
  const indices = msrvtt ?? sampleChatFrameIndices(info.frameCount, info.fps, opts.numFrames ?? 8, opts.bound);
  const frames = await decodeVideoFrames(path, indices, opts);
  return { info, indices, frames, sampling };
}
