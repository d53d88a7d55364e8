/**
 * The browser image decoder: the browser decodes (`createImageBitmap`), the pixels are read back as 8-bit RGB with
 * the rules of processing/image.ts, and everything after (tiling, the Pillow-exact bicubic) is the library's own
 * code, as in Node. ICC profiles are ignored (`colorSpaceConversion: 'none'`), as Pillow does; EXIF orientation is
 * applied or not as asked.
 *
 * A 2D canvas stores premultiplied alpha, which loses the colour under transparent pixels; Pillow's
 * `convert('RGB')` keeps it. Images with transparency are therefore read back through WebGL, which uploads the
 * unpremultiplied bitmap as it is; without WebGL the canvas values are used (exact wherever alpha is 255).
 *
 * Known differences from Pillow: 16-bit samples and CMYK JPEGs are reduced to 8-bit RGB by the browser's rules.
 */
import { ImageError, UsageError } from '../core/errors.js';
import type { ImageDecoder } from '../processing/decoders.js';
import { checkPixels, errText, loadImage, type LoadImageOptions, type RgbImage } from '../processing/image.js';

export const browserImageDecoder: ImageDecoder = {
  async decode(bytes, { name, applyExifOrientation, maxPixels }): Promise<RgbImage> {
    // Chromium applies a JPEG's EXIF orientation whatever `imageOrientation` says: the tag itself is reset instead.
    const input = applyExifOrientation ? bytes : withoutJpegOrientation(bytes);
    let bitmap: ImageBitmap;
    try {
      bitmap = await createImageBitmap(new Blob([input as Uint8Array<ArrayBuffer>]), {
        imageOrientation: applyExifOrientation ? 'from-image' : 'none',
        premultiplyAlpha: 'none',
        colorSpaceConversion: 'none',
      });
    } catch (error) {
      throw new ImageError(`${name}: not a readable image (${errText(error)})`, { cause: error });
    }
    try {
      checkPixels(name, bitmap.width, bitmap.height, maxPixels);
      return bitmapToRgb(bitmap, name);
    } finally {
      bitmap.close();
    }
  },
};

/** What a page has in hand: a dropped file, a fetched blob, an `<img>`, a canvas, decoded pixels. */
export type BrowserImageSource =
  | Blob
  | ImageBitmap
  | HTMLImageElement
  | HTMLCanvasElement
  | OffscreenCanvas
  | VideoFrame
  | ImageData;

/**
 * An image as 8-bit RGB. Files and blobs go through {@link browserImageDecoder} (size guard and EXIF option
 * included); an `<img>` or bitmap is taken as the browser shows it (its EXIF orientation already applied by CSS
 * `image-orientation: from-image`, the default); `ImageData` is used as is.
 */
export async function loadBrowserImage(source: BrowserImageSource, options: LoadImageOptions = {}): Promise<RgbImage> {
  const name = options.name ?? (typeof File !== 'undefined' && source instanceof File ? source.name : '<image>');
  if (source instanceof Blob) return loadImage(new Uint8Array(await source.arrayBuffer()), { ...options, name });
  if (source instanceof ImageData) return rgbaToRgb(source.data, source.width, source.height);
  const width =
    'naturalWidth' in source ? source.naturalWidth : 'displayWidth' in source ? source.displayWidth : source.width;
  const height =
    'naturalHeight' in source ? source.naturalHeight : 'displayHeight' in source ? source.displayHeight : source.height;
  if (!(width > 0 && height > 0)) throw new UsageError(`${name}: the image has no pixels yet (not loaded?)`);
  return rgbaToRgb(canvasPixels(source, width, height), width, height);
}

function bitmapToRgb(bitmap: ImageBitmap, name: string): RgbImage {
  const { width, height } = bitmap;
  const pixels = canvasPixels(bitmap, width, height);
  let opaque = true;
  for (let i = 3; i < pixels.length && opaque; i += 4) opaque = pixels[i] === 255;
  if (opaque) return rgbaToRgb(pixels, width, height);
  return rgbaToRgb(webglPixels(bitmap, name) ?? pixels, width, height);
}

function canvasPixels(source: CanvasImageSource, width: number, height: number): Uint8ClampedArray {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  if (!context) throw new ImageError('this browser gives no 2D canvas to read pixels with');
  context.drawImage(source, 0, 0, width, height);
  return context.getImageData(0, 0, width, height, { colorSpace: 'srgb' }).data;
}

/** The bitmap's unpremultiplied RGBA through a WebGL2 texture, or null without WebGL2. */
function webglPixels(bitmap: ImageBitmap, name: string): Uint8Array | null {
  const gl = new OffscreenCanvas(1, 1).getContext('webgl2');
  if (!gl) return null;
  try {
    const texture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, texture);
    gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, false);
    gl.pixelStorei(gl.UNPACK_COLORSPACE_CONVERSION_WEBGL, gl.NONE);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, bitmap);
    const framebuffer = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, framebuffer);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, texture, 0);
    if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) return null;
    const out = new Uint8Array(bitmap.width * bitmap.height * 4);
    gl.readPixels(0, 0, bitmap.width, bitmap.height, gl.RGBA, gl.UNSIGNED_BYTE, out);
    if (gl.getError() !== gl.NO_ERROR) throw new ImageError(`${name}: WebGL could not read the pixels back`);
    return out;
  } finally {
    gl.getExtension('WEBGL_lose_context')?.loseContext();
  }
}

/** RGBA bytes (alpha dropped, as Pillow's `convert('RGB')`) → an {@link RgbImage}. */
export function rgbaToRgb(rgba: ArrayLike<number>, width: number, height: number): RgbImage {
  const pixels = width * height;
  const data = new Uint8Array(pixels * 3);
  for (let p = 0, s = 0, d = 0; p < pixels; p++, s += 4, d += 3) {
    data[d] = rgba[s];
    data[d + 1] = rgba[s + 1];
    data[d + 2] = rgba[s + 2];
  }
  return { width, height, data };
}

/** A copy of a JPEG whose EXIF Orientation tag (0x0112 in IFD0) is reset to 1; other bytes come back as they are. */
export function withoutJpegOrientation(bytes: Uint8Array): Uint8Array {
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) return bytes;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 2; i + 4 <= bytes.length && bytes[i] === 0xff; ) {
    const marker = bytes[i + 1];
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    if (marker === 0xda || marker === 0xd9) break; // image data: no more metadata segments
    const end = i + 2 + view.getUint16(i + 2);
    if (marker === 0xe1 && String.fromCharCode(...bytes.subarray(i + 4, i + 10)) === 'Exif\0\0') {
      const at = orientationValueOffset(view, i + 10, Math.min(end, bytes.length));
      if (at === null) return bytes;
      const copy = bytes.slice();
      new DataView(copy.buffer).setUint16(at, 1, view.getUint16(i + 10) === 0x4949);
      return copy;
    }
    i = end;
  }
  return bytes;
}

/** Where IFD0's Orientation value lies in a TIFF structure starting at `tiff` (null when it has none). */
function orientationValueOffset(view: DataView, tiff: number, end: number): number | null {
  if (tiff + 8 > end) return null;
  const little = view.getUint16(tiff) === 0x4949;
  const ifd = tiff + view.getUint32(tiff + 4, little);
  if (ifd + 2 > end) return null;
  const count = view.getUint16(ifd, little);
  for (let entry = ifd + 2, k = 0; k < count && entry + 12 <= end; k++, entry += 12)
    if (view.getUint16(entry, little) === 0x0112) return entry + 8;
  return null;
}
