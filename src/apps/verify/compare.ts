/**
 * Comparison of computed tensors with goldens, and the report (aligned table or JSON).
 *
 * The error measure is the fixtures' own: max |a − b| over the tensor, and that divided by max |b| ("max relative
 * error"), which stays meaningful where individual golden values are near zero. Model outputs must be within 1e-4
 * relative; pixel tensors within 0.04 absolute (2/255 per 8-bit value after ImageNet normalisation, because Pillow's
 * resampler is matched to the byte, not bit-for-bit in every build); integer tensors (grids, ids) exactly. "Exactly"
 * for a golden fraction means equal at float32 precision: the official code computes metrics like recall as float32
 * (`.float().mean().item()`), so 0.1 arrives as 0.10000000149011612.
 */
import { stringifySnakeCase } from '../../core/json.js';

/** What a tensor must satisfy. */
export interface Bound {
  metric: 'relative' | 'absolute';
  value: number;
}

export const MODEL_BOUND: Bound = { metric: 'relative', value: 1e-4 };
export const PIXEL_BOUND: Bound = { metric: 'absolute', value: 0.04 };
export const EXACT_BOUND: Bound = { metric: 'absolute', value: 0 };

export interface ComparedTensor {
  name: string;
  /** Shape of the golden. */
  shape: number[];
  maxAbsError: number;
  /** max |a − b| / max |b|. */
  maxRelError: number;
  bound: Bound;
  ok: boolean;
  /** Exact bounds: the flat index of the first differing value (a greedy sequence: the first differing step). */
  firstMismatch?: number;
  /** Why it failed beyond the numbers (shape mismatch, NaN). */
  note?: string;
}

export interface SkippedTensor {
  name: string;
  reason: string;
}

/** A tensor as compared: values (any numeric array) and shape. */
export interface NumericTensor {
  data: ArrayLike<number>;
  shape: readonly number[];
}

/** The bound a golden gets unless its runner says otherwise. */
export function defaultBound(name: string, golden?: { dtype?: string }): Bound {
  if (golden?.dtype && /^(I|U|BOOL)/.test(golden.dtype)) return EXACT_BOUND;
  if (/pixel_values/.test(name)) return PIXEL_BOUND;
  return MODEL_BOUND;
}

/** The same value for an exact bound: identical, or (for a fractional golden) the same float32. */
function sameValue(actual: number, golden: number): boolean {
  return actual === golden || (!Number.isInteger(golden) && Math.fround(actual) === Math.fround(golden));
}

export function compareTensors(
  name: string,
  actual: NumericTensor,
  golden: NumericTensor,
  bound: Bound = defaultBound(name),
): ComparedTensor {
  const shape = [...golden.shape];
  const base = { name, shape, bound };
  // A sequence of another length (a generation that stopped early) still has a first differing step.
  const prefix = () => (bound.value === 0 ? { firstMismatch: agreeingPrefix(actual.data, golden.data) } : {});
  if (actual.shape.length !== golden.shape.length || actual.shape.some((d, i) => d !== golden.shape[i])) {
    return {
      ...base,
      maxAbsError: Infinity,
      maxRelError: Infinity,
      ok: false,
      ...prefix(),
      note: `computed shape [${actual.shape.join(',')}]`,
    };
  }
  if (actual.data.length !== golden.data.length) {
    return {
      ...base,
      maxAbsError: Infinity,
      maxRelError: Infinity,
      ok: false,
      ...prefix(),
      note: `computed ${actual.data.length} values, golden has ${golden.data.length}`,
    };
  }
  const exact = bound.value === 0;
  let maxAbs = 0;
  let maxGolden = 0;
  let nonFinite = 0;
  let different = 0;
  let firstDifferent = -1;
  for (let i = 0; i < golden.data.length; i++) {
    const a = actual.data[i];
    const b = golden.data[i];
    const diff = Math.abs(a - b);
    if (exact && !sameValue(a, b) && different++ === 0) firstDifferent = i;
    // NaN compares false with everything: count it explicitly so that it cannot pass as "error 0".
    if (!Number.isFinite(diff)) {
      if (!(a === b)) nonFinite++;
      continue;
    }
    if (diff > maxAbs) maxAbs = diff;
    if (Math.abs(b) > maxGolden) maxGolden = Math.abs(b);
  }
  if (nonFinite > 0) {
    return {
      ...base,
      maxAbsError: NaN,
      maxRelError: NaN,
      ok: false,
      note: `${nonFinite} values are NaN/Inf where the golden is not`,
    };
  }
  const maxRel = maxGolden > 0 ? maxAbs / maxGolden : maxAbs === 0 ? 0 : Infinity;
  const measured = bound.metric === 'relative' ? maxRel : maxAbs;
  const result = { ...base, maxAbsError: maxAbs, maxRelError: maxRel };
  if (!exact) return { ...result, ok: measured <= bound.value };
  return different === 0
    ? { ...result, ok: true }
    : {
        ...result,
        ok: false,
        firstMismatch: firstDifferent,
        note: `${different} differ, the first at index ${firstDifferent}`,
      };
}

