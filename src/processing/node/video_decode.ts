/**
 * The Node video decoder: the ffmpeg/ffprobe executables (no native binding to build).
 */
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';

import { ImageError, UsageError } from '../../core/errors.js';
import type { VideoDecoder } from '../decoders.js';
import type { RgbImage } from '../image.js';
import type { FfmpegOptions, VideoInfo } from '../video.js';

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

export const ffmpegVideoDecoder: VideoDecoder = { probe: probeVideo, decodeFrames: decodeVideoFrames };
