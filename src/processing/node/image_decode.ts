/**
 * The Node image decoder: sharp (libvips). `loadImage` (processing/image.ts) has read the bytes and checked the
 * header size; here libvips parses the header again (formats the sniffer does not know), decodes, and the
 * result becomes 8-bit RGB by Pillow's `convert('RGB')` rules.
 */
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { ImageError } from '../../core/errors.js';
import type { ImageDecoder } from '../decoders.js';
import { checkPixels, cmykToRgb, errText, type RgbImage } from '../image.js';

export const sharpImageDecoder: ImageDecoder = {
  async decode(bytes, { name, applyExifOrientation: applyExif, maxPixels }): Promise<RgbImage> {
    const input = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const limit = Number.isFinite(maxPixels) ? Math.min(Math.floor(maxPixels), Number.MAX_SAFE_INTEGER) : false;
    const sharpOpts = { failOn: 'error' as const, limitInputPixels: limit, ignoreIcc: true, autoOrient: applyExif };

    // libvips header parse (no pixel decoding), for the formats the header sniffer does not know.
    let meta: Metadata;
    try {
      meta = await sharp(input, { ...sharpOpts, autoOrient: false }).metadata();
    } catch (e) {
      throw new ImageError(`${name}: not a readable image (${errText(e)})`, { cause: e });
    }
    if (!meta.width || !meta.height) throw new ImageError(`${name}: image has no dimensions`);
    checkPixels(name, meta.width, meta.height, maxPixels);

    // Decode.
    const isCmyk = meta.space === 'cmyk';
    let raw: { data: Buffer; info: OutputInfo };
    try {
      let pipe = sharp(input, sharpOpts);
      // CMYK: keep the decoded ink values (no ICC transform) and convert with Pillow's formula below.
      if (isCmyk) pipe = pipe.pipelineColourspace('cmyk').toColourspace('cmyk');
      else pipe = pipe.toColourspace('srgb');
      raw = await pipe.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    } catch (e) {
      throw new ImageError(`${name}: cannot decode image (${errText(e)})`, { cause: e });
    }
    const { width, height, channels } = raw.info;
    const pixels = width * height;
    const src = new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
    if (src.length !== pixels * channels) throw new ImageError(`${name}: decoder returned a short pixel buffer`);

    if (isCmyk) {
      if (channels < 4) throw new ImageError(`${name}: CMYK image decoded with ${channels} channels`);
      return { width, height, data: cmykToRgb(src, channels, pixels) };
    }
    if (channels === 3) return { width, height, data: new Uint8Array(src) };
    const data = new Uint8Array(pixels * 3);
    if (channels === 4) {
      for (let p = 0, s = 0, d = 0; p < pixels; p++, s += 4, d += 3) {
        data[d] = src[s];
        data[d + 1] = src[s + 1];
        data[d + 2] = src[s + 2];
      }
    } else if (channels === 1 || channels === 2) {
      for (let p = 0, s = 0, d = 0; p < pixels; p++, s += channels, d += 3) {
        data[d] = data[d + 1] = data[d + 2] = src[s];
      }
    } else {
      throw new ImageError(`${name}: unsupported image with ${channels} channels`);
    }
    return { width, height, data };
  },
};
