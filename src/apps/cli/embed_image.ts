/** `internvl embed-image --model <dir|org/name> <images…>` */
import { parseCommandArgs } from './args.js';
import { MODEL_OPTIONS, MODEL_USAGE, resolveModelArg, sessionArgs, weightsArg } from './model_arg.js';
import type { Command } from './registry.js';

const USAGE = `Usage: internvl embed-image --model <dir|org/name> [options] <image|folder>...

Pooled vision features (the CLS token of the InternViT tower) of each image. The model is an InternViT folder or
an InternVL-Chat / InternVL-C/G checkpoint (its vision tower), as a local folder or a Hugging Face repo id.
Images are resized to the model's input size (Pillow bicubic) and ImageNet-normalised; a folder means the image
files in it.

Without --json or --out, prints one summary line per image (dimension, L2 norm, first values).

Options:
${MODEL_USAGE}
  --weights <f>        fp32 (default) or int8 (linears quantized once and cached; about 2× faster, ~1e-2 error)
  --out <file>         write the features as safetensors: 'embeddings' [images, dim] float32, image names in metadata
  --json               print {model, dim, images: [{image, embedding}]} on stdout
  --batch <n>          images per forward pass (default 1)
  --no-exif            do not apply EXIF orientation (the official pipeline does not)
  -h, --help           show this help
`;

export const embedImageCommand: Command = {
  name: 'embed-image',
  summary: 'pooled InternViT features of images (print, --json or --out file.safetensors)',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'embed-image',
        usage: USAGE,
        options: {
          ...MODEL_OPTIONS,
          weights: { type: 'string' },
          out: { type: 'string' },
          json: { type: 'boolean' },
          batch: { type: 'string' },
          'no-exif': { type: 'boolean' },
        },
        positionals: { min: 1, max: Infinity },
      },
      args,
    );
    if (!parsed) return 0;
    const modelId = parsed.required('model');
    const out = parsed.string('out');
    if (out !== undefined && !out.endsWith('.safetensors'))
      parsed.fail(`--out must name a .safetensors file, got '${out}'`);
    const batchSize = parsed.integer('batch', 1, { min: 1 });
    const quiet = parsed.flag('quiet');

    const [{ loadImageEmbedder, embedImages, expandImagePaths }, { createProgressReporter }, { writeSafetensors }] =
      await Promise.all([
        import('../../tasks/embed.js'),
        import('../../core/progress.js'),
        import('../../core/node/files.js'),
      ]);
    const images = await expandImagePaths(parsed.positionals);
    const model = await loadImageEmbedder(await resolveModelArg(parsed), {
      session: sessionArgs(parsed),
      configureGraph: weightsArg(parsed, 'weights', ['fp32', 'int8']),
    });
    let result;
    try {
      // One image needs no progress line; many do (a few seconds each on CPU at 448 px).
      const progress = createProgressReporter('embedding', { quiet: quiet || images.length < 2, unit: 'items' });
      result = await embedImages(model, images, {
        batchSize,
        applyExifOrientation: !parsed.flag('no-exif'),
        onProgress: (done, total, name) => progress.update(done, total, name),
      });
      progress.finish();
    } finally {
      await model.release();
    }
    const [count, dim] = result.dims;
    const rows = Array.from({ length: count }, (_, i) => result.data.subarray(i * dim, (i + 1) * dim));

    if (out !== undefined) {
      writeSafetensors(
        out,
        { embeddings: { dtype: 'F32', shape: [count, dim], data: result.data } },
        {
          images: JSON.stringify(result.names),
          model: modelId,
          architecture: model.architecture,
          pooling: 'cls',
          image_size: String(model.imageSize),
        },
      );
      if (!quiet) process.stderr.write(`wrote ${count}×${dim} embeddings to ${out}\n`);
    }
    if (parsed.flag('json')) {
      const json = {
        model: modelId,
        architecture: model.architecture,
        imageSize: model.imageSize,
        dim,
        pooling: 'cls',
        // 9 significant digits round-trip float32 exactly at a third of the length of a double's digits.
        images: result.names.map((image, i) => ({
          image,
          embedding: Array.from(rows[i], (v) => Number(v.toPrecision(9))),
        })),
      };
      process.stdout.write(`${JSON.stringify(json)}\n`);
    } else if (out === undefined) {
      const { formatTable } = await import('../verify/compare.js');
      const table = formatTable(
        ['image', 'dim', 'L2 norm', 'first values'],
        result.names.map((name, i) => [
          name,
          String(dim),
          l2norm(rows[i]).toFixed(4),
          `${Array.from(rows[i].subarray(0, 4), (v) => v.toFixed(4)).join(' ')}${dim > 4 ? ' …' : ''}`,
        ]),
        [false, true, true, false],
      );
      process.stdout.write(`${table}\n`);
      if (!quiet) process.stderr.write('(full vectors: --json, or --out file.safetensors)\n');
    }
    return 0;
  },
};

function l2norm(values: Float32Array): number {
  let sum = 0;
  for (const v of values) sum += v * v;
  return Math.sqrt(sum);
}
