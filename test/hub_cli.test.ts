/**
 * `--model org/name` end to end: a local server answers the Hub's API and `resolve` URLs for the chat_e2e checkpoint
 * (weights redirected to a second "CDN" address with their sha256 as ETag, as the Hub does for LFS files); the CLI
 * downloads into the Hugging Face cache layout, answers like from the local folder, and works offline afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { DATA, runCli, tempDir } from './helpers/cli.js';

const SOURCE = path.join(DATA, 'fixtures', 'chat_e2e');
const REPO = 'OpenGVLab/InternVL2-tiny';
const SHA = '0123456789abcdef0123456789abcdef01234567';
const FILES = fs.readdirSync(SOURCE).filter((f) => fs.statSync(path.join(SOURCE, f)).isFile());

function serve(handler: http.RequestListener): Promise<{ server: http.Server; url: string }> {
  const server = http.createServer(handler);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }),
    ),
  );
}

test('internvl chat --model org/name downloads once into the HF cache, then runs offline', async () => {
  const requests: string[] = [];
  const content = (file: string) => fs.readFileSync(path.join(SOURCE, file));
  const sha = (file: string) => crypto.createHash('sha256').update(content(file)).digest('hex');
  const cdn = await serve((req, res) => {
    requests.push(`cdn ${req.url}`);
    const file = FILES.find((f) => req.url === `/lfs/${sha(f)}`);
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    const body = content(file);
    res
      .writeHead(200, { 'Content-Length': String(body.length), ETag: `"${sha(file)}"` })
      .end(req.method === 'HEAD' ? undefined : body);
  });
  const hub = await serve((req, res) => {
    requests.push(`hub ${req.url}`);
    const url = new URL(req.url!, 'http://x');
    if (url.pathname === `/api/models/${REPO}/revision/main`) {
      res
        .writeHead(200, { 'Content-Type': 'application/json' })
        .end(JSON.stringify({ sha: SHA, siblings: FILES.map((rfilename) => ({ rfilename })) }));
      return;
    }
    const file = FILES.find(
      (f) => url.pathname === `/${REPO}/resolve/${SHA}/${f}` || url.pathname === `/${REPO}/resolve/main/${f}`,
    );
    if (!file) {
      res.writeHead(404, { 'X-Error-Code': 'EntryNotFound' }).end();
      return;
    }
    if (file.endsWith('.safetensors')) {
      res
        .writeHead(302, {
          Location: `${cdn.url}/lfs/${sha(file)}`,
          'X-Linked-Etag': `"${sha(file)}"`,
          'X-Linked-Size': String(content(file).length),
          'X-Repo-Commit': SHA,
        })
        .end();
      return;
    }
    const body = content(file);
    const etag = crypto.createHash('sha1').update(body).digest('hex');
    res
      .writeHead(200, { ETag: `"${etag}"`, 'Content-Length': String(body.length), 'X-Repo-Commit': SHA })
      .end(req.method === 'HEAD' ? undefined : body);
  });
  try {
    const cache = tempDir();
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '' };
    const args = ['chat', '--model', REPO, '--max-new-tokens', '3', '--json', 'Hello'];
    const online = await runCli(args, { env });
    assert.equal(online.code, 0, online.stderr);
    assert.ok(
      requests.some((r) => r.startsWith('cdn /lfs/')),
      'the weights came through the redirect',
    );
    const snapshot = path.join(cache, `models--${REPO.replace('/', '--')}`, 'snapshots', SHA);
    assert.ok(fs.lstatSync(path.join(snapshot, 'model.safetensors')).isSymbolicLink());
    assert.equal(
      fs.readFileSync(path.join(cache, `models--${REPO.replace('/', '--')}`, 'refs', 'main'), 'utf8').trim(),
      SHA,
    );

    const local = await runCli(['chat', '--model', SOURCE, '--max-new-tokens', '3', '--json', 'Hello']);
    assert.deepEqual(JSON.parse(online.stdout), JSON.parse(local.stdout));

    requests.length = 0;
    const offline = await runCli(args, { env: { ...env, HF_HUB_OFFLINE: '1' } });
    assert.equal(offline.code, 0, offline.stderr);
    assert.deepEqual(requests, []);
    assert.deepEqual(JSON.parse(offline.stdout), JSON.parse(online.stdout));

    const missing = await runCli(['chat', '--model', 'OpenGVLab/nope', 'Hello'], { env });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^error: .*OpenGVLab\/nope[^\n]*\n$/);
  } finally {
    for (const { server } of [hub, cdn]) {
      server.closeAllConnections();
      server.close();
    }
  }
});
