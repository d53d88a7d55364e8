import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { ModelLoadError } from '../src/core/errors.js';
import { writeSafetensors } from '../src/core/node/files.js';
import { Checkpoint, SafetensorsFile, readEntrySync, type DType } from '../src/core/safetensors.js';
import { readConfig } from '../src/models/config.js';
import { InternVisionModel, parseInternVisionConfig } from '../src/models/intern_vit.js';
import { toCHWFloat, type RgbImage } from '../src/processing/image.js';
import { resizeBicubicPillow } from '../src/processing/resample.js';
import { embedImages, expandImagePaths, loadImageEmbedder } from '../src/tasks/embed.js';
import { preprocessForClip } from '../src/processing/tiling.js';
import { DATA, errorLines, runCli, tempDir } from './helpers/cli.js';

const LN = path.join(DATA, 'fixtures', 'intern_vit_ln');
const images = tempDir('internvl-embed-images-');

function noise(width: number, height: number, seed: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  return { width, height, data };
}

async function writePng(name: string, image: RgbImage): Promise<string> {
  const file = path.join(images, name);
  await sharp(Buffer.from(image.data), { raw: { width: image.width, height: image.height, channels: 3 } })
    .png()
    .toFile(file);
  return file;
}

const a = noise(40, 30, 1);
const b = noise(70, 90, 2);
const fileA = await writePng('a.png', a);
const fileB = await writePng('b.png', b);

/** Copies the intern_vit_ln weights under a prefix and with renamed keys, plus an unrelated tensor. */
async function relayout(
  dir: string,
  config: object,
  rename: (key: string) => string[],
  split?: (key: string, data: Uint8Array) => Uint8Array[],
): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const st = await SafetensorsFile.open(path.join(LN, 'model.safetensors'));
  const tensors: Record<string, { dtype: DType; shape: number[]; data: ArrayBufferView }> = {
    'language_model.model.embed_tokens.weight': { dtype: 'F32', shape: [4, 2], data: new Float32Array(8) },
  };
  for (const [key, entry] of st.tensors) {
    const bytes = new Uint8Array(readEntrySync(entry));
    const names = rename(key);
    const parts = names.length > 1 ? split!(key, bytes) : [bytes];
    names.forEach((name, i) => {
      const shape = names.length > 1 ? [entry.shape[0] / names.length, ...entry.shape.slice(1)] : entry.shape;
      tensors[name] = { dtype: entry.dtype, shape, data: parts[i] };
    });
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
}

test('embedImages = pooled output of InternVisionModel on resized, normalised pixels', async () => {
  const model = await loadImageEmbedder(LN);
  try {
    assert.equal(model.architecture, 'InternVisionModel');
    assert.equal(model.imageSize, 56);
    assert.equal(model.dim, 48);
    const progress: Array<[number, number, string]> = [];
    const result = await embedImages(model, [fileA, b, { name: 'again', image: a }], {
      batchSize: 2,
      onProgress: (done, total, name) => progress.push([done, total, name]),
    });
    assert.deepEqual(result.dims, [3, 48]);
    assert.deepEqual(result.names, [fileA, '<image 1>', 'again']);
    assert.deepEqual(progress, [
      [1, 3, fileA],
      [2, 3, '<image 1>'],
      [3, 3, 'again'],
    ]);

    // By hand: Pillow bicubic to 56×56, ImageNet normalisation, CLS token of the last hidden state.
    const config = parseInternVisionConfig(await readConfig(LN));
    const reference = await InternVisionModel.load(await Checkpoint.open(LN), config);
    try {
      for (const [i, image] of [a, b, a].entries()) {
        const pixels = toCHWFloat(resizeBicubicPillow(image, 56, 56));
        const expected = (await reference.forward(pixels, [1, 3, 56, 56])).poolerOutput.data;
        const actual = result.data.subarray(i * 48, (i + 1) * 48);
        for (let k = 0; k < 48; k++)
          assert.ok(Math.abs(actual[k] - expected[k]) < 1e-5, `image ${i} [${k}]: ${actual[k]} vs ${expected[k]}`);
      }
    } finally {
      await reference.release();
    }
    assert.deepEqual(
      preprocessForClip(noise(56, 56, 3), 'retrieval', 56),
      toCHWFloat(noise(56, 56, 3)),
      'no resize at the model size',
    );
  } finally {
    await model.release();
  }
});

