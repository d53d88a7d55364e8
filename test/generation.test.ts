/**
 * Generation on a real trained model (stories260K, llama2.c's TinyStories LLaMA) and on the decoding rules.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DATA, runCli } from './helpers/cli.js';
import { Checkpoint } from '../src/core/safetensors.js';
import { readConfig } from '../src/models/config.js';
import { CausalLM, parseLlmConfig } from '../src/models/llm.js';
import {
  beamSearch,
  generate,
  generateBatch,
  streamTokens,
  TokenChooser,
  type Prompt,
} from '../src/tasks/generation.js';

const TINY = path.join(DATA, 'models', 'tiny-llama-stories260k');
const expected = JSON.parse(fs.readFileSync(path.join(TINY, 'expected_greedy.json'), 'utf8')) as {
  prompt_ids: number[];
  greedy_ids: number[];
};

const lmPromise = CausalLM.load(await Checkpoint.open(TINY), parseLlmConfig(await readConfig(TINY)));
const prompt = (lm: CausalLM, ids: number[]): Prompt => ({ ids, embeds: lm.embedTokens(ids) });

test("internvl generate reproduces the real model's greedy ids exactly (KV cache)", async () => {
  const result = await runCli([
    'generate',
    '--model',
    TINY,
    '--input-ids',
    expected.prompt_ids.join(','),
    '--max-new-tokens',
    String(expected.greedy_ids.length),
    '--json',
  ]);
  assert.equal(result.code, 0, result.stderr);
  const output = JSON.parse(result.stdout) as { ids: number[]; prompt_tokens: number; finish_reason: string };
  assert.deepEqual(output.ids, expected.greedy_ids);
  assert.equal(output.prompt_tokens, 1);
  assert.equal(output.finish_reason, 'length');
  const plain = await runCli(['generate', '--model', TINY, '--input-ids', '1', '--max-new-tokens', '5']);
  assert.equal(plain.stdout.trim(), expected.greedy_ids.slice(0, 5).join(','));
});

test('cached decoding equals re-running the whole sequence at every step', async () => {
  const lm = await lmPromise;
  const ids = [...expected.prompt_ids];
  for (let step = 0; step < 12; step++) {
    const S = ids.length;
    const { logits } = await lm.step({
      embeds: lm.embedTokens(ids),
      batch: 1,
      seq: S,
      positions: Int32Array.from({ length: S }, (_, i) => i),
      attentionMask: new Uint8Array(S).fill(1),
      logitIndices: [S - 1],
      cache: lm.emptyCache(1),
    });
    let best = 0;
    for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
    ids.push(best);
  }
  assert.deepEqual(ids.slice(1), expected.greedy_ids.slice(0, 12));
});

test('streaming yields the same tokens and stops at a stop id', async () => {
  const lm = await lmPromise;
  const streamed: number[] = [];
  const stop = expected.greedy_ids[6];
  const stream = streamTokens(lm, prompt(lm, [1]), { maxNewTokens: 50, stopTokenIds: [stop] });
  let next = await stream.next();
  while (!next.done) {
    streamed.push(next.value);
    next = await stream.next();
  }
  assert.deepEqual(streamed, expected.greedy_ids.slice(0, expected.greedy_ids.indexOf(stop) + 1));
  assert.equal(next.value, 'stop');
});

test('a batch with left padding gives each prompt the tokens it gets alone', async () => {
  const lm = await lmPromise;
  const long = [1, ...expected.greedy_ids.slice(0, 4)];
  const [a, b] = await generateBatch(lm, [prompt(lm, [1]), prompt(lm, long)], { maxNewTokens: 10 });
  assert.deepEqual(a.ids, expected.greedy_ids.slice(0, 10));
  assert.deepEqual(b.ids, expected.greedy_ids.slice(4, 14));
  assert.deepEqual([a.promptTokens, b.promptTokens], [1, 5]);
});

test('seeded sampling is reproducible; top-k 1 is greedy; cancellation stops early', async () => {
  const lm = await lmPromise;
  const sample = (seed: number) =>
    generate(lm, prompt(lm, [1]), { maxNewTokens: 16, doSample: true, temperature: 1.2, seed });
  const [x, y, z] = await Promise.all([sample(7), sample(7), sample(8)]);
  assert.deepEqual(x.ids, y.ids);
  assert.notDeepEqual(x.ids, z.ids);
  const topOne = await generate(lm, prompt(lm, [1]), { maxNewTokens: 16, doSample: true, topK: 1, seed: 3 });
  assert.deepEqual(topOne.ids, expected.greedy_ids.slice(0, 16));
  const controller = new AbortController();
  let seen = 0;
  const cancelled = await generate(lm, prompt(lm, [1]), {
    maxNewTokens: 50,
    signal: controller.signal,
    onLogits: () => {
      if (++seen === 3) controller.abort();
    },
  });
  assert.equal(cancelled.finishReason, 'cancelled');
  assert.deepEqual(cancelled.ids, expected.greedy_ids.slice(0, 3));
});

test('beam search with one beam is greedy; with more beams it scores at least as well', async () => {
  const lm = await lmPromise;
  const one = await beamSearch(lm, prompt(lm, [1]), { numBeams: 1, maxNewTokens: 12 });
  assert.deepEqual(one.ids, expected.greedy_ids.slice(0, 12));
  const score = async (ids: number[]) => {
    const all = [1, ...ids];
    const S = all.length;
    const { logits } = await lm.step({
      embeds: lm.embedTokens(all),
      batch: 1,
      seq: S,
      positions: Int32Array.from({ length: S }, (_, i) => i),
      attentionMask: new Uint8Array(S).fill(1),
      logitIndices: Array.from({ length: S - 1 }, (_, i) => i),
      cache: lm.emptyCache(1),
    });
    const V = lm.config.vocabSize;
    let total = 0;
    ids.forEach((id, i) => {
      const row = logits.subarray(i * V, (i + 1) * V);
      const max = Math.max(...row);
      total += row[id] - max - Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    });
    return total;
  };
  const five = await beamSearch(lm, prompt(lm, [1]), { numBeams: 5, maxNewTokens: 12 });
  assert.equal(five.ids.length, 12);
  assert.ok((await score(five.ids)) >= (await score(one.ids)) - 1e-4);
});

test('token choice rules: repetition penalty, suppression, minimum length, top-p', () => {
  const logits = Float32Array.from([2, -1, 1.5, 0.5]);
  const greedy = new TokenChooser({});
  assert.equal(greedy.choose(logits, []), 0);
  // Penalty 2 halves the positive logit of the repeated token 0 (2 → 1) so token 2 (1.5) wins.
  assert.equal(new TokenChooser({ repetitionPenalty: 2 }).choose(logits, [0]), 2);
  assert.equal(new TokenChooser({ suppressTokenIds: [0] }).choose(logits, []), 2);
  assert.equal(new TokenChooser({ stopTokenIds: [0], minNewTokens: 2 }).choose(logits, [3]), 2);
  assert.equal(new TokenChooser({ stopTokenIds: [0], minNewTokens: 2 }).choose(logits, [3, 3]), 0);
  // top-p 0.5: token 0 alone holds ≥ 50% of the mass, so sampling always returns it.
  const topP = new TokenChooser({ doSample: true, topP: 0.5, seed: 1 });
  for (let i = 0; i < 20; i++) assert.equal(topP.choose(logits, []), 0);
});
