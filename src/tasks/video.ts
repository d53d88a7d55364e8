/**
 * Video embeddings with InternVL-C/G, as InternVL's `video_retrieval/test_msrvtt.py` computes them: F frames,
 * each frame through `encode_image`, the F raw embeddings averaged, the mean L2-normalised. Zero-shot video
 * classification and video–text retrieval build on that. Retrieval picks the frames by the script's MSR-VTT rule
 * (segments where that rule cannot take F frames from a clip); classification by the official chat code's
 * segment rule (`get_index`), which also takes F frames from shorter clips by repeating frames.
 *
 * Frame transform: the script feeds the frames to the 14B checkpoint's `CLIPImageProcessor` (short side to 224,
 * bicubic, centre crop 224, ImageNet mean/std), which is the 'classification' transform of `encodeImages`. The
 * one known difference: CLIPImageProcessor puts an odd crop margin's extra pixel with floor((h − 224) / 2), the
 * 'classification' transform with torchvision's round-half-even, so the crop can sit one pixel apart when the
 * margin is ≡ 3 (mod 4). `transform: 'retrieval'` (Resize((224, 224)), no crop) is available too.
 *
 * The default of 8 frames is the paper's 8-frame Kinetics setting; test_msrvtt.py itself defaults to 1 frame.
 */
import { InternalError, UsageError } from '../core/errors.js';
import { dualSoftmax, l2normalize, matrix, retrievalScores, transpose, type Matrix } from '../core/matrix.js';
import type { ClipMode } from '../models/internvl_clip.js';
import type { RgbImage } from '../processing/image.js';
import { loadVideoFrames, type FfmpegOptions, type VideoInfo, type VideoSampling } from '../processing/video.js';
import {
  buildZeroShotClassifier,
  classifyEmbeddings,
  encodeImages,
  type Classification,
  type ClassifyProgress,
  type ClipPipeline,
  type ImageTransform,
} from './clip.js';

/** Frames per video unless told otherwise (the paper's 8-frame K400/600/700 numbers). */
export const DEFAULT_VIDEO_FRAMES = 8;

/** Embeds a batch of frames: [frames, D], not normalised (as `encode_image`). */
export type FrameEncoder = (frames: readonly RgbImage[]) => Promise<Matrix>;

export interface FrameEncoderOptions {
  mode?: ClipMode;
  /** Default 'classification' (= CLIPImageProcessor, see the module comment). */
  transform?: ImageTransform;
  /** Frames per forward pass (default: all frames of a video in one pass). */
  batchSize?: number;
}

/** `encodeImages` of the pipeline as a {@link FrameEncoder}. */
export function clipFrameEncoder(pipeline: ClipPipeline, options: FrameEncoderOptions = {}): FrameEncoder {
  return (frames) =>
    encodeImages(pipeline, frames, {
      mode: options.mode ?? 'C',
      transform: options.transform ?? 'classification',
      batchSize: options.batchSize ?? Math.max(1, frames.length),
    });
}

export interface VideoFramesOptions extends FfmpegOptions {
  /** F (default {@link DEFAULT_VIDEO_FRAMES}). */
  numFrames?: number;
  /** Default 'msrvtt' (see {@link loadVideoFrames}); {@link classifyVideos} defaults to 'chat'. */
  sampling?: VideoSampling;
}

/** Probes a video, picks F frames with the chosen rule and decodes them. */
export async function sampleVideoFrames(
  path: string,
  options: VideoFramesOptions = {},
): Promise<{
  info: VideoInfo;
  indices: number[];
  frames: RgbImage[];
  sampling: VideoSampling;
}> {
  const numFrames = options.numFrames ?? DEFAULT_VIDEO_FRAMES;
  if (!Number.isInteger(numFrames) || numFrames < 1)
    throw new UsageError(`the number of video frames must be an integer >= 1, got ${numFrames}`);
  try {
    return await loadVideoFrames(path, {
      ffmpeg: options.ffmpeg,
      ffprobe: options.ffprobe,
      sampling: options.sampling ?? 'msrvtt',
      numFrames,
    });
  } catch (error) {
    // The sampling rule's message does not say which video it was about.
    if (error instanceof UsageError && !error.message.includes(path))
      throw new UsageError(`${path}: ${error.message}`, { cause: error });
    throw error;
  }
}

