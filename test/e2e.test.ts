/**
 * End to end: the user's commands on the released-layout folders (InternVL-14B-224px and InternVL2-1B with tiny
 * weights, real tokenizers, real photos) give the official answers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DATA, runCli } from './helpers/cli.js';
import { Fixture } from '../src/apps/verify/fixture.js';
import { verifyFixture } from '../src/apps/verify/index.js';

const CLIP = path.join(DATA, 'fixtures', 'clip_e2e');
const CHAT = path.join(DATA, 'fixtures', 'chat_e2e');

for (const [dir, compared] of [
  [CLIP, 24],
  [CHAT, 13],
] as const) {
  test(`verify ${path.basename(dir)}: the whole user flow within bound`, async () => {
    const report = await verifyFixture(dir);
    assert.equal(report.compared.length, compared);
    assert.deepEqual(report.skipped, []);
    for (const c of report.compared) assert.ok(c.ok, `${c.name}: abs ${c.maxAbsError} rel ${c.maxRelError}`);
    assert.equal(report.status, 0);
  });
}

test('internvl classify --json reproduces the official probabilities and logits (modes C and G)', async () => {
  const fixture = await Fixture.open(CLIP);
  const meta = fixture.meta as { classify: { images: string[]; labels: string[]; templates: string[] } };
  const images = meta.classify.images.map((p) => path.join(CLIP, 'golden', 'images', path.basename(p)));
  for (const mode of ['C', 'G']) {
    const args = [
      'classify',
      '--model',
      CLIP,
      ...images,
      '--labels',
      meta.classify.labels.join(','),
      '--mode',
      mode,
      '--json',
    ];
    for (const template of meta.classify.templates) args.push('--template', template);
    const result = await runCli(args);
    assert.equal(result.code, 0, result.stderr);
    const output = JSON.parse(result.stdout) as {
      labels: string[];
      images: Array<{ image: string; probs: number[]; logits: number[] }>;
    };
    assert.deepEqual(output.labels, meta.classify.labels);
    assert.deepEqual(
      output.images.map((i) => i.image),
      images,
    );
    for (const [key, golden] of [
      ['probs', `out.${mode}.probs`],
      ['logits', `out.${mode}.logits`],
    ] as const) {
      const expected = fixture.tensor(golden);
      const actual = output.images.flatMap((i) => i[key]);
      const maxRef = Math.max(...Array.from(expected.data, Math.abs));
      const maxErr = Math.max(...actual.map((v, i) => Math.abs(v - expected.data[i])));
      assert.ok(maxErr / maxRef < 1e-4, `${mode} ${key}: relative error ${maxErr / maxRef}`);
    }
  }
});

test('internvl chat --json: both turns of one session give the official ids and response text', async () => {
  const meta = JSON.parse(fs.readFileSync(path.join(CHAT, 'golden', 'meta.json'), 'utf8')) as {
    chat: { turns: Array<{ question: string; response: string; generated_ids: number[]; input_ids_len: number }> };
  };
  const [first, second] = meta.chat.turns;
  const result = await runCli([
    'chat',
    '--model',
    CHAT,
    '--image',
    path.join(CHAT, 'golden', 'images', 'chelsea.png'),
    '--max-tiles',
    '6',
    '--max-new-tokens',
    '12',
    '--greedy',
    first.question,
    second.question,
    '--json',
  ]);
  assert.equal(result.code, 0, result.stderr);
  const turns = result.stdout
    .trim()
    .split('\n')
    .map(
      (line) => JSON.parse(line) as { response: string; ids: number[]; prompt_tokens: number; finish_reason: string },
    );
  assert.equal(turns.length, 2);
  turns.forEach((turn, i) => {
    assert.deepEqual(turn.ids, meta.chat.turns[i].generated_ids);
    assert.equal(turn.response, meta.chat.turns[i].response);
    assert.equal(turn.prompt_tokens, meta.chat.turns[i].input_ids_len);
    // 12 new tokens without an end token: stopped by the length limit.
    assert.equal(turn.finish_reason, meta.chat.turns[i].stopped_by_eos ? 'stop' : 'length');
  });
});

test('internvl chat streams the answer as plain text without --json', async () => {
  const meta = JSON.parse(fs.readFileSync(path.join(CHAT, 'golden', 'meta.json'), 'utf8')) as {
    chat: { turns: Array<{ question: string; response: string }> };
  };
  const result = await runCli([
    'chat',
    '--model',
    CHAT,
    '--image',
    path.join(CHAT, 'golden', 'images', 'chelsea.png'),
    '--max-tiles',
    '6',
    '--max-new-tokens',
    '12',
    meta.chat.turns[0].question,
  ]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim(), meta.chat.turns[0].response);
});

test('internvl chat without a question reads one question per line from standard input, keeping history', async () => {
  const meta = JSON.parse(fs.readFileSync(path.join(CHAT, 'golden', 'meta.json'), 'utf8')) as {
    chat: { turns: Array<{ question: string; generated_ids: number[]; input_ids_len: number }> };
  };
  const result = await runCli(
    [
      'chat',
      '--model',
      CHAT,
      '--image',
      path.join(CHAT, 'golden', 'images', 'chelsea.png'),
      '--max-tiles',
      '6',
      '--max-new-tokens',
      '12',
      '--json',
    ],
    { input: `${meta.chat.turns[0].question}\n\n${meta.chat.turns[1].question}\n` },
  );
  assert.equal(result.code, 0, result.stderr);
  const turns = result.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { ids: number[]; prompt_tokens: number });
  assert.deepEqual(
    turns.map((t) => t.ids),
    meta.chat.turns.map((t) => t.generated_ids),
  );
  // The second prompt holds the first turn (history): 1874 tokens, not the 1847 of a fresh conversation.
  assert.deepEqual(
    turns.map((t) => t.prompt_tokens),
    meta.chat.turns.map((t) => t.input_ids_len),
  );
});

test('internvl chat with 4-bit LLM weights (int8 prefill) and int8 vision runs the same conversation', async () => {
  const result = await runCli([
    'chat',
    '--model',
    CHAT,
    '--image',
    path.join(CHAT, 'golden', 'images', 'chelsea.png'),
    '--max-tiles',
    '2',
    '--max-new-tokens',
    '4',
    '--llm-weights',
    'int4+int8',
    '--vision-weights',
    'int8',
    'Describe this image.',
    '--json',
  ]);
  assert.equal(result.code, 0, result.stderr);
  const turn = JSON.parse(result.stdout) as { ids: number[]; prompt_tokens: number };
  assert.equal(turn.ids.length, 4);
  // 2×1 grid + thumbnail = 3 tiles of 256 tokens, plus the template.
  assert.ok(turn.prompt_tokens > 3 * 256 && turn.prompt_tokens < 3 * 256 + 100);
  const bad = await runCli(['chat', '--model', CHAT, '--vision-weights', 'int4', 'hi']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--vision-weights must be one of fp32, int8/);
});