test('the vision tower of InternVL-Chat and *-hf checkpoints gives the same embeddings', async () => {
  const vision = JSON.parse(fs.readFileSync(path.join(LN, 'config.json'), 'utf8'));
  const chatDir = path.join(tempDir(), 'chat');
  await relayout(
    chatDir,
    { architectures: ['InternVLChatModel'], model_type: 'internvl_chat', force_image_size: 56, vision_config: vision },
    (key) => [`vision_model.${key}`],
  );

  const hfNames: Array<[RegExp, string]> = [
    [/^embeddings\.class_embedding$/, 'embeddings.cls_token'],
    [/^embeddings\.patch_embedding\./, 'embeddings.patch_embeddings.projection.'],
    [/^embeddings\.position_embedding$/, 'embeddings.position_embeddings'],
    [/^encoder\.layers\./, 'encoder.layer.'],
    [/\.norm1\./, '.layernorm_before.'],
    [/\.norm2\./, '.layernorm_after.'],
    [/\.ls1$/, '.lambda_1'],
    [/\.ls2$/, '.lambda_2'],
    [/\.attn\.proj\./, '.attention.projection_layer.'],
  ];
  const hfDir = path.join(tempDir(), 'hf');
  await relayout(
    hfDir,
    {
      architectures: ['InternVLForConditionalGeneration'],
      model_type: 'internvl',
      vision_config: {
        model_type: 'internvl_vision',
        hidden_size: 48,
        num_attention_heads: 3,
        num_hidden_layers: 2,
        intermediate_size: 192,
        image_size: [56, 56],
        patch_size: [14, 14],
        norm_type: 'layer_norm',
        layer_norm_eps: 1e-6,
        use_qk_norm: false,
        attention_bias: true,
        hidden_act: 'gelu',
      },
    },
    (key) => {
      let name = key;
      for (const [from, to] of hfNames) name = name.replace(from, to);
      if (name.includes('.attn.qkv.')) {
        const kind = name.endsWith('weight') ? 'weight' : 'bias';
        return ['q', 'k', 'v'].map(
          (p) => `model.vision_tower.${name.replace(/\.attn\.qkv\.(weight|bias)$/, `.attention.${p}_proj.${kind}`)}`,
        );
      }
      return [`model.vision_tower.${name}`];
    },
    (_key, data) => {
      const third = data.byteLength / 3;
      return [0, 1, 2].map((i) => data.slice(i * third, (i + 1) * third));
    },
  );

  const results = [];
  for (const dir of [LN, chatDir, hfDir]) {
    const model = await loadImageEmbedder(dir);
    try {
      assert.equal(model.imageSize, 56);
      results.push((await embedImages(model, [a, b])).data);
    } finally {
      await model.release();
    }
  }
  for (const other of results.slice(1)) {
    for (let k = 0; k < other.length; k++)
      assert.ok(Math.abs(other[k] - results[0][k]) < 1e-5, `[${k}] ${other[k]} vs ${results[0][k]}`);
  }
});

test('folders expand to their images; a language model is refused', async () => {
  assert.deepEqual(await expandImagePaths([images, 'x.jpg']), [
    path.join(images, 'a.png'),
    path.join(images, 'b.png'),
    'x.jpg',
  ]);
  const llm = tempDir();
  fs.writeFileSync(path.join(llm, 'config.json'), JSON.stringify({ architectures: ['Qwen2ForCausalLM'] }));
  writeSafetensors(path.join(llm, 'model.safetensors'), { w: { dtype: 'F32', shape: [1], data: new Float32Array(1) } });
  await assert.rejects(
    loadImageEmbedder(llm),
    (e: unknown) => e instanceof ModelLoadError && /language model without a vision tower/.test((e as Error).message),
  );
});

