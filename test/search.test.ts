import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { openIndex, type AddOptions, type IndexSummary } from '../src/apps/search/search_index.js';
import { ANN_ROWS_PER_PARTITION, annPartitions, Store, type IndexRow } from '../src/apps/search/store.js';
import * as lancedb from '@lancedb/lancedb';
import { scanSources } from '../src/apps/search/sources.js';
import { DATA, REPO, copyFolder, inProcess, runCli, tempDir } from './helpers/cli.js';

const MODEL = path.join(DATA, 'fixtures', 'clip_e2e');
const PHOTOS = path.join(DATA, 'images');

function unit(v: number[]): number[] {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0);

interface Summary {
  added: number;
  updated: number;
  moved: number;
  skipped: number;
  unreadable: number;
  removed: number;
  embedded: number;
  rows: number;
}

async function rows(db: string): Promise<IndexRow[]> {
  return (await Store.open(db, 'clip_e2e_C', null)).all();
}

/** The library's `index.add` (in this process: the CLI itself is tested on the first run only). */
async function add(db: string, inputs: string[], options: AddOptions = {}): Promise<IndexSummary> {
  const index = await openIndex(db, { model: MODEL });
  try {
    return await index.add(inputs, options);
  } finally {
    await index.close();
  }
}

function assertUniqueUris(list: IndexRow[]) {
  assert.equal(new Set(list.map((r) => r.uri)).size, list.length, 'one row per image');
  assert.equal(new Set(list.map((r) => r.id)).size, list.length, 'one row per id');
}

// One index of (a copy of) the bundled photos, built by the CLI, shared by the cases below in order.
const photos = copyFolder(PHOTOS);
const db = path.join(tempDir(), 'db');
const files = fs
  .readdirSync(photos)
  .sort()
  .map((f) => path.join(photos, f));
/** embed-image's vectors (aligned, mode C, unit norm) by path, before any file changes. */
let imageVectors: Map<string, number[]>;

