/**
 * The server's continuous-batching scheduler on the tiny real LLaMA: jobs that run together (joining and leaving
 * between batched steps, prompts prefilled in chunks) give each the tokens it gets alone, greedy or seeded; a
 * cancelled job leaves within a step and frees its cache; a failing prepare ends only its own job; a full queue is
 * refused with 429.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { DATA } from './helpers/cli.js';
import { Checkpoint } from '../src/core/safetensors.js';
import { UsageError } from '../src/core/errors.js';
import { readConfig } from '../src/models/config.js';
import { CausalLM, parseLlmConfig } from '../src/models/llm.js';
import { generate, type GenerationOptions } from '../src/tasks/generation.js';
import { ApiError } from '../src/apps/server/errors.js';
import { BatchScheduler, type Generation } from '../src/apps/server/scheduler.js';

const TINY = path.join(DATA, 'models', 'tiny-llama-stories260k');
const config = parseLlmConfig(await readConfig(TINY));
const gqa = await CausalLM.load(await Checkpoint.open(TINY), config);

async function collect(generation: Generation): Promise<number[]> {
  const ids: number[] = [];
  for await (const id of generation.tokens) ids.push(id);
  return ids;
}

const jobs: Array<{ ids: number[]; options: GenerationOptions }> = [
  { ids: [1, 400, 17, 90, 31, 250, 5, 61, 12, 9], options: { maxNewTokens: 12 } },
  { ids: [1], options: { maxNewTokens: 20 } },
  { ids: [1, 7], options: { maxNewTokens: 9, doSample: true, temperature: 0.8, topP: 0.9, seed: 7 } },
  { ids: [1, 33, 44, 55, 66], options: { maxNewTokens: 15, repetitionPenalty: 1.3, frequencyPenalty: 0.5 } },
];

for (const attention of ['gqa', 'masked'] as const) {
  test(`${attention} attention: 4 jobs through a batch of 3 with chunked prefills give the tokens each gets alone`, async () => {
    const lm = attention === 'gqa' ? gqa : await CausalLM.load(await Checkpoint.open(TINY), config, { attention });
    const alone = [];
    for (const job of jobs) alone.push(await generate(lm, { ids: job.ids }, job.options));
    const scheduler = new BatchScheduler(lm, { maxBatch: 3, maxQueue: 8, prefillChunk: 3, maxLength: 64 });
    const generations = jobs.map((job) =>
      scheduler.reserve().start({ prepare: async () => ({ ids: job.ids }), options: { ...job.options } }),
    );
    // One job waits for a place: at most 3 run at once.
    assert.equal(scheduler.running + scheduler.waiting, 4);
    const ids = await Promise.all(generations.map(collect));
    for (const [i, result] of alone.entries()) {
      assert.deepEqual(ids[i], result.ids, `job ${i}`);
      const outcome = await generations[i].outcome;
      assert.equal(outcome.finishReason, result.finishReason);
      assert.equal(outcome.promptTokens, jobs[i].ids.length);
    }
    assert.ok(scheduler.stats.decodedTokens / scheduler.stats.decodeSteps > 1.5, JSON.stringify(scheduler.stats));
    assert.equal(scheduler.running, 0);
    assert.equal(scheduler.cachedSequences, 0);
  });
}

test('a cancelled job leaves within a step and frees its cache; a failed prepare ends only its own job', async () => {
  const scheduler = new BatchScheduler(gqa, { maxBatch: 4, maxQueue: 8, maxLength: 256 });
  const controller = new AbortController();
  const long = scheduler
    .reserve()
    .start({ prepare: async () => ({ ids: [1, 2, 3] }), options: { maxNewTokens: 200, signal: controller.signal } });
  const failing = scheduler.reserve().start({
    prepare: async () => {
      throw new UsageError('the image cannot be read');
    },
    options: {},
  });
  const kept = scheduler.reserve().start({ prepare: async () => ({ ids: [1, 7] }), options: { maxNewTokens: 10 } });
  await assert.rejects(collect(failing), /the image cannot be read/);
  const seen: number[] = [];
  for await (const id of long.tokens) {
    seen.push(id);
    if (seen.length === 3) {
      assert.equal(scheduler.cachedSequences, 2);
      controller.abort();
    }
  }
  assert.ok(seen.length <= 4, `${seen.length} tokens after the abort at 3`);
  assert.equal((await long.outcome).finishReason, 'cancelled');
  assert.deepEqual(await collect(kept), (await generate(gqa, { ids: [1, 7] }, { maxNewTokens: 10 })).ids);
  assert.equal(scheduler.running, 0);
  assert.equal(scheduler.cachedSequences, 0);
});

test('stop tokens end a job; min_tokens-style minNewTokens holds them back', async () => {
  const scheduler = new BatchScheduler(gqa, { maxBatch: 2, maxQueue: 2, maxLength: 64 });
  const [first] = (await generate(gqa, { ids: [1] }, { maxNewTokens: 1 })).ids;
  const run = async (options: GenerationOptions) => {
    const generation = scheduler.reserve().start({ prepare: async () => ({ ids: [1] }), options });
    return { ids: await collect(generation), finishReason: (await generation.outcome).finishReason };
  };
  const [stopped, held] = await Promise.all([
    run({ maxNewTokens: 5, stopTokenIds: [first] }),
    run({ maxNewTokens: 5, stopTokenIds: [first], minNewTokens: 5 }),
  ]);
  assert.deepEqual(stopped, { ids: [first], finishReason: 'stop' });
  assert.equal(held.ids.length, 5);
  assert.notEqual(held.ids[0], first);
  assert.equal(held.finishReason, 'length');
});

test('a full queue is refused with 429 and Retry-After; close() cancels what runs and what waits', async () => {
  const scheduler = new BatchScheduler(gqa, { maxBatch: 1, maxQueue: 1, maxLength: 256 });
  const running = scheduler.reserve().start({ prepare: async () => ({ ids: [1] }), options: { maxNewTokens: 200 } });
  const waiting = scheduler.reserve().start({ prepare: async () => ({ ids: [1] }), options: { maxNewTokens: 200 } });
  assert.throws(
    () => scheduler.reserve(),
    (e: unknown) => e instanceof ApiError && e.status === 429 && e.headers?.['retry-after'] === '1',
  );
  for await (const _ of running.tokens) break;
  scheduler.close();
  assert.equal((await running.outcome).finishReason, 'cancelled');
  assert.equal((await waiting.outcome).finishReason, 'cancelled');
  assert.throws(
    () => scheduler.reserve(),
    (e: unknown) => e instanceof ApiError && e.status === 503,
  );
});

test("a prompt that does not fit a request's positions fails with the numbers", async () => {
  const scheduler = new BatchScheduler(gqa, { maxBatch: 2, maxQueue: 2, maxLength: 8 });
  assert.equal(scheduler.contextLength, 8);
  const generation = scheduler
    .reserve()
    .start({ prepare: async () => ({ ids: [1, 2, 3, 4, 5, 6] }), options: { maxNewTokens: 5 } });
  await assert.rejects(collect(generation), (e: unknown) => e instanceof UsageError && /6 tokens/.test(String(e)));
});
