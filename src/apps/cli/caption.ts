/** `internvl caption --model <dir> <image>`: InternVL-G captioning (QLLaMA). */
import { parseCommandArgs } from './args.js';
import { CAPTION_DEFAULTS } from '../../tasks/caption.js';
import { MODEL_OPTIONS, resolveModelArg, sessionArgs, weightsArg, weightsOption } from './model_arg.js';
import type { Command } from './registry.js';

export const captionCommand: Command = {
  name: 'caption',
  summary: 'caption images with InternVL-G (beam search as the paper)',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'caption',
        synopsis: 'caption --model <dir|id> <image>... [options]',
        description: `Captions images with InternVL-G (InternVL-14B-224px): QLLaMA reads the 96 image queries and the prompt;
beam search with the settings of the paper's evaluation by default.`,
        options: {
          ...MODEL_OPTIONS,
          weights: weightsOption('fp32 or int8 (ViT and QLLaMA linears; quantized once and cached)'),
          prompt: { type: 'string', value: 'text', help: 'the text prompt', default: CAPTION_DEFAULTS.prompt },
          beams: { type: 'string', value: 'n', help: 'beam width; 1 = greedy', default: CAPTION_DEFAULTS.numBeams },
          'min-new-tokens': {
            type: 'string',
            value: 'n',
            help: 'new tokens at least',
            default: CAPTION_DEFAULTS.minNewTokens,
          },
          'max-new-tokens': {
            type: 'string',
            value: 'n',
            help: 'new tokens at most',
            default: CAPTION_DEFAULTS.maxNewTokens,
          },
          json: { type: 'boolean', help: '[{"image", "caption", "ids"}] on stdout' },
        },
        positionals: { min: 1, max: Infinity },
      },
      args,
    );
    if (!parsed) return 0;
    const options = {
      prompt: parsed.string('prompt'),
      numBeams: parsed.integer('beams', { min: 1, max: 32 }),
      minNewTokens: parsed.integer('min-new-tokens', { min: 0 }),
      maxNewTokens: parsed.integer('max-new-tokens', { min: 1 }),
    };
    const [{ loadClipPipeline }, { captionImage }, { loadImage }] = await Promise.all([
      import('../../tasks/clip.js'),
      import('../../tasks/caption.js'),
      import('../../processing/image.js'),
    ]);
    const images = await Promise.all(parsed.positionals.map((p) => loadImage(p)));
    const pipeline = await loadClipPipeline(await resolveModelArg(parsed), {
      session: sessionArgs(parsed),
      configureVisionGraph: weightsArg(parsed, 'weights', ['fp32', 'int8']),
      configureQllamaGraph: weightsArg(parsed, 'weights', ['fp32', 'int8']),
    });
    try {
      const results = [];
      for (const [i, image] of images.entries()) {
        const { text, ids } = await captionImage(pipeline, image, options);
        results.push({ image: parsed.positionals[i], caption: text, ids });
        if (!parsed.flag('json')) process.stdout.write(`${parsed.positionals[i]}: ${text}\n`);
      }
      if (parsed.flag('json')) process.stdout.write(`${JSON.stringify(results)}\n`);
      return 0;
    } finally {
      await pipeline.model.release();
    }
  },
};
