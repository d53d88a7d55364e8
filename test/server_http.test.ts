/**
 * The server over raw HTTP: /health while loading, /metrics, auth, body limit, CORS, the bounded queue (429),
 * cancellation on disconnect, the per-request timeout, malformed requests, media through the chat route, logs, and
 * SIGTERM with a stream in flight (the CLI in a child process).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DATA, REPO } from './helpers/cli.js';
import { postJson, startMediaHost, startServer, type RunningServer } from './helpers/server.js';
import { loadServedModel, type ChatModel } from '../src/apps/server/models.js';

const CHAT = path.join(DATA, 'fixtures', 'chat_e2e');
const PNG = fs.readFileSync(path.join(DATA, 'images', 'chelsea.png'));
const KEY = 'sk-http-test';
const auth = { authorization: `Bearer ${KEY}` };
const logs: string[] = [];
let running: RunningServer;

before(async () => {
  running = await startServer({
    models: [{ source: CHAT, name: 'chat' }],
    apiKey: KEY,
    // One running request at a time, one waiting: the queue-full and disconnect cases need a full queue.
    load: { weights: 'fp32', session: {}, maxBatch: 1, maxQueue: 1 },
    settings: { timeoutSeconds: 600 },
    logFormat: 'json',
    log: (line) => logs.push(line),
  });
});
after(() => running.close());

const chat = (content: string, extra: Record<string, unknown> = {}) => ({
  model: 'chat',
  messages: [{ role: 'user', content }],
  ...extra,
});

const scheduler = () => (running.server.context.host.get('chat') as ChatModel).scheduler;

/** Opens a streaming request and resolves once its first event arrived; `abort` disconnects. */
async function openStream(url: string, body: unknown): Promise<{ abort(): void; rest: Promise<string> }> {
  const controller = new AbortController();
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth },
    body: JSON.stringify(body),
    signal: controller.signal,
  });
  assert.equal(response.status, 200);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = decoder.decode((await reader.read()).value);
  const rest = (async () => {
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (done) return text;
      text += decoder.decode(value);
    }
  })();
  return { abort: () => controller.abort(), rest };
}

async function until(check: () => boolean, what: string, seconds = 5): Promise<void> {
  for (let i = 0; i < seconds * 40; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}

test('/health answers 503 while the models load and 200 when ready; chat is 503 meanwhile', async () => {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const loading = await startServer(
    {
      models: [{ source: CHAT, name: 'chat' }],
      loader: async (spec, name, settings) => {
        await gate;
        return loadServedModel(spec, name, settings);
      },
    },
    false,
  );
  try {
    const health = await fetch(`${loading.url}/health`);
    assert.equal(health.status, 503);
    assert.deepEqual(await health.json(), { status: 'loading' });
    const early = await postJson(`${loading.url}/v1/chat/completions`, chat('Hi'));
    assert.equal(early.status, 503);
    assert.equal(early.body.error.code, 'loading');
    open();
    await loading.server.context.host.ready;
    const ready = await fetch(`${loading.url}/health`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ok' });
  } finally {
    await loading.close();
  }
});

test('the API key is needed everywhere but /health; wrong or missing keys get 401 in OpenAI shape', async () => {
  assert.equal((await fetch(`${running.url}/health`)).status, 200);
  for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: KEY }]) {
    const r = await postJson(`${running.url}/v1/chat/completions`, chat('Hi'), headers);
    assert.equal(r.status, 401);
    assert.deepEqual(r.body, {
      error: {
        message: 'invalid or missing API key',
        type: 'authentication_error',
        param: null,
        code: 'invalid_api_key',
      },
    });
  }
  assert.equal((await fetch(`${running.url}/metrics`)).status, 401);
  assert.equal((await fetch(`${running.url}/v1/models`, { headers: auth })).status, 200);
});

