/**
 * Checkpoint variants the fixtures do not cover directly, derived from them: the retrieval fine-tunes'
 * `force_image_size` (position embeddings resized once), pixel-shuffle v1 token order, and `select_layer`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DATA, copyFolder } from './helpers/cli.js';
import { writeSafetensors } from '../src/core/node/files.js';
import { Checkpoint, SafetensorsFile, type DType } from '../src/core/safetensors.js';
import { InternVLClipModel } from '../src/models/internvl_clip.js';
import { InternVLChatModel } from '../src/models/internvl_chat.js';

const FIXTURES = path.join(DATA, 'fixtures');

function editConfig(dir: string, edit: (config: Record<string, any>) => void): void {
  const file = path.join(dir, 'config.json');
  const config = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(config);
  fs.writeFileSync(file, JSON.stringify(config));
}

/** Rewrites model.safetensors with tensors renamed/replaced by `entries`. */
async function rewriteWeights(
  dir: string,
  entries: (
    checkpoint: Checkpoint,
  ) => Promise<Record<string, { dtype: DType; shape: number[]; data: ArrayBufferView }>>,
): Promise<void> {
  const checkpoint = await Checkpoint.open(dir);
  const tensors = await entries(checkpoint);
  const file = path.join(dir, 'model.safetensors');
  fs.rmSync(file);
  writeSafetensors(file, tensors);
}

function maxRelativeError(actual: Float32Array, golden: Float32Array): number {
  assert.equal(actual.length, golden.length);
  let maxErr = 0;
  let maxRef = 0;
  golden.forEach((g, i) => {
    maxErr = Math.max(maxErr, Math.abs(actual[i] - g));
    maxRef = Math.max(maxRef, Math.abs(g));
  });
  return maxErr / maxRef;
}

test('force_image_size (the *-FT-364px models): positions resized once with PyTorch bicubic, as the chat ViT at that size', async () => {
  // internvl_clip's vision tower has intern_vit_rms's shapes: put those weights in, run at 84 px with
  // force_image_size 84, and expect intern_vit_rms's golden for its 84 px input.
  const dir = copyFolder(path.join(FIXTURES, 'internvl_clip'));
  const vit = await Checkpoint.open(path.join(FIXTURES, 'intern_vit_rms'));
  await rewriteWeights(dir, async (clip) =>
    Object.fromEntries(
      await Promise.all(
        clip.keys().map(async (key) => {
          const source = key.startsWith('vision_model.') ? vit : clip;
          const name = key.startsWith('vision_model.') ? key.slice('vision_model.'.length) : key;
          const entry = source.entry(name);
          return [key, { dtype: entry.dtype, shape: entry.shape, data: await source.readBytes(name) }];
        }),
      ),
    ),
  );
  editConfig(dir, (c) => {
    c.force_image_size = 84;
  });
  const io = new Checkpoint(path.join(FIXTURES, 'intern_vit_rms'), [
    await SafetensorsFile.open(path.join(FIXTURES, 'intern_vit_rms', 'io.safetensors')),
  ]);
  const model = await InternVLClipModel.load(dir);
  assert.equal(model.config.imageSize, 84);
  const { tokens } = await model.encodeVision((await io.readFloat32('in.pixel_values_alt')).data, 1);
  assert.ok(maxRelativeError(tokens.data, (await io.readFloat32('out.alt.last_hidden_state')).data) < 1e-5);
  await assert.rejects(
    model.encodeVision((await io.readFloat32('in.pixel_values')).data, 2),
    /pixel values must be \[2, 3, 84, 84\]/,
  );
  await model.release();
});

test('pixel shuffle v1 orders the image tokens column-major where v2 is row-major', async () => {
  const v2Dir = path.join(FIXTURES, 'chat_llama');
  const v1Dir = copyFolder(v2Dir);
  editConfig(v1Dir, (c) => {
    c.ps_version = 'v1';
  });
  const io = new Checkpoint(v2Dir, [await SafetensorsFile.open(path.join(v2Dir, 'io.safetensors'))]);
  const pixels = await io.readFloat32('in.pixel_values');
  const [v2, v1] = await Promise.all(
    [v2Dir, v1Dir].map(async (dir) => {
      const model = await InternVLChatModel.load(dir);
      const features = await model.extractFeature(pixels.data, pixels.dims[0]);
      await model.release();
      return features;
    }),
  );
  const H = 64;
  const side = 2; // 56 px / 14 = 4 patches per side, 2 after pixel shuffle
  for (let tile = 0; tile < pixels.dims[0]; tile++) {
    for (let i = 0; i < side; i++)
      for (let j = 0; j < side; j++) {
        const row = (tile * side * side + i * side + j) * H;
        const column = (tile * side * side + j * side + i) * H;
        assert.deepEqual(v1.data.subarray(column, column + H), v2.data.subarray(row, row + H));
      }
  }
  assert.notDeepEqual(v1, v2);
});

test('select_layer −2 feeds the projector the output of the second-to-last ViT block', async () => {
  const full = copyFolder(path.join(FIXTURES, 'chat_llama'));
  editConfig(full, (c) => {
    c.select_layer = -2;
  });
  const truncated = copyFolder(path.join(FIXTURES, 'chat_llama'));
  editConfig(truncated, (c) => {
    c.vision_config.num_hidden_layers -= 1;
  });
  const io = new Checkpoint(full, [await SafetensorsFile.open(path.join(full, 'io.safetensors'))]);
  const pixels = await io.readFloat32('in.pixel_values');
  const [a, b, last] = await Promise.all(
    [full, truncated, path.join(FIXTURES, 'chat_llama')].map(async (dir) => {
      const model = await InternVLChatModel.load(dir);
      const features = await model.extractFeature(pixels.data, pixels.dims[0]);
      await model.release();
      return features;
    }),
  );
  assert.deepEqual(a, b);
  assert.ok(maxRelativeError(a.data, last.data) > 1e-2);
});
