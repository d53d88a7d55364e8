/**
 * Search latency and ANN recall of the index's store (`Store`, the LanceDB table `internvl index` writes) over
 * random unit vectors: exact search against the ANN index the store builds (IVF_RQ, at each of the code widths
 * asked for), at the store's default query parameters and over a sweep of nprobes / refine factors. Recall@k is
 * measured against the exact ranking, computed here by brute force while the vectors are generated (a LanceDB exact
 * scan per query costs seconds at 1M rows); the store's exact search is timed on the first queries and checked
 * against it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { matmulTransposed, matrix } from '../../core/matrix.js';
import { Store, type AnnIndexInfo, type IndexRow, type Stamp } from '../search/store.js';
import { median, quantile } from './stats.js';
import { round } from './profile.js';

export interface LatencyOptions {
  /** Table sizes (rows), each its own table. */
  sizes: number[];
  dim: number;
  /** Query vectors (random, unit) timed per ANN setting. */
  queries: number;
  /** Of those, how many are timed with exact search. */
  exactQueries: number;
  k: number;
  /** Bits per dimension of the ANN index's codes: one index built and timed per value. */
  bits: number[];
  /** (nprobes, refine factor) pairs timed after the store's defaults; `all` probes every partition. */
  sweep: Array<{ nprobes: number | 'all'; refineFactor: number }>;
  data: VectorData;
  workDir: string;
  seed?: number;
  log: (message: string) => void;
}

export interface LatencyTiming {
  p50Ms: number;
  p95Ms: number;
  meanMs: number;
}

export interface AnnSetting extends LatencyTiming {
  nprobes: number;
  refineFactor: number;
  /** Mean over the queries of |ANN top-k ∩ exact top-k| / k. */
  recall: number;
}

export interface LatencyResult {
  data: VectorData;
  rows: number;
  dim: number;
  k: number;
  queries: number;
  /** Rows appended per second (Arrow batches of 50 000 rows). */
  appendRowsPerSecond: number;
  /** Compaction of the appended fragments (`optimize`), seconds. */
  compactSeconds: number;
  tableMB: number;
  exact: LatencyTiming;
  exactQueries: number;
  /** The store's exact search's top-k against the brute-force ranking (1 = the same rows). */
  exactRecall: number;
  /** One per `bits` value. */
  ann: Array<
    AnnIndexInfo & {
      buildSeconds: number;
      /** The store's query defaults first, then the sweep. */
      settings: AnnSetting[];
    }
  >;
  peakRssMB: number;
}

/** Deterministic standard normals (xorshift32 + Box–Muller). */
function gaussians(seed: number): (out: Float32Array) => void {
  let s = seed >>> 0 || 1;
  const uniform = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 2 ** 32;
  };
  return (out) => {
    for (let i = 0; i < out.length; i += 2) {
      const r = Math.sqrt(-2 * Math.log(uniform()));
      const t = 2 * Math.PI * uniform();
      out[i] = r * Math.cos(t);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(t);
    }
  };
}

/** Which vectors: uniformly random on the sphere, or scattered around random centres (see `unitVectors`). */
export type VectorData = 'random' | 'clustered';

/** Rows per centre of the clustered data. */
const CLUSTER_SIZE = 1000;

/**
 * A stream of unit vectors of width `dim`. With `centres`, each is a random centre plus Gaussian noise of the same
 * norm (cosine ≈ 0.7 to its centre, ≈ 0.5 between two of one centre): a proxy for embeddings, which have
 * neighbourhoods that uniformly random vectors lack.
 */
function unitVectors(dim: number, seed: number, centres: Float32Array | null): (out: Float32Array) => void {
  const normal = gaussians(seed);
  let pick = seed >>> 0 || 1;
  const scale = 1 / Math.sqrt(dim);
  return (out) => {
    normal(out);
    for (let o = 0; o < out.length; o += dim) {
      if (centres) {
        pick = (Math.imul(pick, 1664525) + 1013904223) >>> 0;
        const c = ((pick >>> 8) % (centres.length / dim)) * dim;
        for (let j = 0; j < dim; j++) out[o + j] = centres[c + j] + out[o + j] * scale;
      }
      let n = 0;
      for (let j = 0; j < dim; j++) n += out[o + j] * out[o + j];
      const inv = 1 / Math.sqrt(n);
      for (let j = 0; j < dim; j++) out[o + j] *= inv;
    }
  };
}

