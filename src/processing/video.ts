/**
 * Video frame sampling, and loading through the platform's video decoder (Node: ffmpeg,
 * `processing/node/video_decode.ts`).
 *
 * The two sampling rules reproduce the Python code the InternVL numbers come from, including its rounding:
 * Python's `round()` and NumPy's `np.round()` round halves to even, and `int()` truncates toward zero. A
 * half-up rounding picks different frames (e.g. 21 frames, 8 segments), so these are not interchangeable.
 *
 * Frame k is the k-th frame the decoder produces in presentation order, and the frame count is the number of video
 * packets, which is how decord (used by the official scripts) numbers and counts frames.
 */
import { UsageError } from '../core/errors.js';
import { roundHalfEven } from '../core/python.js';
import { videoDecoder } from './decoders.js';
import type { RgbImage } from './image.js';

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
  const startIdx = bound ? Math.max(0, roundHalfEven(bound[0] * fps)) : 0;
  const endIdx = bound ? Math.min(roundHalfEven(bound[1] * fps), maxFrame) : maxFrame;
  if (endIdx < startIdx) {
    // Python would go on with a negative segment size and index frames before the range (or wrap around
    // with negative indices); there is no sensible frame to pick.
    throw new UsageError(
      `video bound [${bound?.[0]}, ${bound?.[1]}] s selects no frames of a ${frameCount}-frame video at ${fps} fps`,
    );
  }
  const seg = (endIdx - startIdx) / numSegments;
  const out: number[] = [];
  for (let k = 0; k < numSegments; k++) out.push(Math.trunc(startIdx + seg / 2 + roundHalfEven(seg * k)));
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

/** Decoder options: paths of the ffmpeg/ffprobe executables (Node); defaults are looked up on PATH. */
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
  /** Coded size, before any rotation metadata (decord and the decoders do not rotate). */
  width: number;
  height: number;
  codec: string;
  /** The container's declared frame count, when it has one (often absent or approximate). */
  declaredFrames?: number;
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
  const decoder = await videoDecoder.get();
  const info = await decoder.probe(path, opts);
  const msrvtt = requested === 'msrvtt' ? msrvttFrameIndices(info.frameCount, opts.numFrames ?? 1) : null;
  const sampling: VideoSampling = msrvtt ? 'msrvtt' : 'chat';
  const indices = msrvtt ?? sampleChatFrameIndices(info.frameCount, info.fps, opts.numFrames ?? 8, opts.bound);
  const frames = await decoder.decodeFrames(path, indices, opts);
  return { info, indices, frames, sampling };
}
