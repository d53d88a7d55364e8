/**
 * Images as 8-bit RGB with the semantics of Pillow's `Image.open(f).convert('RGB')`, which is what the official
 * InternVL code does, plus pixel → tensor conversion and crop helpers. The decoding itself is the platform's image
 * decoder (Node: sharp/libvips, `processing/node/image_decode.ts`); this module holds what is platform-neutral.
 *
 * Decoding rules (`loadImage`; the Node decoder implements them):
 * - any format sharp reads (JPEG, PNG, WebP, GIF (first frame), TIFF, AVIF/HEIF, …);
 * - greyscale → R = G = B; palette → its colours; alpha (RGBA, LA, palette transparency) is DROPPED, not composited
 *   over a background (exactly Pillow's `convert('RGB')`);
 * - 16-bit samples → their high byte (`v >> 8`), like Pillow for 16-bit RGB PNGs. (Pillow clips 16-bit
 *   GREYSCALE to 255 instead, which whitens such images; this port scales them like RGB — a deliberate difference);
 * - CMYK → RGB with Pillow's naive formula `R = (255 − K) − C·(255 − K)/255` (no ICC), as Pillow does;
 * - embedded ICC profiles are ignored (Pillow ignores them too);
 * - EXIF orientation: APPLIED by default (`applyExifOrientation: true`, like `ImageOps.exif_transpose`), because a
 *   rotated phone photo is what a user means. The official code does NOT apply it (`Image.open().convert('RGB')`):
 *   pass `applyExifOrientation: false` for strict parity with the official pipeline on such photos;
 * - decompression-bomb guard: the dimensions are read from the file header BEFORE anything is decoded, and an image
 *   of more than `maxPixels` pixels (default 178,956,970 = Pillow's `Image.MAX_IMAGE_PIXELS`) is refused;
 * - a corrupt or truncated file → `ImageError` naming the file.
 */
import { ImageError, UsageError } from '../core/errors.js';
import { errorCode, files } from '../core/io.js';
import { roundHalfEven } from '../core/python.js';
import { imageDecoder } from './decoders.js';

/** An 8-bit RGB image, pixels interleaved row-major (r,g,b, r,g,b, …). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** ImageNet normalisation used by every InternVL model. */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];
/** Pillow's `Image.MAX_IMAGE_PIXELS` (Pillow warns above it and refuses above twice it; this port refuses above it). */
export const DEFAULT_MAX_PIXELS = 178_956_970;

export interface LoadImageOptions {
  /** Name used in error messages (default: the path, or `<image bytes>`). */
  name?: string;
  /** Rotate/flip according to the EXIF Orientation tag (default true; the official code does not). */
  applyExifOrientation?: boolean;
  /** Refuse images with more pixels than this (default {@link DEFAULT_MAX_PIXELS}; `Infinity` disables). */
  maxPixels?: number;
}