test('malformed JSON and invalid fields are 400 with the field named; unknown model 404; the server goes on', async () => {
  const url = `${running.url}/v1/chat/completions`;
  const cases: Array<[unknown, number, string | null]> = [
    ['{"messages": [', 400, null],
    [{ model: 'chat' }, 400, null],
    [chat('Hi', { temperature: 'hot' }), 400, 'temperature'],
    [chat('Hi', { n: 2 }), 400, 'n'],
    [chat('Hi', { max_tokens: -1 }), 400, 'max_tokens'],
    [chat('Hi', { frequency_penalty: 2.5 }), 400, 'frequency_penalty'],
    [chat('Hi', { presence_penalty: -3 }), 400, 'presence_penalty'],
    [chat('Hi', { min_tokens: -1 }), 400, 'min_tokens'],
    [{ model: 'chat', messages: [{ role: 'tool', content: 'x' }] }, 400, 'messages.0.role'],
    [{ model: 'chat', messages: [{ role: 'assistant', content: 'x' }] }, 400, 'messages'],
    [
      { model: 'chat', messages: [{ role: 'user', content: [{ type: 'image_url' }] }] },
      400,
      'messages.0.content.0.image_url',
    ],
    [{ model: 'nope', messages: [{ role: 'user', content: 'x' }] }, 404, 'model'],
    [
      {
        model: 'chat',
        messages: [
          { role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] },
        ],
      },
      422,
      null,
    ],
  ];
  for (const [body, status, param] of cases) {
    const r = await postJson(url, body, auth);
    assert.equal(r.status, status, `${JSON.stringify(body)} → ${JSON.stringify(r.body)}`);
    assert.equal(typeof r.body.error.message, 'string');
    assert.equal(typeof r.body.error.type, 'string');
    if (param !== null) assert.equal(r.body.error.param, param, JSON.stringify(r.body));
  }
  const text = await fetch(url, { method: 'POST', headers: { 'content-type': 'text/plain', ...auth }, body: 'hi' });
  assert.equal(text.status, 400);
  assert.equal((await fetch(`${running.url}/v1/nothing`, { headers: auth })).status, 404);
  const ok = await postJson(url, chat('Hi', { max_tokens: 2 }), auth);
  assert.equal(ok.status, 200);
  assert.equal(ok.body.usage.completion_tokens, 2);
});

test('a full queue answers 429 with Retry-After; a disconnected client leaves at once and frees its place', async () => {
  const long = chat('Tell a long story', { max_tokens: 4000, stream: true });
  const first = await openStream(running.url, long);
  assert.equal(scheduler().running, 1);
  // The queue holds one more; the third is refused.
  const second = fetch(`${running.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth },
    body: JSON.stringify(chat('Hi', { max_tokens: 2 })),
  });
  await until(() => scheduler().waiting === 1, 'the second request to queue');
  const third = await postJson(`${running.url}/v1/chat/completions`, chat('Hi'), auth);
  assert.equal(third.status, 429);
  assert.equal(third.body.error.type, 'rate_limit_error');
  assert.equal(third.headers.get('retry-after'), '1');
  first.abort();
  // The cancelled stream leaves within a step, and the queued request runs.
  const answered = await second;
  assert.equal(answered.status, 200);
  assert.equal(((await answered.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 2);
  await until(() => scheduler().running === 0 && scheduler().waiting === 0, 'the queue to drain');
  const metrics = await (await fetch(`${running.url}/metrics`, { headers: auth })).text();
  const generated = Number(/internvl:generation_tokens_total\{model_name="chat"\} (\d+)/.exec(metrics)?.[1]);
  assert.ok(generated < 4000, `the disconnected stream stopped early (${generated} tokens generated in all)`);
  assert.ok(
    logs.some((l) => JSON.parse(l).aborted === 'client'),
    'the log line says the client left',
  );
});

test('/metrics: Prometheus text with vLLM-style names, token counts, latency histograms and HTTP statuses', async () => {
  const r = await postJson(`${running.url}/v1/chat/completions`, chat('Hello', { max_tokens: 3 }), auth);
  assert.equal(r.status, 200);
  const response = await fetch(`${running.url}/metrics`, { headers: auth });
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  for (const name of [
    'internvl:num_requests_running',
    'internvl:num_requests_waiting',
    'internvl:prompt_tokens_total',
    'internvl:generation_tokens_total',
    'internvl:time_to_first_token_seconds',
    'internvl:inter_token_latency_seconds',
    'internvl:request_queue_time_seconds',
    'internvl:e2e_request_latency_seconds',
    'http_requests_total',
  ])
    assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
  assert.match(text, /^internvl:num_requests_running\{model_name="chat"\} 0$/m);
  assert.match(text, /^internvl:time_to_first_token_seconds_count\{model_name="chat"\} [1-9]\d*$/m);
  assert.match(text, /^internvl:e2e_request_latency_seconds_bucket\{model_name="chat",le="\+Inf"\} [1-9]\d*$/m);
  assert.match(text, /^http_requests_total\{handler="\/v1\/chat\/completions",method="POST",status="200"\} [1-9]\d*$/m);
  assert.match(text, /^http_requests_total\{handler="\/v1\/chat\/completions",method="POST",status="401"\} [1-9]\d*$/m);
});

test('one structured log line per request with method, path, model, status, tokens, TTFT and duration', async () => {
  logs.length = 0;
  await postJson(`${running.url}/v1/chat/completions`, chat('Hello', { max_tokens: 3 }), auth);
  await until(() => logs.length > 0, 'the log line');
  const entry = JSON.parse(logs[0]);
  assert.equal(entry.method, 'POST');
  assert.equal(entry.path, '/v1/chat/completions');
  assert.equal(entry.model, 'chat');
  assert.equal(entry.status, 200);
  assert.equal(entry.completion_tokens, 3);
  assert.ok(entry.prompt_tokens > 0);
  assert.equal(typeof entry.ttft_ms, 'number');
  assert.equal(typeof entry.duration_ms, 'number');
});

test('media through the chat route: loopback refused by default, fetched with --allow-private-media', async () => {
  const media = await startMediaHost((_req, res) => {
    res.writeHead(200, { 'content-type': 'image/png' });
    res.end(PNG);
  });
  const permissive = await startServer({
    models: [{ source: CHAT, name: 'chat' }],
    settings: {
      media: { ...running.server.context.settings.media, allowPrivate: true },
      maxTotalTiles: 2,
    },
  });
  try {
    const body = {
      model: 'chat',
      max_tokens: 1,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image_url', image_url: { url: `${media.url}/cat.png`, max_dynamic_patch: 1 } },
            { type: 'text', text: 'What is it?' },
          ],
        },
      ],
    };
    const refused = await postJson(`${running.url}/v1/chat/completions`, body, auth);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error.code, 'media_refused');
    const allowed = await postJson(`${permissive.url}/v1/chat/completions`, body);
    assert.equal(allowed.status, 200, JSON.stringify(allowed.body));
    assert.ok(allowed.body.usage.prompt_tokens > 256);
    // Three images cannot fit a budget of two tiles.
    const three = { ...body, messages: [{ role: 'user', content: [0, 1, 2].map(() => body.messages[0].content[0]) }] };
    const over = await postJson(`${permissive.url}/v1/chat/completions`, three);
    assert.equal(over.status, 400);
    assert.match(over.body.error.message, /budget of 2 tiles/);
  } finally {
    await permissive.close();
    await media.close();
  }
});

test('413 above the body limit; CORS off by default, on for the given origin', async () => {
  const small = await startServer({ models: [], bodyLimit: 1024, corsOrigins: ['http://app.example'] });
  try {
    const big = await postJson(`${small.url}/v1/chat/completions`, chat('x'.repeat(4096)));
    assert.equal(big.status, 413);
    assert.equal(big.body.error.code, 'body_too_large');
    const allowed = await fetch(`${small.url}/health`, { headers: { origin: 'http://app.example' } });
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://app.example');
    const preflight = await fetch(`${small.url}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { origin: 'http://app.example', 'access-control-request-method': 'POST' },
    });
    assert.equal(preflight.status, 204);
    const other = await fetch(`${small.url}/health`, { headers: { origin: 'http://evil.example' } });
    assert.equal(other.headers.get('access-control-allow-origin'), null);
  } finally {
    await small.close();
  }
  const plain = await fetch(`${running.url}/health`, { headers: { origin: 'http://app.example' } });
  assert.equal(plain.headers.get('access-control-allow-origin'), null);
});