test('internvl index + search: results equal a brute-force ranking of embed-text / embed-image vectors', async () => {
  // Storage options go to LanceDB (a local folder ignores them; s3:// URIs take region, endpoint, keys…).
  const first = await runCli([
    'index',
    '--model',
    MODEL,
    '--db',
    db,
    '--json',
    '--quiet',
    '--storage-option',
    'timeout=30s',
    photos,
  ]);
  assert.equal(first.code, 0, first.stderr);
  const summary = JSON.parse(first.stdout) as Summary & {
    table: string;
    images_per_second: number;
    ann_index: boolean;
  };
  assert.deepEqual(
    {
      table: summary.table,
      added: summary.added,
      embedded: summary.embedded,
      rows: summary.rows,
      ann_index: summary.ann_index,
    },
    { table: 'clip_e2e_C', added: 8, embedded: 8, rows: 8, ann_index: false },
  );
  assert.ok(summary.images_per_second > 0);

  const embedded = JSON.parse(
    (await runCli(['embed-image', '--model', MODEL, '--json', '--quiet', '--normalize', ...files])).stdout,
  );
  assert.equal(embedded.embedding, 'aligned');
  assert.equal(embedded.mode, 'C');
  imageVectors = new Map(embedded.images.map((e: { image: string; embedding: number[] }) => [e.image, e.embedding]));
  // Queries in two languages (the tokenizer is InternVL-14B's multilingual one).
  const texts = ['a photo of a cat', '一张猫的照片'];
  const textVectors = JSON.parse(
    (await runCli(['embed-text', '--model', MODEL, '--json', '--quiet', '--normalize', ...texts])).stdout,
  ).texts.map((t: { embedding: number[] }) => t.embedding);

  const check = (results: { image: string; score: number }[], query: number[]) => {
    const expected = [...imageVectors]
      .map(([image, v]) => ({ image, score: dot(query, v) }))
      .sort((a, b) => b.score - a.score);
    assert.equal(results.length, 8);
    results.forEach((r, i) => {
      assert.equal(r.image, expected[i].image, `rank ${i + 1}`);
      assert.ok(Math.abs(r.score - expected[i].score) < 1e-5, `${r.image}: ${r.score} vs ${expected[i].score}`);
    });
  };
  const byText = await runCli(['search', '--db', db, texts[0], '--k', '8', '--json']);
  assert.equal(byText.code, 0, byText.stderr);
  assert.equal(JSON.parse(byText.stdout).table, 'clip_e2e_C');
  check(JSON.parse(byText.stdout).results, textVectors[0]);

  // The plain output: rank, score, path; an image query finds itself first.
  const horse = files.find((f) => f.endsWith('horse.png'))!;
  const table = await runCli(['search', '--db', db, '--image', horse, '--k', '2']);
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.trim().split('\n');
  assert.match(lines[0], /^rank +score +image$/);
  assert.equal(lines.length, 4);
  assert.deepEqual(lines[2].trim().split(/ +/), ['1', '1.0000', horse]);

  // The library: the same rankings (any language, by image), and --where filters.
  const index = await openIndex(db);
  try {
    check(await index.search(texts[1], { k: 8 }), textVectors[1]);
    check(await index.search({ image: horse }, { k: 8 }), imageVectors.get(horse)!);
    const hits = await index.search(texts[0], { k: 3, where: "uri NOT LIKE '%rocket%'" });
    assert.equal(hits.length, 3);
    assert.ok(hits.every((h) => !h.image.includes('rocket')));
  } finally {
    await index.close();
  }
  const badWhere = await inProcess(['search', '--db', db, texts[0], '--where', 'no_such_column > 1']);
  assert.equal(badWhere.code, 2, badWhere.stderr);
  assert.match(badWhere.stderr, /^error: filter "no_such_column > 1": .*no_such_column/);
  const badRefine = await inProcess(['search', '--db', db, texts[0], '--refine', '0']);
  assert.equal(badRefine.code, 2, badRefine.stderr);
  assert.match(badRefine.stderr, /^error: internvl search: --refine must be at least 1, got 0/);
  const badOption = await inProcess(['search', '--db', db, texts[0], '--storage-option', 'region']);
  assert.equal(badOption.code, 2, badOption.stderr);
  assert.match(badOption.stderr, /^error: .*--storage-option 'region' is not key=value/);
});

test('index: a rerun embeds nothing; added, modified, moved, deleted and corrupt files; --prune', async () => {
  assert.ok(imageVectors, 'runs after the first case (its index)');
  const again = await add(db, [photos]);
  assert.deepEqual(
    { added: again.added, embedded: again.embedded, skipped: again.skipped, rows: again.rows },
    { added: 0, embedded: 0, skipped: 8, rows: 8 },
  );

  fs.mkdirSync(path.join(photos, 'sub'));
  await sharp(path.join(PHOTOS, 'horse.png'))
    .flop()
    .toFile(path.join(photos, 'sub', 'horse_flipped.png'));
  await sharp(path.join(PHOTOS, 'camera.png')).negate().toFile(path.join(photos, 'camera.png'));
  fs.renameSync(path.join(photos, 'coffee.png'), path.join(photos, 'sub', 'coffee_moved.png'));
  fs.rmSync(path.join(photos, 'page.png'));
  fs.writeFileSync(path.join(photos, 'broken.jpg'), Buffer.from('not a jpeg at all'));
  const warnings: string[] = [];
  const changed = await add(db, [photos], { prune: true, onWarning: (w) => warnings.push(w) });
  assert.deepEqual(
    {
      added: changed.added,
      updated: changed.updated,
      moved: changed.moved,
      removed: changed.removed,
      unreadable: changed.unreadable,
      embedded: changed.embedded,
      rows: changed.rows,
    },
    { added: 1, updated: 1, moved: 1, removed: 1, unreadable: 1, embedded: 2, rows: 8 },
  );
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /broken\.jpg/);
  const after = await rows(db);
  assertUniqueUris(after);
  assert.deepEqual(after.map((r) => path.relative(photos, r.uri)).sort(), [
    'astronaut.png',
    'camera.png',
    'chelsea.png',
    'horse.png',
    'motorcycle_right.png',
    'rocket.jpg',
    'sub/coffee_moved.png',
    'sub/horse_flipped.png',
  ]);
  // The moved file kept its vector; the modified one got a new one.
  const old = new Map([...imageVectors].map(([f, v]) => [path.basename(f), v]));
  const vectorOf = (name: string) => Array.from(after.find((r) => r.uri.endsWith(name))!.vector);
  assert.ok(dot(vectorOf('coffee_moved.png'), old.get('coffee.png')!) > 1 - 1e-5);
  assert.ok(dot(vectorOf('/camera.png'), old.get('camera.png')!) < 1 - 1e-3);
});

