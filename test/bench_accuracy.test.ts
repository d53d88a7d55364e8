import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { benchAccuracy } from '../src/apps/bench/accuracy.js';
import { agreeingPrefix, compareTensors, compareValues, EXACT_BOUND } from '../src/apps/verify/compare.js';
import { DATA } from './helpers/cli.js';

const fixture = (name: string) => path.join(DATA, 'fixtures', name);

test('exact comparisons name the first differing index, also for a sequence of another length', () => {
  const golden = { data: [5, 6, 7, 8], shape: [1, 4] };
  const differ = compareTensors('out.ids', { data: [5, 6, 9, 9], shape: [1, 4] }, golden, EXACT_BOUND);
  assert.equal(differ.ok, false);
  assert.equal(differ.firstMismatch, 2);
  assert.match(differ.note!, /2 differ, the first at index 2/);
  assert.equal(compareTensors('out.ids', { data: [5, 6], shape: [1, 2] }, golden, EXACT_BOUND).firstMismatch, 2);
  assert.equal(compareValues('meta.ids', [5, 6, 7], [5, 6, 7, 8]).firstMismatch, 3);
  assert.equal(compareTensors('out.ids', golden, golden, EXACT_BOUND).firstMismatch, undefined);
  assert.equal(agreeingPrefix([1, 2, 3], [1, 2, 4]), 2);
  assert.equal(agreeingPrefix([1, 2], [1, 2, 4]), 2);
});

test('bench accuracy: float32 is the goldens, each format its measured error and greedy divergence', async () => {
  const report = await benchAccuracy({
    dirs: [fixture('intern_vit_ln'), fixture('chat_qwen2'), fixture('preprocess')],
    threads: 1,
  });
  assert.deepEqual(report.skipped, [{ dir: fixture('preprocess'), reason: 'no weights (runner preprocess)' }]);
  const record = (name: string, weights: object) =>
    report.records.find((r) => r.fixture === name && JSON.stringify(r.weights) === JSON.stringify(weights))!;

  const vitFp32 = record('intern_vit_ln', { vision: 'fp32' });
  assert.deepEqual(vitFp32.linears, { quantized: 0, total: 8 });
  assert.ok(vitFp32.maxRelError.embeddings! < 1e-5);
  assert.equal(vitFp32.withinFloat32Bounds, true);
  // Width 48: only fc2 (192 input columns) of the 2 layers reaches the quantizer's 64 columns.
  const vitInt8 = record('intern_vit_ln', { vision: 'int8' });
  assert.deepEqual(vitInt8.linears, { quantized: 2, total: 8 });
  assert.ok(vitInt8.maxRelError.embeddings! > 1e-4 && vitInt8.maxRelError.embeddings! < 1e-2);

  assert.equal(report.records.filter((r) => r.fixture === 'chat_qwen2').length, 6);
  const chatFp32 = record('chat_qwen2', { llm: 'fp32', vision: 'fp32' });
  assert.deepEqual(chatFp32.firstDifferingStep, { 'out.generated_ids': null });
  assert.ok(chatFp32.maxRelError.logits! < 1e-5);
  const int8 = record('chat_qwen2', { llm: 'int8', vision: 'fp32' });
  assert.deepEqual(int8.firstDifferingStep, { 'out.generated_ids': null });
  assert.ok(int8.maxRelError.logits! > 1e-3 && int8.maxRelError.logits! < 5e-2);
  assert.equal(int8.withinFloat32Bounds, false);
  const int4 = record('chat_qwen2', { llm: 'int4', vision: 'fp32' });
  const step = int4.firstDifferingStep['out.generated_ids'];
  assert.ok(step !== null && step >= 1 && step <= 8, `int4 greedy ids differ: ${step}`);
  // The step logits are compared up to and including the first differing token only.
  assert.equal(typeof int4.tensors[`out.greedy_step_logits${step === 8 ? '' : `[:${step}]`}`], 'number');
  assert.ok(int4.maxRelError.logits! > int8.maxRelError.logits!);
});
