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
import { UsageError } from '../src/core/errors.js';
import { loadTokenizer } from '../src/processing/tokenizers/index.js';
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
const prompt = (_: CausalLM, ids: number[]): Prompt => ({ ids });

/** Logits at every position of `ids`, from one prefill over all of them (no cache reuse). */
async function fullLogits(lm: CausalLM, ids: number[]): Promise<Float32Array> {
  const decoder = lm.batchDecoder({ maxSequences: 1, maxLength: ids.length });
  return decoder.prefill(decoder.addSequence(), { ids }, { allPositions: true });
}

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
  // A folder without a tokenizer prints the ids, and says so.
  const plain = await runCli(['generate', '--model', TINY, '--input-ids', '1', '--max-new-tokens', '5']);
  assert.equal(plain.stdout.trim(), expected.greedy_ids.slice(0, 5).join(','));
  assert.match(plain.stderr, /notice: .*tiny-llama-stories260k has no tokenizer; printing token ids\n$/);
});

test('internvl generate --prompt prints the generated text; --json adds it to the ids', async () => {
  const CHAT = path.join(DATA, 'fixtures', 'chat_e2e');
  const tokenizer = await loadTokenizer(CHAT);
  const args = ['generate', '--model', CHAT, '--prompt', 'Hello, my name is', '--max-new-tokens', '6'];
  const json = await runCli([...args, '--json']);
  assert.equal(json.code, 0, json.stderr);
  const output = JSON.parse(json.stdout) as { ids: number[]; text: string; prompt_tokens: number };
  assert.equal(output.ids.length, 6);
  assert.equal(output.text, tokenizer.decode(output.ids, { skipSpecialTokens: true }));
  const promptIds = tokenizer.encode('Hello, my name is');
  assert.equal(output.prompt_tokens, promptIds.length);
  // The same prompt as ids continues the same way.
  const byIds = await runCli([
    'generate',
    '--model',
    CHAT,
    '--input-ids',
    promptIds.join(','),
    '--max-new-tokens',
    '6',
  ]);
  assert.equal(byIds.code, 0, byIds.stderr);
  assert.equal(byIds.stdout, `${output.text}\n`);
  const text = await runCli(args);
  assert.equal(text.stdout, `${output.text}\n`);

  const noTokenizer = await runCli(['generate', '--model', TINY, '--prompt', 'Once']);
  assert.equal(noTokenizer.code, 2);
  assert.match(noTokenizer.stderr, /^error: internvl generate: --prompt needs a tokenizer, and .* has none/);
});

