/**
 * User errors stay user errors (one line, exit 2, naming the path): --out naming a folder or in a missing folder,
 * an unwritable weight cache, names in a dataset file that lead outside its root, a malformed chat template file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { readCaptionDataset } from '../src/apps/eval/datasets/captions.js';
import { DatasetError } from '../src/core/errors.js';
import { writeSafetensors } from '../src/core/node/files.js';
import { DATA, errorLines, REPO, runCli, tempDir } from './helpers/cli.js';

const work = tempDir('internvl-user-errors-');
const IMAGE = path.join(DATA, 'images', 'chelsea.png');
const LN = path.join(DATA, 'fixtures', 'intern_vit_ln');

test('--out naming a folder or a file in a missing folder fails at once, one line, exit 2', async () => {
  const folder = path.join(work, 'd.safetensors');
  fs.mkdirSync(folder);
  for (const [out, why] of [
    [folder, 'it is a folder'],
    [path.join(work, 'missing', 'x.safetensors'), `the folder ${path.join(work, 'missing')} does not exist`],
  ]) {
    const r = await runCli(['embed-image', '--model', LN, IMAGE, '--out', out]);
    assert.equal(r.code, 2, r.stderr);
    assert.deepEqual(errorLines(r.stderr), [`error: cannot write ${out}: ${why}`]);
  }
});

test('a weight cache folder that cannot be created is a one-line error naming it', () => {
  const model = path.join(work, 'bf16');
  fs.mkdirSync(model);
  writeSafetensors(path.join(model, 'model.safetensors'), {
    'proj.weight': { dtype: 'BF16', shape: [4, 4], data: new Uint16Array(16).fill(0x3f80) },
  });
  fs.writeFileSync(path.join(work, 'a-file'), '');
  const cacheDir = path.join(work, 'a-file', 'cache');
  const child = path.join(REPO, 'test', 'helpers', 'write_child.ts');
  const r = spawnSync(process.execPath, ['--import', 'tsx', child, 'cache', model, cacheDir], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(
    r.stderr,
    new RegExp(`^error: cannot write ${cacheDir}/\\S+: a part of the path is a file, not a folder\\n$`),
  );
});

test('image names in an annotation file stay inside the image root', async () => {
  const root = path.join(work, 'images');
  fs.mkdirSync(root);
  fs.copyFileSync(IMAGE, path.join(root, 'ok.png'));
  const file = path.join(work, 'captions.json');
  for (const name of ['../captions.json', '/etc/passwd']) {
    fs.writeFileSync(file, JSON.stringify([{ image: name, caption: 'a cat' }]));
    await assert.rejects(
      readCaptionDataset(file, { imageRoot: root }),
      (e: unknown) => e instanceof DatasetError && /is not a plain relative file name/.test((e as Error).message),
    );
  }
  fs.symlinkSync(path.join(work, 'captions.json'), path.join(root, 'link.png'));
  fs.writeFileSync(file, JSON.stringify([{ image: 'link.png', caption: 'a cat' }]));
  await assert.rejects(readCaptionDataset(file, { imageRoot: root }), /image "link\.png" leads outside/);
  fs.writeFileSync(file, JSON.stringify([{ image: 'ok.png', caption: 'a cat' }]));
  assert.equal((await readCaptionDataset(file, { imageRoot: root })).images.length, 1);
});
