/**
 * Runner for the `preprocess` fixture: real photos in `images/` through `dynamic_preprocess` + `build_transform`
 * (InternVL-Chat tiling). Its config.json holds the preprocessing settings, not a model, so it is recognised by
 * those fields. Goldens per image `<stem>`: `out.<stem>.pixel_values` (tiles, abs ≤ 0.04) and
 * `out.<stem>.target_aspect_ratio` (the (cols, rows) grid, exact).
 */
import { ConfigError } from '../../core/errors.js';
import { loadImage } from '../../processing/image.js';
import { preprocessForChat } from '../../processing/tiling.js';
import type { ComparedTensor, SkippedTensor } from './compare.js';
import type { Fixture } from './fixture.js';
import type { FixtureRunner } from './registry.js';

/** `build_transform`'s constants per `normalize_type` (internvl_chat/internvl/train/constants.py). */
const NORMALIZE: Record<string, { mean: number[]; std: number[] }> = {
  imagenet: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  clip: { mean: [0.4814546, 0.4578275, 0.40821073], std: [0.2686295, 0.2613025, 0.2757711] },
  siglip: { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
};

const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif', '.tif', '.tiff'];

export const preprocessRunner: FixtureRunner = {
  name: 'preprocess',
  matches(fixture) {
    const config = fixture.config;
    if (!config || config.has('architectures') || config.has('model_type')) return false;
    return (
      config.has('max_num') &&
      (config.has('image_size') || config.has('input_size')) &&
      fixture.goldenNames().some((n) => n.endsWith('.pixel_values'))
    );
  },
  async run(fixture) {
    const config = fixture.config!;
    const normalizeType = config.string('normalize_type', 'imagenet');
    if (!(normalizeType in NORMALIZE))
      config.fail('normalize_type', `must be one of ${Object.keys(NORMALIZE).join(', ')}, got '${normalizeType}'`);
    const tileSize = config.has('image_size') ? config.integer('image_size') : config.integer('input_size');
    const options = {
      minTiles: config.integer('min_num', 1),
      maxTiles: config.integer('max_num'),
      tileSize,
      useThumbnail: config.boolean('use_thumbnail', false),
      mean: numberTriple(config.raw.mean, config.file, 'mean') ?? NORMALIZE[normalizeType].mean,
      std: numberTriple(config.raw.std, config.file, 'std') ?? NORMALIZE[normalizeType].std,
    };
    const compared: ComparedTensor[] = [];
    const skipped: SkippedTensor[] = [];
    const unsupported = config.boolean('pad2square', false)
      ? 'pad2square preprocessing is not implemented'
      : config.string('interpolation', 'bicubic') !== 'bicubic'
        ? `interpolation '${config.string('interpolation')}' is not implemented`
        : null;
    const stems = [...new Set(fixture.goldenNames().map((n) => n.split('.')[1]))];
    for (const stem of stems) {
      const goldens = fixture.goldenNames().filter((n) => n.startsWith(`out.${stem}.`));
      const imagePath = await findImage(fixture, stem);
      const reason = unsupported ?? (imagePath ? null : `no image '${stem}.*' in ${fixture.path('images')}`);
      if (reason) {
        skipped.push(...goldens.map((name) => ({ name, reason })));
        continue;
      }
      // Official pipeline: Image.open(f).convert('RGB'), which does not apply EXIF orientation.
      const image = await loadImage(imagePath!, { applyExifOrientation: false });
      const result = preprocessForChat(image, options);
      const computed: Record<string, { data: ArrayLike<number>; shape: number[] }> = {
        [`out.${stem}.pixel_values`]: { data: result.pixelValues, shape: [result.numTiles, 3, tileSize, tileSize] },
        [`out.${stem}.target_aspect_ratio`]: { data: result.grid, shape: [2] },
      };
      for (const name of goldens) {
        const tensor = computed[name];
        if (tensor) compared.push(fixture.compare(name, tensor));
        else skipped.push({ name, reason: 'not a preprocessing output' });
      }
    }
    return { compared, skipped };
  },
};

async function findImage(fixture: Fixture, stem: string): Promise<string | null> {
  // meta.images names the files (`image3.jpg`); fall back to any image file with that stem.
  const named = Object.keys((fixture.meta.images ?? {}) as Record<string, unknown>).find((f) => stemOf(f) === stem);
  if (named && (await fixture.fs.isFile(fixture.path('images', named)))) return fixture.path('images', named);
  if (!(await fixture.fs.isDirectory(fixture.path('images')))) return null;
  const file = (await fixture.fs.list(fixture.path('images'))).find(
    (f) => stemOf(f) === stem && IMAGE_EXTENSIONS.includes(f.slice(stemOf(f).length).toLowerCase()),
  );
  return file ? fixture.path('images', file) : null;
}

/** A file name without its last extension (`a.b.jpg` → `a.b`), as Python's `Path.stem`. */
function stemOf(file: string): string {
  const dot = file.lastIndexOf('.');
  return dot > 0 ? file.slice(0, dot) : file;
}

function numberTriple(value: unknown, file: string, key: string): number[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || value.length !== 3 || !value.every((v) => typeof v === 'number')) {
    throw new ConfigError(`${file}: field '${key}' must be a list of 3 numbers, got ${JSON.stringify(value)}`);
  }
  return value as number[];
}
