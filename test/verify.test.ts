import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { writeSafetensors } from '../src/core/node/files.js';
import { SafetensorsFile, readEntrySync, type DType } from '../src/core/safetensors.js';
import {
  compareTensors,
  compareValues,
  defaultBound,
  formatTable,
  EXACT_BOUND,
  MODEL_BOUND,
  PIXEL_BOUND,
} from '../src/apps/verify/compare.js';
import { verifyFixture } from '../src/apps/verify/index.js';
import { registerFixtureRunner } from '../src/apps/verify/registry.js';
import { copyFolder, DATA, errorLines, runCli, tempDir } from './helpers/cli.js';

const RMS = path.join(DATA, 'fixtures', 'intern_vit_rms');
const LN = path.join(DATA, 'fixtures', 'intern_vit_ln');
const PREPROCESS = path.join(DATA, 'fixtures', 'preprocess');
const CHAT_E2E = path.join(DATA, 'fixtures', 'chat_e2e');
const CLIP_E2E = path.join(DATA, 'fixtures', 'clip_e2e');

/** Rewrites a safetensors file with some tensors replaced or removed (`null`). */
async function rewrite(file: string, changes: Record<string, ((data: Float32Array) => void) | null>): Promise<void> {
  const st = await SafetensorsFile.open(file);
  const tensors: Record<string, { dtype: DType; shape: number[]; data: ArrayBufferView }> = {};
  for (const [name, entry] of st.tensors) {
    if (changes[name] === null) continue;
    const bytes = new Uint8Array(readEntrySync(entry));
    if (changes[name]) {
      const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      changes[name]!(values);
    }
    tensors[name] = { dtype: entry.dtype, shape: entry.shape, data: bytes };
  }
  writeSafetensors(file, tensors, st.metadata);
}

function rowsOf(stdout: string): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of stdout.split('\n')) {
    const cells = line.trim().split(/\s{2,}/);
    if (cells[0]?.startsWith('out.')) rows.set(cells[0], cells);
  }
  return rows;
}

test('compareTensors: errors, bounds, shape mismatch, NaN', () => {
  const golden = { data: Float32Array.from([1, -2, 4]), shape: [3] };
  const exact = compareTensors('out.x', { data: [1, -2, 4], shape: [3] }, golden);
  assert.equal(exact.ok, true);
  assert.equal(exact.maxAbsError, 0);
  assert.equal(exact.maxRelError, 0);

  const near = compareTensors('out.x', { data: [1, -2, 4.0002], shape: [3] }, golden);
  assert.ok(Math.abs(near.maxAbsError - 0.0002) < 1e-9);
  assert.ok(Math.abs(near.maxRelError - 0.00005) < 1e-9, 'relative to max |golden| = 4');
  assert.equal(near.ok, true);
  assert.equal(compareTensors('out.x', { data: [1, -2, 4.001], shape: [3] }, golden).ok, false);

  const shape = compareTensors('out.x', { data: [1, -2, 4], shape: [1, 3] }, golden);
  assert.equal(shape.ok, false);
  assert.match(shape.note!, /computed shape \[1,3\]/);

  const nan = compareTensors('out.x', { data: [1, NaN, 4], shape: [3] }, golden);
  assert.equal(nan.ok, false);
  assert.match(nan.note!, /NaN/);

  const zero = compareTensors('out.z', { data: [0, 1e-9], shape: [2] }, { data: [0, 0], shape: [2] });
  assert.equal(zero.maxRelError, Infinity);
  assert.equal(zero.ok, false);

  assert.deepEqual(defaultBound('out.image3.pixel_values'), PIXEL_BOUND);
  assert.deepEqual(defaultBound('out.image3.target_aspect_ratio', { dtype: 'I64' }), EXACT_BOUND);
  assert.deepEqual(defaultBound('out.last_hidden_state', { dtype: 'F32' }), MODEL_BOUND);
  const pixels = compareTensors('out.a.pixel_values', { data: [0.03], shape: [1] }, { data: [0], shape: [1] });
  assert.equal(pixels.ok, true, 'pixel tensors: 0.04 absolute');
  const grid = compareTensors('out.grid', { data: [2, 1], shape: [2] }, { data: [2, 2], shape: [2] }, EXACT_BOUND);
  assert.equal(grid.ok, false);
});

test('formatTable aligns columns', () => {
  const table = formatTable(
    ['a', 'num'],
    [
      ['long name', '1'],
      ['x', '123'],
    ],
    [false, true],
  );
  assert.equal(table, ['a          num', '---------  ---', 'long name    1', 'x          123'].join('\n'));
});

