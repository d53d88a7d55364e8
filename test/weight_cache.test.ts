/**
 * The weight cache trusts an entry only through its manifest: flipped bytes, a source rewritten with its old size
 * and mtime, and a truncated data file are each detected and rebuilt, and the answer after recovery equals the one
 * from a clean cache. Conversion locks of dead processes are taken at once; a live owner is waited for, visibly.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GraphBuilder } from '../src/core/graph.js';
import { createSession, Tensor } from '../src/core/session.js';
import { writeSafetensors } from '../src/core/node/files.js';
import { Checkpoint } from '../src/core/safetensors.js';
import { acquireLock } from '../src/core/node/file_lock.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'internvl-weight-cache-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const N = 8;
const K = 16;
const x = Float32Array.from({ length: K }, (_, i) => (i % 5) - 2);

/** bf16 bits of a few exactly representable values, different per seed. */
function bf16Weights(seed: number): Uint16Array {
  const f = Float32Array.from({ length: N * K }, (_, i) => ((i * 7 + seed) % 11) / 8 - 0.5);
  const u = new Uint32Array(f.buffer);
  return Uint16Array.from(u, (v) => v >>> 16);
}

function writeModel(dir: string, seed: number): void {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'model.safetensors'), {
    'proj.weight': { dtype: 'BF16', shape: [N, K], data: bf16Weights(seed) },
  });
}

/** Runs the one-linear graph (bf16 weights converted to float32 through the cache); counts the conversions. */
async function run(dir: string, cacheDir: string): Promise<{ y: number[]; produced: number }> {
  const g = new GraphBuilder('cache_test', await Checkpoint.open(dir));
  g.output(g.scope('').linear(g.input('x', 'float32', [1, K]), 'proj'), 'y');
  let produced = 0;
  for (const request of g.weights.values()) {
    const produce = request.produce;
    request.produce = () => {
      produced++;
      return produce();
    };
  }
  const session = await createSession(g, { cacheDir, threads: 1 });
  try {
    const y = (await session.run({ x: new Tensor('float32', x, [1, K]) })).y.data as Float32Array;
    return { y: [...y], produced };
  } finally {
    await session.release();
  }
}

function cacheFiles(cacheDir: string, ext: string): string[] {
  return fs
    .readdirSync(cacheDir)
    .filter((f) => f.endsWith(ext))
    .map((f) => path.join(cacheDir, f));
}

test('a weight cache entry is rebuilt after flipped bytes or a truncation, with the clean answer', async () => {
  const model = path.join(root, 'flip-model');
  const cacheDir = path.join(root, 'flip-cache');
  writeModel(model, 1);
  const clean = await run(model, cacheDir);
  assert.equal(clean.produced, 1);
  assert.equal((await run(model, cacheDir)).produced, 0, 'an intact entry is reused without converting');
  const [data] = cacheFiles(cacheDir, '.bin');
  assert.equal(cacheFiles(cacheDir, '.json').length, 1, 'the entry has a manifest');

  // Flip one byte of the first weight.
  const fd = fs.openSync(data, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, 2);
  b[0] ^= 0x40;
  fs.writeSync(fd, b, 0, 1, 2);
  fs.closeSync(fd);
  const afterFlip = await run(model, cacheDir);
  assert.equal(afterFlip.produced, 1, 'flipped bytes are detected');
  assert.deepEqual(afterFlip.y, clean.y);

  // A truncated data file (a partial copy, a write that stopped) of the same name.
  fs.truncateSync(data, 64);
  const afterTruncate = await run(model, cacheDir);
  assert.equal(afterTruncate.produced, 1, 'a truncated file is detected');
  assert.deepEqual(afterTruncate.y, clean.y);

  // Bytes rewritten in place and the mtime put back: the changed ctime sends the load to the sha256, which differs.
  fs.utimesSync(data, 1_700_000_000, 1_700_000_000);
  assert.equal((await run(model, cacheDir)).produced, 0);
  const bytes = fs.readFileSync(data);
  bytes[5] ^= 1;
  fs.writeFileSync(data, bytes);
  fs.utimesSync(data, 1_700_000_000, 1_700_000_000);
  assert.equal((await run(model, cacheDir)).produced, 1);

  // Touching the file changes nothing in its bytes: it is hashed, resealed, and reused.
  const now = new Date();
  fs.utimesSync(data, now, now);
  assert.equal((await run(model, cacheDir)).produced, 0);
  assert.equal((await run(model, cacheDir)).produced, 0);
});

