/** `internvl classify --model <dir> <images…> --labels "a,b,c"`: zero-shot classification with InternVL-C/G. */
import fs from 'node:fs';
import { parseCommandArgs } from './args.js';
import { MODEL_OPTIONS, resolveModelArg, sessionArgs, weightsArg, weightsOption } from './model_arg.js';
import type { Command } from './registry.js';
import { createProgressReporter, type ProgressReporter } from '../../core/progress.js';

function isReadableFile(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.R_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** One progress line per stage (prompts, then images or videos), each finished before the next starts. */
function stagedProgress(quiet: boolean) {
  let stage: { name: string; progress: ProgressReporter } | null = null;
  return {
    update(done: number, total: number, name: 'prompts' | 'images' | 'videos'): void {
      if (stage?.name !== name) {
        stage?.progress.finish();
        // A few prompts or one image are quick; many are not (80 templates per label by default).
        const label = name === 'prompts' ? 'encoding prompts' : `classifying ${name}`;
        const few = total < (name === 'prompts' ? 64 : 2);
        stage = {
          name,
          progress: createProgressReporter(label, { quiet: quiet || few, unit: 'items', itemName: name }),
        };
      }
      stage.progress.update(done, total);
    },
    finish(): void {
      stage?.progress.finish();
    },
  };
}

const VIDEO_EXTENSIONS = ['.mp4', '.mkv', '.webm', '.avi', '.mov', '.m4v'];

export const classifyCommand: Command = {
  name: 'classify',
  summary: 'zero-shot image classification with InternVL-C/G (prompt-template ensembling)',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'classify',
        synopsis: 'classify --model <dir|id> (<image|folder>... | <video>...) --labels "cat,dog" [options]',
        description: `Zero-shot classification with InternVL-C or InternVL-G (InternVL-14B-224px checkpoints), exactly as
CLIP_benchmark: each label is put into every template, the prompt embeddings are normalized, averaged and
renormalized; the logits are 100 · normalize(image) @ classes. Images (a folder means the image files in it):
Resize(224, short side, bicubic) + CenterCrop. Videos (.mp4, .mkv, .webm, .avi, .mov; needs ffmpeg): --frames
frames, one from the middle of each of --frames equal segments (the official chat code's get_index; a shorter clip
repeats frames), embeddings averaged.`,
        options: {
          ...MODEL_OPTIONS,
          weights: weightsOption('fp32 or int8 (ViT and QLLaMA linears; quantized once and cached)'),
          labels: { type: 'string', value: 'a,b,c', help: 'class names, comma-separated', required: true },
          template: {
            type: 'string',
            multiple: true,
            value: 't',
            help: 'a prompt template with {c} (or {}) for the label; repeatable',
          },
          templates: {
            type: 'string',
            value: 'name',
            help: 'a built-in template set: en, cn, jp, ar, it (ImageNet templates of the paper), or a .json/.txt file of templates (one per line)',
            default: 'en',
          },
          mode: {
            type: 'string',
            value: 'C|G',
            help: 'InternVL-C (attention pooling) or InternVL-G (QLLaMA queries)',
            default: 'C',
          },
          top: { type: 'string', value: 'k', help: 'labels shown per image', default: 5 },
          frames: {
            type: 'string',
            value: 'n',
            help: "frames per video (as the paper's 8-frame Kinetics numbers)",
            default: 8,
          },
          json: { type: 'boolean', help: '{"labels": [...], "images": [{"image", "probs", "logits"}]} on stdout' },
        },
        positionals: { min: 1, max: Infinity },
      },
      args,
    );
    if (!parsed) return 0;
    const labels = parsed
      .required('labels')
      .split(',')
      .map((l) => l.trim())
      .filter(Boolean);
    if (labels.length === 0) parsed.fail('--labels names no label');
    const mode = parsed.choice('mode', ['C', 'G'] as const);
    const top = parsed.integer('top', { min: 1 });
    const numFrames = parsed.integer('frames', { min: 1, max: 256 });
    const isVideo = (p: string) => VIDEO_EXTENSIONS.some((ext) => p.toLowerCase().endsWith(ext));
    const videos = parsed.positionals.filter(isVideo);
    if (videos.length > 0 && videos.length !== parsed.positionals.length)
      parsed.fail('give images or videos, not both');
    const [
      { loadClipPipeline, classifyImages },
      { loadImage },
      { loadTemplates },
      { classifyVideos },
      { expandImagePaths },
    ] = await Promise.all([
      import('../../tasks/clip.js'),
      import('../../processing/image.js'),
      import('../../tasks/zeroshot_prompts.js'),
      import('../../tasks/video.js'),
      import('../../tasks/embed.js'),
    ]);
    const custom = (parsed.values.template as string[] | undefined) ?? [];
    const templates = custom.length > 0 ? custom : await loadTemplates(parsed.string('templates'));
    const inputs = videos.length > 0 ? videos : await expandImagePaths(parsed.positionals);
    // Images are decoded a batch at a time during the work; a path that is not a readable file fails now, with
    // the decoder's own message, instead of after the model has loaded.
    if (videos.length === 0) for (const p of inputs) if (!isReadableFile(p)) await loadImage(p);
    const pipeline = await loadClipPipeline(await resolveModelArg(parsed), {
      session: sessionArgs(parsed),
      configureVisionGraph: weightsArg(parsed, 'weights', ['fp32', 'int8']),
      configureQllamaGraph: weightsArg(parsed, 'weights', ['fp32', 'int8']),
    });
    const progress = stagedProgress(parsed.flag('quiet'));
    try {
      const { logits, probs } =
        videos.length > 0
          ? await classifyVideos(pipeline, videos, labels, { templates, mode, numFrames, onProgress: progress.update })
          : await classifyImages(pipeline, inputs, labels, { templates, mode, onProgress: progress.update });
      progress.finish();
      const row = (m: typeof probs, i: number) =>
        Array.from(m.data.subarray(i * labels.length, (i + 1) * labels.length));
      if (parsed.flag('json')) {
        process.stdout.write(
          `${JSON.stringify({
            labels,
            mode,
            templates: templates.length,
            images: inputs.map((image, i) => ({ image, probs: row(probs, i), logits: row(logits, i) })),
          })}\n`,
        );
        return 0;
      }
      inputs.forEach((path, i) => {
        const p = row(probs, i);
        const order = p
          .map((_, c) => c)
          .sort((a, b) => p[b] - p[a])
          .slice(0, top);
        process.stdout.write(
          `${path}\n${order.map((c) => `  ${(100 * p[c]).toFixed(2).padStart(6)}%  ${labels[c]}`).join('\n')}\n`,
        );
      });
      return 0;
    } finally {
      await pipeline.model.release();
    }
  },
};