test('verify intern_vit_rms: every golden compared, within 1e-4', async () => {
  const r = await runCli(['verify', RMS]);
  assert.equal(r.code, 0, r.stderr);
  const rows = rowsOf(r.stdout);
  const expected = [
    'out.last_hidden_state',
    'out.pooler_output',
    'out.hidden_states.0',
    'out.hidden_states.1',
    'out.hidden_states.2',
    'out.hidden_states.3',
    'out.alt.last_hidden_state',
    'out.alt.pooler_output',
  ];
  assert.deepEqual([...rows.keys()].sort(), expected.sort());
  for (const [name, cells] of rows) {
    assert.equal(cells.at(-1), 'ok', name);
    assert.ok(Number(cells[3]) < 1e-5, `${name} max rel error ${cells[3]}`);
  }
  assert.match(r.stdout, /8 tensors compared, all within bound/);
  assert.doesNotMatch(r.stdout, /skipped/);
});

test('verify intern_vit_ln (with the alt size) and several folders at once, --json', async () => {
  const r = await runCli(['verify', '--json', LN, RMS]);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.ok, true);
  assert.equal(report.fixtures.length, 2);
  const ln = report.fixtures[0];
  assert.equal(ln.runner, 'intern_vit');
  assert.equal(ln.status, 0);
  assert.deepEqual(ln.skipped, []);
  const names = ln.compared.map((c: { name: string }) => c.name);
  assert.ok(names.includes('out.alt.last_hidden_state') && names.includes('out.alt.pooler_output'));
  assert.equal(names.length, 7);
  for (const c of ln.compared) {
    assert.equal(c.ok, true);
    assert.deepEqual(c.bound, { metric: 'relative', value: 1e-4 });
    assert.ok(c.max_rel_error < 1e-5, 'snake_case keys, as every JSON the CLI prints');
  }
});

test('verify preprocess: tiles and grids of real photos', async () => {
  const r = await runCli(['verify', PREPROCESS]);
  assert.equal(r.code, 0, r.stderr);
  const rows = rowsOf(r.stdout);
  assert.deepEqual([...rows.keys()].sort(), [
    'out.image3.pixel_values',
    'out.image3.target_aspect_ratio',
    'out.image5.pixel_values',
    'out.image5.target_aspect_ratio',
  ]);
  assert.equal(rows.get('out.image5.pixel_values')![1], '[3,3,448,448]');
  assert.equal(rows.get('out.image5.target_aspect_ratio')![4], 'exact');
  for (const [name, cells] of rows) assert.equal(cells.at(-1), 'ok', name);
});

test('a wrong golden → exit 1 with the failing row', async () => {
  const dir = copyFolder(LN);
  await rewrite(path.join(dir, 'io.safetensors'), {
    'out.pooler_output': (d) => {
      d[5] += 0.01;
    },
  });
  const r = await runCli(['verify', dir]);
  assert.equal(r.code, 1, r.stderr);
  const rows = rowsOf(r.stdout);
  assert.equal(rows.get('out.pooler_output')!.at(-1), 'FAIL');
  assert.equal(rows.get('out.last_hidden_state')!.at(-1), 'ok');
  assert.match(r.stdout, /1 MISMATCH/);
});

test('goldens no runner computes are listed as skipped; nothing compared → exit 2', async () => {
  const dir = copyFolder(LN);
  const io = path.join(dir, 'io.safetensors');
  await rewrite(io, {
    'out.last_hidden_state': null,
    'out.pooler_output': null,
    'out.hidden_states.0': null,
    'out.hidden_states.1': null,
    'out.hidden_states.2': null,
    'out.alt.last_hidden_state': null,
    'out.alt.pooler_output': null,
  });
  // Add a golden the runner does not know.
  const st = await SafetensorsFile.open(io);
  const input = st.tensors.get('in.pixel_values')!;
  writeSafetensors(io, {
    'in.pixel_values': {
      dtype: 'F32',
      shape: input.shape,
      data: readEntrySync(input),
    },
    'out.attentions.0': { dtype: 'F32', shape: [1], data: Float32Array.from([0]) },
  });
  const r = await runCli(['verify', dir]);
  assert.equal(r.code, 2);
  assert.match(r.stdout, /skipped out\.attentions\.0: runner 'intern_vit' does not compute it/);
  assert.match(r.stdout, /nothing compared/);
  assert.match(r.stderr, /^error: .*no golden tensor could be compared\n$/);
});