/** test_msrvtt.py pooling: the mean of the frame embeddings (rows), then L2-normalised. */
export function poolFrameEmbeddings(frameEmbeddings: Matrix): Float32Array {
  const { rows, cols, data } = frameEmbeddings;
  if (rows === 0) throw new UsageError('cannot pool a video embedding from zero frames');
  const mean = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) mean[c] += data[r * cols + c];
  const out = new Float32Array(cols);
  for (let c = 0; c < cols; c++) out[c] = mean[c] / rows;
  return l2normalize(matrix(out, 1, cols)).data;
}

export interface VideoEmbedding {
  path: string;
  info: VideoInfo;
  /** The decoded frame indices (0-based). */
  indices: number[];
  /** The rule that picked them. */
  sampling: VideoSampling;
  /** [D], unit norm. */
  embedding: Float32Array;
}

/** One video's embedding through any frame encoder (the evaluation harness passes a caching one). */
export async function embedVideo(
  path: string,
  encodeFrames: FrameEncoder,
  options: VideoFramesOptions = {},
): Promise<VideoEmbedding> {
  const { info, indices, frames, sampling } = await sampleVideoFrames(path, options);
  const embeddings = await encodeFrames(frames);
  if (embeddings.rows !== frames.length)
    throw new InternalError(
      `frame encoder returned ${embeddings.rows} embeddings for ${frames.length} frames of ${path}`,
    );
  return { path, info, indices, sampling, embedding: poolFrameEmbeddings(embeddings) };
}

export interface EncodeVideosOptions extends VideoFramesOptions, FrameEncoderOptions {
  onProgress?: (done: number, total: number, path: string) => void;
  /** Replaces the pipeline's `encodeImages` (tests, caches). */
  encodeFrames?: FrameEncoder;
}

/** Video embeddings [videos, D], rows unit norm, in input order. */
export async function encodeVideos(
  pipeline: ClipPipeline,
  paths: readonly string[],
  options: EncodeVideosOptions = {},
): Promise<Matrix> {
  const encodeFrames = options.encodeFrames ?? clipFrameEncoder(pipeline, options);
  const D = pipeline.model.config.clipEmbedDim;
  const out = new Float32Array(paths.length * D);
  for (let i = 0; i < paths.length; i++) {
    const { embedding } = await embedVideo(paths[i], encodeFrames, options);
    if (embedding.length !== D)
      throw new InternalError(`frame encoder returned ${embedding.length}-dim embeddings, the model's are ${D}`);
    out.set(embedding, i * D);
    options.onProgress?.(i + 1, paths.length, paths[i]);
  }
  return matrix(out, paths.length, D);
}

/**
 * Zero-shot video classification: the template-ensembled text classifier of `buildZeroShotClassifier` against
 * the pooled video embeddings (logits = 100 · video @ classifierᵀ).
 */
export async function classifyVideos(
  pipeline: ClipPipeline,
  paths: readonly string[],
  labels: readonly string[],
  options: Omit<EncodeVideosOptions, 'onProgress'> & {
    templates?: readonly string[];
    onProgress?: ClassifyProgress;
  } = {},
): Promise<Classification> {
  const { onProgress, templates, ...videoOptions } = options;
  const classifier = await buildZeroShotClassifier(pipeline, labels, templates ?? ['{c}'], {
    onProgress: onProgress && ((done, total) => onProgress(done, total, 'prompts')),
  });
  const embeddings = await encodeVideos(pipeline, paths, {
    ...videoOptions,
    sampling: options.sampling ?? 'chat',
    onProgress: onProgress && ((done, total) => onProgress(done, total, 'videos')),
  });
  return classifyEmbeddings(embeddings, classifier);
}

export interface VideoTextRetrieval {
  /** [texts, videos]: row t ranks the videos for caption t. */
  textToVideo: Matrix;
  /** [videos, texts]: row v ranks the captions for video v. */
  videoToText: Matrix;
}

/**
 * Similarities for video–text retrieval: cosine of the normalised embeddings; with `dualSoftmax` (default on,
 * as in test_msrvtt.py) text→video ranks S ∘ softmax(S, dim=0) and video→text ranks Sᵀ ∘ softmax(Sᵀ, dim=0),
 * i.e. each score is weighted by a softmax over the other queries.
 */
export function videoTextRetrieval(
  textEmbeddings: Matrix,
  videoEmbeddings: Matrix,
  options: { dualSoftmax?: boolean } = {},
): VideoTextRetrieval {
  const scores = retrievalScores(textEmbeddings, videoEmbeddings);
  const st = transpose(scores);
  if (options.dualSoftmax ?? true) return { textToVideo: dualSoftmax(scores), videoToText: dualSoftmax(st) };
  return { textToVideo: scores, videoToText: st };
}
