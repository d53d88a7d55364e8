/**
 * The server's media fetching against SSRF, served from loopback: private addresses refused by default (IP
 * literals and names resolved by the socket's own lookup), allowed with the flag; redirects re-checked and limited;
 * byte caps and timeouts before decoding; local files only under the allowed folder; the decoded-pixel guard.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DATA, tempDir } from './helpers/cli.js';
import { startMediaHost } from './helpers/server.js';
import { ApiError } from '../src/apps/server/errors.js';
import { DEFAULT_MEDIA_POLICY, fetchMedia, isPrivateAddress, type MediaPolicy } from '../src/apps/server/media.js';
import { loadMediaImage } from '../src/apps/server/media_decode.js';
import { DEFAULT_SETTINGS } from '../src/apps/server/server.js';

const PNG = fs.readFileSync(path.join(DATA, 'images', 'chelsea.png'));
let host: { url: string; close(): Promise<void> };

before(async () => {
  host = await startMediaHost((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const to = url.searchParams.get('to');
    if (url.pathname === '/image.png') {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': PNG.length });
      res.end(PNG);
    } else if (url.pathname === '/redirect' && to) {
      res.writeHead(302, { location: to });
      res.end();
    } else if (url.pathname === '/loop') {
      res.writeHead(301, { location: '/loop' });
      res.end();
    } else if (url.pathname === '/chunked') {
      // No Content-Length: the cap must hold while streaming.
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      for (let i = 0; i < 64; i++) res.write(Buffer.alloc(64 * 1024));
      res.end();
    } else if (url.pathname === '/slow') {
      res.writeHead(200, { 'content-type': 'image/png' });
      const timer = setInterval(() => res.write(Buffer.alloc(16)), 100);
      res.on('close', () => clearInterval(timer));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
});
after(() => host.close());

const open: MediaPolicy = { ...DEFAULT_MEDIA_POLICY, allowPrivate: true };

async function refusal(promise: Promise<unknown>, code: string): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ApiError, String(error));
    assert.equal(error.status, 400);
    assert.equal(error.code, code, error.message);
    return error.message;
  }
  assert.fail(`expected a ${code} refusal`);
}

test('the refused ranges: loopback, private, link-local, shared, multicast, mapped IPv6; public is fine', () => {
  for (const ip of [
    '127.0.0.1',
    '10.1.2.3',
    '172.16.0.1',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '::1',
    '::',
    'fe80::1',
    'fd00::1',
    'ff02::1',
    '::ffff:127.0.0.1',
    '::ffff:10.0.0.1',
  ])
    assert.equal(isPrivateAddress(ip), true, ip);
  for (const ip of ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8'])
    assert.equal(isPrivateAddress(ip), false, ip);
});

test('loopback media is refused by default, by IP literal and by a name the socket resolves', async () => {
  const literal = await refusal(fetchMedia(`${host.url}/image.png`, DEFAULT_MEDIA_POLICY), 'media_refused');
  assert.match(literal, /127\.0\.0\.1 is a private address/);
  const port = new URL(host.url).port;
  const named = await refusal(fetchMedia(`http://localhost:${port}/image.png`, DEFAULT_MEDIA_POLICY), 'media_refused');
  assert.match(named, /localhost resolves to the private address/);
});

test('with allow-private the same media is fetched byte for byte', async () => {
  const media = await fetchMedia(`${host.url}/image.png`, open);
  assert.deepEqual(Buffer.from(media.bytes), PNG);
});

test('every redirect hop is checked again: a redirect to a private address is refused; redirects are limited', async () => {
  // 127.0.0.1 plays the public host here; the redirect goes to another loopback address, which stays refused.
  const policy: MediaPolicy = { ...DEFAULT_MEDIA_POLICY, refuseAddress: (ip) => ip !== '127.0.0.1' };
  const port = new URL(host.url).port;
  assert.deepEqual(Buffer.from((await fetchMedia(`${host.url}/redirect?to=/image.png`, policy)).bytes), PNG);
  const to = encodeURIComponent(`http://127.0.0.2:${port}/image.png`);
  await refusal(fetchMedia(`${host.url}/redirect?to=${to}`, policy), 'media_refused');
  const metadata = encodeURIComponent('http://169.254.169.254/latest/meta-data/');
  await refusal(fetchMedia(`${host.url}/redirect?to=${metadata}`, policy), 'media_refused');
  await refusal(
    fetchMedia(`${host.url}/redirect?to=${encodeURIComponent('file:///etc/passwd')}`, policy),
    'media_refused',
  );
  const loop = await refusal(fetchMedia(`${host.url}/loop`, { ...open, maxRedirects: 2 }), 'media_fetch_failed');
  assert.match(loop, /more than 2 redirects/);
});

test('only http, https and data; the domain allow-list', async () => {
  await refusal(fetchMedia('ftp://example.com/a.png', open), 'media_refused');
  await refusal(fetchMedia('gopher://127.0.0.1:70/', open), 'media_refused');
  const listed = { ...open, allowedDomains: ['example.com'] };
  await refusal(fetchMedia(`${host.url}/image.png`, listed), 'media_refused');
  await refusal(fetchMedia('http://evil-example.com/a.png', listed), 'media_refused');
  const data = await fetchMedia(`data:image/png;base64,${PNG.toString('base64')}`, DEFAULT_MEDIA_POLICY);
  assert.deepEqual(Buffer.from(data.bytes), PNG);
});

test('oversized media is cut off while streaming (with or without Content-Length); slow media times out', async () => {
  const small = { ...open, maxBytes: 1024 };
  await refusal(fetchMedia(`${host.url}/image.png`, small), 'media_too_large');
  await refusal(fetchMedia(`${host.url}/chunked`, { ...open, maxBytes: 1024 * 1024 }), 'media_too_large');
  const started = Date.now();
  await refusal(fetchMedia(`${host.url}/slow`, { ...open, timeoutMs: 300 }), 'media_timeout');
  assert.ok(Date.now() - started < 5000);
});

test('local files only under the allowed folder: no traversal, no symlink out, nothing without the flag', async () => {
  const root = tempDir('internvl-media-');
  const inside = path.join(root, 'photos');
  fs.mkdirSync(inside);
  fs.copyFileSync(path.join(DATA, 'images', 'chelsea.png'), path.join(inside, 'cat.png'));
  const outside = tempDir('internvl-secret-');
  fs.writeFileSync(path.join(outside, 'secret.txt'), 'secret');
  fs.symlinkSync(path.join(outside, 'secret.txt'), path.join(inside, 'link.png'));
  const policy = { ...DEFAULT_MEDIA_POLICY, allowedLocalPath: inside };
  assert.deepEqual(Buffer.from((await fetchMedia(`file://${inside}/cat.png`, policy)).bytes), PNG);
  assert.deepEqual(Buffer.from((await fetchMedia(`${inside}/cat.png`, policy)).bytes), PNG);
  await refusal(fetchMedia(`${inside}/../../${path.basename(outside)}/secret.txt`, policy), 'media_refused');
  await refusal(fetchMedia(`file://${inside}/link.png`, policy), 'media_refused');
  await refusal(fetchMedia(`file://${inside}/missing.png`, policy), 'media_not_found');
  await refusal(fetchMedia(`file://${inside}/cat.png`, DEFAULT_MEDIA_POLICY), 'media_refused');
});

test('the decoded-pixel guard refuses an image whose header claims too many pixels, before decoding', async () => {
  // A PNG signature and an IHDR claiming 60000×60000: nothing to decode, refused on the header alone.
  const header = Buffer.alloc(33);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(header, 0);
  header.writeUInt32BE(13, 8);
  header.write('IHDR', 12, 'ascii');
  header.writeUInt32BE(60000, 16);
  header.writeUInt32BE(60000, 20);
  header[24] = 8;
  header[25] = 2;
  const bomb = `data:image/png;base64,${header.toString('base64')}`;
  await assert.rejects(loadMediaImage(bomb, DEFAULT_SETTINGS, new AbortController().signal), /pixels/);
  const small = { ...DEFAULT_SETTINGS, maxImagePixels: 1000 };
  await assert.rejects(
    loadMediaImage(`data:image/png;base64,${PNG.toString('base64')}`, small, new AbortController().signal),
    /pixels/,
  );
});
