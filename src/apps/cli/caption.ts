/** `internvl caption --model <dir> <image>`: InternVL-G captioning (QLLaMA). */
import { parseCommandArgs } from './args.js';
import { MODEL_OPTIONS, MODEL_USAGE, resolveModelArg, sessionArgs, weightsArg } from './model_arg.js';
import type { Command } from './registry.js';

const USAGE = `Usage: internvl caption --model <dir|id> <image>... [options]

Captions images with InternVL-G (InternVL-14B-224px): QLLaMA reads the 96 image queries and the prompt
'English caption:'; beam search with 5 beams and 8 to 30 new tokens as the paper's evaluation.

Options:
${MODEL_USAGE}
  --weights <f>        fp32 (default) or int8 (ViT and QLLaMA linears; quantized once and cached)
  --prompt <text>      the text prompt (default 'English caption:')
  --beams <n>          beam width; 1 = greedy (default 5)
  --min-new-tokens <n> default 8
  --max-new-tokens <n> default 30
  --json               [{"image", "caption", "ids"}] on stdout
  -h, --help           show this help
`;

export const captionCommand: Command = {
  name: 'caption',
  summary: 'caption images with InternVL-G (beam search as the paper)',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'caption',
        usage: USAGE,
        options: {
          ...MODEL_OPTIONS,
          weights: { type: 'string' },
          prompt: { type: 'string' },
          beams: { type: 'string' },
          'min-new-tokens': { type: 'string' },
          'max-new-tokens': { type: 'string' },
          json: { type: 'boolean' },
        },
        positionals: { min: 1, max: Infinity },
      },
      args,
    );
    if (!parsed) return 0;
    const options = {
      prompt: parsed.string('prompt'),
      numBeams: parsed.integer('beams', 5, { min: 1, max: 32 }),
      minNewTokens: parsed.integer('min-new-tokens', 8, { min: 0 }),
      maxNewTokens: parsed.integer('max-new-tokens', 30, { min: 1 }),
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