test('the per-request timeout answers 504 and ends the generation', async () => {
  const strict = await startServer({ models: [{ source: CHAT, name: 'chat' }], settings: { timeoutSeconds: 1 } });
  try {
    const r = await postJson(`${strict.url}/v1/chat/completions`, chat('Tell a long story', { max_tokens: 8000 }));
    assert.equal(r.status, 504);
    assert.equal(r.body.error.code, 'timeout');
    const model = strict.server.context.host.get('chat') as ChatModel;
    await until(() => model.scheduler.running === 0, 'the timed-out generation to leave');
  } finally {
    await strict.close();
  }
});

test('SIGTERM with a stream in flight: the stream ends with [DONE], new connections are refused, exit 0', async () => {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(REPO, 'bin', 'internvl-dev.ts'),
      'serve',
      '--model',
      CHAT,
      '--port',
      '0',
      '--shutdown-timeout',
      '1',
    ],
    { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  try {
    await until(() => /ready \(chat_e2e\)/.test(stderr), `the server to be ready (${stderr})`, 60);
    const url = /listening on (http:\/\/\S+)/.exec(stderr)![1];
    const stream = await openStream(
      url,
      chat('Tell a long story', { model: 'chat_e2e', max_tokens: 8000, stream: true }),
    );
    child.kill('SIGTERM');
    const text = await stream.rest;
    assert.ok(text.endsWith('data: [DONE]\n\n'), text.slice(-200));
    assert.match(text, /"code":"shutting_down"/);
    assert.equal(await exited, 0, stderr);
    await assert.rejects(fetch(`${url}/health`));
  } finally {
    child.kill('SIGKILL');
  }
});

test('the vision tower runs off-thread on half the threads by default, on --vision-threads when given', async () => {
  const settings = { weights: 'fp32' as const, session: { threads: 2 }, maxBatch: 1, maxQueue: 1 };
  for (const [visionThreads, expected] of [
    [undefined, 1],
    [2, 2],
  ] as const) {
    const model = (await loadServedModel({ source: CHAT }, 'chat', { ...settings, visionThreads })) as ChatModel;
    try {
      assert.equal(model.pipeline.model.vision.offThread, true);
      assert.equal(model.pipeline.model.vision.threads, expected);
    } finally {
      await model.pipeline.model.release();
    }
  }
});
