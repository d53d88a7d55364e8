/**
 * `internvl verify`: runs fixture folders through the runner that knows them and compares every golden it can.
 */
import { InternVLError, ModelLoadError } from '../../core/errors.js';
import { fixtureStatus, formatReport, reportsToJson, type FixtureReport, type SkippedTensor } from './compare.js';
import { Fixture } from './fixture.js';
import {
  findFixtureRunner,
  fixtureRunners,
  normalizeResult,
  registerFixtureRunner,
  type RunOptions,
} from './registry.js';
import { internVitRunner } from './intern_vit.js';
import { preprocessRunner } from './preprocess.js';
import { chatModelRunner } from './chat.js';
import { clipModelRunner } from './clip.js';
import { chatE2eRunner } from './e2e_chat.js';
import { clipE2eRunner } from './e2e_clip.js';

// New fixture kinds: a runner in its own file in this folder, registered here.
registerFixtureRunner(internVitRunner);
registerFixtureRunner(preprocessRunner);
registerFixtureRunner(chatModelRunner);
registerFixtureRunner(clipModelRunner);
registerFixtureRunner(chatE2eRunner);
registerFixtureRunner(clipE2eRunner);

/** Verifies one folder. Throws InternVLError when it cannot be run at all. */
export async function verifyFixture(dir: string, options: RunOptions = {}): Promise<FixtureReport> {
  const start = performance.now();
  const fixture = await Fixture.open(dir);
  const runner = findFixtureRunner(fixture);
  if (!runner) {
    const kind = fixture.config
      ? `architectures ${JSON.stringify(fixture.config.raw.architectures ?? null)}, model_type ${JSON.stringify(fixture.config.raw.model_type ?? null)}`
      : 'no config.json';
    throw new ModelLoadError(
      `${dir}: no verify runner knows this fixture (${kind}; runners: ${fixtureRunners()
        .map((r) => r.name)
        .join(', ')})`,
    );
  }
  const { compared, skipped } = normalizeResult(await runner.run(fixture, options));
  // A golden checked on part of its rows (`name[:k]`, `name[k:]`) or under a label (`name (…)`) counts as covered.
  const golden = (name: string) => name.replace(/(\[[^\]]*\]| \(.*\))$/, '');
  const accounted = new Set([...compared, ...skipped].map((c) => golden(c.name)));
  const unaccounted: SkippedTensor[] = fixture
    .goldenNames()
    .filter((n) => !accounted.has(n))
    .map((name) => ({ name, reason: `runner '${runner.name}' does not compute it` }));
  return {
    dir,
    name: fixture.name,
    runner: runner.name,
    compared,
    skipped: [...skipped, ...unaccounted],
    status: fixtureStatus(compared),
    seconds: (performance.now() - start) / 1000,
  };
}

export interface VerifyCommandOptions extends RunOptions {
  json?: boolean;
}

/**
 * Verifies each folder and prints the reports. Returns the exit code: the worst status over the folders (0 all
 * within bound, 1 a mismatch, 2 a folder that could not be run or had nothing to compare). `verify` runs one folder
 * (default: here, {@link verifyFixture}; `verify --browser` runs it in a browser).
 */
export async function runVerify(
  dirs: string[],
  options: VerifyCommandOptions = {},
  verify: (dir: string, options: RunOptions) => Promise<FixtureReport> = verifyFixture,
): Promise<number> {
  const reports: FixtureReport[] = [];
  for (const dir of dirs) {
    let report: FixtureReport;
    try {
      report = await verify(dir, options);
    } catch (error) {
      if (!(error instanceof InternVLError)) throw error;
      const message = error.message.replace(/\s*\n\s*/g, ' ');
      process.stderr.write(`error: ${message}\n`);
      report = { dir, name: dir, runner: null, compared: [], skipped: [], status: 2, error: message, seconds: 0 };
      reports.push(report);
      continue;
    }
    reports.push(report);
    if (!options.json) process.stdout.write(`${reports.length > 1 ? '\n' : ''}${formatReport(report)}`);
    if (report.compared.length === 0) process.stderr.write(`error: ${dir}: no golden tensor could be compared\n`);
  }
  if (options.json) process.stdout.write(reportsToJson(reports));
  else process.stdout.write(`\n${summaryLine(reports)}\n`);
  return Math.max(0, ...reports.map((r) => r.status));
}

/** The overall verdict after the per-fixture tables: how many fixtures passed, which did not. */
export function summaryLine(reports: readonly FixtureReport[]): string {
  const bad = reports.filter((r) => r.status !== 0);
  const tensors = reports.reduce((n, r) => n + r.compared.length, 0);
  const seconds = reports.reduce((t, r) => t + r.seconds, 0).toFixed(1);
  if (bad.length === 0)
    return `verified ${reports.length} fixture${reports.length === 1 ? '' : 's'}, ${tensors} tensors, all within bound (${seconds} s)`;
  const what = (r: FixtureReport) => `${r.name} (${r.status === 1 ? 'mismatch' : 'not verified'})`;
  return `FAILED ${bad.length} of ${reports.length} fixtures: ${bad.map(what).join(', ')}`;
}