test('index: a table of another weight format, mode or model is refused with one line', async () => {
  // The same checkpoint under another config is another model (its fingerprint differs).
  const other = copyFolder(MODEL);
  const config = JSON.parse(fs.readFileSync(path.join(other, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(other, 'config.json'), JSON.stringify({ ...config, note: 'another model' }));
  for (const [extra, differs] of [
    [['--model', MODEL, '--weights', 'int8'], 'weights'],
    [['--model', MODEL, '--mode', 'G', '--table', 'clip_e2e_C'], 'mode'],
    [['--model', other, '--table', 'clip_e2e_C'], 'fingerprint'],
  ] as const) {
    const r = await inProcess(['index', '--db', db, '--quiet', ...extra, photos]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^error: .*table clip_e2e_C holds embeddings of .*\\(${differs} differ`));
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
  assert.equal((await rows(db)).length, 8);
});

test('index: kill -9 mid-run, rerun: no duplicates, nothing committed lost, same vectors as a clean run', async () => {
  const folder = tempDir();
  const names = fs.readdirSync(PHOTOS);
  for (let i = 0; i < 32; i++) {
    const src = path.join(PHOTOS, names[i % names.length]);
    await sharp(src)
      .resize(64 + i, 64)
      .png()
      .toFile(path.join(folder, `img${String(i).padStart(2, '0')}.png`));
  }
  const db = path.join(tempDir(), 'db');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(REPO, 'bin', 'internvl-dev.ts'),
      'index',
      '--model',
      MODEL,
      '--db',
      db,
      '--quiet',
    ].concat(['--batch', '1', '--commit-every', '2', folder]),
    { stdio: 'ignore' },
  );
  // Kill as soon as a few commits are in (the table then has rows but not all of them).
  let committed = 0;
  for (let i = 0; i < 600 && committed < 4; i++) {
    await new Promise((r) => setTimeout(r, 50));
    committed = await Store.open(db, 'clip_e2e_C', null)
      .then((s) => s.count())
      .catch(() => 0);
  }
  child.kill('SIGKILL');
  await new Promise((r) => child.once('close', r));
  const partial = await rows(db);
  assert.ok(partial.length >= 4 && partial.length < 32, `${partial.length} rows committed before the kill`);
  assertUniqueUris(partial);

  const rerun = await add(db, [folder]);
  assert.equal(rerun.rows, 32);
  assert.equal(rerun.embedded, 32 - partial.length);
  const final = await rows(db);
  assertUniqueUris(final);

  const cleanDb = path.join(tempDir(), 'db');
  await add(cleanDb, [folder]);
  const clean = await rows(cleanDb);
  assert.deepEqual(
    final.map((r) => [r.id, r.sha256]),
    clean.map((r) => [r.id, r.sha256]),
  );
  final.forEach((r, i) => assert.ok(dot(Array.from(r.vector), Array.from(clean[i].vector)) > 1 - 1e-5, r.uri));
});

test('index: webdataset shard and .jsonl caption file; captions and --where filters', async () => {
  const dir = tempDir();
  const members = path.join(dir, 'members');
  fs.mkdirSync(members);
  fs.copyFileSync(path.join(PHOTOS, 'horse.png'), path.join(members, 'a.png'));
  fs.writeFileSync(path.join(members, 'a.txt'), 'a horse in a field\n');
  fs.writeFileSync(path.join(members, 'a.json'), '{"source": "test"}');
  fs.copyFileSync(path.join(PHOTOS, 'rocket.jpg'), path.join(members, 'b.jpg'));
  fs.writeFileSync(path.join(members, 'b.txt'), 'a rocket launch');
  const shard = path.join(dir, 'shard.tar');
  execFileSync('tar', ['-cf', shard, '-C', members, 'a.png', 'a.txt', 'a.json', 'b.jpg', 'b.txt']);
  fs.copyFileSync(path.join(PHOTOS, 'chelsea.png'), path.join(dir, 'cat.png'));
  const captions = path.join(dir, 'captions.jsonl');
  fs.writeFileSync(captions, `${JSON.stringify({ image: 'cat.png', caption: 'a cat' })}\n`);

  const db = path.join(tempDir(), 'db');
  assert.equal((await add(db, [shard, captions])).added, 3);
  const index = await openIndex(db);
  const results = await index.search('animal', { where: "caption LIKE '%horse%'" }).finally(() => index.close());
  assert.equal(results.length, 1);
  assert.equal(results[0].image, `${shard}#a.png`);
  assert.equal(results[0].caption, 'a horse in a field');
  assert.deepEqual(results[0].metadata, { source: 'test' });
  const all = await rows(db);
  assert.deepEqual(all.map((x) => x.caption).sort(), ['a cat', 'a horse in a field', 'a rocket launch']);
  // Rerun: the shard is read again but nothing is embedded.
  assert.equal((await add(db, [shard, captions])).embedded, 0);
});

test('sources: folders are walked, globs expand (**, {a,b}, [..]) in path order, a pattern that matches nothing fails', async () => {
  const root = tempDir();
  for (const f of [
    'a/1.png',
    'a/deep/2.jpg',
    'b/3.png',
    'c/4.png',
    'notes.txt',
    'a/x.txt',
    'a/.hidden.png',
    'd.png/inner.txt',
  ]) {
    fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    fs.writeFileSync(path.join(root, f), f);
  }
  const uris = async (...inputs: string[]) => {
    const out = [];
    for await (const item of (await scanSources(inputs)).items()) out.push(path.relative(root, item.uri));
    return out;
  };
  assert.deepEqual(await uris(root), ['a/.hidden.png', 'a/1.png', 'a/deep/2.jpg', 'b/3.png', 'c/4.png']);
  assert.deepEqual(await uris(path.join(root, '**/*.png')), ['a/.hidden.png', 'a/1.png', 'b/3.png', 'c/4.png']);
  assert.deepEqual(await uris(path.join(root, '{a,c}/**/*.{png,jpg}')), [
    'a/.hidden.png',
    'a/1.png',
    'a/deep/2.jpg',
    'c/4.png',
  ]);
  assert.deepEqual(await uris(path.join(root, '[bc]/?.png')), ['b/3.png', 'c/4.png']);
  // A folder the pattern matches is not expanded to its files; dot files match as a folder walk finds them.
  await assert.rejects(uris(path.join(root, '*.png')), /the pattern matches no file/);
  await assert.rejects(uris(path.join(root, '?')), /the pattern matches no file/);
  assert.deepEqual(await uris(path.join(root, 'a/*.png')), ['a/.hidden.png', 'a/1.png']);
  await assert.rejects(scanSources([path.join(root, '*.webp')]), /\*\.webp: the pattern matches no file/);
});

test('store: an ANN index gets a partition per ANN_ROWS_PER_PARTITION rows', () => {
  assert.equal(annPartitions(256), 1);
  assert.equal(annPartitions(ANN_ROWS_PER_PARTITION), 1);
  assert.equal(annPartitions(ANN_ROWS_PER_PARTITION + 1), 2);
  assert.equal(annPartitions(7 * ANN_ROWS_PER_PARTITION), 7);
});

test('store: the ANN index is built past the threshold and finds what exact search finds', async () => {
  const db = path.join(tempDir(), 'db');
  const dim = 256;
  const stamp = { model: 'random', fingerprint: 'f', mode: 'C' as const, weights: 'fp32', dim };
  const store = await Store.open(db, 'random_C', stamp, { create: true });
  let seed = 1;
  const random = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32 - 0.5;
  };
  const vector = () => Float32Array.from(unit(Array.from({ length: dim }, random)));
  const make = (i: number): IndexRow => ({
    id: `id${i}`,
    uri: `/x/${i}.png`,
    sha256: String(i),
    size: 1,
    mtime: 0,
    width: 1,
    height: 1,
    caption: null,
    metadata: null,
    vector: vector(),
  });
  for (let i = 0; i < 3000; i += 1000) await store.append(Array.from({ length: 1000 }, (_, j) => make(i + j)));
  assert.deepEqual(await store.optimize(5000), { annIndex: false, built: false });
  assert.deepEqual(await store.optimize(2000), { annIndex: true, built: true });
  assert.deepEqual(await store.annIndex(), { kind: 'IVF_RQ', partitions: 1, bits: 8, rows: 3000 });
  await store.upsert([make(5000)]);
  assert.deepEqual(await store.optimize(2000), { annIndex: true, built: false });
  assert.equal(await store.count(), 3001);
  // An index this version did not build (IVF_PQ, as older versions built) is replaced by the next optimize.
  const table = await (await lancedb.connect(db)).openTable('random_C');
  await table.createIndex('vector', {
    config: lancedb.Index.ivfPq({ distanceType: 'dot', numPartitions: 4, numSubVectors: 4 }),
    replace: true,
  });
  await store.upsert([make(5001)]);
  assert.equal(await store.annIndex(), null);
  assert.deepEqual(await store.optimize(2000), { annIndex: true, built: true });
  assert.deepEqual(await store.annIndex(), { kind: 'IVF_RQ', partitions: 1, bits: 8, rows: 3002 });
  let found = 0;
  for (let q = 0; q < 20; q++) {
    const query = vector();
    const exact = await store.search(query, { k: 10, exact: true });
    const ann = await store.search(query, { k: 10 });
    const ids = new Set(exact.map((h) => h.id));
    found += ann.filter((h) => ids.has(h.id)).length;
  }
  assert.ok(found / 200 >= 0.9, `recall@10 ${found / 200}`);
  // Every row a candidate rescored exactly: the exact answer.
  const query = vector();
  assert.deepEqual(
    (await store.search(query, { k: 10, refineFactor: 301 })).map((h) => h.id),
    (await store.search(query, { k: 10, exact: true })).map((h) => h.id),
  );
});

test('bench search (latency part) on a small table: exact search equals brute force, recall is measured', async () => {
  const { benchSearchLatency } = await import('../src/apps/bench/search_latency.js');
  const workDir = tempDir();
  const [result] = await benchSearchLatency({
    sizes: [2000],
    dim: 16,
    data: 'clustered',
    queries: 12,
    exactQueries: 6,
    k: 5,
    bits: [8, 1],
    sweep: [
      { nprobes: 'all', refineFactor: 400 },
      { nprobes: 1, refineFactor: 2 },
    ],
    workDir,
    log: () => {},
  });
  assert.equal(result.exactRecall, 1);
  assert.deepEqual(
    result.ann.map((a) => [a.kind, a.partitions, a.bits, a.rows]),
    [
      ['IVF_RQ', 1, 8, 2000],
      ['IVF_RQ', 1, 1, 2000],
    ],
  );
  for (const ann of result.ann) {
    // The store's defaults, then the sweep less the setting that equals them (every partition is one here).
    assert.deepEqual(
      ann.settings.map((s) => [s.nprobes, s.refineFactor]),
      [
        [4, 2],
        [1, 400],
      ],
    );
    // Every candidate rescored exactly: the exact answer.
    assert.equal(ann.settings[1].recall, 1);
    assert.ok(ann.settings[0].recall > 0 && ann.settings[0].recall <= 1);
  }
  // 8-bit codes rank better than 1-bit ones.
  assert.ok(result.ann[0].settings[0].recall >= result.ann[1].settings[0].recall);
  assert.equal(fs.readdirSync(workDir).length, 0, 'the table is deleted once measured');
});
