import { test } from 'node:test';
import assert from 'node:assert/strict';

import { UsageError } from '../src/core/errors.js';
import {
  dualSoftmax,
  ensembleClassEmbeddings,
  l2normalize,
  matrix,
  retrievalScores,
  zeroShotLogits,
  type Matrix,
} from '../src/core/matrix.js';
import {
  argmaxRows,
  meanPerClassRecall,
  meanRecall,
  msrvttRetrievalMetrics,
  recallAtK,
  retrievalRecall,
  topkAccuracy,
  topkIndices,
  zeroShotClassificationMetrics,
} from '../src/apps/eval/metrics.js';
import { resultsToJson, resultsToMarkdown, type EvalResult } from '../src/apps/eval/report.js';

function m(rows: number[][]): Matrix {
  return matrix(Float32Array.from(rows.flat()), rows.length, rows[0]?.length ?? 0);
}

function close(actual: ArrayLike<number>, expected: number[], tol = 1e-5): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `index ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}

test('l2normalize: unit rows, zero rows stay zero', () => {
  const n = l2normalize(
    m([
      [3, 4],
      [0, 0],
    ]),
  );
  close(n.data, [0.6, 0.8, 0, 0]);
});

test('matrix rejects a wrong length', () => {
  assert.throws(() => matrix(new Float32Array(5), 2, 3), UsageError);
});

test('ensembleClassEmbeddings: normalise each template, average, renormalise', () => {
  // Class 0: [3,4] → [.6,.8] and [0,2] → [0,1]; mean [.3,.9]; / sqrt(.9) → [0.316228, 0.948683].
  // Class 1: one template [5,0] → [1,0].
  const e = ensembleClassEmbeddings([
    m([
      [3, 4],
      [0, 2],
    ]),
    m([[5, 0]]),
  ]);
  assert.equal(e.rows, 2);
  assert.equal(e.cols, 2);
  close(e.data, [0.316228, 0.948683, 1, 0]);
});

test('zeroShotLogits: 100 · normalize(img) @ classesᵀ', () => {
  const l = zeroShotLogits(
    m([[3, 4]]),
    m([
      [1, 0],
      [0, 1],
    ]),
  );
  close(l.data, [60, 80], 1e-4);
});

// 4 samples × 3 classes, ranks worked out by hand:
//   row 0 [.9 .1 .5] target 0: rank 0
//   row 1 [.2 .3 .8] target 1: order 2,1,0 → rank 1
//   row 2 [.4 .4 .1] target 1: tie with class 0, the lower index wins → rank 1
//   row 3 [.3 .6 .7] target 2: rank 0
const logits = m([
  [0.9, 0.1, 0.5],
  [0.2, 0.3, 0.8],
  [0.4, 0.4, 0.1],
  [0.3, 0.6, 0.7],
]);
const targets = [0, 1, 1, 2];

test('top-k accuracy with a tie (lower index ranks first)', () => {
  assert.deepEqual(topkAccuracy(logits, targets, [1, 2, 3]), [0.5, 1, 1]);
  assert.deepEqual(topkIndices([0.4, 0.4, 0.1], 2), [0, 1]);
  assert.deepEqual(topkIndices([0.1, 0.5, 0.5, 0.9], 3), [3, 1, 2]);
  assert.deepEqual(Array.from(argmaxRows(logits)), [0, 2, 0, 2]);
});

test('classification metrics: acc5 is NaN under 5 classes; per-class recall by hand', () => {
  const r = zeroShotClassificationMetrics(logits, targets);
  assert.equal(r.acc1, 0.5);
  assert.ok(Number.isNaN(r.acc5));
  // Predictions [0,2,0,2]: class 0 1/1, class 1 0/2, class 2 1/1 → (1 + 0 + 1) / 3.
  close([r.mean_per_class_recall], [2 / 3], 1e-12);
});

test('acc5 counts the 5th place and not the 6th', () => {
  const l = m([
    [6, 5, 4, 3, 2, 1],
    [6, 5, 4, 3, 2, 1],
  ]);
  const r = zeroShotClassificationMetrics(l, [4, 5]);
  assert.equal(r.acc1, 0);
  assert.equal(r.acc5, 0.5);
});

test('mean per-class recall skips classes without samples (sklearn balanced accuracy)', () => {
  // Class 2 is predicted once but has no sample: left out. Class 0: 1/2, class 1: 1/1 → 0.75.
  assert.equal(meanPerClassRecall([0, 2, 1], [0, 0, 1]), 0.75);
});

test('targets outside the classes are rejected', () => {
  assert.throws(() => zeroShotClassificationMetrics(logits, [0, 1, 3, 2]), UsageError);
});

// 5 captions × 3 images; captions 0,1 → image 0, caption 2 → image 1, captions 3,4 → image 2.
//   t0 [.9 .2 .1 ] positive 0: rank 0
//   t1 [.3 .8 .5 ] positive 0: rank 2
//   t2 [.1 .4 .4 ] positive 1: tie with image 2, lower index first → rank 0
//   t3 [.6 .5 .55] positive 2: rank 1
//   t4 [.2 .7 .1 ] positive 2: rank 2
// Image → text (columns):
//   image 0 [.9 .3 .1 .6 .2] positives t0,t1: t0 is first → rank 0
//   image 1 [.2 .8 .4 .5 .7] positive t2: behind t1, t4, t3 → rank 3
//   image 2 [.1 .5 .4 .55 .1] positives t3,t4: t3 first → rank 0
const retr = m([
  [0.9, 0.2, 0.1],
  [0.3, 0.8, 0.5],
  [0.1, 0.4, 0.4],
  [0.6, 0.5, 0.55],
  [0.2, 0.7, 0.1],
]);
const capImage = [0, 0, 1, 2, 2];

test('retrieval recall@K: several captions per image, hand-computed ranks', () => {
  const r = retrievalRecall(retr, capImage, [1, 2, 3, 4]);
  assert.equal(r['image_retrieval_recall@1'], 2 / 5);
  assert.equal(r['image_retrieval_recall@2'], 3 / 5);
  assert.equal(r['image_retrieval_recall@3'], 1);
  assert.equal(r['image_retrieval_recall@4'], 1); // K above the number of images
  assert.equal(r['text_retrieval_recall@1'], 2 / 3);
  assert.equal(r['text_retrieval_recall@2'], 2 / 3);
  assert.equal(r['text_retrieval_recall@3'], 2 / 3);
  assert.equal(r['text_retrieval_recall@4'], 1);
  assert.deepEqual(Object.keys(retrievalRecall(retr, capImage)), [
    'image_retrieval_recall@1',
    'text_retrieval_recall@1',
    'image_retrieval_recall@5',
    'text_retrieval_recall@5',
    'image_retrieval_recall@10',
    'text_retrieval_recall@10',
  ]);
});

test('retrieval ties go to the lower index in both directions', () => {
  const s = m([
    [0.5, 0.5],
    [0.5, 0.5],
  ]);
  const r = retrievalRecall(s, [1, 0], [1]);
  // t0 wants image 1 but image 0 wins the tie; t1 wants image 0 → hit. Same by columns.
  assert.equal(r['image_retrieval_recall@1'], 0.5);
  assert.equal(r['text_retrieval_recall@1'], 0.5);
});

test('an image without captions counts as a text-retrieval miss', () => {
  const s = m([
    [0.9, 0.1],
    [0.8, 0.2],
  ]);
  const r = retrievalRecall(s, [0, 0], [1]);
  assert.equal(r['image_retrieval_recall@1'], 1);
  assert.equal(r['text_retrieval_recall@1'], 0.5);
  assert.equal(recallAtK(s, [[0], []], 2), 0.5);
});

test('meanRecall averages the recall entries only', () => {
  assert.equal(meanRecall({ 'image_retrieval_recall@1': 0.5, 'text_retrieval_recall@1': 1, other: 7 }), 0.75);
});

test('retrievalScores normalises both sides', () => {
  const s = retrievalScores(
    m([[2, 0]]),
    m([
      [0, 3],
      [4, 4],
    ]),
  );
  close(s.data, [0, Math.SQRT1_2]);
});

test('dualSoftmax: scores × softmax over each column', () => {
  // Column 0 softmax of [1, 0] = [e/(e+1), 1/(e+1)] = [0.731059, 0.268941].
  const d = dualSoftmax(
    m([
      [1, 0],
      [0, 1],
    ]),
  );
  close(d.data, [0.731059, 0, 0, 0.731059]);
});

test('MSR-VTT: dual softmax turns a text→video miss into a hit', () => {
  // Raw: t0 ranks v1 (.6) above its video v0 (.5) → t2v R@1 = 2/3.
  // DSL (hand-computed): t0 row → [0.213617, 0.198664, 0.030061] so v0 wins; t1 → [0.028638, 0.402252,
  // 0.066445]; t2 → [0.028638, 0.044389, 0.110150]. All three hit.
  const s = m([
    [0.5, 0.6, 0.1],
    [0.1, 0.9, 0.2],
    [0.1, 0.2, 0.3],
  ]);
  close(dualSoftmax(s).data, [0.213617, 0.198664, 0.030061, 0.028638, 0.402252, 0.066445, 0.028638, 0.044389, 0.11015]);
  const raw = msrvttRetrievalMetrics(s, { ks: [1], dualSoftmax: false });
  assert.equal(raw['t2v_retrieval_recall@1'], 2 / 3);
  const dsl = msrvttRetrievalMetrics(s, { ks: [1] });
  assert.equal(dsl['t2v_retrieval_recall@1'], 1);
  // Video→text ranks rows of Sᵀ·softmax(Sᵀ, dim=0): v0 [0.180148 0.023091 0.030061], v1 [0.238914 0.462508
  // 0.066445], v2 [0.024151 0.051039 0.110150] → every video finds its caption first.
  assert.equal(dsl['v2t_retrieval_recall@1'], 1);
  assert.throws(() => msrvttRetrievalMetrics(m([[1, 2, 3]])), UsageError);
});

test('MSR-VTT video→text with dual softmax, by hand', () => {
  // S = [[.9 .8] [.95 .1]] (texts × videos). Sᵀ = [[.9 .95] [.8 .1]].
  // softmax(Sᵀ, dim 0): column t0 over [.9 .8] → [.524979 .475021]; column t1 over [.95 .1] → [.700567 .299433].
  // v0 row [.472481 .665539]: its caption t0 loses; v1 row [.380017 .029943]: t1 loses → R@1 = 0, R@2 = 1.
  const s = m([
    [0.9, 0.8],
    [0.95, 0.1],
  ]);
  const r = msrvttRetrievalMetrics(s, { ks: [1, 2] });
  assert.equal(r['v2t_retrieval_recall@1'], 0);
  assert.equal(r['v2t_retrieval_recall@2'], 1);
});

test('report: JSON maps NaN to null; Markdown has model/dataset/metric columns', () => {
  const results: EvalResult[] = [
    {
      model: 'internvl-c',
      dataset: 'imagenet1k',
      metrics: { acc1: 0.83178, acc5: 0.97322, mean_per_class_recall: 0.8312 },
    },
    { model: 'internvl-c', dataset: 'cifar|x', metrics: { acc1: 0.5, acc5: NaN } },
  ];
  const json = JSON.parse(resultsToJson(results));
  assert.equal(json[1].metrics.acc5, null);
  assert.equal(json[0].metrics.acc1, 0.83178);
  const md = resultsToMarkdown(results);
  assert.equal(
    md,
    [
      '| model | dataset | acc1 | acc5 | mean_per_class_recall |',
      '| --- | --- | ---: | ---: | ---: |',
      '| internvl-c | imagenet1k | 83.18 | 97.32 | 83.12 |',
      '| internvl-c | cifar\\|x | 50.00 | n/a |  |',
      '',
    ].join('\n'),
  );
  const md2 = resultsToMarkdown(results, { metrics: ['acc1'], percent: false, digits: 3 });
  assert.match(md2, /\| internvl-c \| imagenet1k \| 0\.832 \|/);
});
