/**
 * Evaluation metrics as CLIP_benchmark (zeroshot_classification.py, zeroshot_retrieval.py) and InternVL's
 * video_retrieval/test_msrvtt.py define them.
 *
 * Matrices are row-major Float32Array with explicit dims. Scores are accumulated in double precision and
 * stored as float32, so values can differ from PyTorch's float32/fp16 matmuls in the last bits; rankings only
 * change where two scores are that close.
 *
 * Ties: torch.topk / torch.sort leave the order of equal values unspecified. Here the lower index always
 * ranks first (as torch.argmax does), and NaN ranks above every number (as in torch.topk).
 */
import { UsageError } from '../../core/errors.js';

import { checkMatrix, dualSoftmax, transpose, type Matrix } from '../../core/matrix.js';

/** Whether value a at index ia ranks before value b at index ib (higher first, NaN highest, ties by index). */
function ranksBefore(a: number, ia: number, b: number, ib: number): boolean {
  if (Number.isNaN(a)) return !Number.isNaN(b) || ia < ib;
  if (Number.isNaN(b)) return false;
  return a > b || (a === b && ia < ib);
}

/** Indices of the k largest values, best first; ties go to the lower index. */
export function topkIndices(values: ArrayLike<number>, k: number): number[] {
  const n = values.length;
  const kk = Math.min(Math.max(0, Math.floor(k)), n);
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((i, j) => (ranksBefore(values[i], i, values[j], j) ? -1 : ranksBefore(values[j], j, values[i], i) ? 1 : 0));
  return idx.slice(0, kk);
}

/** Index of the largest value of each row (the first one on ties, NaN wins, as torch.argmax). */
export function argmaxRows(m: Matrix): Int32Array {
  checkMatrix('matrix', m);
  const out = new Int32Array(m.rows);
  for (let r = 0; r < m.rows; r++) {
    const o = r * m.cols;
    let best = 0;
    for (let c = 1; c < m.cols; c++) if (ranksBefore(m.data[o + c], c, m.data[o + best], best)) best = c;
    out[r] = best;
  }
  return out;
}

/**
 * Rank (0 = best) of entry `target` among `count` values read through `get`, and whether it is below k.
 * Stops scanning once k better entries are found, since the answer is then known.
 */
function inTopK(get: (i: number) => number, count: number, target: number, k: number): boolean {
  const v = get(target);
  let better = 0;
  for (let i = 0; i < count; i++) {
    if (i !== target && ranksBefore(get(i), i, v, target)) {
      better++;
      if (better >= k) return false;
    }
  }
  return true;
}

function checkTargets(logits: Matrix, targets: ArrayLike<number>): void {
  checkMatrix('logits', logits);
  if (targets.length !== logits.rows)
    throw new UsageError(`got ${targets.length} targets for ${logits.rows} rows of logits`);
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    if (!Number.isInteger(t) || t < 0 || t >= logits.cols) {
      throw new UsageError(`target ${i} is ${t}, outside the ${logits.cols} classes`);
    }
  }
}

/**
 * Top-k accuracies (fraction of rows whose target is among the k highest logits), one per k, as
 * CLIP_benchmark's `accuracy`. A k above the number of classes counts every row as a hit (torch.topk would
 * raise instead).
 */
export function topkAccuracy(logits: Matrix, targets: ArrayLike<number>, ks: readonly number[] = [1]): number[] {
  checkTargets(logits, targets);
  return ks.map((k) => {
    if (!Number.isInteger(k) || k < 1) throw new UsageError(`top-k needs an integer k >= 1, got ${k}`);
    let hits = 0;
    for (let r = 0; r < logits.rows; r++) {
      const o = r * logits.cols;
      if (inTopK((i) => logits.data[o + i], logits.cols, targets[r], k)) hits++;
    }
    return logits.rows === 0 ? NaN : hits / logits.rows;
  });
}

/**
 * sklearn's balanced_accuracy_score: the mean over classes of recall = correct / samples of that class.
 * Classes with no samples are left out of the mean (sklearn drops their NaN recall with a warning), even when
 * some prediction names them.
 */
export function meanPerClassRecall(predictions: ArrayLike<number>, targets: ArrayLike<number>): number {
  if (predictions.length !== targets.length) {
    throw new UsageError(`got ${predictions.length} predictions for ${targets.length} targets`);
  }
  const count = new Map<number, number>();
  const correct = new Map<number, number>();
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    count.set(t, (count.get(t) ?? 0) + 1);
    if (predictions[i] === t) correct.set(t, (correct.get(t) ?? 0) + 1);
  }
  if (count.size === 0) return NaN;
  let s = 0;
  for (const [c, n] of count) s += (correct.get(c) ?? 0) / n;
  return s / count.size;
}

export interface ClassificationMetrics {
  acc1: number;
  /** NaN when the dataset has fewer than 5 classes, as in CLIP_benchmark. */
  acc5: number;
  mean_per_class_recall: number;
}

/** acc1, acc5 and mean per-class recall of single-label zero-shot classification (logits: samples × classes). */
export function zeroShotClassificationMetrics(logits: Matrix, targets: ArrayLike<number>): ClassificationMetrics {
  checkTargets(logits, targets);
  const [acc1, acc5] =
    logits.cols >= 5 ? topkAccuracy(logits, targets, [1, 5]) : [topkAccuracy(logits, targets, [1])[0], NaN];
  return { acc1, acc5, mean_per_class_recall: meanPerClassRecall(argmaxRows(logits), targets) };
}

