import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { HttpByteSource, MemoryByteSource, type ByteSource } from '../src/core/bytes.js';
import { SafetensorsError } from '../src/core/errors.js';
import { FileByteSource, nodeFileSystem, writeSafetensors } from '../src/core/node/files.js';
import { files, type FileSystem } from '../src/core/io.js';
import { Checkpoint, encodeSafetensors, readEntry, readEntrySync, SafetensorsFile } from '../src/core/safetensors.js';
import { readConfig } from '../src/models/config.js';
import { tempDir } from './helpers/cli.js';

const tensors = {
  w: { dtype: 'F32' as const, shape: [2, 2], data: Float32Array.from([1, -2, 3.5, 4]) },
  h: { dtype: 'F16' as const, shape: [2], data: Uint16Array.from([0x3c00, 0xc000]) },
};
const bytes = concat(encodeSafetensors(tensors, { format: 'pt' }));

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

/** A static server that honours `Range: bytes=a-b` (206), or ignores it (200) when `ranges` is off. */
async function serve(content: Uint8Array, ranges = true): Promise<{ url: string; requests: string[] }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    requests.push(req.headers.range ?? '');
    if (req.url !== '/model.safetensors') return res.writeHead(404).end();
    if (!ranges || !range) return res.writeHead(200, { 'Content-Length': content.byteLength }).end(content);
    const [first, last] = [Number(range[1]), Math.min(Number(range[2]), content.byteLength - 1)];
    res.writeHead(206, { 'Content-Range': `bytes ${first}-${last}/${content.byteLength}` });
    res.end(content.subarray(first, last + 1));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  after(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/model.safetensors`, requests };
}

async function checkSource(source: ByteSource): Promise<void> {
  const st = await SafetensorsFile.read(source);
  assert.deepEqual(st.metadata, { format: 'pt' });
  const w = st.tensors.get('w')!;
  assert.deepEqual(new Float32Array(new Uint8Array(await readEntry(w)).buffer), tensors.w.data);
  assert.deepEqual(new Uint16Array(new Uint8Array(await readEntry(st.tensors.get('h')!)).buffer), tensors.h.data);
  await assert.rejects(source.read(source.size - 2, 4), SafetensorsError);
}

test('safetensors read the same from memory, a file and HTTP range requests', async () => {
  await checkSource(new MemoryByteSource('<memory>', bytes));
  const file = path.join(tempDir(), 'model.safetensors');
  writeSafetensors(file, tensors, { format: 'pt' });
  const fileSource = FileByteSource.open(file);
  assert.equal(fileSource.path, fs.realpathSync(file));
  await checkSource(fileSource);
  assert.deepEqual([...fileSource.readSync(8, 4)], [...bytes.subarray(8, 12)]);
  const { url, requests } = await serve(bytes);
  const remote = await HttpByteSource.open(url);
  assert.equal(remote.size, bytes.byteLength);
  assert.equal(remote.path, undefined);
  assert.equal(remote.readSync, undefined);
  await checkSource(remote);
  // One request for the size, two for the header, one per tensor: no whole-file download.
  assert.deepEqual(requests.slice(0, 2), ['bytes=0-0', 'bytes=0-7']);
  assert.equal(requests.length, 5);
});

test('HTTP sources refuse servers that ignore ranges, and missing files', async () => {
  const { url } = await serve(bytes, false);
  await assert.rejects(HttpByteSource.open(url), /HTTP 200 to a range request/);
  await assert.rejects(HttpByteSource.open(url.replace('model', 'nope')), /HTTP 404/);
});

test('a checkpoint behind HTTP ranges reads its tensors (asynchronously)', async () => {
  const { url } = await serve(bytes);
  const checkpoint = new Checkpoint('remote', [await SafetensorsFile.read(await HttpByteSource.open(url))]);
  assert.deepEqual((await checkpoint.readFloat32('h')).data, Float32Array.from([1, -2]));
  assert.throws(() => readEntrySync(checkpoint.entry('w')), /reads asynchronously only/);
});

test('configs and checkpoints load through a plugged-in file system', async () => {
  const memory = new Map<string, Uint8Array>([
    ['m/config.json', new TextEncoder().encode(JSON.stringify({ architectures: ['LlamaForCausalLM'] }))],
    ['m/model.safetensors', bytes],
  ]);
  const missing = (p: string) => Object.assign(new Error(`${p}: not found`), { code: 'ENOENT' });
  const inMemory: FileSystem = {
    join: (...parts) => parts.join('/'),
    fromUrl: (url) => url,
    isFile: async (p) => memory.has(p),
    isDirectory: async (p) => [...memory.keys()].some((k) => k.startsWith(`${p}/`)),
    list: async (dir) => [...memory.keys()].filter((k) => k.startsWith(`${dir}/`)).map((k) => k.slice(dir.length + 1)),
    readBytes: async (p) => memory.get(p) ?? Promise.reject(missing(p)),
    readText: async (p) => new TextDecoder().decode(memory.get(p) ?? (await Promise.reject(missing(p)))),
    open: async (p) => new MemoryByteSource(p, memory.get(p) ?? (await Promise.reject(missing(p)))),
    resolveInside: async (dir, name) => ({ path: `${dir}/${name}` }),
  };
  files.set(inMemory);
  try {
    assert.deepEqual((await readConfig('m')).raw.architectures, ['LlamaForCausalLM']);
    const checkpoint = await Checkpoint.open('m');
    assert.deepEqual((await checkpoint.readFloat32('h')).data, Float32Array.from([1, -2]));
    assert.equal(checkpoint.entry('w').source.name, 'm/model.safetensors');
    await assert.rejects(readConfig('elsewhere'), /no config\.json/);
  } finally {
    files.set(nodeFileSystem);
  }
});
