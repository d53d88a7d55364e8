/**
 * The images a task takes: a file path, encoded bytes with a name, or decoded pixels. Tasks decode them one batch
 * at a time, so a long list of photos never sits decoded in memory all at once.
 */
import { loadImage, type RgbImage } from '../processing/image.js';

/** An image file path, encoded bytes, or decoded pixels (named in progress and results by `name`). */
export type ImageSource = string | RgbImage | { name: string; image: RgbImage | Uint8Array };

export function imageSourceName(source: ImageSource, index: number): string {
  if (typeof source === 'string') return source;
  if ('name' in source && typeof source.name === 'string') return source.name;
  return `<image ${index}>`;
}

export async function decodeImageSource(
  source: ImageSource,
  name: string,
  applyExifOrientation: boolean,
): Promise<RgbImage> {
  if (typeof source === 'string') return loadImage(source, { applyExifOrientation });
  if ('image' in source) {
    return source.image instanceof Uint8Array ? loadImage(source.image, { name, applyExifOrientation }) : source.image;
  }
  return source;
}
