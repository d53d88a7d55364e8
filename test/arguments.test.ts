/** Argument limits: CLI values refused or clamped with a notice; library options validated; release() twice. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';

import { UsageError } from '../src/core/errors.js';
import { loadImage } from '../src/processing/image.js';
import { encodeImages, encodeTexts, loadClipPipeline } from '../src/tasks/clip.js';
import { DATA, errorLines, inProcess } from './helpers/cli.js';

const CLIP = path.join(DATA, 'fixtures', 'clip_e2e');
const PREPROCESS = path.join(DATA, 'fixtures', 'preprocess');

test('--threads beyond the cores is clamped with a notice; repetition penalty <= 0 is refused', async () => {
  const cores = os.availableParallelism();
  const r = await inProcess(['verify', '--threads', String(cores + 7), PREPROCESS]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(errorLines(r.stderr), [
    `notice: --threads ${cores + 7} is more than the ${cores} cores; using ${cores}`,
  ]);
  for (const value of ['0', '-1']) {
    const bad = await inProcess(['generate', '--model', CLIP, '--input-ids', '1,2', `--repetition-penalty=${value}`]);
    assert.equal(bad.code, 2);
    assert.deepEqual(errorLines(bad.stderr), [
      `error: internvl generate: --repetition-penalty must be > 0 (1 = off), got ${Number(value)} (see 'internvl generate --help')`,
    ]);
  }
});

test('library options: a string for texts, an unknown mode or transform, batch size 0 are typed errors', async () => {
  const clip = await loadClipPipeline(CLIP);
  const image = await loadImage(path.join(DATA, 'images', 'chelsea.png'));
  const rejects = (p: Promise<unknown>, pattern: RegExp) =>
    assert.rejects(p, (e: Error) => e instanceof UsageError && pattern.test(e.message));
  await rejects(encodeTexts(clip, 'a cat' as unknown as string[]), /encodeTexts takes an array of texts, got string/);
  await rejects(encodeImages(clip, [image], { mode: 'X' as 'C' }), /mode must be 'C' or 'G', got "X"/);
  await rejects(
    encodeImages(clip, [image], { transform: 'crop' as 'retrieval' }),
    /transform must be 'classification' or 'retrieval', got "crop"/,
  );
  await rejects(encodeTexts(clip, ['a cat'], { batchSize: 0 }), /batchSize must be an integer >= 1, got 0/);
  assert.equal((await encodeTexts(clip, ['a cat'])).rows, 1);
  await clip.model.release();
  await clip.model.release();
});