/** The number of leading positions where two sequences agree (the first differing step, or the shorter length). */
export function agreeingPrefix(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  const n = Math.min(actual.length, expected.length);
  for (let i = 0; i < n; i++) if (actual[i] !== expected[i]) return i;
  return n;
}

/** An exact comparison of two short lists (values that are not tensors in io.safetensors, e.g. meta.json's). */
export function compareValues(name: string, actual: readonly number[], expected: readonly number[]): ComparedTensor {
  const shape = [expected.length];
  if (actual.length !== expected.length) {
    return {
      name,
      shape,
      bound: EXACT_BOUND,
      maxAbsError: Infinity,
      maxRelError: Infinity,
      ok: false,
      firstMismatch: agreeingPrefix(actual, expected),
      note: `computed ${actual.length} values`,
    };
  }
  return compareTensors(name, { data: actual, shape }, { data: expected, shape }, EXACT_BOUND);
}

/** The result of verifying one fixture folder. */
export interface FixtureReport {
  dir: string;
  name: string;
  runner: string | null;
  compared: ComparedTensor[];
  skipped: SkippedTensor[];
  /** 0: all compared tensors within bound; 1: a mismatch; 2: could not run or nothing compared. */
  status: 0 | 1 | 2;
  error?: string;
  seconds: number;
}

export function fixtureStatus(compared: ComparedTensor[]): 0 | 1 | 2 {
  if (compared.length === 0) return 2;
  return compared.every((c) => c.ok) ? 0 : 1;
}

function formatError(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'inf';
  if (x === 0) return '0';
  return x.toExponential(2);
}

function formatBound(bound: Bound): string {
  if (bound.value === 0) return 'exact';
  const value = bound.value < 0.01 ? bound.value.toExponential() : String(bound.value);
  return `${bound.metric === 'relative' ? 'rel' : 'abs'} ≤ ${value}`;
}

/** Renders rows as aligned columns; numbers are right-aligned. */
export function formatTable(header: string[], rows: string[][], rightAligned: boolean[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (rightAligned[i] ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function formatReport(report: FixtureReport): string {
  const out: string[] = [];
  out.push(`${report.name}  (${report.dir}${report.runner ? `, runner ${report.runner}` : ''})`);
  if (report.compared.length > 0) {
    const rows = report.compared.map((c) => [
      c.name,
      `[${c.shape.join(',')}]`,
      formatError(c.maxAbsError),
      formatError(c.maxRelError),
      formatBound(c.bound),
      c.ok ? 'ok' : `FAIL${c.note ? ` (${c.note})` : ''}`,
    ]);
    out.push(
      formatTable(['tensor', 'shape', 'max abs err', 'max rel err', 'bound', 'result'], rows, [
        false,
        false,
        true,
        true,
        false,
        false,
      ]),
    );
  }
  for (const s of report.skipped) out.push(`skipped ${s.name}: ${s.reason}`);
  const failed = report.compared.filter((c) => !c.ok).length;
  if (report.error) out.push(`error: ${report.error}`);
  else if (report.compared.length === 0) out.push('nothing compared: the fixture was not verified');
  else if (failed === 0)
    out.push(`${report.compared.length} tensors compared, all within bound (${report.seconds.toFixed(1)} s)`);
  else out.push(`${report.compared.length} tensors compared, ${failed} MISMATCH${failed > 1 ? 'ES' : ''}`);
  return `${out.join('\n')}\n`;
}

/**
 * JSON (snake_case keys, as every report) with non-finite errors as strings (JSON has no NaN/Infinity, and null
 * would read as "no error").
 */
export function reportsToJson(reports: FixtureReport[]): string {
  const ok = reports.length > 0 && reports.every((r) => r.status === 0);
  const finite = (_key: string, value: unknown) =>
    typeof value === 'number' && !Number.isFinite(value) ? String(value) : value;
  return `${stringifySnakeCase({ ok, fixtures: reports }, finite, 2)}\n`;
}