test('a source rewritten with the same size and mtime invalidates the entry; the answer equals a clean cache', async () => {
  const model = path.join(root, 'source-model');
  const cacheDir = path.join(root, 'source-cache');
  writeModel(model, 2);
  const source = path.join(model, 'model.safetensors');
  // A whole-second mtime, so that setting it again is exact.
  fs.utimesSync(source, 1_700_000_000, 1_700_000_000);
  const before = await run(model, cacheDir);
  const stat = fs.statSync(source);
  writeModel(model, 3);
  fs.utimesSync(source, 1_700_000_000, 1_700_000_000);
  assert.equal(fs.statSync(source).size, stat.size);
  assert.equal(fs.statSync(source).mtimeMs, stat.mtimeMs);

  const recovered = await run(model, cacheDir);
  assert.equal(recovered.produced, 1, 'the rewritten source is detected');
  const fresh = await run(model, path.join(root, 'source-cache-fresh'));
  assert.deepEqual(recovered.y, fresh.y);
  assert.notDeepEqual(recovered.y, before.y, 'the new weights do give another answer');
});

test('temporary files of dead writers are removed by the next write; a dead lock owner is taken over at once', async () => {
  const model = path.join(root, 'temp-model');
  const cacheDir = path.join(root, 'temp-cache');
  writeModel(model, 4);
  await run(model, cacheDir);
  const [data] = cacheFiles(cacheDir, '.bin');
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  const host = os.hostname().replace(/[^A-Za-z0-9-]/g, '_');
  const leftover = path.join(cacheDir, `.${path.basename(data)}.${host}.${dead}.0badc0de.tmp`);
  fs.writeFileSync(leftover, Buffer.alloc(1000));
  // A conversion lock of the dead process, as SIGKILL leaves it.
  const lock = data.replace(/\.bin$/, '.lock');
  fs.writeFileSync(lock, JSON.stringify({ tool: 'internvl-ts', pid: dead, host: os.hostname(), since: 'then' }));
  fs.truncateSync(data, 0);
  const started = Date.now();
  const rebuilt = await run(model, cacheDir);
  assert.equal(rebuilt.produced, 1);
  assert.ok(Date.now() - started < 5000, 'the dead owner is not waited for');
  assert.equal(fs.existsSync(leftover), false, 'the dead writer’s temporary file is gone');
  assert.equal(fs.existsSync(lock), false, 'the lock is released');
  assert.deepEqual(
    fs.readdirSync(cacheDir).filter((f) => f.endsWith('.tmp')),
    [],
  );
});

test('a live lock owner is waited for, with a message naming it, until it releases', async () => {
  const lockPath = path.join(root, 'live', 'x.lock');
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  try {
    fs.mkdirSync(path.dirname(lockPath), { recursive: true });
    fs.writeFileSync(
      lockPath,
      JSON.stringify({ tool: 'internvl-ts', pid: holder.pid, host: os.hostname(), since: 'now' }),
    );
    const messages: string[] = [];
    setTimeout(() => holder.kill('SIGKILL'), 600);
    const started = Date.now();
    const release = await acquireLock(lockPath, { what: 'the test job', onWait: (m) => messages.push(m), pollMs: 50 });
    const waited = Date.now() - started;
    assert.ok(waited >= 500 && waited < 5000, `waited ${waited} ms`);
    assert.equal(messages.length, 1);
    assert.match(messages[0], new RegExp(`^waiting for the test job: .*x\\.lock is held by process ${holder.pid} on `));
    const owner = JSON.parse(fs.readFileSync(lockPath, 'utf8'));
    assert.equal(owner.pid, process.pid);
    await release();
    assert.equal(fs.existsSync(lockPath), false);
  } finally {
    holder.kill('SIGKILL');
  }
});