/** The positive of a query that ranks best among the query's scores (the one that decides a hit). */
function bestPositive(get: (i: number) => number, positives: readonly number[]): number {
  let best = positives[0];
  for (const p of positives) if (ranksBefore(get(p), p, get(best), best)) best = p;
  return best;
}

function checkK(k: number): void {
  if (!Number.isInteger(k) || k < 1) throw new UsageError(`recall@K needs an integer K >= 1, got ${k}`);
}

/**
 * Fraction of queries (rows of `scores`) with at least one positive column among the top k: the CLIP-paper
 * recall@K that CLIP_benchmark computes as `recall_at_k(...) > 0`. A query without positives counts as a
 * miss there (0/0 is NaN, and NaN > 0 is false), and so it does here. K above the number of columns means
 * every column is retrieved.
 */
export function recallAtK(scores: Matrix, positives: readonly (readonly number[])[], k: number): number {
  checkMatrix('scores', scores);
  return recallOverQueries(scores.rows, scores.cols, positives, k, 'rows', (q, c) => scores.data[q * scores.cols + c]);
}

/** Same as {@link recallAtK} with the queries in the columns, so scoresᵀ need not be built. */
export function recallAtKColumns(scores: Matrix, positives: readonly (readonly number[])[], k: number): number {
  checkMatrix('scores', scores);
  return recallOverQueries(
    scores.cols,
    scores.rows,
    positives,
    k,
    'columns',
    (q, c) => scores.data[c * scores.cols + q],
  );
}

function recallOverQueries(
  queries: number,
  candidates: number,
  positives: readonly (readonly number[])[],
  k: number,
  axis: 'rows' | 'columns',
  score: (query: number, candidate: number) => number,
): number {
  checkK(k);
  if (positives.length !== queries)
    throw new UsageError(`got positives for ${positives.length} queries, scores have ${queries} ${axis}`);
  let hits = 0;
  for (let q = 0; q < queries; q++) {
    const pos = positives[q];
    if (pos.length === 0) continue;
    for (const p of pos) {
      if (!Number.isInteger(p) || p < 0 || p >= candidates)
        throw new UsageError(`positive ${p} of query ${q} is outside the ${candidates} candidates`);
    }
    const get = (i: number) => score(q, i);
    if (inTopK(get, candidates, bestPositive(get, pos), k)) hits++;
  }
  return queries === 0 ? NaN : hits / queries;
}

/**
 * CLIP_benchmark zero-shot retrieval. `scores` is texts × images (text @ imageᵀ of normalised embeddings);
 * `textImageIndex[t]` is the image caption t belongs to (an image may have several captions).
 * `image_retrieval_recall@K` is text→image, `text_retrieval_recall@K` is image→text.
 */
export function retrievalRecall(
  scores: Matrix,
  textImageIndex: ArrayLike<number>,
  ks: readonly number[] = [1, 5, 10],
): Record<string, number> {
  checkMatrix('scores', scores);
  if (textImageIndex.length !== scores.rows) {
    throw new UsageError(`got ${textImageIndex.length} caption→image indices for ${scores.rows} captions`);
  }
  const perText: number[][] = [];
  const perImage: number[][] = Array.from({ length: scores.cols }, () => []);
  for (let t = 0; t < textImageIndex.length; t++) {
    const i = textImageIndex[t];
    if (!Number.isInteger(i) || i < 0 || i >= scores.cols)
      throw new UsageError(`caption ${t} points to image ${i}, outside the ${scores.cols} images`);
    perText.push([i]);
    perImage[i].push(t);
  }
  const out: Record<string, number> = {};
  for (const k of ks) {
    out[`image_retrieval_recall@${k}`] = recallAtK(scores, perText, k);
    out[`text_retrieval_recall@${k}`] = recallAtKColumns(scores, perImage, k);
  }
  return out;
}

/** Mean of all `*_recall@K` entries: the "avg" column of the InternVL retrieval tables (12 recalls). */
export function meanRecall(metrics: Record<string, number>): number {
  const vals = Object.entries(metrics)
    .filter(([k]) => /_recall@\d+$/.test(k))
    .map(([, v]) => v);
  return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : NaN;
}

export interface MsrvttOptions {
  ks?: readonly number[];
  /** Dual-softmax re-ranking; on by default in test_msrvtt.py. */
  dualSoftmax?: boolean;
}

/**
 * MSR-VTT retrieval as video_retrieval/test_msrvtt.py: `scores` is texts × videos with caption i belonging to
 * video i. With dual softmax, text→video ranks rows of S·softmax(S, dim=0) and video→text ranks rows of
 * Sᵀ·softmax(Sᵀ, dim=0), i.e. each score is weighted by a softmax over the other queries.
 */
export function msrvttRetrievalMetrics(scores: Matrix, opts: MsrvttOptions = {}): Record<string, number> {
  checkMatrix('scores', scores);
  if (scores.rows !== scores.cols)
    throw new UsageError(`MSR-VTT needs one caption per video, got a ${scores.rows}x${scores.cols} score matrix`);
  const ks = opts.ks ?? [1, 5, 10];
  const useDsl = opts.dualSoftmax ?? true;
  const t2v = useDsl ? dualSoftmax(scores) : scores;
  const st = transpose(scores);
  const v2t = useDsl ? dualSoftmax(st) : st;
  const diag = Array.from({ length: scores.rows }, (_, i) => [i]);
  const out: Record<string, number> = {};
  for (const k of ks) {
    out[`t2v_retrieval_recall@${k}`] = recallAtK(t2v, diag, k);
    out[`v2t_retrieval_recall@${k}`] = recallAtK(v2t, diag, k);
  }
  return out;
}
