/** `internvl embed-image --model <dir|org/name> <images…>` */
import { parseCommandArgs } from './args.js';
import { MODEL_OPTIONS, resolveModelArg, sessionArgs, weightsArg, weightsOption } from './model_arg.js';
import type { Command } from './registry.js';
import { checkWritableTarget } from '../../core/node/atomic_write.js';

export const embedImageCommand: Command = {
  name: 'embed-image',
  summary: 'image embeddings: InternVL-C/G aligned, or pooled InternViT features (print, --json or --out)',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'embed-image',
        synopsis: 'embed-image --model <dir|org/name> [options] <image|folder>...',
        description: `Image embeddings. For an InternVL-C/G checkpoint: the aligned (projected) embedding that matches 'embed-text'
and 'internvl index' (--mode C or G; --vision-features for the raw tower output instead). For an InternViT folder
or an InternVL-Chat checkpoint: the pooled vision features (the CLS token of the InternViT tower). The model is a
local folder or a Hugging Face repo id. Images are resized to the model's input size (Pillow bicubic) and
ImageNet-normalised; a folder means the image files in it.

Without --json or --out, prints one summary line per image (dimension, L2 norm, first values).`,
        options: {
          ...MODEL_OPTIONS,
          weights: weightsOption('fp32 or int8 (linears quantized once and cached; about 2× faster, ~1e-2 error)'),
          out: {
            type: 'string',
            value: 'file',
            help: "write the features as safetensors: 'embeddings' [images, dim] float32, image names in metadata",
          },
          mode: {
            type: 'string',
            value: 'C|G',
            help: 'InternVL-C/G: the InternVL-C or InternVL-G image embedding',
            default: 'C',
          },
          'vision-features': {
            type: 'boolean',
            help: 'InternVL-C/G: the pooled InternViT features instead of the aligned embedding',
          },
          normalize: { type: 'boolean', help: 'L2-normalize the embeddings' },
          json: {
            type: 'boolean',
            help: "print {model, embedding ('aligned' or 'vision'), dim, images: [{image, embedding}]}",
          },
          batch: { type: 'string', value: 'n', help: 'images per forward pass', default: 1 },
          'no-exif': { type: 'boolean', help: 'do not apply EXIF orientation (the official pipeline does not)' },
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
    // Before the work, not after it: a missing folder or a folder named as --out fails in a second.
    if (out !== undefined) checkWritableTarget(out);
    const batchSize = parsed.integer('batch', { min: 1 });
    const quiet = parsed.flag('quiet');

    const mode = parsed.choice('mode', ['C', 'G'] as const);
    const [tasks, { createProgressReporter }, { writeSafetensors }, { readConfig }, { architectureOf }] =
      await Promise.all([
        import('../../tasks/embed.js'),
        import('../../core/progress.js'),
        import('../../core/node/files.js'),
        import('../../models/config.js'),
        import('../../models/registry.js'),
      ]);
    const images = await tasks.expandImagePaths(parsed.positionals);
    const dir = await resolveModelArg(parsed);
    const { name: architecture, capabilities } = architectureOf(await readConfig(dir));
    const aligned = capabilities.includes('clip') && !parsed.flag('vision-features');
    if (parsed.given('mode') && !aligned)
      parsed.fail('--mode is for the aligned embedding of an InternVL-C/G checkpoint (not with --vision-features)');
    const weights = weightsArg(parsed, 'weights', ['fp32', 'int8']);
    // One image needs no progress line; many do (a few seconds each on CPU at 448 px).
    const progress = createProgressReporter('embedding', { quiet: quiet || images.length < 2, unit: 'items' });
    const embedOptions = {
      batchSize,
      applyExifOrientation: !parsed.flag('no-exif'),
      onProgress: (done: number, total: number, name: string) => progress.update(done, total, name),
    };
    let result: import('../../tasks/embed.js').ImageEmbeddings;
    let imageSize: number;
    if (aligned) {
      const { loadClipPipeline } = await import('../../tasks/clip.js');
      const pipeline = await loadClipPipeline(dir, {
        session: sessionArgs(parsed),
        configureVisionGraph: weights,
        configureQllamaGraph: weights,
      });
      imageSize = pipeline.model.config.imageSize;
      try {
        result = await tasks.embedImagesAligned(pipeline, images, { ...embedOptions, mode });
      } finally {
        await pipeline.model.release();
      }
    } else {
      const model = await tasks.loadImageEmbedder(dir, { session: sessionArgs(parsed), configureGraph: weights });
      imageSize = model.imageSize;
      try {
        result = await tasks.embedImages(model, images, embedOptions);
      } finally {
        await model.release();
      }
    }
    progress.finish();
    if (parsed.flag('normalize')) {
      const { l2normalize, matrix } = await import('../../core/matrix.js');
      result.data = l2normalize(matrix(result.data, ...result.dims)).data;
    }
    const kind: Record<string, string> = aligned
      ? { embedding: 'aligned', mode }
      : { embedding: 'vision', pooling: 'cls' };
    const [count, dim] = result.dims;
    const rows = Array.from({ length: count }, (_, i) => result.data.subarray(i * dim, (i + 1) * dim));

    if (out !== undefined) {
      writeSafetensors(
        out,
        { embeddings: { dtype: 'F32', shape: [count, dim], data: result.data } },
        {
          images: JSON.stringify(result.names),
          model: modelId,
          architecture,
          ...kind,
          normalized: String(parsed.flag('normalize')),
          image_size: String(imageSize),
        },
      );
      if (!quiet) process.stderr.write(`wrote ${count}×${dim} embeddings to ${out}\n`);
    }
    if (parsed.flag('json')) {
      const json = {
        model: modelId,
        architecture,
        ...kind,
        normalized: parsed.flag('normalize'),
        image_size: imageSize,
        dim,
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
