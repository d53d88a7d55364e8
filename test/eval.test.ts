/**
 * `internvl eval` and the harness behind it, on the clip_e2e fixture (InternVL-14B-224px layout, tiny random
 * weights, real tokenizer) whose golden/meta.json states the official CLIP_benchmark results on 8 photos.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { dualSoftmax, type Matrix } from '../src/core/matrix.js';
import { msrvttRetrievalMetrics, recallAtK } from '../src/apps/eval/metrics.js';
import { EmbeddingCache } from '../src/apps/eval/embedding_cache.js';
import { runRetrieval } from '../src/apps/eval/retrieval.js';
import { loadEvalModel, type EvalModel } from '../src/apps/eval/run.js';
import { runVideoRetrieval } from '../src/apps/eval/video_retrieval.js';
import { runZeroShot } from '../src/apps/eval/zeroshot.js';
import { bytesToFloat32, readEntrySync, SafetensorsFile } from '../src/core/safetensors.js';
import { l2normalize, matrix } from '../src/core/matrix.js';
import { loadImage } from '../src/processing/image.js';
import { classifyImages, loadClipPipeline } from '../src/tasks/clip.js';
import { classifyVideos, encodeVideos, poolFrameEmbeddings, videoTextRetrieval } from '../src/tasks/video.js';
import { DATA, errorLines, runCli, tempDir } from './helpers/cli.js';

const FIXTURE = path.join(DATA, 'fixtures', 'clip_e2e');
const IMAGES = path.join(DATA, 'images');
const META = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'golden', 'meta.json'), 'utf8'));
const LABELS: string[] = META.classify.labels;
const TEMPLATES: string[] = META.classify.templates;
const TARGETS: Record<string, string> = META.classify.targets;
const PHOTOS: string[] = META.images.map((i: { file: string }) => i.file);
const CAPTIONS: string[] = META.retrieval.captions;

const TMP = tempDir('internvl-eval-');
process.env.INTERNVL_CACHE = path.join(TMP, 'default-cache');

const hasFfmpeg = ['ffmpeg', 'ffprobe'].every((t) => spawnSync(t, ['-version'], { stdio: 'ignore' }).status === 0);
const noFfmpeg = hasFfmpeg ? false : 'ffmpeg/ffprobe are not installed';

// ---- helpers ---------------------------------------------------------------------------------------------------

interface Captured {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The real CLI in a child process. (Capturing `main` in this process is not an option: the test runner reports on
 * the same stdout while a test runs.)
 */
const cli = (args: string[]): Promise<Captured> => runCli(args);

function jsonResult(r: Captured): {
  metrics: Record<string, number | null>;
  extra: Record<string, unknown>;
  model: string;
  task: string;
} {
  assert.equal(r.code, 0, r.stderr);
  const parsed = JSON.parse(r.stdout);
  assert.ok(Array.isArray(parsed) && parsed.length === 1, r.stdout);
  return parsed[0];
}

function assertOneLineError(r: { code: number | null; stdout: string; stderr: string }, pattern: RegExp): void {
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stdout, '');
  const lines = errorLines(r.stderr).filter((l) => l.startsWith('error: '));
  assert.equal(lines.length, 1, r.stderr);
  assert.equal(errorLines(r.stderr).length, 1, r.stderr);
  assert.match(lines[0], pattern);
}