/** The k best (score, row) of one query, kept sorted best first. */
class TopK {
  readonly scores: Float64Array;
  readonly rows: Int32Array;
  constructor(readonly k: number) {
    this.scores = new Float64Array(k).fill(-Infinity);
    this.rows = new Int32Array(k).fill(-1);
  }
  offer(score: number, row: number): void {
    if (score <= this.scores[this.k - 1]) return;
    let i = this.k - 1;
    while (i > 0 && this.scores[i - 1] < score) {
      this.scores[i] = this.scores[i - 1];
      this.rows[i] = this.rows[i - 1];
      i--;
    }
    this.scores[i] = score;
    this.rows[i] = row;
  }
}

const rowId = (i: number) => `r${i}`;
const APPEND_ROWS = 50_000;

/** Mean over queries of |found ∩ expected| / k. */
function recallAt(k: number, found: string[][], expected: string[][]): number {
  let sum = 0;
  found.forEach((ids, i) => {
    const want = new Set(expected[i]);
    sum += ids.filter((id) => want.has(id)).length / k;
  });
  return sum / found.length;
}

/** Builds a table of `rows` unit vectors; returns it with the queries and their brute-force top-k. */
async function buildTable(
  options: LatencyOptions,
  rows: number,
): Promise<{ store: Store; queries: Float32Array; truth: string[][]; appendSeconds: number }> {
  const { dim, k } = options;
  const seed = options.seed ?? 7;
  const stamp: Stamp = { model: 'random', fingerprint: `random-${dim}`, mode: 'C', weights: 'fp32', dim };
  const store = await Store.open(path.join(options.workDir, `db-${rows}`), 'random_C', stamp, { create: true });
  let centres: Float32Array | null = null;
  if (options.data === 'clustered') {
    centres = new Float32Array(Math.max(1, Math.round(rows / CLUSTER_SIZE)) * dim);
    unitVectors(dim, seed + 2000, null)(centres);
  }
  const queries = new Float32Array(options.queries * dim);
  unitVectors(dim, seed + 1000, centres)(queries);
  const fill = unitVectors(dim, seed, centres);
  const q = queries.length / dim;
  const truth = Array.from({ length: q }, () => new TopK(k));
  const chunk = new Float32Array(Math.min(APPEND_ROWS, rows) * dim);
  let appendSeconds = 0;
  for (let start = 0; start < rows; start += APPEND_ROWS) {
    const n = Math.min(APPEND_ROWS, rows - start);
    const vectors = chunk.subarray(0, n * dim);
    fill(vectors);
    const scores = matmulTransposed(matrix(queries, q, dim), matrix(vectors, n, dim)).data;
    for (let qi = 0; qi < q; qi++) for (let r = 0; r < n; r++) truth[qi].offer(scores[qi * n + r], start + r);
    const batch: IndexRow[] = Array.from({ length: n }, (_, r) => ({
      id: rowId(start + r),
      uri: `/random/${start + r}.png`,
      sha256: String(start + r),
      size: 0,
      mtime: 0,
      width: 1,
      height: 1,
      caption: null,
      metadata: null,
      vector: vectors.subarray(r * dim, (r + 1) * dim),
    }));
    const t = performance.now();
    await store.append(batch);
    appendSeconds += (performance.now() - t) / 1000;
    options.log(`  ${start + n}/${rows} rows`);
  }
  return { store, queries, truth: truth.map((top) => Array.from(top.rows, rowId)), appendSeconds };
}