test('folders verify cannot run → exit 2 with one error line', async () => {
  const missing = await runCli(['verify', path.join(tempDir(), 'nope')]);
  assert.equal(missing.code, 2);
  assert.deepEqual(errorLines(missing.stderr).length, 1);
  assert.match(missing.stderr, /^error: .*nope: no such fixture folder\n$/);

  const llm = tempDir();
  fs.writeFileSync(
    path.join(llm, 'config.json'),
    JSON.stringify({ architectures: ['LlamaForCausalLM'], model_type: 'llama' }),
  );
  const noRunner = await runCli(['verify', llm]);
  assert.equal(noRunner.code, 2);
  assert.match(
    noRunner.stderr,
    /^error: .*no verify runner knows this fixture \(architectures \["LlamaForCausalLM"\].*runners: intern_vit, preprocess\b.*\)\n$/,
  );

  const file = await runCli(['verify', path.join(LN, 'config.json')]);
  assert.equal(file.code, 2);
  assert.match(file.stderr, /not a folder/);
});

test('a config with a missing field → exit 2, one line naming the field', async () => {
  const dir = copyFolder(RMS);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  delete config.hidden_size;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const r = await runCli(['verify', dir]);
  assert.equal(r.code, 2);
  assert.equal(errorLines(r.stderr).length, 1, r.stderr);
  assert.match(r.stderr, /^error: .*config\.json: field 'hidden_size' is missing\n$/);

  fs.writeFileSync(path.join(dir, 'config.json'), '{"architectures": ["InternVisionModel"');
  const broken = await runCli(['verify', dir]);
  assert.equal(broken.code, 2);
  assert.match(broken.stderr, /^error: .*config\.json: not valid JSON/);
});

test('bad model.safetensors (truncated, lying, overlapping) → exit 2, one line', async () => {
  const cases: Array<[string, (file: string) => void, RegExp]> = [
    ['truncated', (f) => fs.truncateSync(f, fs.statSync(f).size - 100), /truncated or header lies/],
    [
      'lying header length',
      (f) => {
        const b = fs.readFileSync(f);
        b.writeBigUInt64LE(2n ** 40n, 0);
        fs.writeFileSync(f, b);
      },
      /header length \d+ is implausible/,
    ],
    [
      'overlapping',
      (f) => {
        const b = fs.readFileSync(f);
        const n = Number(b.readBigUInt64LE(0));
        const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
        const [first, second] = Object.keys(header).filter(
          (k) => k !== '__metadata__' && header[k].dtype === 'F32' && header[k].shape.length === 1,
        );
        // Point the second tensor at the first one's bytes when they have the same size; else shift it back by 4 bytes.
        const [b1] = header[first].data_offsets;
        const [b2, e2] = header[second].data_offsets;
        header[second].data_offsets = b2 > b1 ? [b2 - 4, e2 - 4] : [b2 + 4, e2 + 4];
        let text = JSON.stringify(header);
        text += ' '.repeat(Math.max(0, n - text.length));
        assert.equal(text.length, n, 'header must keep its length');
        fs.writeFileSync(f, Buffer.concat([b.subarray(0, 8), Buffer.from(text), b.subarray(8 + n)]));
      },
      /overlap/,
    ],
  ];
  for (const [label, corrupt, pattern] of cases) {
    const dir = copyFolder(LN);
    corrupt(path.join(dir, 'model.safetensors'));
    const r = await runCli(['verify', dir]);
    assert.equal(r.code, 2, `${label}: ${r.stderr}`);
    assert.equal(errorLines(r.stderr).length, 1, `${label}: ${r.stderr}`);
    assert.match(r.stderr, /^error: .*model\.safetensors: /, label);
    assert.match(r.stderr, pattern, label);
  }
});

test('runners registered later are used, and their skipped strings normalised', async () => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architectures: ['ToyModel'] }));
  writeSafetensors(path.join(dir, 'io.safetensors'), {
    'out.a': { dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) },
    'out.b': { dtype: 'F32', shape: [1], data: Float32Array.from([3]) },
    'out.c': { dtype: 'F32', shape: [1], data: Float32Array.from([3]) },
  });
  registerFixtureRunner({
    name: 'toy',
    matches: (f) => (f.config?.raw.architectures as string[] | undefined)?.[0] === 'ToyModel',
    run: async (f) => ({
      compared: [f.compare('out.a', { data: [1, 2], shape: [2] })],
      skipped: ['out.b: needs a tokenizer'],
    }),
  });
  assert.throws(
    () => registerFixtureRunner({ name: 'toy', matches: () => false, run: async () => [] }),
    /registered twice/,
  );
  const report = await verifyFixture(dir);
  assert.equal(report.runner, 'toy');
  assert.equal(report.status, 0);
  assert.deepEqual(report.skipped, [
    { name: 'out.b', reason: 'needs a tokenizer' },
    { name: 'out.c', reason: "runner 'toy' does not compute it" },
  ]);
});

