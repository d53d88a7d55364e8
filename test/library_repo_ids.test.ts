/**
 * The library's loaders take a Hugging Face repo id wherever the CLI's --model does, through the same Hub
 * resolution: here offline, from a Hugging Face cache laid out by the test (refs/main → snapshots/<commit>/).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { InternVLError } from '../src/core/errors.js';
import { loadChatPipeline } from '../src/tasks/chat.js';
import { loadClipPipeline } from '../src/tasks/clip.js';
import { loadLanguageModel } from '../src/tasks/language_model.js';
import { DATA, tempDir } from './helpers/cli.js';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';
const cacheDir = tempDir('internvl-hf-cache-');

/** Puts a fixture folder into the cache as repo `id` at `main`. */
function cacheRepo(id: string, fixture: string): void {
  const repo = path.join(cacheDir, `models--${id.replace('/', '--')}`);
  const snapshot = path.join(repo, 'snapshots', COMMIT);
  fs.mkdirSync(snapshot, { recursive: true });
  fs.mkdirSync(path.join(repo, 'refs'), { recursive: true });
  fs.writeFileSync(path.join(repo, 'refs', 'main'), COMMIT);
  const source = path.join(DATA, 'fixtures', fixture);
  for (const f of fs.readdirSync(source))
    if (fs.statSync(path.join(source, f)).isFile()) fs.copyFileSync(path.join(source, f), path.join(snapshot, f));
}

const hub = { cacheDir, offline: true };

test('loadChatPipeline, loadClipPipeline and loadLanguageModel accept org/name and org/name@revision', async () => {
  cacheRepo('OpenGVLab/InternVL2-tiny', 'chat_e2e');
  cacheRepo('OpenGVLab/InternVL-14B-tiny', 'clip_e2e');
  const snapshot = (id: string) => path.join(cacheDir, `models--${id.replace('/', '--')}`, 'snapshots', COMMIT);

  const chat = await loadChatPipeline('OpenGVLab/InternVL2-tiny', { hub });
  try {
    assert.equal(chat.model.dir, snapshot('OpenGVLab/InternVL2-tiny'));
    assert.equal(chat.model.config.llm.vocabSize, 151655);
  } finally {
    await chat.model.release();
  }
  const clip = await loadClipPipeline(`OpenGVLab/InternVL-14B-tiny@${COMMIT}`, { hub });
  try {
    assert.equal(clip.model.dir, snapshot('OpenGVLab/InternVL-14B-tiny'));
  } finally {
    await clip.model.release();
  }
  const lm = await loadLanguageModel('OpenGVLab/InternVL2-tiny', { hub });
  try {
    assert.equal(lm.config.family, 'qwen2');
  } finally {
    await lm.release();
  }
});

test('a repo id that is not in the cache offline is a typed error naming it', async () => {
  await assert.rejects(loadClipPipeline('OpenGVLab/not-cached', { hub }), (e: Error) => {
    assert.ok(e instanceof InternVLError, e.stack);
    assert.match(e.message, /OpenGVLab\/not-cached/);
    return true;
  });
});