test('cached decoding equals re-running the whole sequence at every step', async () => {
  const lm = await lmPromise;
  const ids = [...expected.prompt_ids];
  for (let step = 0; step < 12; step++) {
    const V = lm.config.vocabSize;
    const logits = (await fullLogits(lm, ids)).subarray((ids.length - 1) * V);
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

test('a batch of prompts of different lengths gives each prompt the tokens it gets alone', async () => {
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
    const logits = await fullLogits(lm, [1, ...ids]);
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

test('token choice rules: repetition, frequency and presence penalties, suppression, minimum length, top-p', () => {
  const logits = Float32Array.from([2, -1, 1.5, 0.5]);
  const greedy = new TokenChooser({});
  assert.equal(greedy.choose(logits, []), 0);
  // Penalty 2 halves the positive logit of the repeated token 0 (2 → 1) so token 2 (1.5) wins.
  assert.equal(new TokenChooser({ repetitionPenalty: 2 }).choose(logits, [0]), 2);
  // OpenAI's rule: token 0, generated twice, loses 2 × frequency + presence: 2 − 0.6 = 1.4 < 1.5 (token 2) …
  assert.equal(new TokenChooser({ frequencyPenalty: 0.3 }).choose(logits, [0, 0]), 2);
  // … while 2 − 0.4 = 1.6 keeps it; a presence penalty counts it once (2 − 0.6 = 1.4); negative values reward.
  assert.equal(new TokenChooser({ frequencyPenalty: 0.2 }).choose(logits, [0, 0]), 0);
  assert.equal(new TokenChooser({ presencePenalty: 0.6 }).choose(logits, [0, 0]), 2);
  assert.equal(new TokenChooser({ presencePenalty: 0.4 }).choose(logits, [0, 0]), 0);
  assert.equal(new TokenChooser({ frequencyPenalty: -1 }).choose(logits, [3, 3]), 3);
  assert.equal(new TokenChooser({ suppressTokenIds: [0] }).choose(logits, []), 2);
  assert.equal(new TokenChooser({ stopTokenIds: [0], minNewTokens: 2 }).choose(logits, [3]), 2);
  assert.equal(new TokenChooser({ stopTokenIds: [0], minNewTokens: 2 }).choose(logits, [3, 3]), 0);
  // top-p 0.5: token 0 alone holds ≥ 50% of the mass, so sampling always returns it.
  const topP = new TokenChooser({ doSample: true, topP: 0.5, seed: 1 });
  for (let i = 0; i < 20; i++) assert.equal(topP.choose(logits, []), 0);
});

for (const attention of ['gqa', 'masked'] as const) {
  test(`continuous batching (${attention} attention): 4 sequences joining and leaving between batched steps (the caches growing meanwhile) each decode as they do alone`, async () => {
    const lm =
      attention === 'gqa'
        ? await lmPromise
        : await CausalLM.load(await Checkpoint.open(TINY), parseLlmConfig(await readConfig(TINY)), { attention });
    assert.equal(lm.attention, attention);
    const greedyAlone = async (promptIds: number[], steps: number) =>
      (await generate(lm, { ids: promptIds }, { maxNewTokens: steps })).ids;
    const argmax = (row: Float32Array) => row.reduce((best, v, i) => (v > row[best] ? i : best), 0);
    // Prompts of 1, 4, 7 and 2 tokens joining at steps 0, 2, 5 and 10; each leaves after its own number of tokens.
    // d takes the slot a freed while c still runs in slot 2, so its steps also carry an empty slot between them.
    const plan = [
      { ids: [1], join: 0, tokens: 9 },
      { ids: [1, ...expected.greedy_ids.slice(0, 3)], join: 2, tokens: 6 },
      { ids: [1, 400, 17, 90, 31, 250, 5], join: 5, tokens: 8 },
      { ids: [1, 7], join: 10, tokens: 3 },
    ];
    // Room for 3 positions at first: the buffers grow (twice) while sequences hold their caches.
    const decoder = lm.batchDecoder({ maxSequences: 3, maxLength: 16, initialLength: 3 });
    const live: Array<{ plan: number; sequence: ReturnType<typeof decoder.addSequence>; ids: number[] }> = [];
    const results: number[][] = plan.map(() => []);
    let shared = 0;
    for (let step = 0; live.length > 0 || step <= 10; step++) {
      // Leave first, then join, then one batched step for all that run.
      for (const entry of [...live])
        if (results[entry.plan].length === plan[entry.plan].tokens) {
          decoder.removeSequence(entry.sequence);
          live.splice(live.indexOf(entry), 1);
        }
      const fed: typeof live = [];
      for (const [i, p] of plan.entries()) {
        if (p.join !== step) continue;
        const sequence = decoder.addSequence();
        const token = argmax(await decoder.prefill(sequence, { ids: p.ids }));
        results[i].push(token);
        live.push({ plan: i, sequence, ids: [token] });
        fed.push(live[live.length - 1]);
      }
      const running = live.filter((e) => !fed.includes(e) && results[e.plan].length < plan[e.plan].tokens);
      if (running.length === 0) continue;
      const rows = await decoder.decode(
        running.map((e) => e.sequence),
        running.map((e) => results[e.plan][results[e.plan].length - 1]),
      );
      running.forEach((e, i) => results[e.plan].push(argmax(rows[i])));
      if (running.length > 1) shared++;
    }
    assert.ok(shared >= 5, `${shared} batched steps with several sequences`);
    for (const [i, p] of plan.entries())
      assert.deepEqual(results[i], await greedyAlone(p.ids, p.tokens), `sequence ${i}`);
    assert.deepEqual(results[0], expected.greedy_ids.slice(0, 9));
    if (attention === 'masked') await lm.release();
  });
}

test('the context length is checked before any work; generation stops at it', async () => {
  const lm = await lmPromise;
  const context = lm.contextLength;
  assert.equal(context, 512);
  const long = Array.from({ length: context }, () => 1);
  await assert.rejects(
    generate(lm, { ids: long }),
    (e: unknown) => e instanceof UsageError && /512 tokens .*context holds 512/.test((e as Error).message),
  );
  await assert.rejects(
    generate(lm, { ids: [1, 2, 3] }, { maxNewTokens: context }),
    (e: unknown) =>
      e instanceof UsageError && /3 tokens and 512 new tokens .* at most 509 new tokens/.test((e as Error).message),
  );
  // Without maxNewTokens, generation runs to the end of the context and says so.
  const filled = await generate(lm, { ids: long.slice(0, context - 3) }, { stopTokenIds: [] });
  assert.deepEqual([filled.ids.length, filled.finishReason], [3, 'length']);
});

test('generation options are validated with typed errors naming the option', async () => {
  const lm = await lmPromise;
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ maxNewTokens: 'abc' }, /maxNewTokens must be an integer ≥ 0, not "abc"/],
    [{ maxNewTokens: Number.NaN }, /maxNewTokens must be an integer/],
    [{ maxNewTokens: 2.5 }, /maxNewTokens/],
    [{ temperature: -1 }, /temperature must be ≥ 0/],
    [{ temperature: 0, doSample: true }, /temperature must be > 0 when sampling/],
    [{ repetitionPenalty: 0 }, /repetitionPenalty must be > 0/],
    [{ repetitionPenalty: -2 }, /repetitionPenalty/],
    [{ topP: 0 }, /topP must be in \(0, 1\]/],
    [{ topP: 1.5 }, /topP/],
    [{ topK: -1 }, /topK must be an integer ≥ 0/],
    [{ frequencyPenalty: 2.5 }, /frequencyPenalty must be in \[-2, 2\]/],
    [{ presencePenalty: Number.NaN }, /presencePenalty must be in \[-2, 2\]/],
    [{ minNewTokens: Number.POSITIVE_INFINITY }, /minNewTokens/],
  ];
  for (const [options, message] of bad) {
    await assert.rejects(
      generate(lm, { ids: [1] }, options),
      (e: unknown) => e instanceof UsageError && message.test((e as Error).message),
      JSON.stringify(options),
    );
  }
  await assert.rejects(beamSearch(lm, { ids: [1] }, { numBeams: 0 }), /numBeams must be an integer ≥ 1/);
  assert.equal((await generate(lm, { ids: [1] }, { maxNewTokens: 0 })).ids.length, 0);
});
