/**
 * The image and video decoders: the platform seam of processing/ (see core/platform.ts). Everything else in
 * processing/ is pure pixel and frame math. Node decodes with sharp (`node/image_decode.ts`) and ffmpeg
 * (`node/video_decode.ts`), each loaded on first use; a browser plugs in its own, e.g. over `createImageBitmap` and
 * an OffscreenCanvas, with `imageDecoder.set(...)`.
 */
import { Seam } from '../core/platform.js';
import type { RgbImage } from './image.js';
import type { FfmpegOptions, VideoInfo } from './video.js';

export interface ImageDecodeOptions {
  /** Names the image in error messages. */
  name: string;
  /** Rotate/flip by the EXIF Orientation tag. */
  applyExifOrientation: boolean;
  /** Refuse images with more pixels (checked on the decoder's own header parse too). */
  maxPixels: number;
}

/**
 * Encoded image bytes → 8-bit RGB, by Pillow's `convert('RGB')` rules (see processing/image.ts). The caller has
 * already refused empty input and images whose header (PNG, JPEG, GIF, WebP, BMP) is over `maxPixels`.
 * Rejects with an ImageError naming `options.name`.
 */
export interface ImageDecoder {
  decode(bytes: Uint8Array, options: ImageDecodeOptions): Promise<RgbImage>;
}

/** Video files → frames, numbered and counted as decord does (see processing/video.ts). */
export interface VideoDecoder {
  probe(path: string, options: FfmpegOptions): Promise<VideoInfo>;
  /** One image per requested index, in the order given; rejects with an ImageError past the last frame. */
  decodeFrames(path: string, indices: readonly number[], options: FfmpegOptions): Promise<RgbImage[]>;
}

export const imageDecoder = new Seam<ImageDecoder>(
  'image decoder',
  [import.meta.url, './node/image_decode.js'],
  'sharpImageDecoder',
);

export const videoDecoder = new Seam<VideoDecoder>(
  'video decoder',
  [import.meta.url, './node/video_decode.js'],
  'ffmpegVideoDecoder',
);
