/** `internvl eval zeroshot|retrieval|video-retrieval`: the InternVL-C/G evaluation protocols (CLIP_benchmark, MSR-VTT). */
import { parseCommandArgs, usageError, type CommandSpec, type Options, type ParsedArgs } from './args.js';
import { MODEL_OPTIONS } from './model_arg.js';
import type { Command } from './registry.js';
import { checkWritableTarget, writeFileAtomicSync } from '../../core/node/atomic_write.js';

const COMMON_OPTIONS = {
  model: { ...MODEL_OPTIONS.model, help: 'InternVL-C/G checkpoint folder or Hugging Face repo id' },
  mode: {
    type: 'string',
    value: 'C|G',
    help: 'InternVL-C (attention pooling) or InternVL-G (QLLaMA queries)',
    default: 'C',
  },
  batch: {
    type: 'string',
    value: 'n',
    help: 'images per forward pass (prompts go at least 32 at a time)',
    default: 8,
  },
  limit: { type: 'string', value: 'n', help: 'evaluate only the first n images (videos)' },
  'cache-dir': {
    type: 'string',
    value: 'dir',
    help: 'embedding cache (default $INTERNVL_CACHE/embeddings, else ~/.cache/internvl-ts/embeddings)',
  },
  'no-cache': { type: 'boolean', help: 'neither read nor write the embedding cache' },
  json: { type: 'boolean', help: 'print the result as JSON (CLIP_benchmark-like record) on stdout' },
  markdown: { type: 'string', value: 'file', help: 'also write the result as a Markdown table (values ×100)' },
  threads: MODEL_OPTIONS.threads,
  offline: MODEL_OPTIONS.offline,
  quiet: MODEL_OPTIONS.quiet,
} as const satisfies Options;

