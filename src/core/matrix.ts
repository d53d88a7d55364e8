/**
 * Small dense row-major matrices for embedding math: normalization, similarity, the zero-shot classifier.
 * Shared by models (InternVL-G's sum of unit vectors), tasks (classification, retrieval) and the evaluation harness.
 */
import { UsageError } from './errors.js';
import type { FloatTensor } from './tensor.js';

/** A two-dimensional FloatTensor; `rows` and `cols` name its `dims` for the math. Made by {@link matrix}. */
export interface Matrix extends FloatTensor {
  dims: [rows: number, cols: number];
  rows: number;
  cols: number;
}

/** Wraps data as a rows×cols matrix, checking the length. */
export function matrix(data: Float32Array, rows: number, cols: number): Matrix {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new UsageError(`matrix dims must be integers >= 0, got ${rows}x${cols}`);
  }
  if (data.length !== rows * cols) {
    throw new UsageError(`matrix data has ${data.length} values, expected ${rows}x${cols} = ${rows * cols}`);
  }
  return { data, dims: [rows, cols], rows, cols };
}

export function checkMatrix(name: string, m: Matrix): void {
  if (m.data.length !== m.rows * m.cols) {
    throw new UsageError(`${name} has ${m.data.length} values, expected ${m.rows}x${m.cols}`);
  }
}

/**
 * Divides each row by its L2 norm, like torch.nn.functional.normalize (the norm is clamped at eps, so zero
 * rows stay zero instead of becoming NaN).
 */
export function l2normalize(m: Matrix, eps = 1e-12): Matrix {
  checkMatrix('matrix', m);
  const out = new Float32Array(m.data.length);
  for (let r = 0; r < m.rows; r++) {
    const o = r * m.cols;
    let s = 0;
    for (let c = 0; c < m.cols; c++) s += m.data[o + c] * m.data[o + c];
    const n = Math.max(Math.sqrt(s), eps);
    for (let c = 0; c < m.cols; c++) out[o + c] = m.data[o + c] / n;
  }
  return matrix(out, m.rows, m.cols);
}

/** a @ bᵀ: (n×d)·(m×d)ᵀ → n×m. */
export function matmulTransposed(a: Matrix, b: Matrix): Matrix {
  checkMatrix('left matrix', a);
  checkMatrix('right matrix', b);
  if (a.cols !== b.cols)
    throw new UsageError(`cannot multiply ${a.rows}x${a.cols} by (${b.rows}x${b.cols})ᵀ: dims differ`);
  const d = a.cols;
  const out = new Float32Array(a.rows * b.rows);
  for (let i = 0; i < a.rows; i++) {
    const ao = i * d;
    for (let j = 0; j < b.rows; j++) {
      const bo = j * d;
      let s = 0;
      for (let k = 0; k < d; k++) s += a.data[ao + k] * b.data[bo + k];
      out[i * b.rows + j] = s;
    }
  }
  return matrix(out, a.rows, b.rows);
}

/** Transposes a matrix. */
export function transpose(m: Matrix): Matrix {
  checkMatrix('matrix', m);
  const out = new Float32Array(m.data.length);
  for (let r = 0; r < m.rows; r++) for (let c = 0; c < m.cols; c++) out[c * m.rows + r] = m.data[r * m.cols + c];
  return matrix(out, m.cols, m.rows);
}

/**
 * The zero-shot classifier: for each class, its template embeddings (one row per template) are L2-normalised,
 * averaged, and the mean renormalised. Returns classes × dim (CLIP_benchmark stores the transpose).
 * The final division has no eps, as in CLIP_benchmark.
 */
export function ensembleClassEmbeddings(perTemplateEmbeddings: readonly Matrix[]): Matrix {
  if (perTemplateEmbeddings.length === 0) throw new UsageError('ensembleClassEmbeddings needs at least one class');
  const dim = perTemplateEmbeddings[0].cols;
  const out = new Float32Array(perTemplateEmbeddings.length * dim);
  perTemplateEmbeddings.forEach((m, ci) => {
    checkMatrix(`class ${ci} template embeddings`, m);
    if (m.cols !== dim) throw new UsageError(`class ${ci} template embeddings have dim ${m.cols}, expected ${dim}`);
    if (m.rows === 0) throw new UsageError(`class ${ci} has no template embeddings`);
    const n = l2normalize(m);
    const mean = new Float64Array(dim);
    for (let r = 0; r < n.rows; r++) for (let c = 0; c < dim; c++) mean[c] += n.data[r * dim + c];
    let s = 0;
    for (let c = 0; c < dim; c++) {
      mean[c] /= n.rows;
      s += mean[c] * mean[c];
    }
    const norm = Math.sqrt(s);
    for (let c = 0; c < dim; c++) out[ci * dim + c] = mean[c] / norm;
  });
  return matrix(out, perTemplateEmbeddings.length, dim);
}

/** Logits = scale · normalize(images) @ classesᵀ (CLIP_benchmark uses a fixed scale of 100). */
export function zeroShotLogits(imageEmbeddings: Matrix, classEmbeddings: Matrix, scale = 100): Matrix {
  const s = matmulTransposed(l2normalize(imageEmbeddings), classEmbeddings);
  if (scale !== 1) for (let i = 0; i < s.data.length; i++) s.data[i] *= scale;
  return s;
}

/** texts × images similarity of L2-normalised embeddings. */
export function retrievalScores(textEmbeddings: Matrix, imageEmbeddings: Matrix): Matrix {
  return matmulTransposed(l2normalize(textEmbeddings), l2normalize(imageEmbeddings));
}

/** scores · softmax(scores, dim=0): each entry times the softmax over its column (no temperature). */
export function dualSoftmax(scores: Matrix): Matrix {
  checkMatrix('scores', scores);
  const { rows, cols } = scores;
  const out = new Float32Array(scores.data.length);
  for (let c = 0; c < cols; c++) {
    let max = -Infinity;
    for (let r = 0; r < rows; r++) max = Math.max(max, scores.data[r * cols + c]);
    let sum = 0;
    for (let r = 0; r < rows; r++) sum += Math.exp(scores.data[r * cols + c] - max);
    for (let r = 0; r < rows; r++) {
      const v = scores.data[r * cols + c];
      out[r * cols + c] = v * (Math.exp(v - max) / sum);
    }
  }
  return matrix(out, rows, cols);
}
