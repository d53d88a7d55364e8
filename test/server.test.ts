/**
 * `internvl serve` driven by the official `openai` client: chat (plain, streaming with usage, multi-image,
 * history) with the answers of `internvl chat --json` and the official goldens, embeddings equal to `embed-text` /
 * `embed-image`, classify, models. One server with the bundled fixture checkpoints for the whole file.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { DATA, runCli } from './helpers/cli.js';
import { postJson, startServer, type RunningServer } from './helpers/server.js';
import { loadImage } from '../src/processing/image.js';
import { encodeImages } from '../src/tasks/clip.js';
import type { ChatModel, ClipModel } from '../src/apps/server/models.js';

const CHAT = path.join(DATA, 'fixtures', 'chat_e2e');
const CLIP = path.join(DATA, 'fixtures', 'clip_e2e');
const VIT = path.join(DATA, 'fixtures', 'intern_vit_ln');
const IMAGES = path.join(DATA, 'images');
const CHELSEA = path.join(CHAT, 'golden', 'images', 'chelsea.png');
const meta = JSON.parse(fs.readFileSync(path.join(CHAT, 'golden', 'meta.json'), 'utf8')) as {
  chat: { turns: Array<{ question: string; response: string; generated_ids: number[]; input_ids_len: number }> };
};
const [turn1, turn2] = meta.chat.turns;

let running: RunningServer;
let client: OpenAI;
const KEY = 'sk-test-key';

before(async () => {
  running = await startServer({
    models: [
      { source: CHAT, name: 'chat' },
      { source: CLIP, name: 'clip' },
      { source: VIT, name: 'vit' },
    ],
    apiKey: KEY,
    settings: {
      media: { ...(await import('../src/apps/server/media.js')).DEFAULT_MEDIA_POLICY, allowedLocalPath: DATA },
    },
  });
  client = new OpenAI({ baseURL: `${running.url}/v1`, apiKey: KEY, maxRetries: 0 });
});
after(() => running.close());

const imagePart = (file: string, extra: Record<string, unknown> = {}) => ({
  type: 'image_url' as const,
  image_url: { url: `file://${file}`, ...extra } as { url: string },
});

test('greedy chat with an image gives the official ids, answer and prompt length (= internvl chat --json)', async () => {
  const completion = await client.chat.completions.create({
    model: 'chat',
    max_tokens: 12,
    temperature: 0,
    messages: [
      { role: 'user', content: [imagePart(CHELSEA, { max_dynamic_patch: 6 }), { type: 'text', text: turn1.question }] },
    ],
    // vLLM's extension, passed through by the client.
    ...({ return_token_ids: true } as object),
  });
  const choice = completion.choices[0] as (typeof completion.choices)[0] & { token_ids: number[] };
  assert.equal(choice.message.role, 'assistant');
  assert.equal(choice.message.content, turn1.response);
  assert.deepEqual(choice.token_ids, turn1.generated_ids);
  assert.equal(completion.usage?.prompt_tokens, turn1.input_ids_len);
  assert.equal(completion.usage?.completion_tokens, turn1.generated_ids.length);
  assert.equal(completion.usage?.total_tokens, turn1.input_ids_len + turn1.generated_ids.length);
  assert.equal(choice.finish_reason, turn1.generated_ids.length < 12 ? 'stop' : 'length');
  assert.equal(completion.object, 'chat.completion');
  assert.match(completion.id, /^chatcmpl-/);
});

test('history: the second turn of the conversation gives the official second answer', async () => {
  const cache = (running.server.context.host.get('chat') as ChatModel).visualCache;
  const before = cache.stats;
  const completion = await client.chat.completions.create({
    model: 'chat',
    max_tokens: 12,
    messages: [
      { role: 'user', content: [imagePart(CHELSEA, { max_dynamic_patch: 6 }), { type: 'text', text: turn1.question }] },
      { role: 'assistant', content: turn1.response },
      { role: 'user', content: turn2.question },
    ],
    ...({ return_token_ids: true } as object),
  });
  const choice = completion.choices[0] as (typeof completion.choices)[0] & { token_ids: number[] };
  assert.deepEqual(choice.token_ids, turn2.generated_ids);
  assert.equal(choice.message.content, turn2.response);
  assert.equal(completion.usage?.prompt_tokens, turn2.input_ids_len);
  // The image of the first turn, sent again, came from the cache (the first test encoded it): the official
  // answer above is what its cached embeddings give.
  assert.deepEqual(
    { hits: cache.stats.hits - before.hits, misses: cache.stats.misses - before.misses },
    { hits: 1, misses: 0 },
  );
  const metrics = await (await fetch(`${running.url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();
  assert.match(metrics, new RegExp(`internvl:visual_cache_hits_total\\{model_name="chat"\\} ${cache.stats.hits}\n`));
  assert.match(
    metrics,
    new RegExp(`internvl:visual_cache_misses_total\\{model_name="chat"\\} ${cache.stats.misses}\n`),
  );
});

test('continuous batching: 3 concurrent greedy requests give the ids of 3 sequential ones', async () => {
  const scheduler = (running.server.context.host.get('chat') as ChatModel).scheduler;
  // Different images, tile counts and questions: prompts of different lengths share the batched steps.
  const requests = [
    { tiles: 6, question: turn1.question },
    { tiles: 1, question: 'Describe the colours you see.' },
    { tiles: 2, question: 'Is there an animal? Answer in one word, then explain.' },
  ];
  const ask = async ({ tiles, question }: (typeof requests)[0]) => {
    const completion = await client.chat.completions.create({
      model: 'chat',
      max_tokens: 16,
      messages: [
        { role: 'user', content: [imagePart(CHELSEA, { max_dynamic_patch: tiles }), { type: 'text', text: question }] },
      ],
      ...({ return_token_ids: true } as object),
    });
    const choice = completion.choices[0] as (typeof completion.choices)[0] & { token_ids: number[] };
    return { ids: choice.token_ids, text: choice.message.content, usage: completion.usage };
  };
  const sequential = [];
  for (const request of requests) sequential.push(await ask(request));
  const concurrent = await Promise.all(requests.map(ask));
  assert.deepEqual(concurrent, sequential);
  assert.deepEqual(sequential[0].ids.slice(0, turn1.generated_ids.length), turn1.generated_ids);
  // Whether they overlap depends on how long each image takes here; that batching happens is scheduler.test.ts's.
  assert.equal(scheduler.running, 0);
  assert.equal(scheduler.cachedSequences, 0);
});

test('a stream cancelled in a running batch leaves it at once; the others finish as they would alone', async () => {
  const scheduler = (running.server.context.host.get('chat') as ChatModel).scheduler;
  const body = (question: string) => ({
    model: 'chat',
    max_tokens: 24,
    messages: [{ role: 'user', content: question }],
    return_token_ids: true,
  });
  const alone = await postJson(`${running.url}/v1/chat/completions`, body('Count to ten.'), {
    authorization: `Bearer ${KEY}`,
  });
  const controller = new AbortController();
  const cancelled = fetch(`${running.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ ...body('Tell a long story.'), max_tokens: 4000, stream: true }),
    signal: controller.signal,
  });
  const response = await cancelled;
  await response.body!.getReader().read();
  const kept = postJson(`${running.url}/v1/chat/completions`, body('Count to ten.'), {
    authorization: `Bearer ${KEY}`,
  });
  for (let i = 0; i < 200 && scheduler.cachedSequences < 2; i++) await new Promise((r) => setTimeout(r, 10));
  controller.abort();
  const answer = await kept;
  assert.deepEqual(answer.body.choices[0].token_ids, alone.body.choices[0].token_ids);
  for (let i = 0; i < 200 && scheduler.running > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(scheduler.running, 0);
  assert.equal(scheduler.cachedSequences, 0);
});

test('streaming: role chunk, content deltas, finish_reason, a usage chunk with no choices, then [DONE]', async () => {
  const stream = await client.chat.completions.create({
    model: 'chat',
    max_tokens: 12,
    stream: true,
    stream_options: { include_usage: true },
    messages: [
      { role: 'user', content: [imagePart(CHELSEA, { max_dynamic_patch: 6 }), { type: 'text', text: turn1.question }] },
    ],
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
  const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
  assert.equal(text.trim(), turn1.response);
  const usageChunk = chunks[chunks.length - 1];
  assert.deepEqual(usageChunk.choices, []);
  assert.deepEqual(usageChunk.usage, {
    prompt_tokens: turn1.input_ids_len,
    completion_tokens: turn1.generated_ids.length,
    total_tokens: turn1.input_ids_len + turn1.generated_ids.length,
  });
  const final = chunks[chunks.length - 2];
  assert.ok(final.choices[0].finish_reason === 'stop' || final.choices[0].finish_reason === 'length');
  // Every chunk but the last carries usage: null, as OpenAI sends it with include_usage.
  for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);

  // The raw stream ends with data: [DONE].
  const response = await fetch(`${running.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model: 'chat', max_tokens: 3, stream: true, messages: [{ role: 'user', content: 'Hi' }] }),
  });
  assert.equal(response.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  const raw = await response.text();
  assert.ok(raw.endsWith('data: [DONE]\n\n'), raw.slice(-80));
  assert.ok(!raw.includes('"usage"'), 'no usage without include_usage');
});

/**
 * `internvl chat --json` with `cliArgs` and 6 new tokens, then the same question through the server with `media`
 * parts: the ids, the answer and the prompt length must be the CLI's.
 */