test('exact comparisons of fractions hold at float32 precision, integers stay exact', () => {
  // recall 0.1 computed in float32 by the official code and stored as a double.
  assert.equal(compareValues('m', [0.1], [Math.fround(0.1)]).ok, true);
  assert.equal(
    compareTensors('out.r', { data: [0.1], shape: [1] }, { data: Float32Array.of(0.1), shape: [1] }, EXACT_BOUND).ok,
    true,
  );
  assert.equal(compareValues('m', [0.1], [0.1000001]).ok, false);
  assert.equal(compareValues('m', [16777217], [16777216]).ok, false, 'ids above 2^24 are not rounded to float32');
  assert.equal(compareValues('m', [1, 2], [1, 2, 3]).ok, false);
});

/** Edits meta.json of a copied end-to-end fixture. */
function editMeta(dir: string, edit: (meta: Record<string, any>) => void): void {
  const file = path.join(dir, 'golden', 'meta.json');
  const meta = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(meta);
  fs.writeFileSync(file, JSON.stringify(meta));
}

test('a near-tie at step k: the greedy ids and every per-step golden are compared on their first k rows', async () => {
  const dir = copyFolder(CHAT_E2E);
  const k = 5;
  editMeta(dir, (meta) => {
    meta.chat.turns[0].greedy_top2_margins[k - 1] = 5e-4;
  });
  // What a tie-level difference looks like in the goldens: other tokens (and top-5 rows) from step k + 1 on.
  const io = path.join(dir, 'golden', 'io.safetensors');
  const st = await SafetensorsFile.open(io);
  const tensors: Record<string, { dtype: DType; shape: number[]; data: ArrayBufferView }> = {};
  for (const [name, entry] of st.tensors) {
    const bytes = new Uint8Array(readEntrySync(entry));
    if (name === 'out.turn1.generated_ids' || name === 'out.turn1.step_top5_ids') {
      const ids = new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
      const from = name.endsWith('generated_ids') ? k : k * 5;
      for (let i = from; i < ids.length; i++) ids[i] = 7n;
    }
    if (name === 'out.turn1.step_top5_logits') {
      const logits = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      for (let i = k * 5; i < logits.length; i++) logits[i] = 1e6;
    }
    tensors[name] = { dtype: entry.dtype, shape: entry.shape, data: bytes };
  }
  writeSafetensors(io, tensors, st.metadata);

  const r = await runCli(['verify', dir]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const rows = rowsOf(r.stdout);
  for (const name of ['generated_ids', 'step_top5_ids', 'step_top5_logits']) {
    const row = rows.get(`out.turn1.${name}[:${k}]`);
    assert.ok(row, `${name}: ${r.stdout}`);
    assert.equal(row.at(-1), 'ok');
  }
  assert.equal(rows.get('out.turn2.step_top5_ids')!.at(-1), 'ok');
  assert.match(r.stdout, new RegExp(`skipped out\\.turn1\\.generated_ids\\[${k}:\\]: golden top-2 margin 5\\.00e-4`));
  assert.doesNotMatch(r.stdout, /does not compute it/);
  assert.match(r.stdout, /verified 1 fixture, \d+ tensors, all within bound/);
});

test('recalls stored as float32 fractions verify within float32 rounding, not beyond', async () => {
  const dir = copyFolder(CLIP_E2E);
  // 0.125 + 3e-9 is 0.125 in float32 (half an ulp there is 7.5e-9); 0.125 + 1e-7 is not.
  editMeta(dir, (meta) => {
    meta.retrieval.modes.C['image_retrieval_recall@1'] += 3e-9;
  });
  const within = await runCli(['verify', dir]);
  assert.equal(within.code, 0, within.stdout + within.stderr);
  assert.match(within.stdout, /meta\.retrieval\.C \(4 recalls\)\s+\[4\]\s+3\.00e-9.*exact\s+ok/);
  editMeta(dir, (meta) => {
    meta.retrieval.modes.C['image_retrieval_recall@1'] += 1e-7;
  });
  const beyond = await runCli(['verify', dir]);
  assert.equal(beyond.code, 1);
  assert.match(beyond.stdout, /meta\.retrieval\.C \(4 recalls\).*FAIL/);
  assert.match(beyond.stdout, /FAILED 1 of 1 fixtures: \S+ \(mismatch\)/);
});
