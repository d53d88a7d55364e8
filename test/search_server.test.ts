import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Fastify from 'fastify';
import { chromium } from 'playwright-core';
import { openIndex, type SearchIndex } from '../src/apps/search/search_index.js';
import { searchPlugin } from '../src/apps/search/server.js';
import { describeError } from '../src/apps/server/errors.js';
import { createServer } from '../src/apps/server/server.js';
import { DATA, REPO, copyFolder, tempDir } from './helpers/cli.js';

const MODEL = path.join(DATA, 'fixtures', 'clip_e2e');
const photos = copyFolder(path.join(DATA, 'images'));
const db = path.join(tempDir(), 'db');

let built: Promise<SearchIndex> | null = null;
function indexed(): Promise<SearchIndex> {
  built ??= (async () => {
    const index = await openIndex(db, { model: MODEL });
    await index.add([photos]);
    return index;
  })();
  return built;
}

const dataUri = (file: string) => `data:image/png;base64,${fs.readFileSync(file).toString('base64')}`;

test('POST /v1/search on a bare fastify app: text and image queries, filters, errors; images by id only', async () => {
  const index = await indexed();
  const app = Fastify();
  // The server's error mapping (typed errors → 4xx), as `internvl serve` installs it.
  app.setErrorHandler((error, _request, reply) => {
    const { status, body } = describeError(error);
    return reply.code(status).send(body);
  });
  await app.register(async (scope) => searchPlugin(index)(scope));
  try {
    const text = await app.inject({ method: 'POST', url: '/v1/search', payload: { query: 'a red rocket', k: 5 } });
    assert.equal(text.statusCode, 200, text.body);
    const expected = await index.search('a red rocket', { k: 5 });
    const body = text.json();
    assert.deepEqual(
      body.data.map((r: { id: string }) => r.id),
      expected.map((r) => r.id),
    );
    body.data.forEach((r: { score: number }, i: number) => assert.ok(Math.abs(r.score - expected[i].score) < 1e-6));

    const horse = path.join(photos, 'horse.png');
    const byImage = await app.inject({ method: 'POST', url: '/v1/search', payload: { image: dataUri(horse), k: 3 } });
    assert.equal(byImage.statusCode, 200, byImage.body);
    assert.equal(byImage.json().data[0].image, horse);
    assert.ok(Math.abs(byImage.json().data[0].score - 1) < 1e-5);

    const filtered = await app.inject({
      method: 'POST',
      url: '/v1/search',
      payload: { query: 'x', k: 10, where: 'width >= 512' },
    });
    assert.ok(filtered.json().data.length > 0);
    assert.ok(filtered.json().data.every((r: { width: number }) => r.width >= 512));

    for (const payload of [{}, { query: 'a', image: dataUri(horse) }, { query: 'a', k: 0 }]) {
      const r = await app.inject({ method: 'POST', url: '/v1/search', payload });
      assert.equal(r.statusCode, 400, JSON.stringify(payload));
    }
    // A bare app reads no URLs or paths, only data URIs.
    const local = await app.inject({ method: 'POST', url: '/v1/search', payload: { image: horse } });
    assert.equal(local.statusCode, 400);
    const badWhere = await app.inject({
      method: 'POST',
      url: '/v1/search',
      payload: { query: 'a', where: 'nope = 1' },
    });
    assert.equal(badWhere.statusCode, 422);
    assert.match(badWhere.json().error.message, /^filter "nope = 1": /);

    const thumb = await app.inject({ method: 'GET', url: body.data[0].thumbnail_url });
    assert.equal(thumb.statusCode, 200);
    assert.equal(thumb.headers['content-type'], 'image/jpeg');
    assert.deepEqual([...thumb.rawPayload.subarray(0, 2)], [0xff, 0xd8]);
    const full = await app.inject({ method: 'GET', url: body.data[0].image_url });
    assert.deepEqual(full.rawPayload, fs.readFileSync(body.data[0].image));
    for (const url of [
      '/v1/search/images/0123456789abcdef0123456789abcdef',
      '/v1/search/images/..%2F..%2F..%2Fetc%2Fpasswd',
      `/v1/search/images/${encodeURIComponent(horse)}`,
      "/v1/search/images/x'%20OR%20'1'='1",
    ]) {
      assert.equal((await app.inject({ method: 'GET', url })).statusCode, 404, url);
    }
    const page = await app.inject({ method: 'GET', url: '/' });
    assert.match(page.body, /<title>internvl search<\/title>/);
  } finally {
    await app.close();
  }
});

