import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { InternVLError, ModelLoadError, SafetensorsError } from '../src/core/errors.js';
import { float32ToFloat16 } from '../src/core/graph.js';
import { bytesToFloat32, Checkpoint, float16ToFloat32, SafetensorsFile } from '../src/core/safetensors.js';
import { writeSafetensors } from '../src/core/node/files.js';
import { tempDir } from './helpers/cli.js';

const root = tempDir('internvl-st-');
let counter = 0;

/** A safetensors file from a header (object or raw text) and data bytes; `headerLength` overrides the prefix. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(), headerLength?: bigint): string {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const headerBytes = Buffer.from(text, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(headerLength ?? BigInt(headerBytes.length));
  const file = path.join(root, `f${counter++}.safetensors`);
  fs.writeFileSync(file, Buffer.concat([prefix, headerBytes, data]));
  return file;
}

async function rejects(file: string, pattern: RegExp): Promise<void> {
  await assert.rejects(
    () => SafetensorsFile.open(file),
    (error: unknown) => {
      assert.ok(error instanceof SafetensorsError, `expected SafetensorsError, got ${String(error)}`);
      assert.ok(error instanceof InternVLError);
      assert.match(error.message, pattern);
      assert.ok(error.message.includes(file), 'message names the file');
      assert.ok(!error.message.includes('\n'), 'one-line message');
      return true;
    },
  );
}

const f32 = (n: number) => ({ dtype: 'F32', shape: [n], data_offsets: [0, 4 * n] });

test('round trip with writeSafetensors: dtypes, shapes, metadata, in-place entries', async () => {
  const file = path.join(root, 'roundtrip.safetensors');
  const a = Float32Array.from([1.5, -2, 3.25, 0, 1e-30, -7]);
  const ids = BigInt64Array.from([1n, -2n, 2n ** 40n]);
  const bytes = Uint8Array.from([0, 1, 255]);
  const half = Uint16Array.from([0x3c00, 0xc000]);
  writeSafetensors(
    file,
    {
      a: { dtype: 'F32', shape: [2, 3], data: a },
      ids: { dtype: 'I64', shape: [3], data: ids },
      bytes: { dtype: 'U8', shape: [3], data: bytes },
      half: { dtype: 'F16', shape: [2], data: half },
      empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
    },
    { format: 'pt', note: 'hi' },
  );
  const st = await SafetensorsFile.open(file);
  assert.deepEqual(st.metadata, { format: 'pt', note: 'hi' });
  assert.deepEqual([...st.tensors.keys()], ['a', 'ids', 'bytes', 'half', 'empty']);
  const entry = st.tensors.get('a')!;
  assert.equal(entry.dtype, 'F32');
  assert.deepEqual(entry.shape, [2, 3]);
  assert.equal(entry.byteLength, 24);
  assert.equal(entry.source.path, fs.realpathSync(file));
  // The header is padded so that data starts 8-byte aligned.
  const headerLength = Number(fs.readFileSync(file).readBigUInt64LE(0));
  assert.equal((8 + headerLength) % 8, 0);

  const dir = path.join(root, 'roundtrip-model');
  fs.mkdirSync(dir);
  fs.copyFileSync(file, path.join(dir, 'model.safetensors'));
  const checkpoint = await Checkpoint.open(dir);
  assert.deepEqual((await checkpoint.readFloat32('a')).data, a);
  assert.deepEqual((await checkpoint.readFloat32('half')).data, Float32Array.from([1, -2]));
  assert.deepEqual(new BigInt64Array(new Uint8Array(await checkpoint.readBytes('ids')).buffer), ids);
  assert.deepEqual([...(await checkpoint.readBytes('bytes'))], [0, 1, 255]);
  assert.deepEqual((await checkpoint.readFloat32('empty')).data.length, 0);
  assert.deepEqual(await checkpoint.readRowsFloat32('a', [1, 0]), Float32Array.from([0, 1e-30, -7, 1.5, -2, 3.25]));
  await assert.rejects(checkpoint.readRowsFloat32('a', [2]), ModelLoadError);
  await assert.rejects(checkpoint.readFloat32('ids'), /not a float type/);
  assert.throws(
    () => checkpoint.entry('nope'),
    (e: unknown) => e instanceof ModelLoadError && /no tensor 'nope'/.test((e as Error).message),
  );
});

test('round trip keeps non-ASCII tensor names', async () => {
  const file = path.join(root, 'unicode.safetensors');
  writeSafetensors(file, { 'émbed.wéight': { dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) } });
  const st = await SafetensorsFile.open(file);
  assert.deepEqual([...st.tensors.keys()], ['émbed.wéight']);
});

test('non-ASCII names keep the data 8-byte aligned', () => {
  const file = path.join(root, 'unicode-align.safetensors');
  writeSafetensors(file, { é: { dtype: 'F32', shape: [1], data: Float32Array.from([1]) } });
  const headerLength = Number(fs.readFileSync(file).readBigUInt64LE(0));
  assert.equal((8 + headerLength) % 8, 0);
});

test('truncated files', async () => {
  const tiny = path.join(root, 'tiny.safetensors');
  fs.writeFileSync(tiny, Buffer.from([1, 2, 3]));
  await rejects(tiny, /truncated file \(3 bytes/);
  // The header promises 100 bytes, 10 follow.
  await rejects(rawFile('{"a":1}   ', undefined, 100n), /truncated file: header says 100 bytes but only 10 follow/);
  // A valid file cut in the middle of the data.
  const full = path.join(root, 'full.safetensors');
  writeSafetensors(full, { w: { dtype: 'F32', shape: [16], data: new Float32Array(16) } });
  const cut = path.join(root, 'cut.safetensors');
  fs.writeFileSync(cut, fs.readFileSync(full).subarray(0, fs.statSync(full).size - 5));
  await rejects(cut, /ends past the data .*truncated or header lies/);
});

test('lying header length', async () => {
  await rejects(rawFile('{}', undefined, 2n ** 62n), /header length \d+ is implausible/);
  await rejects(rawFile('{}', undefined, 0xffffffffffffffffn), /implausible/);
});

test('bad JSON and non-object headers', async () => {
  await rejects(rawFile('{"a": '), /header is not valid JSON/);
  await rejects(rawFile('\u0000\u0000'), /header is not valid JSON/);
  await rejects(rawFile('[1,2]'), /header is not a JSON object/);
  await rejects(rawFile('null'), /header is not a JSON object/);
  await rejects(rawFile({ a: 5 }), /tensor 'a': entry is not an object/);
  await rejects(rawFile({ __metadata__: 'x' }), /__metadata__ is not an object/);
});

test('unknown dtype', async () => {
  await rejects(
    rawFile({ a: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
    /tensor 'a': unsupported dtype "F8_E4M3"/,
  );
  await rejects(rawFile({ a: { shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), /unsupported dtype undefined/);
});

test('bad shapes and offsets', async () => {
  await rejects(
    rawFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)),
    /shape \[-1\] is not a list of non-negative integers/,
  );
  await rejects(
    rawFile({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, new Uint8Array(4)),
    /not a list of non-negative integers/,
  );
  await rejects(rawFile({ a: { dtype: 'F32', shape: 4, data_offsets: [0, 4] } }, new Uint8Array(4)), /not a list/);
  await rejects(
    rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0] } }, new Uint8Array(4)),
    /data_offsets \[0\] is not a pair/,
  );
  await rejects(
    rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, new Uint8Array(4)),
    /is not a pair of non-negative integers/,
  );
  await rejects(
    rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, new Uint8Array(8)),
    /byte range \[8, 4\)/,
  );
});

test('shape × dtype size different from the byte range', async () => {
  await rejects(
    rawFile({ a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, new Uint8Array(24)),
    /tensor 'a': byte range \[0, 20\) holds 20 bytes but shape \[2,3\] × F32 needs 24/,
  );
  await rejects(rawFile({ a: { dtype: 'BF16', shape: [3], data_offsets: [0, 12] } }, new Uint8Array(12)), /needs 6/);
});

test('range past the end of the file', async () => {
  await rejects(
    rawFile({ a: f32(4) }, new Uint8Array(12)),
    /tensor 'a': byte range \[0, 16\) ends past the data \(12 bytes\)/,
  );
  await rejects(
    rawFile({ a: { dtype: 'U8', shape: [4], data_offsets: [2 ** 40, 2 ** 40 + 4] } }, new Uint8Array(4)),
    /ends past the data/,
  );
});

test('overlapping tensors', async () => {
  await rejects(
    rawFile({ a: f32(4), b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, new Uint8Array(16)),
    /tensors 'a' and 'b' overlap/,
  );
  // The same bytes under two names.
  await rejects(rawFile({ a: f32(2), b: f32(2) }, new Uint8Array(8)), /overlap/);
  // One range nested inside another, not adjacent in sorted order.
  await rejects(
    rawFile(
      {
        big: f32(8),
        inner: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
        late: { dtype: 'F32', shape: [1], data_offsets: [20, 24] },
      },
      new Uint8Array(32),
    ),
    /overlap/,
  );
  // Adjacent and empty tensors are fine.
  const ok = await SafetensorsFile.open(
    rawFile(
      {
        a: f32(2),
        e: { dtype: 'F32', shape: [0], data_offsets: [8, 8] },
        b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
      },
      new Uint8Array(16),
    ),
  );
  assert.equal(ok.tensors.size, 3);
});

test('overlap behind an empty tensor is still found', async () => {
  await rejects(
    rawFile(
      {
        big: f32(8),
        empty: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
        inside: { dtype: 'F32', shape: [1], data_offsets: [12, 16] },
      },
      new Uint8Array(32),
    ),
    /overlap/,
  );
});

test('sharded checkpoints', async () => {
  const dir = path.join(root, 'sharded');
  fs.mkdirSync(dir);
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), {
    a: { dtype: 'F32', shape: [1], data: Float32Array.from([1]) },
  });
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), {
    b: { dtype: 'F32', shape: [1], data: Float32Array.from([2]) },
  });
  const index = (map: Record<string, string>) =>
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: map }));

  index({ a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' });
  const checkpoint = await Checkpoint.open(dir);
  assert.deepEqual(checkpoint.keys().sort(), ['a', 'b']);
  assert.deepEqual((await checkpoint.readFloat32('b')).data, Float32Array.from([2]));

  index({
    a: 'model-00001-of-00002.safetensors',
    b: 'model-00002-of-00002.safetensors',
    c: 'model-00002-of-00002.safetensors',
  });
  await assert.rejects(
    () => Checkpoint.open(dir),
    (e: unknown) =>
      e instanceof ModelLoadError &&
      /'c' is listed in model-00002-of-00002.safetensors but that shard does not hold it/.test((e as Error).message),
  );

  index({ a: 'model-00001-of-00002.safetensors', b: 'model-00003-of-00003.safetensors' });
  await assert.rejects(
    () => Checkpoint.open(dir),
    (e: unknown) =>
      e instanceof SafetensorsError &&
      /model-00003-of-00003.safetensors: cannot open \(ENOENT\)/.test((e as Error).message),
  );

  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": ');
  await assert.rejects(
    () => Checkpoint.open(dir),
    (e: unknown) => e instanceof ModelLoadError && /index.json: not valid JSON/.test((e as Error).message),
  );
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{}');
  await assert.rejects(() => Checkpoint.open(dir), /no "weight_map" object/);

  // The same tensor in two shards.
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), {
    a: { dtype: 'F32', shape: [1], data: Float32Array.from([2]) },
  });
  index({ a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' });
  await assert.rejects(() => Checkpoint.open(dir), /tensor 'a' appears in two shards/);
});

test('checkpoint folders without weights', async () => {
  const dir = path.join(root, 'empty-model');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'x');
  await assert.rejects(
    () => Checkpoint.open(dir),
    (e: unknown) => e instanceof ModelLoadError && /no .safetensors weights found/.test((e as Error).message),
  );
  await assert.rejects(() => Checkpoint.open(path.join(root, 'missing')), /not a directory/);
});

test('float16 and bfloat16 conversion', async () => {
  const halves = Uint16Array.from([
    0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x3555,
  ]);
  const expected = [1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, -0, Infinity, -Infinity, NaN, 0.333251953125];
  const converted = float16ToFloat32(halves);
  expected.forEach((v, i) =>
    assert.ok(Object.is(converted[i], v), `f16 0x${halves[i].toString(16)} → ${converted[i]}, expected ${v}`),
  );
  assert.deepEqual(bytesToFloat32(new Uint8Array(halves.buffer), 'F16', 't'), converted);

  const bf = Uint16Array.from([0x3f80, 0xc040, 0x7f80, 0xff80, 0x0000, 0x8000, 0x3eaa, 0x4049]);
  const bfExpected = [1, -3, Infinity, -Infinity, 0, -0, 0.33203125, 3.140625];
  const bfConverted = bytesToFloat32(new Uint8Array(bf.buffer), 'BF16', 't');
  bfExpected.forEach((v, i) =>
    assert.ok(Object.is(bfConverted[i], v), `bf16 0x${bf[i].toString(16)} → ${bfConverted[i]}, expected ${v}`),
  );

  // Unaligned source bytes (safetensors offsets need not be aligned).
  const shifted = new Uint8Array(9);
  shifted.set(new Uint8Array(Float32Array.from([1.5, -4]).buffer), 1);
  assert.deepEqual(bytesToFloat32(shifted.subarray(1), 'F32', 't'), Float32Array.from([1.5, -4]));
  assert.deepEqual(
    bytesToFloat32(new Uint8Array(Float64Array.from([0.1, 2]).buffer), 'F64', 't'),
    Float32Array.from([0.1, 2]),
  );

  // float32 → float16 → float32 is exact on representable values and rounds to nearest even otherwise.
  const values = Float32Array.from([
    0,
    1,
    -2,
    65504,
    2 ** -24,
    0.5 + 2 ** -11,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    70000,
    1e-9,
  ]);
  const back = float16ToFloat32(float32ToFloat16(values));
  assert.deepEqual(Array.from(back), [0, 1, -2, 65504, 2 ** -24, 0.5 + 2 ** -11, 1, 1 + 4 * 2 ** -11, Infinity, 0]);

  // F16 / BF16 tensors through a checkpoint.
  const dir = path.join(root, 'halves');
  fs.mkdirSync(dir);
  writeSafetensors(path.join(dir, 'model.safetensors'), {
    h: { dtype: 'F16', shape: [2, 2], data: Uint16Array.from([0x3c00, 0xc000, 0x3800, 0x0000]) },
    b: { dtype: 'BF16', shape: [2], data: Uint16Array.from([0x3f80, 0xc040]) },
  });
  const checkpoint = await Checkpoint.open(dir);
  assert.deepEqual((await checkpoint.readFloat32('h')).data, Float32Array.from([1, -2, 0.5, 0]));
  assert.deepEqual(await checkpoint.readRowsFloat32('h', [1]), Float32Array.from([0.5, 0]));
  assert.deepEqual((await checkpoint.readFloat32('b')).data, Float32Array.from([1, -3]));
});

test('strict where the format is: a tensor named twice, invalid UTF-8; a non-checkpoint is never echoed', async () => {
  const entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
  await rejects(
    rawFile(`{"w":${entry},"w":${entry}}`, new Uint8Array(4)),
    /header names "w" twice \(the format forbids it\)/,
  );
  // Twice inside one entry, too (JSON.parse would silently keep the last dtype).
  await rejects(
    rawFile('{"w":{"dtype":"F16","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4)),
    /header names "dtype" twice/,
  );
  // The same key in two different objects is fine, as are escaped quotes in names.
  const ok = await SafetensorsFile.open(rawFile(`{"a\\"b":${entry},"__metadata__":{"dtype":"x"}}`, new Uint8Array(4)));
  assert.deepEqual([...ok.tensors.keys()], ['a"b']);

  const badUtf8 = Buffer.concat([Buffer.from('{"'), Buffer.from([0xff, 0xfe]), Buffer.from(`":${entry}}`)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(badUtf8.length));
  const utf8File = path.join(root, 'bad-utf8.safetensors');
  fs.writeFileSync(utf8File, Buffer.concat([prefix, badUtf8, new Uint8Array(4)]));
  await rejects(utf8File, /header is not valid UTF-8/);

  // A text file whose first 8 bytes happen to give a small length: the error shows no byte of it.
  const secret = 'TOPSECRET password=hunter2 and more text';
  const lying = Buffer.alloc(8 + secret.length);
  lying.writeBigUInt64LE(BigInt(secret.length));
  lying.write(secret, 8);
  const lyingFile = path.join(root, 'lying.safetensors');
  fs.writeFileSync(lyingFile, lying);
  await assert.rejects(
    () => SafetensorsFile.open(lyingFile),
    (e: unknown) => {
      const m = (e as Error).message;
      assert.match(m, /header is not valid JSON( \(at byte \d+\))?: not a safetensors file\?$/);
      for (const word of ['TOPSECRET', 'password', 'hunter2']) assert.ok(!m.includes(word), m);
      return true;
    },
  );
  // A long or control-character name is escaped and cut.
  const longName = `\u001b[31m${'x'.repeat(500)}`;
  await assert.rejects(
    () => SafetensorsFile.open(rawFile({ [longName]: 5 })),
    (e: unknown) => !(e as Error).message.includes('\u001b') && (e as Error).message.length < 300,
  );
  // A folder where the weights file belongs.
  const folderDir = path.join(root, 'folder-weights');
  fs.mkdirSync(path.join(folderDir, 'model.safetensors'), { recursive: true });
  await assert.rejects(() => Checkpoint.open(folderDir), /model\.safetensors: is a folder .*not a safetensors file/);
});

test('shard names from the index and weight files stay inside the model folder', async () => {
  const outside = path.join(root, 'outside.safetensors');
  writeSafetensors(outside, { a: { dtype: 'F32', shape: [1], data: Float32Array.from([1]) } });
  const dir = path.join(root, 'contained');
  fs.mkdirSync(dir);
  const index = (shard: unknown) =>
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: shard } }));
  const refused = (pattern: RegExp) =>
    assert.rejects(
      () => Checkpoint.open(dir),
      (e: unknown) => e instanceof ModelLoadError && pattern.test((e as Error).message),
    );
  index('../outside.safetensors');
  await refused(/index\.json: shard "\.\.\/outside\.safetensors" is not a plain relative file name/);
  index(outside);
  await refused(/is not a plain relative file name/);
  index('sub\\..\\..\\outside.safetensors');
  await refused(/is not a plain relative file name/);
  index(7);
  await refused(/a weight_map value is not a file name/);
  // A symlink inside the folder that leads out of it.
  fs.symlinkSync(outside, path.join(dir, 'link.safetensors'));
  index('link.safetensors');
  await refused(/shard "link\.safetensors" leads outside .*contained \(to .*outside\.safetensors\)/);
  fs.rmSync(path.join(dir, 'model.safetensors.index.json'));
  await refused(/weights file "link\.safetensors" leads outside/);

  // A Hugging Face cache snapshot: its entries are symlinks into the repo's blobs, which is allowed.
  const repo = path.join(root, 'hub', 'models--org--name');
  const snapshot = path.join(repo, 'snapshots', 'abc123');
  fs.mkdirSync(snapshot, { recursive: true });
  fs.mkdirSync(path.join(repo, 'blobs'));
  fs.copyFileSync(outside, path.join(repo, 'blobs', 'deadbeef'));
  fs.symlinkSync('../../blobs/deadbeef', path.join(snapshot, 'model.safetensors'));
  assert.deepEqual((await (await Checkpoint.open(snapshot)).readFloat32('a')).data, Float32Array.from([1]));
  // But not beyond the repo.
  fs.rmSync(path.join(snapshot, 'model.safetensors'));
  fs.symlinkSync(outside, path.join(snapshot, 'model.safetensors'));
  await assert.rejects(() => Checkpoint.open(snapshot), /leads outside/);
});

test('a tensor larger than one conversion slice reads as one piece would convert it', async () => {
  const dir = tempDir();
  // 5 M bf16 values: more than the 4 M converted between two turns of the event loop, not a multiple of it.
  const halves = new Uint16Array(5_000_003);
  for (let i = 0; i < halves.length; i++) halves[i] = (i * 2654435761) >>> 16;
  writeSafetensors(path.join(dir, 'model.safetensors'), {
    big: { dtype: 'BF16', shape: [halves.length], data: halves },
  });
  const { data, dims } = await (await Checkpoint.open(dir)).readFloat32('big');
  assert.deepEqual(dims, [halves.length]);
  const whole = bytesToFloat32(new Uint8Array(halves.buffer), 'BF16', 'big');
  assert.equal(Buffer.compare(Buffer.from(data.buffer), Buffer.from(whole.buffer)), 0);
});