async function golden(name: string): Promise<Float32Array> {
  const file = await SafetensorsFile.open(path.join(FIXTURE, 'golden', 'io.safetensors'));
  const entry = file.tensors.get(name);
  assert.ok(entry, `io.safetensors has ${name}`);
  return bytesToFloat32(readEntrySync(entry), entry.dtype, name);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function row(m: Matrix, r: number): Float32Array {
  return m.data.slice(r * m.cols, (r + 1) * m.cols);
}

/** A model whose encoder calls are counted (the spy the cache tests need). */
function spy(model: EvalModel): EvalModel & { imageCalls: number; imagesEncoded: number; textsEncoded: number } {
  const s = {
    ...model,
    imageCalls: 0,
    imagesEncoded: 0,
    textsEncoded: 0,
    encodeImages: (images: Parameters<EvalModel['encodeImages']>[0], r: Parameters<EvalModel['encodeImages']>[1]) => {
      s.imageCalls++;
      s.imagesEncoded += images.length;
      return model.encodeImages(images, r);
    },
    encodeTexts: (texts: Parameters<EvalModel['encodeTexts']>[0], o: Parameters<EvalModel['encodeTexts']>[1]) => {
      s.textsEncoded += texts.length;
      return model.encodeTexts(texts, o);
    },
  };
  return s;
}

/** A POSIX ustar archive of the given members, in order (webdataset shards are plain tars). */
function writeTar(file: string, members: [string, Buffer][]): void {
  const blocks: Buffer[] = [];
  for (const [name, data] of members) {
    const h = Buffer.alloc(512);
    h.write(name, 0, 100, 'utf8');
    h.write('0000644\0', 100, 'latin1');
    h.write('0000000\0', 108, 'latin1');
    h.write('0000000\0', 116, 'latin1');
    h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
    h.write('00000000000\0', 136, 'latin1');
    h.write('        ', 148, 'latin1');
    h.write('0', 156, 'latin1');
    h.write('ustar\0', 257, 'latin1');
    h.write('00', 263, 'latin1');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  fs.writeFileSync(file, Buffer.concat(blocks));
}

// ---- test data -------------------------------------------------------------------------------------------------

const INET = path.join(TMP, 'inet');
const TEMPLATES_TXT = path.join(TMP, 'templates.txt');
const KARPATHY = path.join(TMP, 'karpathy.json');
const WDS_CLS = path.join(TMP, 'wds-cls');
const WDS_RET = path.join(TMP, 'wds-ret');

before(() => {
  // ImageNet-style folder: one folder per label of meta.classify, holding its photo.
  for (const [file, label] of Object.entries(TARGETS)) {
    fs.mkdirSync(path.join(INET, label), { recursive: true });
    fs.copyFileSync(path.join(IMAGES, file), path.join(INET, label, file));
  }
  fs.writeFileSync(TEMPLATES_TXT, `${TEMPLATES.join('\n')}\n`);
  // Karpathy JSON: the 8 photos with their captions in the test split, plus a train image that must be skipped.
  fs.writeFileSync(
    KARPATHY,
    JSON.stringify({
      images: [
        ...PHOTOS.map((f, i) => ({ filename: f, split: 'test', sentences: [{ raw: CAPTIONS[i] }] })),
        { filename: 'not-there.jpg', split: 'train', sentences: [{ raw: 'ignored' }] },
      ],
    }),
  );
  // Classification webdataset: the 5 labelled photos with .cls labels in meta order, names and templates files.
  fs.mkdirSync(path.join(WDS_CLS, 'test'), { recursive: true });
  fs.writeFileSync(path.join(WDS_CLS, 'classnames.txt'), `${LABELS.join('\n')}\n`);
  fs.writeFileSync(path.join(WDS_CLS, 'zeroshot_classification_templates.txt'), `${TEMPLATES.join('\n')}\n`);
  writeTar(
    path.join(WDS_CLS, 'test', '0.tar'),
    Object.entries(TARGETS).flatMap(([file, label], i): [string, Buffer][] => {
      const key = `s${String(i).padStart(4, '0')}`;
      const ext = path.extname(file).slice(1);
      return [
        [`${key}.${ext}`, fs.readFileSync(path.join(IMAGES, file))],
        [`${key}.cls`, Buffer.from(String(LABELS.indexOf(label)))],
      ];
    }),
  );
  fs.writeFileSync(path.join(WDS_CLS, 'test', 'nshards.txt'), '1\n');
  // Retrieval webdataset: the 8 photos with their captions.
  fs.mkdirSync(path.join(WDS_RET, 'test'), { recursive: true });
  fs.writeFileSync(path.join(WDS_RET, 'dataset_type.txt'), 'retrieval\n');
  writeTar(
    path.join(WDS_RET, 'test', '0.tar'),
    PHOTOS.flatMap((file, i): [string, Buffer][] => {
      const key = `r${String(i).padStart(4, '0')}`;
      return [
        [`${key}.${path.extname(file).slice(1)}`, fs.readFileSync(path.join(IMAGES, file))],
        [`${key}.txt`, Buffer.from(CAPTIONS[i])],
      ];
    }),
  );
});

const LABELLED = (mode: 'C' | 'G') =>
  META.classify.modes[mode].labelled_metrics as { acc1: number; acc5: number; mean_per_class_recall: number };

// ---- zero-shot classification ----------------------------------------------------------------------------------

test('eval zeroshot on an ImageNet-style folder: acc1/acc5/mean per-class recall of golden/meta.json, both modes', async () => {
  // Both modes at once into one cache folder: concurrent runs write separate cache segments.
  const runs = await Promise.all(
    (['C', 'G'] as const).map((mode) =>
      cli([
        'eval',
        'zeroshot',
        '--model',
        FIXTURE,
        '--dataset',
        INET,
        '--templates',
        TEMPLATES_TXT,
        '--mode',
        mode,
        '--json',
        '--cache-dir',
        path.join(TMP, 'cache-zs-cli'),
      ]),
    ),
  );
  for (const [i, mode] of (['C', 'G'] as const).entries()) {
    const r = jsonResult(runs[i]);
    const want = LABELLED(mode);
    assert.deepEqual(
      r.metrics,
      { acc1: want.acc1, acc5: want.acc5, mean_per_class_recall: want.mean_per_class_recall },
      `mode ${mode}`,
    );
    assert.equal(r.model, `clip_e2e (InternVL-${mode})`);
    assert.equal(r.task, 'zeroshot_classification');
    assert.deepEqual(
      [r.extra.images, r.extra.classes, r.extra.templates, r.extra.dataset_format],
      [5, 5, 3, 'image-folder'],
    );
  }
});

test('eval zeroshot: readable table by default, Markdown file, progress on stderr', async () => {
  const md = path.join(TMP, 'zs.md');
  const r = await cli([
    'eval',
    'zeroshot',
    '--model',
    FIXTURE,
    '--dataset',
    INET,
    '--templates',
    TEMPLATES_TXT,
    '--markdown',
    md,
    '--cache-dir',
    path.join(TMP, 'cache-zs-cli'),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^clip_e2e \(InternVL-C\) on inet: zero-shot classification, 5 images, 5 classes, 3 templates$/m,
  );
  assert.match(r.stdout, /^top-1 accuracy\s+acc1\s+40\.00$/m);
  assert.match(r.stdout, /^top-5 accuracy\s+acc5\s+100\.00$/m);
  assert.match(r.stdout, /^mean per-class recall\s+mean_per_class_recall\s+40\.00$/m);
  assert.match(r.stderr, /^building the classifier .*15\/15/m);
  assert.match(r.stderr, /^encoding images .*5\/5/m);
  assert.equal(
    fs.readFileSync(md, 'utf8'),
    [
      '| model | dataset | acc1 | acc5 | mean_per_class_recall |',
      '| --- | --- | ---: | ---: | ---: |',
      '| clip_e2e (InternVL-C) | inet | 40.00 | 100.00 | 40.00 |',
      '',
    ].join('\n'),
  );
  const quiet = await cli([
    'eval',
    'zeroshot',
    '--model',
    FIXTURE,
    '--dataset',
    INET,
    '--templates',
    TEMPLATES_TXT,
    '--quiet',
    '--json',
    '--cache-dir',
    path.join(TMP, 'cache-zs-cli'),
  ]);
  assert.equal(quiet.stderr, '');
});

test('runZeroShot logits match the official ones (golden io.safetensors)', async (t) => {
  const model = await loadEvalModel(FIXTURE);
  try {
    for (const mode of ['C', 'G'] as const) {
      const run = await runZeroShot({ model, dataset: INET, templates: TEMPLATES, mode, cacheDir: null });
      // Our classes are the sorted folder names, our rows the folders' photos in that order; map both to meta order.
      const want = await golden(`out.${mode}.logits`); // [8 photos, 5 labels]
      const got: number[] = [];
      const expected: number[] = [];
      run.items.forEach((item, i) => {
        const photo = PHOTOS.indexOf(path.basename(item));
        run.classNames.forEach((name, c) => {
          got.push(run.logits.data[i * run.logits.cols + c]);
          expected.push(want[photo * LABELS.length + LABELS.indexOf(name)]);
        });
      });
      const err = maxAbsDiff(got, expected);
      t.diagnostic(`mode ${mode}: max |logit error| ${err}`);
      assert.ok(err < 2e-4, `mode ${mode}: logits differ by ${err}`);
    }
  } finally {
    await model.release();
  }
});

test('eval zeroshot on a webdataset shard: labels, classnames.txt and templates file of the export', async () => {
  const runs = await Promise.all(
    (['C', 'G'] as const).map((mode) =>
      cli([
        'eval',
        'zeroshot',
        '--model',
        FIXTURE,
        '--dataset',
        WDS_CLS,
        '--mode',
        mode,
        '--json',
        '--cache-dir',
        path.join(TMP, 'cache-wds'),
      ]),
    ),
  );
  for (const [i, mode] of (['C', 'G'] as const).entries()) {
    const r = jsonResult(runs[i]);
    const want = LABELLED(mode);
    assert.deepEqual(
      r.metrics,
      { acc1: want.acc1, acc5: want.acc5, mean_per_class_recall: want.mean_per_class_recall },
      `mode ${mode}`,
    );
    assert.deepEqual(
      [r.extra.images, r.extra.classes, r.extra.templates, r.extra.dataset_format],
      [5, 5, 3, 'webdataset'],
    );
  }
  // --limit keeps the first samples of the shard.
  const limited = jsonResult(
    await cli([
      'eval',
      'zeroshot',
      '--model',
      FIXTURE,
      '--dataset',
      WDS_CLS,
      '--limit',
      '2',
      '--json',
      '--quiet',
      '--cache-dir',
      path.join(TMP, 'cache-wds'),
    ]),
  );
  assert.equal(limited.extra.images, 2);
  assert.equal(limited.extra.images_from_cache, 2);
});

// ---- embedding cache -------------------------------------------------------------------------------------------

test('embedding cache: other templates or class names do not re-encode the images; results are identical', async () => {
  const base = await loadEvalModel(FIXTURE);
  const cacheDir = path.join(TMP, 'cache-spy');
  try {
    const m = spy(base);
    const first = await runZeroShot({ model: m, dataset: INET, templates: TEMPLATES, cacheDir });
    assert.equal(m.imagesEncoded, 5);
    assert.ok(m.imageCalls >= 1);
    assert.deepEqual([first.result.extra?.images_encoded, first.result.extra?.images_from_cache], [5, 0]);

    // Other templates, other class-name wording: only prompts are encoded.
    const calls = m.imageCalls;
    const textsBefore = m.textsEncoded;
    const names = ['an astronaut', 'a cat', 'a cup of coffee', 'a motorcycle', 'a rocket'];
    const second = await runZeroShot({
      model: m,
      dataset: INET,
      templates: ['a photo of {c}.', 'itap of {c}.'],
      classNames: names,
      cacheDir,
    });
    assert.equal(m.imageCalls, calls, 'the image encoder must not run again');
    assert.equal(m.textsEncoded - textsBefore, 10);
    assert.deepEqual([second.result.extra?.images_encoded, second.result.extra?.images_from_cache], [0, 5]);
    const fresh = await runZeroShot({
      model: base,
      dataset: INET,
      templates: ['a photo of {c}.', 'itap of {c}.'],
      classNames: names,
      cacheDir: null,
    });
    assert.deepEqual(second.imageEmbeddings.data, fresh.imageEmbeddings.data);
    assert.deepEqual(second.logits.data, fresh.logits.data);

    // The same prompts again: nothing at all is encoded.
    const textsNow = m.textsEncoded;
    await runZeroShot({ model: m, dataset: INET, templates: TEMPLATES, cacheDir });
    assert.equal(m.textsEncoded, textsNow);
    assert.equal(m.imageCalls, calls);

    // A touched file, another mode, another transform: each is a different key.
    const touched = path.join(INET, 'cat', 'chelsea.png');
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(touched, later, later);
    const afterTouch = await runZeroShot({ model: m, dataset: INET, templates: TEMPLATES, cacheDir });
    assert.deepEqual([afterTouch.result.extra?.images_encoded, afterTouch.result.extra?.images_from_cache], [1, 4]);
    const g = await runZeroShot({ model: m, dataset: INET, templates: TEMPLATES, mode: 'G', cacheDir });
    assert.equal(g.result.extra?.images_encoded, 5);

    // A run killed mid-write leaves a partial record: it is skipped, the whole ones still load.
    const nsDirs = fs.readdirSync(cacheDir).map((d) => path.join(cacheDir, d));
    for (const d of nsDirs)
      for (const f of fs.readdirSync(d).filter((n) => n.endsWith('.emb')))
        fs.appendFileSync(path.join(d, f), Buffer.from([1, 2, 3]));
    const again = await runZeroShot({ model: m, dataset: INET, templates: TEMPLATES, cacheDir });
    assert.deepEqual([again.result.extra?.images_encoded, again.result.extra?.images_from_cache], [0, 5]);
    assert.deepEqual(again.logits.data, afterTouch.logits.data);

    // A flipped bit in a stored embedding fails its record's check: that embedding is computed again.
    for (const d of nsDirs)
      for (const f of fs.readdirSync(d).filter((n) => n.endsWith('.emb'))) {
        const bytes = fs.readFileSync(path.join(d, f));
        bytes[16 + 32 + 1] ^= 0x10;
        fs.writeFileSync(path.join(d, f), bytes);
      }
    const flipped = await runZeroShot({ model: m, dataset: INET, templates: TEMPLATES, cacheDir });
    const encoded = flipped.result.extra?.images_encoded as number;
    assert.ok(encoded > 0, 'the corrupt records are not used');
    assert.equal(encoded + (flipped.result.extra?.images_from_cache as number), 5);
    // Re-encoded in a smaller batch than the clean run, so equal up to onnxruntime's batch-dependent rounding.
    const diff = Math.max(...flipped.logits.data.map((v, i) => Math.abs(v - afterTouch.logits.data[i])));
    assert.ok(diff < 1e-4, `logits differ by ${diff}`);
  } finally {
    await base.release();
  }
});

test('embedding cache through the CLI: the second run reports no image encoded; --no-cache encodes all', async () => {
  const cacheDir = path.join(TMP, 'cache-cli2');
  const args = [
    'eval',
    'zeroshot',
    '--model',
    FIXTURE,
    '--dataset',
    INET,
    '--json',
    '--quiet',
    '--cache-dir',
    cacheDir,
  ];
  const first = jsonResult(await cli([...args, '--templates', TEMPLATES_TXT]));
  assert.deepEqual([first.extra.images_encoded, first.extra.images_from_cache], [5, 0]);
  const json = path.join(TMP, 'templates.json');
  fs.writeFileSync(json, JSON.stringify({ imagenet1k: ['a photo of a {c}.'] }));
  const second = jsonResult(await cli([...args, '--templates', json]));
  assert.deepEqual([second.extra.images_encoded, second.extra.images_from_cache, second.extra.templates], [0, 5, 1]);
  const none = jsonResult(
    await cli([
      'eval',
      'zeroshot',
      '--model',
      FIXTURE,
      '--dataset',
      INET,
      '--json',
      '--quiet',
      '--no-cache',
      '--templates',
      json,
    ]),
  );
  assert.deepEqual([none.extra.images_encoded, none.extra.images_from_cache], [5, 0]);
  assert.deepEqual(none.metrics, second.metrics);
});

test('EmbeddingCache: exact values, separate namespaces, unknown keys miss', () => {
  const root = path.join(TMP, 'cache-unit');
  const a = EmbeddingCache.open(root, { kind: 'x', mode: 'C' }, 3);
  a.put([
    ['k1', Float32Array.of(1, 2.5, -3e-7)],
    ['k2', Float32Array.of(0, 0, 1)],
  ]);
  const b = EmbeddingCache.open(root, { kind: 'x', mode: 'C' }, 3);
  assert.deepEqual(b.get('k1'), Float32Array.of(1, 2.5, -3e-7));
  assert.deepEqual(b.get('k2'), Float32Array.of(0, 0, 1));
  assert.equal(b.get('k3'), undefined);
  assert.equal(EmbeddingCache.open(root, { kind: 'x', mode: 'G' }, 3).get('k1'), undefined);
});

// ---- retrieval -------------------------------------------------------------------------------------------------

test('eval retrieval on a Karpathy JSON: the CLIP_benchmark recalls of golden/meta.json, both modes', async () => {
  const runs = await Promise.all(
    (['C', 'G'] as const).map((mode) =>
      cli([
        'eval',
        'retrieval',
        '--model',
        FIXTURE,
        '--dataset',
        KARPATHY,
        '--image-root',
        IMAGES,
        '--mode',
        mode,
        '--json',
        '--quiet',
        '--cache-dir',
        path.join(TMP, 'cache-ret'),
      ]),
    ),
  );
  for (const [i, mode] of (['C', 'G'] as const).entries()) {
    const r = jsonResult(runs[i]);
    const want = META.retrieval.modes[mode] as Record<string, number>;
    for (const [k, v] of Object.entries(want)) assert.equal(r.metrics[k], v, `${mode} ${k}`);
    // 8 images, 8 captions: everything is in the top 10.
    assert.equal(r.metrics['text_retrieval_recall@10'], 1);
    assert.equal(r.metrics['image_retrieval_recall@10'], 1);
    const six = ['text', 'image'].flatMap((d) =>
      [1, 5, 10].map((k) => r.metrics[`${d}_retrieval_recall@${k}`] as number),
    );
    assert.ok(Math.abs((r.metrics.mean_recall as number) - six.reduce((s, v) => s + v, 0) / 6) < 1e-12);
    assert.deepEqual(Object.keys(r.metrics), [
      'text_retrieval_recall@1',
      'text_retrieval_recall@5',
      'text_retrieval_recall@10',
      'image_retrieval_recall@1',
      'image_retrieval_recall@5',
      'image_retrieval_recall@10',
      'mean_recall',
    ]);
    assert.deepEqual([r.extra.images, r.extra.texts, r.extra.pre_caption], [8, 8, true]);
  }
});

test('runRetrieval scores match the official ones; pre_caption is applied; --xtd reports image→text R@10 only', async (t) => {
  const model = await loadEvalModel(FIXTURE);
  try {
    for (const mode of ['C', 'G'] as const) {
      const run = await runRetrieval({ model, dataset: KARPATHY, imageRoot: IMAGES, mode, cacheDir: null });
      assert.deepEqual(run.texts, META.retrieval.texts);
      const err = maxAbsDiff(run.scores.data, await golden(`out.${mode}.ret.scores`));
      t.diagnostic(`mode ${mode}: max |score error| ${err}`);
      assert.ok(err < 1e-5, `mode ${mode}: scores differ by ${err}`);
    }
  } finally {
    await model.release();
  }
  const xtd = jsonResult(
    await cli([
      'eval',
      'retrieval',
      '--model',
      FIXTURE,
      '--dataset',
      KARPATHY,
      '--image-root',
      IMAGES,
      '--xtd',
      '--json',
      '--quiet',
      '--cache-dir',
      path.join(TMP, 'cache-ret'),
    ]),
  );
  assert.deepEqual(Object.keys(xtd.metrics), ['text_retrieval_recall@10']);
  assert.equal(xtd.task, 'zeroshot_retrieval_xtd');
  assert.equal(xtd.extra.pre_caption, false);
  // Same images and transform as the retrieval runs before: all from the cache; pre_caption off changed one caption.
  assert.deepEqual([xtd.extra.images_from_cache, xtd.extra.texts_encoded], [8, 1]);
});

test('eval retrieval on a webdataset shard equals the caption-file run', async () => {
  const cacheDir = path.join(TMP, 'cache-ret');
  const file = jsonResult(
    await cli([
      'eval',
      'retrieval',
      '--model',
      FIXTURE,
      '--dataset',
      KARPATHY,
      '--image-root',
      IMAGES,
      '--json',
      '--quiet',
      '--cache-dir',
      cacheDir,
    ]),
  );
  const wds = jsonResult(
    await cli([
      'eval',
      'retrieval',
      '--model',
      FIXTURE,
      '--dataset',
      WDS_RET,
      '--json',
      '--quiet',
      '--cache-dir',
      cacheDir,
    ]),
  );
  assert.deepEqual(wds.metrics, file.metrics);
  assert.deepEqual([wds.extra.images, wds.extra.texts, wds.extra.dataset_format], [8, 8, 'webdataset']);
});

// ---- video retrieval -------------------------------------------------------------------------------------------

const VIDEOS = path.join(TMP, 'videos');
const FRAMES = path.join(TMP, 'frames');

function ffmpeg(args: string[]): void {
  const r = spawnSync('ffmpeg', ['-v', 'error', '-y', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

/** A lossless (PNG-coded) video of the given still frames, so decoded frames equal the PNGs exactly. */
function makeVideo(name: string, frames: string[]): void {
  const seq = path.join(TMP, `seq-${name}`);
  fs.mkdirSync(seq, { recursive: true });
  frames.forEach((f, i) => fs.copyFileSync(f, path.join(seq, `${String(i).padStart(3, '0')}.png`)));
  ffmpeg(['-framerate', '8', '-i', path.join(seq, '%03d.png'), '-c:v', 'png', path.join(VIDEOS, name)]);
}

test('eval video-retrieval: pooled frame embeddings, video order, dual softmax on and off', {
  skip: noFfmpeg,
}, async () => {
  fs.mkdirSync(VIDEOS, { recursive: true });
  fs.mkdirSync(FRAMES, { recursive: true });
  const still = (photo: string) => {
    const out = path.join(FRAMES, `${path.parse(photo).name}.png`);
    if (!fs.existsSync(out)) ffmpeg(['-i', path.join(IMAGES, photo), '-vf', 'scale=96:64', '-pix_fmt', 'rgb24', out]);
    return out;
  };
  const [cat, rocket, horse, coffee] = ['chelsea.png', 'rocket.jpg', 'horse.png', 'coffee.png'].map(still);
  makeVideo('cat.mkv', Array(16).fill(cat));
  makeVideo('rocket.mkv', Array(16).fill(rocket));
  // 16 frames, F = 8 → interval 2, frames 1 3 … 15: four of the horse, four of the coffee.
  makeVideo('mixed.mkv', [...Array(8).fill(horse), ...Array(8).fill(coffee)]);
  const entries = [
    { video: 'cat.mkv', caption: 'a facial photo of a tabby cat' },
    { video: 'rocket.mkv', caption: 'a rocket standing on a launchpad' },
    { video: 'mixed.mkv', caption: 'a horse, then a cup of coffee' },
  ];
  const captions = path.join(TMP, 'videos.json');
  fs.writeFileSync(captions, JSON.stringify(entries));

  const model = await loadEvalModel(FIXTURE);
  try {
    const cacheDir = path.join(TMP, 'cache-video');
    const on = await runVideoRetrieval({ model, videos: VIDEOS, captions, numFrames: 8, cacheDir });
    assert.deepEqual([on.videoEmbeddings.rows, on.videoEmbeddings.cols], [3, model.dim]);
    assert.deepEqual([on.scores.rows, on.scores.cols], [3, 3]);
    for (let v = 0; v < 3; v++) assert.ok(Math.abs(Math.hypot(...row(on.videoEmbeddings, v)) - 1) < 1e-5);

    // Expected: the frames through the classification transform, averaged, normalised.
    const stills = await Promise.all([cat, rocket, horse, coffee].map((f) => loadImage(f)));
    const e = await model.encodeImages(stills, { mode: 'C', transform: 'classification', batchSize: 4 });
    const want = [
      l2normalize(matrix(row(e, 0), 1, e.cols)).data,
      l2normalize(matrix(row(e, 1), 1, e.cols)).data,
      poolFrameEmbeddings(matrix(Float32Array.from([...row(e, 2), ...row(e, 3)]), 2, e.cols)),
    ];
    want.forEach((w, v) => assert.ok(maxAbsDiff(row(on.videoEmbeddings, v), w) < 1e-5, `video ${v}`));

    // Dual softmax: S ∘ softmax(S, dim=0) ranks text→video, the same on Sᵀ ranks video→text.
    const S = on.scores;
    const manual = (m: Matrix) => {
      const out = new Float32Array(m.data.length);
      for (let c = 0; c < m.cols; c++) {
        let z = 0;
        for (let r = 0; r < m.rows; r++) z += Math.exp(m.data[r * m.cols + c]);
        for (let r = 0; r < m.rows; r++)
          out[r * m.cols + c] = (m.data[r * m.cols + c] * Math.exp(m.data[r * m.cols + c])) / z;
      }
      return matrix(out, m.rows, m.cols);
    };
    const St = matrix(
      Float32Array.from({ length: 9 }, (_, i) => S.data[(i % 3) * 3 + Math.floor(i / 3)]),
      3,
      3,
    );
    assert.ok(maxAbsDiff(dualSoftmax(S).data, manual(S).data) < 1e-6);
    const tasks = videoTextRetrieval(on.textEmbeddings, on.videoEmbeddings);
    assert.ok(maxAbsDiff(tasks.textToVideo.data, manual(S).data) < 1e-6);
    assert.ok(maxAbsDiff(tasks.videoToText.data, manual(St).data) < 1e-6);
    const diag = [[0], [1], [2]];
    for (const k of [1, 5, 10]) {
      assert.equal(on.result.metrics[`t2v_retrieval_recall@${k}`], recallAtK(manual(S), diag, k));
      assert.equal(on.result.metrics[`v2t_retrieval_recall@${k}`], recallAtK(manual(St), diag, k));
    }
    assert.deepEqual(
      [on.result.extra?.videos_encoded, on.result.extra?.frames, on.result.extra?.dual_softmax],
      [3, 8, true],
    );

    const off = await runVideoRetrieval({
      model,
      videos: VIDEOS,
      captions,
      numFrames: 8,
      dualSoftmax: false,
      cacheDir,
    });
    assert.deepEqual([off.result.extra?.videos_encoded, off.result.extra?.videos_from_cache], [0, 3]);
    assert.deepEqual(off.scores.data, on.scores.data);
    for (const k of [1, 5, 10]) {
      assert.equal(off.result.metrics[`t2v_retrieval_recall@${k}`], recallAtK(S, diag, k));
      assert.equal(off.result.metrics[`v2t_retrieval_recall@${k}`], recallAtK(St, diag, k));
    }
    const metrics = msrvttRetrievalMetrics(S, { dualSoftmax: false });
    for (const [k, v] of Object.entries(metrics)) assert.equal(off.result.metrics[k], v);

    // Rows follow the captions file, whatever the order.
    const reversed = path.join(TMP, 'videos-reversed.json');
    fs.writeFileSync(reversed, JSON.stringify([...entries].reverse()));
    const rev = await runVideoRetrieval({ model, videos: VIDEOS, captions: reversed, numFrames: 8, cacheDir });
    for (let v = 0; v < 3; v++) assert.deepEqual(row(rev.videoEmbeddings, v), row(on.videoEmbeddings, 2 - v));

    // The CLI gives the same numbers, and --no-dual-softmax switches it off.
    const cliOn = jsonResult(
      await cli([
        'eval',
        'video-retrieval',
        '--model',
        FIXTURE,
        '--videos',
        VIDEOS,
        '--captions',
        captions,
        '--frames',
        '8',
        '--json',
        '--quiet',
        '--cache-dir',
        cacheDir,
      ]),
    );
    assert.deepEqual(cliOn.metrics, on.result.metrics);
    assert.deepEqual(Object.keys(cliOn.metrics), [
      't2v_retrieval_recall@1',
      't2v_retrieval_recall@5',
      't2v_retrieval_recall@10',
      'v2t_retrieval_recall@1',
      'v2t_retrieval_recall@5',
      'v2t_retrieval_recall@10',
      'mean_recall',
    ]);
    const cliOff = jsonResult(
      await cli([
        'eval',
        'video-retrieval',
        '--model',
        FIXTURE,
        '--videos',
        VIDEOS,
        '--captions',
        captions,
        '--frames',
        '8',
        '--no-dual-softmax',
        '--json',
        '--quiet',
        '--cache-dir',
        cacheDir,
      ]),
    );
    assert.deepEqual(cliOff.metrics, off.result.metrics);
    assert.equal(cliOff.extra.dual_softmax, false);

    // 16 frames cannot give 12 by the MSR-VTT rule (interval 2 → 8 ids): sampled by segments instead, counted.
    const segments = await cli([
      'eval',
      'video-retrieval',
      '--model',
      FIXTURE,
      '--videos',
      VIDEOS,
      '--captions',
      captions,
      '--frames',
      '12',
      '--quiet',
      '--json',
      '--no-cache',
    ]);
    const resampled = jsonResult(segments);
    assert.deepEqual([resampled.extra.videos_segment_sampled, resampled.extra.videos_encoded], [3, 3]);
  } finally {
    await model.release();
  }

  // The task API: a video of one still classifies like the still itself (pooling identical frames changes nothing).
  const pipeline = await loadClipPipeline(FIXTURE);
  try {
    const videos = ['cat.mkv', 'mixed.mkv'].map((v) => path.join(VIDEOS, v));
    const embeddings = await encodeVideos(pipeline, videos, { mode: 'G', numFrames: 4 });
    assert.deepEqual([embeddings.rows, embeddings.cols], [2, pipeline.model.config.clipEmbedDim]);
    const byVideo = await classifyVideos(pipeline, videos, LABELS, { templates: TEMPLATES, mode: 'G', numFrames: 4 });
    const byImage = await classifyImages(pipeline, [await loadImage(cat)], LABELS, { templates: TEMPLATES, mode: 'G' });
    assert.deepEqual([byVideo.logits.rows, byVideo.logits.cols], [2, LABELS.length]);
    assert.ok(maxAbsDiff(byVideo.logits.data.slice(0, LABELS.length), byImage.logits.data) < 1e-3);
  } finally {
    await pipeline.model.release();
  }
});

// ---- bad input -------------------------------------------------------------------------------------------------

test('bad input → one-line errors, exit 2', async () => {
  const cases: [string[], RegExp][] = [
    [
      ['eval', 'zeroshot', '--model', FIXTURE, '--dataset', path.join(TMP, 'no-such-folder')],
      /^error: dataset not found: .*no-such-folder$/,
    ],
    [
      ['eval', 'zeroshot', '--model', FIXTURE, '--dataset', INET, '--language', 'xx'],
      /unknown language 'xx' \(built-in class names and templates: en, cn, jp, ar, it\)/,
    ],
    [['eval'], /internvl eval: missing evaluation \(zeroshot, retrieval, video-retrieval\)/],
    [['eval', 'linear-probe'], /unknown evaluation 'linear-probe'/],
    [['eval', 'zeroshot', '--dataset', INET], /--model is required/],
    [['eval', 'zeroshot', '--model', FIXTURE], /--dataset is required/],
    [['eval', 'zeroshot', '--model', FIXTURE, '--dataset', INET, '--mode', 'X'], /--mode must be one of C, G; got 'X'/],
    [['eval', 'zeroshot', '--model', FIXTURE, '--dataset', INET, '--batch', '0'], /--batch must be at least 1/],
    [['eval', 'zeroshot', '--model', FIXTURE, '--dataset', KARPATHY], /is a file; zero-shot classification needs/],
    [
      ['eval', 'zeroshot', '--model', FIXTURE, '--dataset', INET, '--templates', path.join(TMP, 'nope.txt')],
      /templates file not found: .*nope\.txt/,
    ],
    // The built-in lists have 1000 ImageNet classes; this folder has 5.
    [
      ['eval', 'zeroshot', '--model', FIXTURE, '--dataset', INET, '--language', 'cn'],
      /built-in cn ImageNet class-name list has 1000 names but .* has 5 class folders/,
    ],
    [
      ['eval', 'zeroshot', '--model', FIXTURE, '--dataset', WDS_RET],
      /is a retrieval webdataset; zero-shot classification needs a classification one/,
    ],
    [['eval', 'retrieval', '--model', FIXTURE, '--dataset', path.join(TMP, 'nope.json')], /dataset not found/],
    [['eval', 'retrieval', '--model', FIXTURE, '--dataset', KARPATHY], /cannot read .*chelsea\.png: ENOENT/],
    [
      ['eval', 'retrieval', '--model', FIXTURE, '--dataset', KARPATHY, '--pre-caption', '--no-pre-caption'],
      /exclude each other/,
    ],
    [['eval', 'video-retrieval', '--model', FIXTURE, '--videos', INET], /--captions is required/],
    [
      ['eval', 'video-retrieval', '--model', FIXTURE, '--videos', path.join(TMP, 'nope'), '--captions', KARPATHY],
      /video folder not found/,
    ],
    [
      ['eval', 'video-retrieval', '--model', FIXTURE, '--videos', INET, '--captions', KARPATHY],
      /must be a JSON list of \{video, caption\}/,
    ],
    [
      ['eval', 'video-retrieval', '--model', FIXTURE, '--videos', INET, '--captions', KARPATHY, '--frames', '0'],
      /--frames must be at least 1/,
    ],
    [['eval', 'zeroshot', '--model', path.join(TMP, 'no-model'), '--dataset', INET], /no-model/],
  ];
  const results = await Promise.all(cases.map(([args]) => cli(args.length > 1 ? [...args, '--quiet'] : args)));
  results.forEach((r, i) => assertOneLineError(r, cases[i][1]));
});

test('internvl eval --help and per-evaluation help', async () => {
  const top = await cli(['eval', '--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /^Usage: internvl eval <evaluation>/);
  for (const which of ['zeroshot', 'retrieval', 'video-retrieval']) {
    const r = await cli(['eval', which, '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, new RegExp(`^Usage: internvl eval ${which} `));
  }
});
