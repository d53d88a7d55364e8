/**
 * The demo page of `internvl web`, driven in headless Chromium as a user would: load a model by URL, give an image,
 * ask; the streamed answer must be the official one (chat_e2e's golden). A model too big for the wasm heap must be
 * refused with a message saying so, before anything is downloaded.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../src/apps/browser/chromium.js';
import { startDemoServer } from '../src/apps/browser/demo.js';
import type { StaticServer } from '../src/apps/browser/static_server.js';
import { DATA, runCli, tempDir } from './helpers/cli.js';
import { noChromium, WATCHDOG } from './helpers/browser.js';

const E2E = path.join(DATA, 'fixtures', 'chat_e2e');

/** A checkpoint whose one tensor is 5.2 GB of float32: a sparse file, so it costs no disk. */
function hugeCheckpoint(): string {
  const dir = path.join(tempDir(), 'huge');
  fs.mkdirSync(dir);
  const shape = [40_000, 32_768];
  const bytes = shape[0] * shape[1] * 4;
  const name = 'language_model.model.layers.0.mlp.up_proj.weight';
  const header = Buffer.from(JSON.stringify({ [name]: { dtype: 'F32', shape, data_offsets: [0, bytes] } }));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(header.length));
  const file = path.join(dir, 'model.safetensors');
  fs.writeFileSync(file, Buffer.concat([length, header]));
  fs.truncateSync(file, 8 + header.length + bytes);
  return dir;
}

let server: (StaticServer & { models: string[] }) | undefined;
let browser: Browser | undefined;
let page: Page;

before(
  async () => {
    if (noChromium) return;
    server = await startDemoServer({ models: [E2E, hugeCheckpoint()] });
    browser = await launchChromium();
    page = await browser.newPage();
    await page.goto(`${server.origin}/index.html`);
    await page.waitForSelector('body[data-ready="1"]');
  },
  { timeout: WATCHDOG },
);

after(
  async () => {
    await browser?.close();
    await server?.close();
  },
  { timeout: WATCHDOG },
);

test('the demo page chats about a dropped image with the official answer, streamed', {
  skip: noChromium,
  timeout: WATCHDOG,
}, async () => {
  const meta = JSON.parse(fs.readFileSync(path.join(E2E, 'golden', 'meta.json'), 'utf8')).chat;
  await page.fill('#model', server!.models[0]);
  await page.selectOption('#device', 'wasm');
  await page.selectOption('#llm', 'fp32');
  await page.selectOption('#vision', 'fp32');
  await page.click('#load');
  await page.waitForSelector('#ask:not([disabled])');
  assert.match((await page.textContent('#status')) ?? '', /chat_e2e loaded in/);
  // A progress bar per graph, full.
  const bars = await page.$$eval('#progress progress', (all) => all.map((p) => (p as HTMLProgressElement).value));
  assert.ok(bars.length >= 2 && bars.every((v) => v === 1), JSON.stringify(bars));
  await page.setInputFiles('#file', path.join(E2E, 'golden', 'images', meta.image.file));
  await page.waitForSelector('#features:not([disabled])');
  assert.equal(await page.textContent('#image-info'), `${meta.image.file}: 451×300`);
  await page.fill('#max-tokens', String(meta.generation_config.max_new_tokens));
  await page.fill('#question', meta.turns[0].question);
  await page.click('#ask');
  await page.waitForSelector('.turn .a[data-done]');
  assert.equal(await page.textContent('.turn .a'), meta.turns[0].response);
  assert.equal(await page.$('#status.error'), null);
  // InternViT features of the same model's vision tower.
  await page.click('#features');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'features done');
  assert.match((await page.textContent('#features-out')) ?? '', /^dim \d+, L2 norm \d+\.\d{4}: \[/);
});

test('the demo page says when a model does not fit the wasm heap', {
  skip: noChromium,
  timeout: WATCHDOG,
}, async () => {
  await page.fill('#model', server!.models[1]);
  await page.selectOption('#device', 'wasm');
  await page.selectOption('#llm', 'fp32');
  await page.click('#load');
  await page.waitForSelector('#status.error');
  assert.match(
    (await page.textContent('#status')) ?? '',
    /huge: the model does not fit in the browser's wasm memory \(weights 5\.24 GB: .*\): choose int4 or int8 weights, or WebGPU$/,
  );
});

test('internvl web refuses a port it cannot listen on', async () => {
  const run = await runCli(['web', '--port', '1', '--host', '203.0.113.1']);
  assert.equal(run.code, 2);
  assert.match(run.stderr, /^error: cannot listen on 203\.0\.113\.1:1 \(EADDRNOTAVAIL\)\n$/);
});