test('embed-image CLI: table, --json and --out agree with the library', async () => {
  const model = await loadImageEmbedder(LN);
  const expected = (await embedImages(model, [fileA, fileB])).data;
  await model.release();

  const table = await runCli(['embed-image', '--model', LN, fileA, fileB]);
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.trim().split('\n');
  assert.match(lines[0], /^image\s+dim\s+L2 norm\s+first values$/);
  assert.equal(lines.length, 4);
  assert.ok(lines[2].startsWith(fileA) && lines[3].startsWith(fileB));
  assert.match(table.stderr, /embedding/, 'progress for several images');

  const json = await runCli(['embed-image', '--model', LN, '--json', '--quiet', images]);
  assert.equal(json.code, 0, json.stderr);
  assert.equal(json.stderr, '');
  const parsed = JSON.parse(json.stdout);
  assert.equal(parsed.dim, 48);
  assert.equal(parsed.architecture, 'InternVisionModel');
  assert.deepEqual(
    parsed.images.map((i: { image: string }) => path.basename(i.image)),
    ['a.png', 'b.png'],
  );
  const flat = parsed.images.flatMap((i: { embedding: number[] }) => i.embedding);
  flat.forEach((v: number, k: number) => assert.ok(Math.abs(v - expected[k]) < 1e-5, `[${k}]`));

  const out = path.join(tempDir(), 'emb.safetensors');
  const written = await runCli(['embed-image', '--model', LN, '--out', out, fileA, fileB]);
  assert.equal(written.code, 0, written.stderr);
  assert.equal(written.stdout, '');
  assert.match(written.stderr, /wrote 2×48 embeddings to/);
  const st = await SafetensorsFile.open(out);
  const entry = st.tensors.get('embeddings')!;
  assert.deepEqual(entry.shape, [2, 48]);
  assert.deepEqual(JSON.parse(st.metadata.images), [fileA, fileB]);
  const data = new Float32Array(new Uint8Array(readEntrySync(entry)).buffer);
  data.forEach((v, k) => assert.ok(Math.abs(v - expected[k]) < 1e-5));
});

test('embed-image CLI: bad images and models → one error line, exit 2', async () => {
  const dir = tempDir();
  const corrupt = path.join(dir, 'corrupt.png');
  fs.writeFileSync(corrupt, Buffer.from('this is not an image, whatever the name says'));
  const truncated = path.join(dir, 'truncated.png');
  fs.writeFileSync(truncated, fs.readFileSync(fileB).subarray(0, 100));
  // A valid PNG signature and IHDR claiming 50,000 × 50,000 pixels, and nothing else.
  const bomb = path.join(dir, 'bomb.png');
  const ihdr = Buffer.alloc(25);
  ihdr.writeUInt32BE(13, 0);
  ihdr.write('IHDR', 4, 'latin1');
  ihdr.writeUInt32BE(50_000, 8);
  ihdr.writeUInt32BE(50_000, 12);
  ihdr.set([8, 2, 0, 0, 0], 16);
  fs.writeFileSync(bomb, Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), ihdr]));

  const cases: Array<[string[], RegExp]> = [
    [[corrupt], /corrupt\.png: not a readable image/],
    [[truncated], /truncated\.png: (not a readable image|cannot decode image)/],
    [[bomb], /bomb\.png: image is 50000×50000 = 2500000000 pixels, above the limit/],
    [[path.join(dir, 'missing.jpg')], /missing\.jpg: cannot read image file \(file not found\)/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli(['embed-image', '--model', LN, '--quiet', ...args]);
    assert.equal(r.code, 2, `${args}: ${r.stderr}`);
    assert.equal(errorLines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /^error: /);
    assert.match(r.stderr, pattern);
    assert.equal(r.stdout, '');
  }

  const noModel = await runCli(['embed-image', '--model', path.join(dir, 'no-such-model'), fileA]);
  assert.equal(noModel.code, 2);
  assert.match(noModel.stderr, /^error: .*no-such-model: no such folder/);
  assert.equal(errorLines(noModel.stderr).length, 1);

  const badConfig = path.join(dir, 'model');
  fs.cpSync(LN, badConfig, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(badConfig, 'config.json'), 'utf8'));
  delete config.num_attention_heads;
  fs.writeFileSync(path.join(badConfig, 'config.json'), JSON.stringify(config));
  const missingField = await runCli(['embed-image', '--model', badConfig, fileA]);
  assert.equal(missingField.code, 2);
  assert.equal(errorLines(missingField.stderr).length, 1);
  assert.match(missingField.stderr, /field 'num_attention_heads' is missing/);

  const noModelFlag = await runCli(['embed-image', fileA]);
  assert.equal(noModelFlag.code, 2);
  assert.match(noModelFlag.stderr, /^error: internvl embed-image: --model is required/);
  const badOut = await runCli(['embed-image', '--model', LN, '--out', 'x.npy', fileA]);
  assert.equal(badOut.code, 2);
  assert.match(badOut.stderr, /--out must name a \.safetensors file/);
});