/** Each evaluation's help and its own options (after those of COMMON_OPTIONS). */
const EVALUATION_SPECS: Record<Evaluation, { summary: string } & Omit<CommandSpec, 'command'>> = {
  zeroshot: {
    summary: 'zero-shot image classification: acc1, acc5, mean per-class recall (CLIP_benchmark)',
    synopsis: 'eval zeroshot --model <dir|id> --dataset <folder> [options]',
    description: `Zero-shot classification as CLIP_benchmark: per class, every template filled with the class name ({c}), the
prompt embeddings normalised, averaged and renormalised; logits = 100 · normalize(image) @ classifierᵀ. Images:
Resize(224, short side, bicubic) + CenterCrop(224), ImageNet mean/std. Reports acc1, acc5 (n/a below 5 classes)
and mean_per_class_recall.

The dataset is an ImageNet-style folder (one sub-folder per class, torchvision ImageFolder order) or a
CLIP_benchmark webdataset export (<dataset>/<split>/*.tar with .cls labels, classnames.txt and optionally
zeroshot_classification_templates.txt).

Class names: --classnames, else the built-in ImageNet names of --language, else the webdataset's classnames.txt,
else (a folder of 1000 wnid folders) the built-in English ImageNet names, else the folder names.
Templates: --templates, else the built-in ImageNet templates of --language, else the webdataset's templates file,
else the 80 English ImageNet templates.`,
    options: {
      dataset: { type: 'string', value: 'dir', help: 'ImageNet-style folder or webdataset folder', required: true },
      classnames: {
        type: 'string',
        value: 'file',
        help: '.txt (one per line) or .json (list, folder→name map, or {dataset: [...]} table)',
      },
      templates: {
        type: 'string',
        value: 'file',
        help: ".txt (one per line) or .json (list or {dataset: [...]} table); '{c}' is the class name",
      },
      language: {
        type: 'string',
        value: 'lang',
        help: 'built-in ImageNet class names and templates: en, cn, jp, ar, it',
      },
      key: { type: 'string', value: 'name', help: 'entry of {dataset: [...]} JSON files (default imagenet1k)' },
      split: { type: 'string', value: 'name', help: 'webdataset split folder (default test)' },
    },
  },
  retrieval: {
    summary: 'image–text retrieval: image→text and text→image R@1/5/10 and their mean (CLIP_benchmark)',
    synopsis: 'eval retrieval --model <dir|id> --dataset <captions file | webdataset folder> [options]',
    description: `Image–text retrieval as CLIP_benchmark: images Resize((224, 224)) bicubic, no crop; captions through pre_caption
(lower case, punctuation removed, at most 50 words) unless --no-pre-caption; scores = normalize(text) @
normalize(image)ᵀ. A query is a hit at K when any of its positives is in the top K. Reports image→text
(text_retrieval_recall@K) and text→image (image_retrieval_recall@K) for K = 1, 5, 10 and their mean.

Caption files: Karpathy JSON ({images: [{filename, split, sentences: [{raw}]}]}, the test split by default),
COCO captions JSON, [{image, caption}] JSON, multilingual COCO JSON ({image_paths, annotations}), Flickr txt.
A webdataset folder needs dataset_type.txt = retrieval and .txt captions per sample.`,
    options: {
      dataset: { type: 'string', value: 'path', help: 'caption file or retrieval webdataset folder', required: true },
      'image-root': {
        type: 'string',
        value: 'dir',
        help: "folder the caption file's image paths are relative to (default: the file's folder)",
      },
      split: {
        type: 'string',
        value: 'name',
        help: 'Karpathy split (default test) or webdataset split folder (default test)',
      },
      'pre-caption': { type: 'boolean', help: 'apply pre_caption (the default, except with --xtd)' },
      'no-pre-caption': { type: 'boolean', help: 'keep the captions as they are' },
      xtd: {
        type: 'boolean',
        help: 'XTD10 protocol: report image→text R@10 only (pre_caption off unless --pre-caption)',
      },
    },
  },
  'video-retrieval': {
    summary: "video–text retrieval: t2v and v2t R@1/5/10 (InternVL's MSR-VTT script)",
    synopsis: 'eval video-retrieval --model <dir|id> --videos <dir> --captions <file.json> [options]',
    description: `Video–text retrieval as InternVL's video_retrieval/test_msrvtt.py: F frames per video (interval = ceil(len/F),
ids = arange(0, len, interval) + interval // 2; a clip that rule cannot take F frames from, where the script
asserts, is sampled by the chat code's segments instead and counted in videos_segment_sampled), each frame
Resize(224, short side) + CenterCrop(224) (the CLIPImageProcessor of the 14B model), the frame embeddings averaged
and normalised; captions as they are. With dual softmax (default) scores are re-weighted as S · softmax(S, dim=0)
for each direction. Reports t2v and v2t R@1/5/10 and their mean. Needs ffmpeg and ffprobe on PATH.`,
    options: {
      videos: {
        type: 'string',
        value: 'dir',
        help: "folder the captions file's video paths are relative to",
        required: true,
      },
      captions: {
        type: 'string',
        value: 'file',
        help: 'JSON [{"video": "video7020.mp4", "caption": "..."}], caption i belongs to video i',
        required: true,
      },
      frames: {
        type: 'string',
        value: 'n',
        help: "frames per video (default 8; test_msrvtt.py's default is 1)",
      },
      'no-dual-softmax': { type: 'boolean', help: 'rank the plain cosine similarities' },
    },
  },
};

function help(): string {
  const lines = EVALUATIONS.map((name) => `  ${name.padEnd(18)}${EVALUATION_SPECS[name].summary}`);
  return `Usage: internvl eval <evaluation> [options]

Evaluations (InternVL-C/G, e.g. OpenGVLab/InternVL-14B-224px):
${lines.join('\n')}

Image, video and prompt embeddings are cached on disk, so re-running with other templates or class names does not
re-encode the images. See 'internvl eval <evaluation> --help'.
`;
}