test('the web page in headless Chromium: text query, image upload, detail view (screenshot in docs/)', async () => {
  const index = await indexed();
  const server = createServer({
    models: [],
    load: { weights: 'fp32', session: {}, maxBatch: 1, maxQueue: 1 },
    plugins: [searchPlugin(index)],
    logFormat: 'none',
  });
  const url = await server.listen({ host: '127.0.0.1', port: 0 });
  const browser = await chromium.launchPersistentContext(tempDir('internvl-chromium-'), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    viewport: { width: 1100, height: 760 },
  });
  try {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('info')?.textContent?.includes('8 images'));
    await page.fill('#k', '8');
    await page.fill('#q', 'a photo of a cat');
    await page.press('#q', 'Enter');
    await page.waitForSelector('.card');
    await page.waitForFunction(() =>
      [...document.querySelectorAll<HTMLImageElement>('.card img')].every((i) => i.complete && i.naturalWidth > 0),
    );
    const expected = await index.search('a photo of a cat', { k: 8 });
    const shown = await page.$$eval('.card', (cards) =>
      cards.map((c) => ({ id: (c as HTMLElement).dataset.id, text: c.textContent })),
    );
    assert.deepEqual(
      shown.map((c) => c.id),
      expected.map((r) => r.id),
    );
    assert.ok(shown[0].text?.includes(expected[0].score.toFixed(4)));
    assert.ok(shown[0].text?.includes(expected[0].image));
    assert.match((await page.textContent('#status')) ?? '', /^8 results in \d+ ms$/);
    // docs/search-page.png is this screenshot: INTERNVL_SEARCH_SCREENSHOT=docs/search-page.png to renew it.
    const shot = process.env.INTERNVL_SEARCH_SCREENSHOT ?? path.join(tempDir(), 'search-page.png');
    await page.screenshot({ path: path.resolve(REPO, shot) });
    assert.ok(fs.statSync(path.resolve(REPO, shot)).size > 10_000);

    // Search by image: upload the rocket; it finds itself first.
    const rocket = path.join(photos, 'rocket.jpg');
    await page.setInputFiles('#file', rocket);
    await page.waitForFunction((file) => document.querySelector('.card .path')?.textContent === file, rocket);
    assert.match((await page.textContent('.card .score')) ?? '', /^#1 {2}1\.0000$/);

    // The detail view shows the full image and its facts.
    await page.click('.card');
    await page.waitForFunction(() => {
      const img = document.getElementById('big') as HTMLImageElement;
      return document.getElementById('detail')?.className === 'open' && img.complete && img.naturalWidth > 0;
    });
    const facts = (await page.textContent('#facts')) ?? '';
    assert.ok(facts.includes(rocket) && facts.includes('×'), facts);
    await page.keyboard.press('Escape');
    assert.equal(await page.getAttribute('#detail', 'class'), '');
  } finally {
    await browser.close();
    await server.close(1);
  }
});

test('internvl serve --index: /v1/search and the page', async () => {
  await indexed();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(REPO, 'bin', 'internvl-dev.ts'), 'serve', '--index', db, '--port', '0'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let err = '';
      child.stderr!.setEncoding('utf8').on('data', (d: string) => {
        err += d;
        const m = /listening on (http:\/\/\S+)/.exec(err);
        if (m) resolve(m[1]);
      });
      child.once('close', () => reject(new Error(err)));
    });
    const r = await fetch(`${url}/v1/search`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'a horse', k: 2 }),
    });
    assert.equal(r.status, 200);
    assert.equal(((await r.json()) as { data: unknown[] }).data.length, 2);
    assert.match(await (await fetch(url)).text(), /internvl search/);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('close', r));
  }
});