async function assertAnswersLikeCli(cliArgs: string[], media: unknown[], question: string): Promise<void> {
  const cli = await runCli(['chat', '--model', CHAT, ...cliArgs, '--max-new-tokens', '6', question, '--json']);
  assert.equal(cli.code, 0, cli.stderr);
  const expected = JSON.parse(cli.stdout) as { response: string; ids: number[]; prompt_tokens: number };
  const completion = await client.chat.completions.create({
    model: 'chat',
    max_completion_tokens: 6,
    messages: [{ role: 'user', content: [...(media as never[]), { type: 'text', text: question }] }],
    ...({ return_token_ids: true } as object),
  });
  const choice = completion.choices[0] as (typeof completion.choices)[0] & { token_ids: number[] };
  assert.deepEqual(choice.token_ids, expected.ids);
  assert.equal(choice.message.content, expected.response);
  assert.equal(completion.usage?.prompt_tokens, expected.prompt_tokens);
}

test('two images in one turn: the same answer and prompt as internvl chat --json with both images', async () => {
  const [chelsea, rocket] = [path.join(IMAGES, 'chelsea.png'), path.join(IMAGES, 'rocket.jpg')];
  await assertAnswersLikeCli(
    ['--image', chelsea, '--image', rocket, '--max-tiles', '2'],
    [imagePart(chelsea, { max_dynamic_patch: 2 }), imagePart(rocket, { max_dynamic_patch: 2 })],
    'What differs between the two images?',
  );
});

