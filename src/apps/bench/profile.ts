/** onnxruntime profiles (`enableProfiling`): kernel time per operator type and each run's time inside onnxruntime. */
import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../../core/errors.js';

/** Time spent in one operator type during a run (from onnxruntime's profiler). */
export interface OpTime {
  op: string;
  /** Milliseconds per run, summed over the nodes of this type. */
  ms: number;
  /** Fraction of all kernel time. */
  share: number;
  nodes: number;
}

export interface OnnxProfile {
  /** Runs counted (after the skipped ones). */
  runs: number;
  /** Each counted run's `model_run` time: what onnxruntime spent inside `Run`, kernels and scheduling. */
  modelRunMs: number[];
  /** Kernel time per run, summed over all nodes. */
  kernelMs: number;
  ops: OpTime[];
}

type Event = { cat?: string; name?: string; ts?: number; dur?: number; args?: { op_name?: string } };

/**
 * Reads the one profile `<prefix>*.json` in `folder` (the session must have ended profiling) and sums the kernels
 * of the runs after the first `skipRuns` (warm-up, or the prompt's prefill before the decode steps).
 */
export function readOnnxProfile(folder: string, prefix: string, skipRuns: number): OnnxProfile {
  const file = fs.readdirSync(folder).find((f) => f.startsWith(prefix) && f.endsWith('.json'));
  if (!file) throw new UsageError(`onnxruntime wrote no profile ${prefix}*.json in ${folder}`);
  const events = JSON.parse(fs.readFileSync(path.join(folder, file), 'utf8')) as Event[];
  const runs = events
    .filter((e) => e.cat === 'Session' && e.name === 'model_run')
    .sort((a, b) => (a.ts ?? 0) - (b.ts ?? 0));
  const skipped = runs.slice(0, Math.min(skipRuns, runs.length - 1));
  const counted = runs.slice(skipped.length);
  const after = skipped.length ? (skipped.at(-1)!.ts ?? 0) + (skipped.at(-1)!.dur ?? 0) : -Infinity;
  const byOp = new Map<string, { us: number; nodes: Set<string> }>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || (e.ts ?? 0) < after) continue;
    const op = e.args?.op_name ?? 'unknown';
    const slot = byOp.get(op) ?? { us: 0, nodes: new Set<string>() };
    slot.us += e.dur ?? 0;
    slot.nodes.add(e.name);
    byOp.set(op, slot);
  }
  const n = Math.max(1, counted.length);
  const total = [...byOp.values()].reduce((sum, v) => sum + v.us, 0);
  return {
    runs: counted.length,
    modelRunMs: counted.map((r) => (r.dur ?? 0) / 1000),
    kernelMs: round(total / 1000 / n),
    ops: [...byOp.entries()]
      .map(([op, v]) => ({ op, ms: round(v.us / 1000 / n), share: round(v.us / (total || 1)), nodes: v.nodes.size }))
      .sort((a, b) => b.ms - a.ms),
  };
}

export function round(x: number): number {
  return Number(x.toPrecision(4));
}
