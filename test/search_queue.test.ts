import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Queue } from 'bullmq';
import sharp from 'sharp';
import { startRedisServer, stopChild, waitForOutput } from '../src/apps/bench/children.js';
import { Store } from '../src/apps/search/store.js';
import { DATA, REPO, inProcess, runCli, tempDir } from './helpers/cli.js';

const MODEL = path.join(DATA, 'fixtures', 'clip_e2e');
const CLI = ['--import', 'tsx', path.join(REPO, 'bin', 'internvl-dev.ts')];

test('queue: two BullMQ workers over a real redis-server, one killed mid-run: one row per image, same as a local index', async () => {
  const folder = tempDir();
  const photos = fs.readdirSync(path.join(DATA, 'images'));
  const count = 40;
  for (let i = 0; i < count; i++) {
    await sharp(path.join(DATA, 'images', photos[i % photos.length]))
      .resize(48 + i, 48)
      .png()
      .toFile(path.join(folder, `img${String(i).padStart(2, '0')}.png`));
  }
  const redis = await startRedisServer(tempDir());
  const queue = redis.url;
  const db = path.join(tempDir(), 'db');
  const children: ChildProcess[] = [redis.process];
  try {
    const worker = () => {
      const child = spawn(
        process.execPath,
        [...CLI, 'worker', '--queue', queue, '--model', MODEL, '--db', db, '--lock', '2', '--batch', '1'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      children.push(child);
      return child;
    };
    const doomed = worker();
    const survivor = worker();
    await Promise.all([
      waitForOutput(doomed, /waiting for jobs/, 'worker 1'),
      waitForOutput(survivor, /waiting for jobs/, 'worker 2'),
    ]);
    const indexer = spawn(
      process.execPath,
      [...CLI, 'index', '--model', MODEL, '--db', db, '--queue', queue, '--job-size', '2', '--json', folder],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(indexer);
    let stdout = '';
    let stderr = '';
    indexer.stdout!.on('data', (d) => {
      stdout += d;
    });
    indexer.stderr!.on('data', (d) => {
      stderr += d;
    });
    const finished = new Promise<number | null>((resolve) => indexer.once('close', resolve));
    // Kill worker 1 right after it finished a job: it is then inside the next one, which the other takes over.
    await waitForOutput(doomed, /job \w+: 2 embedded/, 'worker 1');
    await stopChild(doomed, 'SIGKILL');
    assert.equal(await finished, 0, stderr);
    const summary = JSON.parse(stdout);
    assert.equal(summary.embedded, count, stdout + stderr);
    assert.equal(summary.rows, count);
    assert.match(stderr, /embedding \(workers\) .*40\/40/);

    const rows = await (await Store.open(db, 'clip_e2e_C', null)).all();
    assert.equal(rows.length, count);
    assert.equal(new Set(rows.map((r) => r.uri)).size, count);

    const localDb = path.join(tempDir(), 'db');
    const local = await runCli(['index', '--model', MODEL, '--db', localDb, '--quiet', folder]);
    assert.equal(local.code, 0, local.stderr);
    const expected = await (await Store.open(localDb, 'clip_e2e_C', null)).all();
    assert.deepEqual(
      rows.map((r) => [r.id, r.uri, r.sha256, r.width, r.height]),
      expected.map((r) => [r.id, r.uri, r.sha256, r.width, r.height]),
    );
    rows.forEach((r, i) => {
      const dot = r.vector.reduce((s, v, j) => s + v * expected[i].vector[j], 0);
      assert.ok(dot > 1 - 1e-5, `${r.uri}: ${dot}`);
    });

    // The killed worker's job was taken over (it stalled once and was started again), not lost.
    const jobs = new Queue('internvl-index', { connection: { host: '127.0.0.1', port: redis.port } });
    try {
      const completed = await jobs.getJobs(['completed']);
      assert.equal(completed.length, count / 2);
      assert.ok(
        completed.some((job) => job.stalledCounter >= 1 && job.attemptsStarted >= 2),
        'a job of the killed worker was retried',
      );
    } finally {
      await jobs.close();
    }

    // A rerun through the queue has nothing to enqueue.
    const again = await runCli(['index', '--model', MODEL, '--db', db, '--queue', queue, '--json', '--quiet', folder]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).embedded, 0);
  } finally {
    for (const child of children.reverse()) await stopChild(child);
  }
});

test('queue: a Redis that does not answer is one line naming the URL (exit 2), for index and worker alike', async () => {
  // A port nobody listens on: refused at once, where BullMQ alone would retry the connection forever.
  const url = 'redis://127.0.0.1:1';
  const db = path.join(tempDir(), 'db');
  for (const args of [
    ['index', path.join(DATA, 'images'), '--model', MODEL, '--db', db, '--queue', url, '--quiet'],
    ['worker', '--queue', url, '--model', MODEL, '--db', db],
  ]) {
    const run = await inProcess(args);
    assert.equal(run.code, 2, run.stderr);
    assert.equal(run.stderr, `error: --queue ${url}: cannot reach Redis (ECONNREFUSED)\n`);
  }
});