const EVALUATIONS = ['zeroshot', 'retrieval', 'video-retrieval'] as const;
type Evaluation = (typeof EVALUATIONS)[number];

export const evalCommand: Command = {
  name: 'eval',
  summary: 'InternVL-C/G evaluations: `eval zeroshot|retrieval|video-retrieval` (CLIP_benchmark / MSR-VTT metrics)',
  async run(args) {
    const [which, ...rest] = args;
    if (which === undefined) throw usageError('eval', `missing evaluation (${EVALUATIONS.join(', ')})`);
    if (which === '--help' || which === '-h') {
      process.stdout.write(help());
      return 0;
    }
    if (!(EVALUATIONS as readonly string[]).includes(which))
      throw usageError('eval', `unknown evaluation '${which}' (evaluations: ${EVALUATIONS.join(', ')})`);
    const evaluation = which as Evaluation;
    const { summary: _, ...spec } = EVALUATION_SPECS[evaluation];
    const parsed = parseCommandArgs(
      { ...spec, command: `eval ${evaluation}`, options: { ...spec.options, ...COMMON_OPTIONS } },
      rest,
    );
    if (!parsed) return 0;
    return runEvaluation(evaluation, parsed);
  },
};

async function runEvaluation(
  evaluation: Evaluation,
  parsed: ParsedArgs<typeof COMMON_OPTIONS & Options>,
): Promise<number> {
  // Everything is checked before the model loads: a typo should not cost a multi-GB load first.
  const modelId = parsed.required('model');
  const mode = parsed.choice('mode', ['C', 'G'] as const);
  const batchSize = parsed.integer('batch', { min: 1 });
  const limit = parsed.integer('limit', { min: 1 });
  const threads = parsed.threads();
  const quiet = parsed.flag('quiet');
  const markdown = parsed.string('markdown');
  if (markdown !== undefined) checkWritableTarget(markdown);
  if (parsed.flag('no-cache') && parsed.string('cache-dir') !== undefined)
    parsed.fail('--cache-dir and --no-cache exclude each other');
  const [run, zeroshot, retrieval, videoRetrieval] = await Promise.all([
    import('../eval/run.js'),
    import('../eval/zeroshot.js'),
    import('../eval/retrieval.js'),
    import('../eval/video_retrieval.js'),
  ]);
  let language: string | undefined;
  if (evaluation === 'zeroshot') {
    language = parsed.string('language');
    if (language !== undefined && !(zeroshot.LANGUAGES as readonly string[]).includes(language)) {
      parsed.fail(
        `unknown language '${language}' (built-in class names and templates: ${zeroshot.LANGUAGES.join(', ')})`,
      );
    }
  }
  if (evaluation === 'retrieval' && parsed.flag('pre-caption') && parsed.flag('no-pre-caption'))
    parsed.fail('--pre-caption and --no-pre-caption exclude each other');
  const required = evaluation === 'video-retrieval' ? ['videos', 'captions'] : ['dataset'];
  for (const name of required) parsed.required(name);
  const frames = evaluation === 'video-retrieval' ? parsed.integer('frames', { min: 1 }) : undefined;
  const inputs: [string, string, ('file' | 'folder')?][] = [
    ['dataset', 'dataset'],
    ['classnames', 'class-names file', 'file'],
    ['templates', 'templates file', 'file'],
    ['image-root', 'image root', 'folder'],
    ['videos', 'video folder', 'folder'],
    ['captions', 'captions file', 'file'],
  ];
  for (const [name, what, expect] of inputs) {
    const value = parsed.values[name];
    if (typeof value === 'string') run.checkInputPath(value, what, expect);
  }
  if (evaluation === 'zeroshot') zeroshot.detectImageDataset(parsed.required('dataset'), parsed.string('split'));

  const [{ createProgressReporter }, report] = await Promise.all([
    import('../../core/progress.js'),
    import('../eval/report.js'),
  ]);
  let model: import('../eval/run.js').EvalModel | undefined;
  // The run loads the model once it has read the dataset, so that a bad dataset fails before a long load.
  const loadModel = async () => {
    const download = createProgressReporter('download', { quiet });
    let downloading = false;
    model = await run.loadEvalModel(modelId, {
      offline: parsed.flag('offline') || undefined,
      session: { threads },
      onDownload: (e) => {
        downloading = true;
        download.update(e.overallBytesDone, e.overallTotalBytes, e.file);
      },
    });
    if (downloading) download.finish();
    return model;
  };
  const common = {
    model: loadModel,
    mode,
    batchSize,
    limit,
    cacheDir: parsed.flag('no-cache') ? null : parsed.string('cache-dir'),
    progress: (label: string) => createProgressReporter(label, { quiet, unit: 'items' as const }),
  };
  let result;
  try {
    if (evaluation === 'zeroshot') {
      result = (
        await zeroshot.runZeroShot({
          ...common,
          dataset: parsed.required('dataset'),
          classNames: parsed.string('classnames'),
          templates: parsed.string('templates'),
          language,
          key: parsed.string('key'),
          split: parsed.string('split'),
        })
      ).result;
    } else if (evaluation === 'retrieval') {
      result = (
        await retrieval.runRetrieval({
          ...common,
          dataset: parsed.required('dataset'),
          imageRoot: parsed.string('image-root'),
          split: parsed.string('split'),
          preCaption: parsed.flag('pre-caption') ? true : parsed.flag('no-pre-caption') ? false : undefined,
          xtd: parsed.flag('xtd'),
        })
      ).result;
    } else {
      result = (
        await videoRetrieval.runVideoRetrieval({
          ...common,
          videos: parsed.required('videos'),
          captions: parsed.required('captions'),
          numFrames: frames,
          dualSoftmax: !parsed.flag('no-dual-softmax'),
        })
      ).result;
    }
  } finally {
    await model?.release();
  }

  if (markdown !== undefined) {
    writeFileAtomicSync(markdown, report.resultsToMarkdown([result]));
    if (!quiet) process.stderr.write(`wrote ${markdown}\n`);
  }
  if (parsed.flag('json')) {
    process.stdout.write(`${report.resultsToJson([result])}\n`);
  } else {
    const { formatTable } = await import('../verify/compare.js');
    const extra = result.extra ?? {};
    const what =
      evaluation === 'zeroshot'
        ? `zero-shot classification, ${extra.images} images, ${extra.classes} classes, ${extra.templates} templates`
        : evaluation === 'retrieval'
          ? `${result.task === 'zeroshot_retrieval_xtd' ? 'XTD retrieval' : 'retrieval'}, ${extra.images} images, ${extra.texts} captions`
          : `video retrieval, ${extra.videos} videos, ${extra.frames} frames, dual softmax ${extra.dual_softmax ? 'on' : 'off'}`;
    const rows = Object.entries(result.metrics).map(([name, v]) => [
      METRIC_LABELS[name] ?? name,
      name,
      v === null || !Number.isFinite(v) ? 'n/a' : (100 * v).toFixed(2),
    ]);
    process.stdout.write(
      `${result.model} on ${result.dataset}: ${what}\n${formatTable(['metric', 'key', '%'], rows, [false, false, true])}\n`,
    );
  }
  return 0;
}

const METRIC_LABELS: Record<string, string> = {
  acc1: 'top-1 accuracy',
  acc5: 'top-5 accuracy',
  mean_per_class_recall: 'mean per-class recall',
  mean_recall: 'mean recall',
  ...Object.fromEntries(
    [1, 5, 10].flatMap((k) => [
      [`text_retrieval_recall@${k}`, `image→text R@${k}`],
      [`image_retrieval_recall@${k}`, `text→image R@${k}`],
      [`t2v_retrieval_recall@${k}`, `text→video R@${k}`],
      [`v2t_retrieval_recall@${k}`, `video→text R@${k}`],
    ]),
  ),
};
