/**
 * Fixture runners: each knows one kind of fixture folder (a model architecture, the preprocessing fixture, an
 * end-to-end checkpoint with `golden/`), computes what it can of the goldens and compares. New kinds are added
 * in their own file and registered in `index.ts`.
 */
import type { ComparedTensor, SkippedTensor } from './compare.js';
import type { Fixture } from './fixture.js';
import type { GraphBuilder } from '../../core/graph.js';

export interface RunOptions {
  /** onnxruntime intra-op threads (default: all cores). */
  threads?: number;
  /**
   * Graph hooks per model part (e.g. quantized linears), for measuring a weight format against the goldens
   * (`internvl bench accuracy`). None: float32, what `verify` checks.
   */
  graphs?: GraphHooks;
}

export interface GraphHooks {
  llm?: (g: GraphBuilder) => void;
  vision?: (g: GraphBuilder) => void;
  qllama?: (g: GraphBuilder) => void;
}

/**
 * What a runner returns: the compared tensors, and the goldens it knows it cannot compute, with the reason
 * (plain strings are accepted: `name` or `name: reason`). Goldens it neither compares nor skips are reported as
 * skipped by the driver, so a runner cannot silently ignore part of a fixture.
 */
export type RunnerResult = ComparedTensor[] | { compared?: ComparedTensor[]; skipped: Array<SkippedTensor | string> };

export interface FixtureRunner {
  name: string;
  /** Tried in decreasing priority (default 0), then in registration order; the first match runs. */
  priority?: number;
  /** Cheap test on the folder (config, file names); must not throw. */
  matches(fixture: Fixture): boolean;
  run(fixture: Fixture, options: RunOptions): Promise<RunnerResult>;
}

const runners: FixtureRunner[] = [];

export function registerFixtureRunner(runner: FixtureRunner): void {
  if (runners.some((r) => r.name === runner.name))
    throw new Error(`fixture runner '${runner.name}' is registered twice`);
  runners.push(runner);
}

export function fixtureRunners(): FixtureRunner[] {
  // Array.prototype.sort is stable, so equal priorities keep registration order.
  return [...runners].sort((a, b) => (b.priority ?? 0) - (a.priority ?? 0));
}

export function findFixtureRunner(fixture: Fixture): FixtureRunner | undefined {
  return fixtureRunners().find((r) => {
    try {
      return r.matches(fixture);
    } catch {
      return false;
    }
  });
}

export function normalizeResult(result: RunnerResult): { compared: ComparedTensor[]; skipped: SkippedTensor[] } {
  if (Array.isArray(result)) return { compared: result, skipped: [] };
  const skipped = result.skipped.map((s): SkippedTensor => {
    if (typeof s !== 'string') return s;
    const colon = s.indexOf(': ');
    return colon > 0 ? { name: s.slice(0, colon), reason: s.slice(colon + 2) } : { name: s, reason: 'not computed' };
  });
  return { compared: result.compared ?? [], skipped };
}