async function timeQueries(
  queries: Float32Array,
  dim: number,
  search: (vector: Float32Array) => Promise<string[]>,
): Promise<{ timing: LatencyTiming; results: string[][] }> {
  const n = queries.length / dim;
  const at = (i: number) => queries.subarray(i * dim, (i + 1) * dim);
  // Warm-up: the first queries load the index and column pages.
  for (let i = 0; i < Math.min(3, n); i++) await search(at(i));
  const ms: number[] = [];
  const results: string[][] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    results.push(await search(at(i)));
    ms.push(performance.now() - t);
  }
  return {
    timing: {
      p50Ms: round(median(ms)),
      p95Ms: round(quantile(ms, 0.95)),
      meanMs: round(ms.reduce((a, b) => a + b, 0) / n),
    },
    results,
  };
}

function folderMB(dir: string): number {
  let bytes = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true }))
    if (entry.isFile()) bytes += fs.statSync(path.join(entry.parentPath, entry.name)).size;
  return Math.round(bytes / 2 ** 20);
}

export async function benchSearchLatency(options: LatencyOptions): Promise<LatencyResult[]> {
  const { dim, k, log } = options;
  const results: LatencyResult[] = [];
  for (const rows of options.sizes) {
    log(
      `${rows} ${options.data} unit vectors of width ${dim}: writing (and ranking ${options.queries} queries by brute force)`,
    );
    const { store, queries, truth, appendSeconds } = await buildTable(options, rows);
    let t = performance.now();
    await store.optimize(Number.MAX_SAFE_INTEGER);
    const compactSeconds = (performance.now() - t) / 1000;
    log(`  compacted in ${compactSeconds.toFixed(1)} s; exact search`);
    const exact = await timeQueries(queries.subarray(0, options.exactQueries * dim), dim, async (v) =>
      (await store.search(v, { k, exact: true })).map((h) => h.id),
    );
    const exactRecall = recallAt(k, exact.results, truth);
    log(`  exact p50 ${exact.timing.p50Ms} ms`);
    const anns: LatencyResult['ann'] = [];
    for (const bits of options.bits) {
      t = performance.now();
      const ann = await store.buildAnnIndex({ rows, bits });
      const buildSeconds = (performance.now() - t) / 1000;
      log(`  ${ann.kind} (${ann.partitions} partitions, ${bits} bits) built in ${buildSeconds.toFixed(1)} s`);
      const settings: AnnSetting[] = [];
      const sweep = options.sweep.map((s) => ({
        nprobes: s.nprobes === 'all' ? ann.partitions : s.nprobes,
        refineFactor: s.refineFactor,
      }));
      const seen = new Set<string>();
      for (const setting of [Store.QUERY_DEFAULTS, ...sweep]) {
        // Probing more partitions than there are probes them all: one setting.
        const key = `${Math.min(setting.nprobes, ann.partitions)}:${setting.refineFactor}`;
        if (seen.has(key)) continue;
        seen.add(key);
        const timed = await timeQueries(queries, dim, async (v) =>
          (await store.search(v, { k, ...setting })).map((h) => h.id),
        );
        const recall = recallAt(k, timed.results, truth);
        settings.push({ ...setting, ...timed.timing, recall: round(recall) });
        log(
          `    nprobes ${setting.nprobes}, refine ${setting.refineFactor}: p50 ${timed.timing.p50Ms} ms, recall@${k} ${round(recall)}`,
        );
      }
      anns.push({ ...ann, buildSeconds: round(buildSeconds), settings });
    }
    results.push({
      data: options.data,
      rows,
      dim,
      k,
      queries: options.queries,
      appendRowsPerSecond: Math.round(rows / appendSeconds),
      compactSeconds: round(compactSeconds),
      tableMB: folderMB(path.join(options.workDir, `db-${rows}`)),
      exact: exact.timing,
      exactQueries: options.exactQueries,
      exactRecall: round(exactRecall),
      ann: anns,
      peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
    });
    // Each size's table is deleted once measured (1M × 768 floats are 3 GB).
    fs.rmSync(path.join(options.workDir, `db-${rows}`), { recursive: true, force: true });
  }
  return results;
}
