import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { HubError, ModelLoadError } from '../src/core/errors.js';
import { DEFAULT_ALLOW_PATTERNS, resolveModelDir, type DownloadProgress } from '../src/core/hub.js';
import { parseRepoId } from '../src/core/hub/env.js';
import { matchesGlob } from '../src/core/hub/snapshot.js';
import { createProgressReporter } from '../src/core/progress.js';

const REPO = 'test-org/tiny-model';
const SHA = '0123456789abcdef0123456789abcdef01234567';
const REPO_DIR = 'models--test-org--tiny-model';

interface FakeFile {
  content: Buffer;
  etag: string;
  lfs: boolean;
}

function gitBlobSha1(content: Buffer): string {
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

function makeFile(content: Buffer | string, lfs = false): FakeFile {
  const buf = Buffer.isBuffer(content) ? content : Buffer.from(content);
  return { content: buf, lfs, etag: lfs ? createHash('sha256').update(buf).digest('hex') : gitBlobSha1(buf) };
}

const LFS_SIZE = 200_000;
const FILES: Record<string, FakeFile> = {
  'config.json': makeFile('{"architectures":["InternVLChatModel"]}\n'),
  'tokenizer_config.json': makeFile('{"model_max_length":8192}\n'),
  'model.safetensors': makeFile(randomBytes(LFS_SIZE), true),
  'modeling_internvl.py': makeFile('print("custom code")\n'),
  'pytorch_model.bin': makeFile('pickle'),
  'extra/nested.json': makeFile('{"nested":true}\n'),
};
const LFS_ETAG = FILES['model.safetensors']!.etag;

interface Seen {
  server: 'hub' | 'cdn';
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

/** The Hub's API and resolve URLs for one repo, plus a second server standing in for the LFS CDN. */
class FakeHub {
  hub!: http.Server;
  cdn!: http.Server;
  hubUrl = '';
  cdnUrl = '';
  seen: Seen[] = [];
  requireToken: string | undefined;
  /** The CDN closes the socket after this many bytes, once. */
  cutAfter: number | undefined;
  corrupt = false;
  ignoreRange = false;
  /** The CDN sends this many bytes, then nothing more (the connection stays open). */
  stallAfter: number | undefined;

  reset(): void {
    this.seen = [];
    this.requireToken = undefined;
    this.cutAfter = undefined;
    this.stallAfter = undefined;
    this.corrupt = false;
    this.ignoreRange = false;
  }

  async start(): Promise<void> {
    this.hub = http.createServer((req, res) => this.onHub(req, res));
    this.cdn = http.createServer((req, res) => this.onCdn(req, res));
    this.hubUrl = await listen(this.hub);
    this.cdnUrl = await listen(this.cdn);
  }

  async stop(): Promise<void> {
    for (const s of [this.hub, this.cdn]) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  }

  private onHub(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.seen.push({ server: 'hub', method: req.method!, url: req.url!, headers: req.headers });
    if (this.requireToken && req.headers.authorization !== `Bearer ${this.requireToken}`) {
      res.writeHead(401, { 'X-Error-Code': 'RepoNotFound' }).end('Unauthorized');
      return;
    }
    const url = new URL(req.url!, 'http://x');
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(url.pathname);
    if (api) {
      if (api[1] !== REPO || (api[2] !== 'main' && api[2] !== SHA)) {
        res.writeHead(404, { 'X-Error-Code': 'RepoNotFound' }).end('{"error":"Repository not found"}');
        return;
      }
      const body = JSON.stringify({
        id: REPO,
        sha: SHA,
        siblings: Object.keys(FILES).map((rfilename) => ({ rfilename })),
      });
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(body);
      return;
    }
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const file = m && m[1] === REPO && (m[2] === 'main' || m[2] === SHA) ? FILES[decodeURIComponent(m[3]!)] : undefined;
    if (!file) {
      res.writeHead(404, { 'X-Error-Code': 'EntryNotFound' }).end('Entry not found');
      return;
    }
    if (file.lfs) {
      res
        .writeHead(302, {
          Location: `${this.cdnUrl}/lfs/${file.etag}?signature=abc`,
          'X-Linked-Etag': `"${file.etag}"`,
          'X-Linked-Size': String(file.content.length),
          'X-Repo-Commit': SHA,
          ETag: 'W/"not-the-blob-etag"',
          'Content-Length': '5',
        })
        .end(req.method === 'HEAD' ? undefined : 'Found');
      return;
    }
    res.writeHead(200, { ETag: `"${file.etag}"`, 'Content-Length': String(file.content.length), 'X-Repo-Commit': SHA });
    res.end(req.method === 'HEAD' ? undefined : file.content);
  }

  private onCdn(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.seen.push({ server: 'cdn', method: req.method!, url: req.url!, headers: req.headers });
    const m = /^\/lfs\/([0-9a-f]{64})$/.exec(new URL(req.url!, 'http://x').pathname);
    const file = m ? Object.values(FILES).find((f) => f.etag === m[1]) : undefined;
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    let content = file.content;
    if (this.corrupt) {
      content = Buffer.from(content);
      content[100] = content[100]! ^ 0xff;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    let start = 0;
    if (range && !this.ignoreRange) {
      start = Number(range[1]);
      res.writeHead(206, {
        'Content-Range': `bytes ${start}-${content.length - 1}/${content.length}`,
        'Content-Length': String(content.length - start),
        ETag: `"${file.etag}"`,
      });
    } else {
      res.writeHead(200, { 'Content-Length': String(content.length), ETag: `"${file.etag}"` });
    }
    const body = content.subarray(start);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    if (this.stallAfter !== undefined) {
      res.write(body.subarray(0, this.stallAfter));
      return;
    }
    if (this.cutAfter !== undefined) {
      const n = this.cutAfter;
      this.cutAfter = undefined;
      res.write(body.subarray(0, n), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(body);
  }
}

function listen(server: http.Server): Promise<string> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  });
}

const ENV_KEYS = [
  'HF_HOME',
  'HF_HUB_CACHE',
  'HUGGINGFACE_HUB_CACHE',
  'HF_TOKEN',
  'HUGGING_FACE_HUB_TOKEN',
  'HF_TOKEN_PATH',
  'HF_ENDPOINT',
  'HF_HUB_OFFLINE',
  'TRANSFORMERS_OFFLINE',
  'XDG_CACHE_HOME',
  'HF_HUB_DOWNLOAD_TIMEOUT',
  'INTERNVL_HUB_RETRIES',
];

const fake = new FakeHub();
let tmpRoot = '';
let savedEnv: Record<string, string | undefined> = {};
let caseNo = 0;
let cache = '';

const downloads = (s: Seen[]) =>
  s.filter((r) => r.method === 'GET' && (r.server === 'cdn' || r.url.includes('/resolve/')));
const opts = (extra: Parameters<typeof resolveModelDir>[1] = {}) => ({
  cacheDir: cache,
  endpoint: fake.hubUrl,
  ...extra,
});
const snapshot = (root = cache) => path.join(root, REPO_DIR, 'snapshots', SHA);

before(async () => {
  tmpRoot = await fs.mkdtemp(path.join(os.tmpdir(), 'internvl-hub-test-'));
  savedEnv = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
  for (const k of ENV_KEYS) delete process.env[k];
  // Never read the real user's token or cache.
  process.env.HF_HOME = path.join(tmpRoot, 'hf-home');
  await fake.start();
});

after(async () => {
  await fake.stop();
  for (const k of ENV_KEYS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
  await fs.rm(tmpRoot, { recursive: true, force: true });
});

beforeEach(() => {
  fake.reset();
  cache = path.join(tmpRoot, `cache-${++caseNo}`);
});

afterEach(() => {
  delete process.env.HF_HUB_OFFLINE;
  delete process.env.TRANSFORMERS_OFFLINE;
  delete process.env.HF_TOKEN;
  delete process.env.HF_HUB_CACHE;
  delete process.env.HF_ENDPOINT;
  delete process.env.HF_HUB_DOWNLOAD_TIMEOUT;
  delete process.env.INTERNVL_HUB_RETRIES;
  process.env.HF_HOME = path.join(tmpRoot, 'hf-home');
});

describe('resolveModelDir: downloads', () => {
  it('creates the huggingface_hub cache layout: blobs, relative symlinks, refs/main', async () => {
    const events: DownloadProgress[] = [];
    const dir = await resolveModelDir(REPO, opts({ onProgress: (e) => events.push(e) }));
    assert.equal(dir, snapshot());

    const repoDir = path.join(cache, REPO_DIR);
    assert.deepEqual((await fs.readdir(repoDir)).sort(), ['blobs', 'refs', 'snapshots']);
    assert.equal(await fs.readFile(path.join(repoDir, 'refs', 'main'), 'utf8'), SHA);
    const wanted = ['config.json', 'model.safetensors', 'tokenizer_config.json'];
    assert.deepEqual((await fs.readdir(path.join(repoDir, 'blobs'))).sort(), wanted.map((f) => FILES[f]!.etag).sort());
    assert.deepEqual((await fs.readdir(dir)).sort(), wanted);
    for (const f of wanted) {
      const p = path.join(dir, f);
      assert.ok((await fs.lstat(p)).isSymbolicLink(), f);
      assert.equal(await fs.readlink(p), `../../blobs/${FILES[f]!.etag}`);
      assert.deepEqual(await fs.readFile(p), FILES[f]!.content);
    }

    // The LFS HEAD stopped at the Hub's redirect; only the body GET went to the CDN.
    assert.deepEqual(
      fake.seen.filter((s) => s.server === 'cdn').map((s) => s.method),
      ['GET'],
    );
    // One GET per file at the Hub (the LFS one answered by the redirect) and one at the CDN.
    assert.equal(downloads(fake.seen).length, 4);
    for (const s of fake.seen) assert.equal(s.headers['accept-encoding'], 'identity');

    const last = events.filter((e) => e.file === 'model.safetensors').at(-1)!;
    assert.equal(last.fileDone, true);
    assert.equal(last.bytesDone, LFS_SIZE);
    assert.equal(last.totalBytes, LFS_SIZE);
    const total = wanted.reduce((s, f) => s + FILES[f]!.content.length, 0);
    assert.equal(events.at(-1)!.overallTotalBytes, total);
    assert.equal(events.at(-1)!.overallBytesDone, total);

    assert.equal(
      await fs.realpath(path.join(dir, 'model.safetensors')),
      await fs.realpath(path.join(repoDir, 'blobs', LFS_ETAG)),
    );
  });

  it('downloads nothing the second time, and reuses a blob when only the link is missing', async () => {
    await resolveModelDir(REPO, opts());
    fake.seen = [];
    const dir = await resolveModelDir(REPO, opts());
    assert.equal(dir, snapshot());
    assert.equal(downloads(fake.seen).length, 0);
    assert.deepEqual(
      fake.seen.map((s) => `${s.method} ${s.url}`),
      [`GET /api/models/${REPO}/revision/main`],
    );

    await fs.rm(path.join(dir, 'model.safetensors'));
    fake.seen = [];
    await resolveModelDir(REPO, opts());
    assert.equal(downloads(fake.seen).length, 0);
    assert.equal(fake.seen.filter((s) => s.method === 'HEAD').length, 1);
    assert.equal(await fs.readlink(path.join(dir, 'model.safetensors')), `../../blobs/${LFS_ETAG}`);
  });

  it('links nested files with one more ../ per folder, and honours allowPatterns', async () => {
    const dir = await resolveModelDir(REPO, opts({ allowPatterns: ['extra/**', 'config.json'] }));
    assert.deepEqual((await fs.readdir(dir)).sort(), ['config.json', 'extra']);
    const p = path.join(dir, 'extra', 'nested.json');
    assert.equal(await fs.readlink(p), `../../../blobs/${FILES['extra/nested.json']!.etag}`);
    assert.deepEqual(await fs.readFile(p), FILES['extra/nested.json']!.content);
  });

  it('resolves org/name@revision and pins downloads to the listed commit', async () => {
    const dir = await resolveModelDir(`${REPO}@main`, opts());
    assert.equal(dir, snapshot());
    for (const s of fake.seen.filter((r) => r.url.includes('/resolve/')))
      assert.ok(s.url.includes(`/resolve/${SHA}/`), s.url);
  });

  it('resumes with Range after the connection is cut mid-file', async () => {
    fake.cutAfter = 50_000;
    const dir = await resolveModelDir(REPO, opts());
    const gets = fake.seen.filter((s) => s.server === 'cdn' && s.method === 'GET');
    assert.equal(gets.length, 2);
    assert.equal(gets[0]!.headers.range, undefined);
    const m = /^bytes=(\d+)-$/.exec(gets[1]!.headers.range ?? '');
    assert.ok(m, `second GET has a Range header: ${gets[1]!.headers.range}`);
    const from = Number(m[1]);
    assert.ok(from > 0 && from <= 50_000, `resumed from ${from}`);
    const data = await fs.readFile(path.join(dir, 'model.safetensors'));
    assert.equal(createHash('sha256').update(data).digest('hex'), LFS_ETAG);
  });

  it('resumes from a partial file left by an earlier run (206) and restarts when the server ignores Range (200)', async () => {
    for (const ignoreRange of [false, true]) {
      fake.reset();
      fake.ignoreRange = ignoreRange;
      cache = path.join(tmpRoot, `cache-${++caseNo}`);
      const blobs = path.join(cache, REPO_DIR, 'blobs');
      await fs.mkdir(blobs, { recursive: true });
      await fs.writeFile(
        path.join(blobs, `${LFS_ETAG}.incomplete`),
        FILES['model.safetensors']!.content.subarray(0, 12_345),
      );
      const dir = await resolveModelDir(REPO, opts());
      const gets = fake.seen.filter((s) => s.server === 'cdn' && s.method === 'GET');
      assert.deepEqual(
        gets.map((g) => g.headers.range),
        ['bytes=12345-'],
      );
      assert.deepEqual(await fs.readFile(path.join(dir, 'model.safetensors')), FILES['model.safetensors']!.content);
      assert.deepEqual(
        (await fs.readdir(blobs)).filter((f) => f.startsWith(LFS_ETAG)),
        [LFS_ETAG],
      );
    }
  });

  it('rejects a blob whose sha256 does not match its etag and leaves nothing behind', async () => {
    fake.corrupt = true;
    await assert.rejects(resolveModelDir(REPO, opts()), (e: unknown) => {
      assert.ok(e instanceof HubError);
      assert.match(e.message, /sha256 mismatch/);
      assert.match(e.message, /model\.safetensors/);
      assert.match(e.message, /test-org\/tiny-model/);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    });
    const blobs = await fs.readdir(path.join(cache, REPO_DIR, 'blobs'));
    assert.deepEqual(
      blobs.filter((f) => f.startsWith(LFS_ETAG)),
      [],
    );
  });

  it('lets two concurrent resolves share one download (blob lock)', async () => {
    const [a, b] = await Promise.all([resolveModelDir(REPO, opts()), resolveModelDir(REPO, opts())]);
    assert.equal(a, b);
    assert.equal(fake.seen.filter((s) => s.server === 'cdn' && s.method === 'GET').length, 1);
    assert.deepEqual(await fs.readFile(path.join(a, 'model.safetensors')), FILES['model.safetensors']!.content);
    assert.deepEqual(
      (await fs.readdir(path.join(cache, REPO_DIR, 'blobs'))).filter((f) => f.endsWith('.lock')),
      [],
    );
  });

  it("takes over at once the lock of a killed process, at huggingface_hub's lock path", async () => {
    const locks = path.join(cache, '.locks', REPO_DIR);
    await fs.mkdir(locks, { recursive: true });
    const lock = path.join(locks, `${LFS_ETAG}.lock`);
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    // Fresh (heartbeat just now) but its owner is gone, as SIGKILL leaves it.
    await fs.writeFile(lock, JSON.stringify({ tool: 'internvl-ts', pid: dead, host: os.hostname(), since: 'x' }));
    const notices: string[] = [];
    const started = Date.now();
    const dir = await resolveModelDir(REPO, opts({ onNotice: (l) => notices.push(l) }));
    assert.ok(Date.now() - started < 3000);
    assert.deepEqual(notices, [], 'a dead owner is not waited for');
    assert.deepEqual(await fs.readFile(path.join(dir, 'model.safetensors')), FILES['model.safetensors']!.content);
    await assert.rejects(fs.stat(lock), { code: 'ENOENT' });
    await assert.rejects(fs.stat(path.join(cache, REPO_DIR, 'blobs', `${LFS_ETAG}.lock`)), { code: 'ENOENT' });
  });

  it('takes a lock file huggingface_hub left behind (empty, no download going on)', async () => {
    const lock = path.join(cache, '.locks', REPO_DIR, `${LFS_ETAG}.lock`);
    await fs.mkdir(path.dirname(lock), { recursive: true });
    await fs.writeFile(lock, '');
    const dir = await resolveModelDir(REPO, opts());
    assert.deepEqual(await fs.readFile(path.join(dir, 'model.safetensors')), FILES['model.safetensors']!.content);
  });

  it('waits for a live owner of the download, saying so, and then finds the blob it fetched', async () => {
    const lock = path.join(cache, '.locks', REPO_DIR, `${LFS_ETAG}.lock`);
    await fs.mkdir(path.dirname(lock), { recursive: true });
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
    try {
      await fs.writeFile(
        lock,
        JSON.stringify({ tool: 'internvl-ts', pid: holder.pid, host: os.hostname(), since: 'x' }),
      );
      const notices: string[] = [];
      // Once we say we wait, the "other process" finishes the blob, then dies.
      let finished: Promise<void> | undefined;
      const finish = async () => {
        const blobs = path.join(cache, REPO_DIR, 'blobs');
        await fs.mkdir(blobs, { recursive: true });
        await fs.writeFile(path.join(blobs, LFS_ETAG), FILES['model.safetensors']!.content);
        holder.kill('SIGKILL');
      };
      fake.seen = [];
      const dir = await resolveModelDir(
        REPO,
        opts({
          onNotice: (l) => {
            notices.push(l);
            finished ??= finish();
          },
        }),
      );
      await finished;
      assert.equal(notices.length, 1, notices.join('\n'));
      assert.match(
        notices[0]!,
        new RegExp(
          `^waiting for the download of model\\.safetensors \\(${REPO}\\): .*\\.lock is held by process ${holder.pid} on `,
        ),
      );
      assert.equal(downloads(fake.seen).filter((s) => s.url.includes('model.safetensors')).length, 0);
      assert.deepEqual(await fs.readFile(path.join(dir, 'model.safetensors')), FILES['model.safetensors']!.content);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

describe('resolveModelDir: tokens and errors', () => {
  it('401 without a token says a token is needed', async () => {
    fake.requireToken = 'secret';
    await assert.rejects(resolveModelDir(REPO, opts()), (e: unknown) => {
      assert.ok(e instanceof HubError);
      assert.match(e.message, /needs a token \(HF_TOKEN\)/);
      assert.match(e.message, /test-org\/tiny-model/);
      assert.match(e.message, /401/);
      return true;
    });
  });

  it('sends the token to the Hub as Bearer, and not to the CDN the Hub redirects to', async () => {
    fake.requireToken = 'secret';
    await resolveModelDir(REPO, opts({ token: 'secret' }));
    const hub = fake.seen.filter((s) => s.server === 'hub');
    const cdn = fake.seen.filter((s) => s.server === 'cdn');
    assert.ok(hub.length >= 4 && cdn.length === 1);
    for (const s of hub) assert.equal(s.headers.authorization, 'Bearer secret', s.url);
    for (const s of cdn) assert.equal(s.headers.authorization, undefined, s.url);
  });

  it('reads the token from HF_TOKEN, then from $HF_HOME/token', async () => {
    fake.requireToken = 'from-env';
    process.env.HF_TOKEN = 'from-env';
    await resolveModelDir(REPO, opts());
    delete process.env.HF_TOKEN;

    fake.reset();
    fake.requireToken = 'from-file';
    cache = path.join(tmpRoot, `cache-${++caseNo}`);
    const home = path.join(tmpRoot, `home-${caseNo}`);
    await fs.mkdir(home, { recursive: true });
    await fs.writeFile(path.join(home, 'token'), 'from-file\n');
    process.env.HF_HOME = home;
    await resolveModelDir(REPO, opts());
    assert.ok(fake.seen.every((s) => s.server === 'cdn' || s.headers.authorization === 'Bearer from-file'));
  });

  it('404 says no such repo or file', async () => {
    await assert.rejects(resolveModelDir('test-org/missing', opts()), (e: unknown) => {
      assert.ok(e instanceof HubError);
      assert.match(e.message, /test-org\/missing/);
      assert.match(e.message, /no such repo or file/);
      return true;
    });
  });

  it('an unreachable endpoint says so and how to work offline', async () => {
    const dead = http.createServer();
    const url = await listen(dead);
    await new Promise<void>((r) => dead.close(() => r()));
    await assert.rejects(resolveModelDir(REPO, opts({ endpoint: url })), (e: unknown) => {
      assert.ok(e instanceof HubError);
      assert.ok(e.message.includes(`cannot reach ${url}`), e.message);
      assert.match(e.message, /use a local folder or set HF_HUB_OFFLINE=1 with a filled cache/);
      assert.match(e.message, /test-org\/tiny-model/);
      return true;
    });
  });
});

describe('resolveModelDir: bounded, visible network waits', () => {
  it('a stalled download says it is waiting within the timeout, retries visibly, and gives up in bounded time', async () => {
    fake.stallAfter = 1000;
    const notices: string[] = [];
    const started = Date.now();
    await assert.rejects(
      resolveModelDir(REPO, opts({ timeoutMs: 1200, retries: 1, onNotice: (l) => notices.push(l) })),
      (e: unknown) => {
        assert.ok(e instanceof HubError);
        assert.match(
          e.message,
          /cannot download model\.safetensors .*: no data from http:\/\/127\.0\.0\.1:\d+ for 1\.2 s, 2 attempts; run again to resume/,
        );
        return true;
      },
    );
    assert.ok(Date.now() - started < 6000, `took ${Date.now() - started} ms`);
    assert.match(notices[0]!, /^waiting for http:\/\/127\.0\.0\.1:\d+: no data for 0\.6 s \(giving up after 1\.2 s\)$/);
    assert.ok(
      notices.some((l) => /: no data from .* for 1\.2 s; retrying in 0\.5 s \(attempt 2 of 2\)$/.test(l)),
      notices.join('\n'),
    );
  });

  it('HF_HUB_DOWNLOAD_TIMEOUT and INTERNVL_HUB_RETRIES set the timeout and the attempts', async () => {
    fake.stallAfter = 1000;
    process.env.HF_HUB_DOWNLOAD_TIMEOUT = '0.8';
    process.env.INTERNVL_HUB_RETRIES = '0';
    await assert.rejects(resolveModelDir(REPO, opts({ onNotice: () => {} })), /for 0\.8 s, 1 attempts/);
    process.env.INTERNVL_HUB_RETRIES = 'many';
    await assert.rejects(resolveModelDir(REPO, opts()), /INTERNVL_HUB_RETRIES=many: expected a number >= 0/);
  });

  it('an unreachable Hub with a complete cached snapshot uses it, with a one-line notice', async () => {
    const filled = await resolveModelDir(REPO, opts());
    const dead = http.createServer();
    const url = await listen(dead);
    await new Promise<void>((r) => dead.close(() => r()));
    const notices: string[] = [];
    const dir = await resolveModelDir(REPO, opts({ endpoint: url, onNotice: (l) => notices.push(l) }));
    assert.equal(dir, filled);
    assert.deepEqual(notices, [`cannot reach ${url} (ECONNREFUSED); using the cached snapshot ${filled}`]);
    // A half-filled cache is not used: the network error stands.
    await fs.rm(path.join(filled, 'config.json'));
    await assert.rejects(resolveModelDir(REPO, opts({ endpoint: url })), /cannot reach/);
  });

  it('a full disk (file-size limit) during a download is a disk error, not retried as a network failure', async () => {
    const child = path.join(import.meta.dirname, 'helpers', 'write_child.ts');
    // Asynchronously: the fake Hub runs in this process.
    const script = 'ulimit -f 100 && exec node --import tsx "$1" hub "$2" "$3" "$4"';
    const proc = spawn('bash', ['-c', script, 'sh', child, fake.hubUrl, cache, REPO], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    proc.stderr.on('data', (d) => (stderr += d));
    const status = await new Promise<number | null>((resolve) => proc.on('close', resolve));
    const r = { status, stderr };
    assert.equal(r.status, 2, r.stderr);
    const blob = path.join(cache, REPO_DIR, 'blobs', `${LFS_ETAG}.incomplete`);
    assert.equal(r.stderr, `error: no space left writing ${blob} (the file-size limit was reached)\n`);
    assert.equal(downloads(fake.seen).filter((x) => x.server === 'cdn').length, 1, 'one attempt only');
    // With space again, the kept bytes are resumed and the blob is verified.
    fake.seen = [];
    const dir = await resolveModelDir(REPO, opts());
    assert.deepEqual(await fs.readFile(path.join(dir, 'model.safetensors')), FILES['model.safetensors']!.content);
    assert.match(String(fake.seen.find((x) => x.server === 'cdn')?.headers.range), /^bytes=\d+-$/);
  });
});

describe('resolveModelDir: offline, environment, local folders', () => {
  const noNetwork = (() => {
    throw new Error('network used while offline');
  }) as unknown as typeof fetch;

  it('offline with a filled cache resolves without any request (option and HF_HUB_OFFLINE=1)', async () => {
    const online = await resolveModelDir(REPO, opts());
    fake.seen = [];
    assert.equal(await resolveModelDir(REPO, opts({ offline: true, fetchImpl: noNetwork })), online);
    process.env.HF_HUB_OFFLINE = '1';
    assert.equal(await resolveModelDir(REPO, opts({ fetchImpl: noNetwork })), online);
    assert.equal(await resolveModelDir(`${REPO}@${SHA}`, opts({ fetchImpl: noNetwork })), online);
    delete process.env.HF_HUB_OFFLINE;
    process.env.TRANSFORMERS_OFFLINE = '1';
    assert.equal(await resolveModelDir(REPO, opts({ fetchImpl: noNetwork })), online);
    assert.equal(fake.seen.length, 0);
  });

  it('offline with an empty cache fails clearly', async () => {
    await assert.rejects(resolveModelDir(REPO, opts({ offline: true, fetchImpl: noNetwork })), (e: unknown) => {
      assert.ok(e instanceof HubError);
      assert.match(e.message, /offline/);
      assert.match(e.message, /test-org\/tiny-model@main is not in the cache/);
      assert.ok(e.message.includes(cache), e.message);
      return true;
    });
  });

  it('offline with a half-filled cache lists what is missing', async () => {
    const dir = await resolveModelDir(REPO, opts());
    await fs.rm(path.join(cache, REPO_DIR, 'blobs', LFS_ETAG));
    await assert.rejects(resolveModelDir(REPO, opts({ offline: true, fetchImpl: noNetwork })), (e: unknown) => {
      assert.ok(e instanceof HubError);
      assert.match(e.message, /lacks model\.safetensors/);
      assert.ok(e.message.includes(dir));
      return true;
    });
  });

  it('honours HF_HUB_CACHE, then HF_HOME, and HF_ENDPOINT', async () => {
    process.env.HF_ENDPOINT = fake.hubUrl;
    process.env.HF_HUB_CACHE = path.join(tmpRoot, `env-cache-${caseNo}`);
    assert.equal(await resolveModelDir(REPO), snapshot(process.env.HF_HUB_CACHE));
    delete process.env.HF_HUB_CACHE;
    process.env.HF_HOME = path.join(tmpRoot, `env-home-${caseNo}`);
    const dir = await resolveModelDir(REPO);
    assert.equal(dir, snapshot(path.join(process.env.HF_HOME, 'hub')));
    assert.deepEqual(await fs.readFile(path.join(dir, 'config.json')), FILES['config.json']!.content);
  });

  it('returns an existing local folder unchanged, and refuses a missing path that is no repo id', async () => {
    const local = path.join(tmpRoot, 'local-model');
    await fs.mkdir(local, { recursive: true });
    assert.equal(await resolveModelDir(local, opts({ fetchImpl: noNetwork })), local);
    const rel = path.relative(process.cwd(), local);
    assert.equal(await resolveModelDir(rel, opts({ fetchImpl: noNetwork })), rel);
    await assert.rejects(resolveModelDir('./no/such/dir', opts({ fetchImpl: noNetwork })), ModelLoadError);
    await assert.rejects(resolveModelDir(path.join(tmpRoot, 'nope'), opts({ fetchImpl: noNetwork })), ModelLoadError);
    await fs.writeFile(path.join(local, 'config.json'), '{}');
    await assert.rejects(
      resolveModelDir(path.join(local, 'config.json'), opts({ fetchImpl: noNetwork })),
      ModelLoadError,
    );
  });
});

describe('helpers', () => {
  it('parseRepoId', () => {
    assert.deepEqual(parseRepoId('OpenGVLab/InternVL2-1B'), { repoId: 'OpenGVLab/InternVL2-1B' });
    assert.deepEqual(parseRepoId('OpenGVLab/InternVL2-1B@v1.0'), {
      repoId: 'OpenGVLab/InternVL2-1B',
      revision: 'v1.0',
    });
    assert.deepEqual(parseRepoId('a/b@refs/pr/3'), { repoId: 'a/b', revision: 'refs/pr/3' });
    for (const bad of ['gpt2', 'a/b/c', '../x', 'a/..', 'a--b/c', 'a/b@../../x', '/abs/path', 'a/b@']) {
      assert.equal(parseRepoId(bad), undefined, bad);
    }
  });

  it('matchesGlob and the default file set', () => {
    assert.ok(matchesGlob('*.safetensors', 'model-00001-of-00002.safetensors'));
    assert.ok(!matchesGlob('*.safetensors', 'sub/model.safetensors'));
    assert.ok(matchesGlob('**/*.json', 'a/b/c.json'));
    assert.ok(matchesGlob('**/*.json', 'c.json'));
    assert.ok(matchesGlob('onnx/', 'onnx/model.onnx'));
    assert.ok(matchesGlob('model-0000[0-9]*', 'model-00001-of-2'));
    const def = (f: string) => DEFAULT_ALLOW_PATTERNS.some((p) => matchesGlob(p, f));
    for (const f of [
      'config.json',
      'tokenizer.model',
      'chat_template.jinja',
      'model.safetensors.index.json',
      'model-00001-of-00004.safetensors',
    ]) {
      assert.ok(def(f), f);
    }
    for (const f of [
      'pytorch_model.bin',
      'model.pth',
      'modeling_internvl.py',
      'README.md',
      'original/model.safetensors',
    ]) {
      assert.ok(!def(f), f);
    }
  });

  it('progress reporter: one redrawn line on a TTY, sparse lines otherwise, nothing when quiet', () => {
    let t = 0;
    const out: string[] = [];
    const stream = { isTTY: false, write: (s: string) => out.push(s) };
    const r = createProgressReporter('Downloading', { stream, now: () => t, lineIntervalMs: 10_000 });
    for (let i = 0; i <= 1000; i++) {
      t = i * 10;
      r.update(i * 1024, 1000 * 1024);
    }
    r.finish();
    assert.ok(out.length >= 4 && out.length <= 8, `non-TTY printed ${out.length} lines`);
    assert.ok(out.every((l) => l.endsWith('\n') && !l.includes('\r')));

    const tty: string[] = [];
    const r2 = createProgressReporter('Downloading', {
      stream: { isTTY: true, columns: 100, write: (s: string) => tty.push(s) },
      now: () => t,
    });
    for (let i = 0; i <= 100; i++) {
      t = 1_000_000 + i * 50;
      r2.update(i, 100, 'model.safetensors');
    }
    r2.log('a message');
    r2.finish();
    assert.ok(tty.length > 10 && tty.length < 100);
    assert.ok(tty.slice(0, -3).every((l) => l.startsWith('\r\x1b[2K') && !l.includes('\n')));
    assert.ok(tty.some((l) => l.includes('100%')));

    const quiet: string[] = [];
    const r3 = createProgressReporter('x', { quiet: true, stream: { write: (s: string) => quiet.push(s) } });
    r3.update(1, 2);
    r3.finish();
    assert.deepEqual(quiet, []);
  });
});