/** Width and height read from the first bytes of a PNG, JPEG, GIF, WebP or BMP file, or null if not recognised. */
export function readImageHeaderSize(b: Uint8Array): { format: string; width: number; height: number } | null {
  const u16be = (o: number): number => (b[o] << 8) | b[o + 1];
  const u32be = (o: number): number => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
  const u16le = (o: number): number => b[o] | (b[o + 1] << 8);
  const u24le = (o: number): number => b[o] | (b[o + 1] << 8) | (b[o + 2] << 16);
  const ascii = (o: number, n: number): string => String.fromCharCode(...b.subarray(o, o + n));
  // PNG: signature, then the IHDR chunk (length 13) with width and height.
  if (b.length >= 24 && b[0] === 0x89 && ascii(1, 3) === 'PNG' && ascii(12, 4) === 'IHDR') {
    return { format: 'png', width: u32be(16), height: u32be(20) };
  }
  // JPEG: walk the marker segments up to the first SOFn.
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let i = 2;
    while (i + 4 <= b.length) {
      if (b[i] !== 0xff) return null;
      while (i < b.length && b[i] === 0xff) i++;
      if (i >= b.length) return null;
      const m = b[i++];
      if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; // no length
      if (m === 0xd9 || m === 0xda) return null; // EOI / SOS before any SOF
      if (i + 2 > b.length) return null;
      const len = u16be(i);
      const isSof = m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
      if (isSof) {
        if (i + 7 > b.length) return null;
        return { format: 'jpeg', width: u16be(i + 5), height: u16be(i + 3) };
      }
      i += len;
    }
    return null;
  }
  if (b.length >= 10 && (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a')) {
    return { format: 'gif', width: u16le(6), height: u16le(8) };
  }
  if (b.length >= 30 && ascii(0, 4) === 'RIFF' && ascii(8, 4) === 'WEBP') {
    const kind = ascii(12, 4);
    if (kind === 'VP8X') return { format: 'webp', width: u24le(24) + 1, height: u24le(27) + 1 };
    if (kind === 'VP8L' && b[20] === 0x2f) {
      const bits = (b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24)) >>> 0;
      return { format: 'webp', width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
    }
    if (kind === 'VP8 ' && b[23] === 0x9d && b[24] === 0x01 && b[25] === 0x2a) {
      return { format: 'webp', width: u16le(26) & 0x3fff, height: u16le(28) & 0x3fff };
    }
    return null;
  }
  if (b.length >= 26 && b[0] === 0x42 && b[1] === 0x4d) {
    const hdr = b[14] | (b[15] << 8) | (b[16] << 16) | (b[17] << 24);
    if (hdr >= 40) {
      const w = b[18] | (b[19] << 8) | (b[20] << 16) | (b[21] << 24);
      const h = b[22] | (b[23] << 8) | (b[24] << 16) | (b[25] << 24);
      return { format: 'bmp', width: Math.abs(w), height: Math.abs(h) };
    }
  }
  return null;
}

export function checkPixels(name: string, width: number, height: number, maxPixels: number): void {
  if (width * height > maxPixels) {
    throw new ImageError(
      `${name}: image is ${width}×${height} = ${width * height} pixels, above the limit of ${maxPixels} ` +
        `(possible decompression bomb; raise maxPixels to allow it)`,
    );
  }
}

/**
 * Decode an image file (path) or encoded bytes to 8-bit RGB, with the semantics of Pillow's
 * `Image.open(f).convert('RGB')` (see the module comment for the exact rules and the EXIF choice). The file is read
 * through the platform's file system and decoded by its image decoder (`processing/decoders.ts`).
 */
export async function loadImage(source: string | Uint8Array, opts: LoadImageOptions = {}): Promise<RgbImage> {
  const name = opts.name ?? (typeof source === 'string' ? source : '<image bytes>');
  const applyExifOrientation = opts.applyExifOrientation ?? true;
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!(maxPixels > 0)) throw new UsageError(`loadImage: maxPixels must be > 0, got ${maxPixels}`);

  let bytes: Uint8Array;
  if (typeof source === 'string') {
    try {
      bytes = await (await files.get()).readBytes(source);
    } catch (e) {
      const code = errorCode(e);
      const why = code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a directory' : errText(e);
      throw new ImageError(`${name}: cannot read image file (${why})`, { cause: e });
    }
  } else {
    bytes = source;
  }
  if (bytes.length === 0) throw new ImageError(`${name}: empty file, not an image`);

  // Header-only size check, before any decoder sees the data.
  const sniffed = readImageHeaderSize(bytes);
  if (sniffed) checkPixels(name, sniffed.width, sniffed.height, maxPixels);
  return (await imageDecoder.get()).decode(bytes, { name, applyExifOrientation, maxPixels });
}

/** A one-line message of an error. */
export function errText(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  return s.replace(/\s+/g, ' ').trim().replace(/:$/, '');
}