test('video_url: frames sampled as internvl chat --video samples them, the same answer and prompt', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'internvl-server-video-'));
  try {
    const clip = path.join(dir, 'clip.mp4');
    const made = spawnSync('ffmpeg', [
      ...['-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc=duration=3:size=96x64:rate=10'],
      ...['-pix_fmt', 'yuv420p', clip],
    ]);
    assert.equal(made.status, 0, String(made.stderr));
    const url = `data:video/mp4;base64,${fs.readFileSync(clip).toString('base64')}`;
    await assertAnswersLikeCli(
      ['--video', clip, '--frames', '4'],
      [{ type: 'video_url', video_url: { url, num_frames: 4 } }],
      'What happens in the video?',
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('detail low/high map to 6/24 tiles (LMDeploy), capped by the per-request tile budget', async () => {
  const tokens = async (extra: Record<string, unknown>) => {
    const completion = await client.chat.completions.create({
      model: 'chat',
      max_tokens: 1,
      messages: [
        { role: 'user', content: [imagePart(path.join(IMAGES, 'page.png'), extra), { type: 'text', text: 'Hi' }] },
      ],
    });
    return completion.usage!.prompt_tokens;
  };
  const one = await tokens({ max_dynamic_patch: 1 });
  const low = await tokens({ detail: 'low' });
  // 1 tile vs at most 6 tiles + thumbnail: the difference is a whole number of 256-token tiles.
  assert.equal((low - one) % 256, 0);
  assert.ok(low - one >= 256 && low - one <= 6 * 256, `${low} vs ${one}`);
});

test('text embeddings equal embed-text, image embeddings equal encode_image (mode by name suffix or field)', async () => {
  const texts = ['a photo of a cat', 'a rocket'];
  const result = await client.embeddings.create({ model: 'clip', input: texts });
  const cli = await runCli(['embed-text', '--model', CLIP, ...texts, '--json']);
  assert.equal(cli.code, 0, cli.stderr);
  const expected = JSON.parse(cli.stdout) as { texts: Array<{ embedding: number[] }> };
  assert.equal(result.data.length, 2);
  result.data.forEach((d, i) => {
    assert.equal(d.index, i);
    assert.equal(d.embedding.length, expected.texts[i].embedding.length);
    d.embedding.forEach((v, j) => assert.ok(Math.abs(v - expected.texts[i].embedding[j]) < 1e-6));
  });

  const model = running.server.context.host.get('clip') as ClipModel;
  const image = await loadImage(path.join(IMAGES, 'chelsea.png'));
  for (const mode of ['C', 'G'] as const) {
    const want = await encodeImages(model.pipeline, [image], { mode, transform: 'retrieval' });
    const bySuffix = await client.embeddings.create({
      model: `clip:${mode}`,
      input: [{ image: `file://${path.join(IMAGES, 'chelsea.png')}` }] as unknown as string[],
    });
    assert.deepEqual(bySuffix.data[0].embedding, Array.from(want.data));
    const byField = await postJson(
      `${running.url}/v1/embeddings`,
      {
        model: 'clip',
        mode,
        encoding_format: 'base64',
        messages: [{ role: 'user', content: [imagePart(path.join(IMAGES, 'chelsea.png'))] }],
      },
      { authorization: `Bearer ${KEY}` },
    );
    assert.equal(byField.status, 200, JSON.stringify(byField.body));
    const bytes = Buffer.from(byField.body.data[0].embedding, 'base64');
    assert.deepEqual(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4), want.data);
  }
  const conflict = await postJson(
    `${running.url}/v1/embeddings`,
    { model: 'clip:G', mode: 'C', input: 'x' },
    { authorization: `Bearer ${KEY}` },
  );
  assert.equal(conflict.status, 400);
  assert.equal(conflict.body.error.param, 'mode');
  const dims = await postJson(
    `${running.url}/v1/embeddings`,
    { model: 'clip', dimensions: 3, input: 'x' },
    { authorization: `Bearer ${KEY}` },
  );
  assert.equal(dims.status, 400);
  assert.equal(dims.body.error.param, 'dimensions');
});

test('an InternViT model returns the pooled features of embed-image', async () => {
  const file = path.join(IMAGES, 'horse.png');
  const result = await client.embeddings.create({
    model: 'vit',
    input: [{ image: `file://${file}` }] as unknown as string[],
  });
  const cli = await runCli(['embed-image', '--model', VIT, file, '--json']);
  assert.equal(cli.code, 0, cli.stderr);
  const expected = JSON.parse(cli.stdout) as { images: Array<{ embedding: number[] }> };
  const got = result.data[0].embedding;
  assert.equal(got.length, expected.images[0].embedding.length);
  got.forEach((v, j) => assert.ok(Math.abs(v - expected.images[0].embedding[j]) <= 1e-6 * Math.max(1, Math.abs(v))));
  const text = await postJson(
    `${running.url}/v1/embeddings`,
    { model: 'vit', input: 'a horse' },
    { authorization: `Bearer ${KEY}` },
  );
  assert.equal(text.status, 400);
  assert.match(text.body.error.message, /embeds images only/);
});

test('classify gives the probabilities of internvl classify', async () => {
  const images = ['chelsea.png', 'rocket.jpg'].map((f) => path.join(IMAGES, f));
  const labels = ['cat', 'rocket', 'horse'];
  const served = await postJson(
    `${running.url}/v1/classify`,
    { model: 'clip:G', images: images.map((f) => `file://${f}`), labels, templates: ['a photo of a {c}.'] },
    { authorization: `Bearer ${KEY}` },
  );
  assert.equal(served.status, 200, JSON.stringify(served.body));
  const cli = await runCli([
    'classify',
    '--model',
    CLIP,
    ...images,
    '--labels',
    labels.join(','),
    '--template',
    'a photo of a {c}.',
    '--mode',
    'G',
    '--json',
  ]);
  assert.equal(cli.code, 0, cli.stderr);
  const expected = JSON.parse(cli.stdout) as { images: Array<{ probs: number[] }> };
  served.body.data.forEach((row: { probs: number[] }, i: number) =>
    row.probs.forEach((p, c) => assert.ok(Math.abs(p - expected.images[i].probs[c]) < 1e-6)),
  );
});

test('models lists every model with its capabilities', async () => {
  const list = await client.models.list();
  const byId = Object.fromEntries(list.data.map((m) => [m.id, m as typeof m & { capabilities: string[] }]));
  assert.deepEqual(Object.keys(byId).sort(), ['chat', 'clip', 'vit']);
  assert.deepEqual(byId.chat.capabilities, ['chat', 'vision']);
  assert.deepEqual(byId.clip.capabilities, ['embeddings', 'vision', 'classify']);
  assert.deepEqual(byId.vit.capabilities, ['embeddings', 'vision']);
  assert.equal(byId.chat.object, 'model');
});

test('tokenize and detokenize round-trip; messages are rendered with the chat template', async () => {
  const auth = { authorization: `Bearer ${KEY}` };
  const tokens = await postJson(`${running.url}/tokenize`, { model: 'chat', content: 'Hello world' }, auth);
  assert.equal(tokens.status, 200);
  assert.ok(tokens.body.tokens.length >= 2);
  const text = await postJson(`${running.url}/detokenize`, { model: 'chat', tokens: tokens.body.tokens }, auth);
  assert.equal(text.body.content, 'Hello world');
  const chat = await postJson(
    `${running.url}/tokenize`,
    { model: 'chat', messages: [{ role: 'user', content: 'Hello' }] },
    auth,
  );
  const pieces = await postJson(`${running.url}/detokenize`, { model: 'chat', tokens: chat.body.tokens }, auth);
  assert.ok(
    pieces.body.content.endsWith('<|im_start|>user\nHello<|im_end|><|im_start|>assistant\n'),
    pieces.body.content,
  );
  const bad = await postJson(`${running.url}/detokenize`, { model: 'chat', tokens: [10_000_000] }, auth);
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.param, 'tokens.0');
});
