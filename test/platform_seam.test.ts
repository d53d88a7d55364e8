/**
 * The platform seam holds: core/, models/, processing/, tasks/ and web/ reach Node only through the few Node
 * implementation files listed here, so the library bundles for a browser.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { builtinModules } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';
import type { InferenceSession } from 'onnxruntime-common';
import { GraphBuilder } from '../src/core/graph.js';
import { createSession, ModelSession, setThreadBudget, Tensor } from '../src/core/session.js';
import { REPO } from './helpers/cli.js';

const LAYERS = ['core', 'models', 'processing', 'tasks', 'web'];
/** The Node implementations of the seams (paths under src/, a trailing `/` is a folder; the Hub client is reached through `io.modelResolver`). Keep this list short. */
const NODE_IMPLEMENTATIONS = ['core/node/', 'processing/node/', 'core/hub.ts', 'core/hub/'];
const NODE_ONLY_PACKAGES = ['sharp', 'onnxruntime-node'];

const isNodeImplementation = (rel: string) =>
  NODE_IMPLEMENTATIONS.some((p) => (p.endsWith('/') ? rel.startsWith(p) : rel === p));

function neutralFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.ts')) out.push(full);
    }
  };
  for (const layer of LAYERS) walk(path.join(REPO, 'src', layer));
  return out.filter((f) => !isNodeImplementation(path.relative(path.join(REPO, 'src'), f)));
}

/** Module specifiers a file loads at run time (type-only imports are erased and do not count). */
function runtimeImports(source: string): string[] {
  const specifiers: string[] = [];
  const statement = /^\s*(import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm;
  for (const m of source.matchAll(statement)) if (!m[2]) specifiers.push(m[3]);
  for (const m of source.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) specifiers.push(m[1]);
  return specifiers;
}

test('core, models, processing and tasks import Node only through the seam implementations', () => {
  const builtins = new Set(builtinModules);
  const offences: string[] = [];
  const files = neutralFiles();
  assert.ok(files.length > 30, `found ${files.length} platform-neutral files`);
  for (const file of files) {
    const rel = path.relative(path.join(REPO, 'src'), file);
    for (const spec of runtimeImports(fs.readFileSync(file, 'utf8'))) {
      const target = spec.startsWith('.')
        ? path.relative(path.join(REPO, 'src'), path.resolve(path.dirname(file), spec)).replace(/\.js$/, '.ts')
        : null;
      if (
        spec.startsWith('node:') ||
        builtins.has(spec) ||
        NODE_ONLY_PACKAGES.includes(spec) ||
        (target !== null && isNodeImplementation(target))
      )
        offences.push(`${rel} imports ${spec}`);
    }
  }
  assert.deepEqual(offences, []);
});

test('the scan sees what it must refuse', () => {
  assert.deepEqual(
    runtimeImports(
      "import fs from 'node:fs';\nimport type { X } from './node/files.js';\nexport { y } from 'sharp';\nconst m = import('os');",
    ),
    ['node:fs', 'sharp', 'os'],
  );
});

test('the platform-neutral library bundles for the browser', async () => {
  const src = path.join(REPO, 'src');
  const entry = neutralFiles()
    .map((f) => `export * as m${path.relative(src, f).replace(/\W/g, '_')} from './${path.relative(src, f)}';`)
    .join('\n');
  const result = await build({
    stdin: { contents: entry, resolveDir: src, loader: 'ts', sourcefile: 'neutral-entry.ts' },
    bundle: true,
    platform: 'browser',
    format: 'esm',
    write: false,
    logLevel: 'silent',
    metafile: true,
  });
  const inputs = Object.keys(result.metafile.inputs);
  assert.ok(
    inputs.some((i) => i.includes('onnxruntime-common')),
    'bundles onnxruntime-common',
  );
  assert.deepEqual(
    inputs.filter((i) => /onnxruntime-node|sharp|src\/(core|processing)\/node\//.test(i)),
    [],
  );
});

test('sessions share one thread budget: runs wait while their threads are taken', async () => {
  setThreadBudget(4);
  const order: string[] = [];
  const gates = new Map<string, () => void>();
  const fake = (name: string) =>
    ({
      run: () => {
        order.push(`start ${name}`);
        return new Promise((resolve) => gates.set(name, () => resolve({})));
      },
    }) as unknown as InferenceSession;
  const [a, b, c] = [
    new ModelSession('a', fake('a'), 3),
    new ModelSession('b', fake('b'), 2),
    new ModelSession('c', fake('c'), 1),
  ];
  const runs = [a.run({}), b.run({}), c.run({})];
  await new Promise((resolve) => setImmediate(resolve));
  // b needs 2 of the 1 free thread and waits; c, behind it, waits too (first come, first served).
  assert.deepEqual(order, ['start a']);
  gates.get('a')!();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(order, ['start a', 'start b', 'start c']);
  gates.get('b')!();
  gates.get('c')!();
  await Promise.all(runs);
  assert.throws(() => setThreadBudget(0), /thread budget must be an integer >= 1/);
});

test('a session never takes more threads than the budget', async () => {
  setThreadBudget(1);
  const g = new GraphBuilder('add', null);
  g.output(g.node('Add', [g.input('x', 'float32', [2]), g.input('y', 'float32', [2])]), 'z');
  const session = await createSession(g, { threads: 8 });
  try {
    assert.equal(session.threads, 1);
    const x = new Tensor('float32', Float32Array.from([1, 2]), [2]);
    assert.deepEqual([...((await session.run({ x, y: x })).z.data as Float32Array)], [2, 4]);
  } finally {
    await session.release();
  }
});
