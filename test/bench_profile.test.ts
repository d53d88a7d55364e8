import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { readOnnxProfile } from '../src/apps/bench/profile.js';
import { InternVLChatModel } from '../src/models/internvl_chat.js';
import { DATA, tempDir } from './helpers/cli.js';

test('readOnnxProfile: kernel time per operator type over the runs after the skipped ones', () => {
  const dir = tempDir();
  const run = (ts: number, dur: number) => ({ cat: 'Session', name: 'model_run', ts, dur });
  const kernel = (name: string, op: string, ts: number, dur: number) => ({
    cat: 'Node',
    name: `${name}_kernel_time`,
    ts,
    dur,
    args: { op_name: op },
  });
  const events = [
    run(0, 1000),
    kernel('mm0', 'MatMul', 10, 900),
    run(2000, 500),
    kernel('mm0', 'MatMul', 2010, 300),
    kernel('add0', 'Add', 2320, 100),
    run(3000, 400),
    kernel('mm0', 'MatMul', 3010, 200),
    kernel('mm1', 'MatMul', 3220, 100),
    { cat: 'Node', name: 'mm0_fence_before', ts: 3005, dur: 5 },
  ];
  fs.writeFileSync(path.join(dir, 'prof_2026.json'), JSON.stringify(events));
  const profile = readOnnxProfile(dir, 'prof', 1);
  assert.equal(profile.runs, 2);
  assert.deepEqual(profile.modelRunMs, [0.5, 0.4]);
  assert.equal(profile.kernelMs, 0.35, '(300 + 100 + 200 + 100) µs over 2 runs');
  assert.deepEqual(profile.ops, [
    { op: 'MatMul', ms: 0.3, share: 0.8571, nodes: 2 },
    { op: 'Add', ms: 0.05, share: 0.1429, nodes: 1 },
  ]);
  assert.throws(() => readOnnxProfile(dir, 'other', 0), /no profile other\*\.json/);
});

test('a language model loaded with a profile prefix writes its decode runs to the profile', async () => {
  const dir = tempDir();
  const model = await InternVLChatModel.load(path.join(DATA, 'fixtures', 'chat_qwen2'), {
    session: { threads: 1 },
    llmSession: { threads: 1, profileFilePrefix: path.join(dir, 'decode') },
  });
  try {
    const lm = model.language;
    const decoder = lm.batchDecoder({ maxSequences: 1, maxLength: 8 });
    const sequence = decoder.addSequence();
    await decoder.prefill(sequence, { ids: [1, 2, 3] });
    for (const token of [4, 5, 6]) await decoder.decode([sequence], [token]);
    lm.endProfiling();
  } finally {
    await model.release();
  }
  const profile = readOnnxProfile(dir, 'decode', 1);
  assert.equal(profile.runs, 3, 'the prefill run skipped, three decode steps');
  assert.ok(profile.ops.some((o) => o.op === 'GroupQueryAttention' && o.nodes === 2));
  // One thread: the kernels run one after the other inside each run.
  const meanRunMs = profile.modelRunMs.reduce((a, b) => a + b, 0) / profile.runs;
  assert.ok(
    profile.kernelMs > 0 && meanRunMs >= profile.kernelMs,
    `${meanRunMs} ms per run, ${profile.kernelMs} in kernels`,
  );
});