/** Pillow's CMYK → RGB (Convert.c cmyk2rgb): R = (255−K) − C·(255−K)/255 with its integer rounding. */
export function cmykToRgb(src: Uint8Array, channels: number, pixels: number): Uint8Array {
  const out = new Uint8Array(pixels * 3);
  for (let p = 0; p < pixels; p++) {
    const s = p * channels;
    const nk = 255 - src[s + 3];
    for (let c = 0; c < 3; c++) {
      const t = src[s + c] * nk + 128;
      const v = nk - (((t >> 8) + t) >> 8);
      out[p * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return out;
}

/** Wrap raw interleaved RGB bytes (validated) as an {@link RgbImage}. */
export function rgbImage(width: number, height: number, data: Uint8Array): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new UsageError(`rgbImage: invalid size ${width}×${height}`);
  }
  if (data.length !== width * height * 3) {
    throw new UsageError(`rgbImage: ${data.length} bytes for ${width}×${height}×3`);
  }
  return { width, height, data };
}

/**
 * Pillow's `img.crop((left, top, left + width, top + height))`: the box may extend past the image; the outside is
 * filled with black (0), as Pillow does.
 */
export function cropImage(img: RgbImage, left: number, top: number, width: number, height: number): RgbImage {
  for (const v of [left, top, width, height]) {
    if (!Number.isInteger(v)) throw new UsageError(`cropImage: box values must be integers, got ${v}`);
  }
  if (width <= 0 || height <= 0) throw new UsageError(`cropImage: empty crop ${width}×${height}`);
  const out = new Uint8Array(width * height * 3);
  const x0 = Math.max(0, left);
  const x1 = Math.min(img.width, left + width);
  if (x1 > x0) {
    const rowBytes = (x1 - x0) * 3;
    for (let y = 0; y < height; y++) {
      const sy = top + y;
      if (sy < 0 || sy >= img.height) continue;
      const s = (sy * img.width + x0) * 3;
      out.set(img.data.subarray(s, s + rowBytes), (y * width + (x0 - left)) * 3);
    }
  }
  return { width, height, data: out };
}

/**
 * torchvision `CenterCrop((height, width))` on a PIL image: pads with black (left/top get the floor half) when the
 * crop is larger than the image, then crops at `int(round((H − h) / 2.0))`, `int(round((W − w) / 2.0))`
 * (Python's round: half to even).
 */
export function centerCrop(img: RgbImage, width: number, height: number = width): RgbImage {
  let im = img;
  if (width > im.width || height > im.height) {
    const padL = width > im.width ? Math.floor((width - im.width) / 2) : 0;
    const padT = height > im.height ? Math.floor((height - im.height) / 2) : 0;
    const padR = width > im.width ? Math.floor((width - im.width + 1) / 2) : 0;
    const padB = height > im.height ? Math.floor((height - im.height + 1) / 2) : 0;
    im = cropImage(im, -padL, -padT, im.width + padL + padR, im.height + padT + padB);
    if (im.width === width && im.height === height) return im;
  }
  const top = roundHalfEven((im.height - height) / 2.0);
  const left = roundHalfEven((im.width - width) / 2.0);
  return cropImage(im, left, top, width, height);
}

/**
 * Per-channel lookup tables for torchvision `ToTensor()` + `Normalize(mean, std)` in float32:
 * `f32(f32(f32(x / 255) − f32(mean)) / f32(std))` (each step rounded to float32, as PyTorch computes it).
 */
function normalizeTables(mean: readonly number[], std: readonly number[]): Float32Array[] {
  const tables: Float32Array[] = [];
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c]);
    const s = Math.fround(std[c]);
    if (s === 0) throw new UsageError(`normalize: std[${c}] is zero`);
    const t = new Float32Array(256);
    for (let x = 0; x < 256; x++) t[x] = Math.fround(Math.fround(x / 255) - m) / s;
    tables.push(t);
  }
  return tables;
}

/**
 * RGB bytes → float32 [3, H, W] with `(x / 255 − mean) / std` per channel, bit-identical to torchvision's
 * `ToTensor()` + `Normalize(mean, std)`. Writes into `out` at `offset` when given (e.g. to stack tiles).
 */
export function toCHWFloat(
  img: RgbImage,
  mean: readonly number[] = IMAGENET_MEAN,
  std: readonly number[] = IMAGENET_STD,
  out?: Float32Array,
  offset = 0,
): Float32Array {
  if (mean.length !== 3 || std.length !== 3) throw new UsageError('toCHWFloat: mean and std need 3 values');
  const n = img.width * img.height;
  const dst = out ?? new Float32Array(3 * n);
  if (offset + 3 * n > dst.length) throw new UsageError('toCHWFloat: output buffer too small');
  const [t0, t1, t2] = normalizeTables(mean, std);
  const src = img.data;
  const o1 = offset + n;
  const o2 = offset + 2 * n;
  for (let p = 0, s = 0; p < n; p++, s += 3) {
    dst[offset + p] = t0[src[s]];
    dst[o1 + p] = t1[src[s + 1]];
    dst[o2 + p] = t2[src[s + 2]];
  }
  return dst;
}
