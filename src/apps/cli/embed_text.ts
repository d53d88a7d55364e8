/** `internvl embed-text --model <dir> "text" …`: InternVL-C/G text embeddings. */
import fs from 'node:fs';
import { parseCommandArgs } from './args.js';
import { MODEL_OPTIONS, resolveModelArg, sessionArgs, weightsArg, weightsOption } from './model_arg.js';
import type { Command } from './registry.js';
import { checkWritableTarget } from '../../core/node/atomic_write.js';

export const embedTextCommand: Command = {
  name: 'embed-text',
  summary: 'InternVL-C/G text embeddings (print, --json or --out file.safetensors)',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'embed-text',
        synopsis: 'embed-text --model <dir|id> [options] ("text" ... | --file <lines.txt>)',
        description: `Text embeddings of InternVL-C/G (QLLaMA, last token @ text_projection) for retrieval: 'summarize:' + text,
BOS + EOS, right padding to 80 tokens, as the official evaluation. Same embedding for modes C and G.`,
        options: {
          ...MODEL_OPTIONS,
          weights: weightsOption('fp32 or int8 (ViT and QLLaMA linears; quantized once and cached)'),
          file: { type: 'string', value: 'file', help: 'one text per line' },
          normalize: { type: 'boolean', help: 'L2-normalize the embeddings' },
          out: {
            type: 'string',
            value: 'file',
            help: "write 'embeddings' [texts, dim] float32 to a .safetensors file",
          },
          json: { type: 'boolean', help: '{"dim": D, "texts": [{"text", "embedding"}]} on stdout' },
        },
        positionals: { min: 0, max: Infinity },
      },
      args,
    );
    if (!parsed) return 0;
    const file = parsed.string('file');
    let texts = parsed.positionals;
    if (file !== undefined) {
      try {
        texts = [
          ...texts,
          ...fs
            .readFileSync(file, 'utf8')
            .split(/\r?\n/)
            .filter((l) => l.trim()),
        ];
      } catch (error) {
        parsed.fail(`cannot read --file '${file}' (${(error as NodeJS.ErrnoException).code ?? error})`);
      }
    }
    if (texts.length === 0) parsed.fail('no text given');
    const out = parsed.string('out');
    if (out !== undefined && !out.endsWith('.safetensors'))
      parsed.fail(`--out must name a .safetensors file, got '${out}'`);
    // Before the work, not after it: a missing folder or a folder named as --out fails in a second.
    if (out !== undefined) checkWritableTarget(out);
    const [{ loadClipPipeline, encodeTexts }, { l2normalize }, { writeSafetensors }, { createProgressReporter }] =
      await Promise.all([
        import('../../tasks/clip.js'),
        import('../../core/matrix.js'),
        import('../../core/node/files.js'),
        import('../../core/progress.js'),
      ]);
    const pipeline = await loadClipPipeline(await resolveModelArg(parsed), {
      session: sessionArgs(parsed),
      configureVisionGraph: weightsArg(parsed, 'weights', ['fp32', 'int8']),
      configureQllamaGraph: weightsArg(parsed, 'weights', ['fp32', 'int8']),
    });
    try {
      const progress = createProgressReporter('embedding', {
        quiet: parsed.flag('quiet') || texts.length < 64,
        unit: 'items',
      });
      let embeddings = await encodeTexts(pipeline, texts, {
        onProgress: (done, total) => progress.update(done, total),
      });
      progress.finish();
      if (parsed.flag('normalize')) embeddings = l2normalize(embeddings);
      const { rows, cols } = embeddings;
      if (out !== undefined) {
        writeSafetensors(
          out,
          { embeddings: { dtype: 'F32', shape: [rows, cols], data: embeddings.data } },
          { texts: JSON.stringify(texts) },
        );
      }
      const row = (i: number) =>
        Array.from(embeddings.data.subarray(i * cols, (i + 1) * cols), (v) => Number(v.toPrecision(9)));
      if (parsed.flag('json')) {
        process.stdout.write(
          `${JSON.stringify({ dim: cols, texts: texts.map((text, i) => ({ text, embedding: row(i) })) })}\n`,
        );
      } else if (out === undefined) {
        texts.forEach((text, i) =>
          process.stdout.write(
            `${text}\n  ${row(i)
              .slice(0, 6)
              .map((v) => v.toFixed(4))
              .join(' ')}${cols > 6 ? ' …' : ''}\n`,
          ),
        );
      }
      return 0;
    } finally {
      await pipeline.model.release();
    }
  },
};
