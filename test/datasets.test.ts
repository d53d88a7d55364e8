import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadDatasetStrings } from '../src/tasks/zeroshot_prompts.js';

import { DatasetError } from '../src/core/errors.js';
import { preCaption } from '../src/processing/tokenizers/clip_text.js';
import { fillTemplate } from '../src/tasks/clip.js';
import { readCaptionDataset } from '../src/apps/eval/datasets/captions.js';
import { comparePython, splitLines } from '../src/apps/eval/datasets/files.js';
import { readImageFolder } from '../src/apps/eval/datasets/image_folder.js';
import { readTar } from '../src/apps/eval/datasets/tar.js';
import { openWebDataset, readWdsShard } from '../src/apps/eval/datasets/webdataset.js';

const here = dirname(fileURLToPath(import.meta.url));
const zeroshotAssets = join(here, '..', 'assets', 'zeroshot');

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'ivl-ds-'));
}

function put(root: string, rel: string, data: string | Buffer): void {
  const p = join(root, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, data);
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** A minimal ustar archive written by hand (regular files only). */
function ustar(members: [string, string | Buffer][]): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, content] of members) {
    const data = Buffer.from(content);
    const h = Buffer.alloc(512);
    h.write(name, 0, 100, 'utf8');
    h.write('0000644\0', 100, 'latin1');
    h.write('0000000\0', 108, 'latin1');
    h.write('0000000\0', 116, 'latin1');
    h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
    h.write('00000000000\0', 136, 'latin1');
    h.write('        ', 148, 'latin1');
    h.write('0', 156, 'latin1');
    h.write('ustar\0' + '00', 257, 'latin1');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

function tarCreate(archive: string, cwd: string, format: string, members: string[]): void {
  const r = spawnSync('tar', [`--format=${format}`, '-cf', archive, '-C', cwd, ...members]);
  assert.equal(r.status, 0, r.stderr?.toString());
}

test('Python-compatible helpers', () => {
  assert.deepEqual(splitLines('a\nb\r\nc\rd\x0be\u2028f\n'), ['a', 'b', 'c', 'd', 'e', 'f']);
  assert.deepEqual(splitLines('a\n\n'), ['a', '']);
  assert.deepEqual(splitLines(''), []);
  assert.deepEqual(splitLines('\n'), ['']);
  assert.deepEqual(['b', 'a', 'C', 'Z', 'é', 'z', '\u{1F600}', '\uFF21'].sort(comparePython), [
    'C',
    'Z',
    'a',
    'b',
    'z',
    'é',
    '\uFF21',
    '\u{1F600}',
  ]);
  assert.equal(preCaption('A man (in red) rides a bike!!  Fast.'), 'a man in red rides a bike fast');
  assert.equal(preCaption('one two three four', 2), 'one two');
  assert.equal(fillTemplate('a photo of a {c}.', 'tench'), 'a photo of a tench.');
  assert.equal(fillTemplate('{{literal}} {c}', 'x'), '{literal} x');
  assert.throws(() => fillTemplate('a {d}', 'x'), /only \{c\}/);
});

test('CLIP_benchmark class-name and template tables (the bundled assets)', async () => {
  const names = await loadDatasetStrings(join(zeroshotAssets, 'en_classnames.json'), 'imagenet1k', 'classnames');
  assert.equal(names.length, 1000);
  assert.equal(names[0], 'tench');
  const tpl = await loadDatasetStrings(
    join(zeroshotAssets, 'en_zeroshot_classification_templates.json'),
    'imagenet1k',
    'templates',
  );
  assert.equal(tpl.length, 80);
  // Unknown datasets fall back to the imagenet1k templates; `wds/` is dropped from the name.
  assert.deepEqual(
    await loadDatasetStrings(
      join(zeroshotAssets, 'en_zeroshot_classification_templates.json'),
      'wds/imagenet-o',
      'templates',
    ),
    tpl,
  );
  const cifar = await loadDatasetStrings(
    join(zeroshotAssets, 'en_zeroshot_classification_templates.json'),
    'wds/cifar10',
    'templates',
  );
  assert.equal(cifar[0], 'a photo of a {c}.');
  await assert.rejects(
    () => loadDatasetStrings(join(zeroshotAssets, 'en_classnames.json'), 'nope', 'classnames'),
    (e: Error) => e instanceof DatasetError && /en_classnames\.json/.test(e.message),
  );
});

test('ImageFolder: sorted classes, recursive files, image extensions only', async () => {
  const root = tmp();
  try {
    put(root, 'n02/b.jpg', 'n02-b');
    put(root, 'n02/a.JPEG', 'n02-a');
    put(root, 'n02/notes.txt', 'skip me');
    put(root, 'n02/sub/c.png', 'n02-sub-c');
    put(root, 'n02/sub b/d.png', 'n02-subb-d'); // folders sort by path: 'sub' before 'sub b' (checked against Python)
    put(root, 'n01/z.webp', 'n01-z');
    put(root, 'N00/x.bmp', 'N00-x'); // upper case sorts first, as Python's sorted()
    const ds = await readImageFolder(root);
    assert.deepEqual(ds.classes, ['N00', 'n01', 'n02']);
    assert.deepEqual(ds.classNames, ds.classes);
    assert.deepEqual(
      ds.items.map((i) => [i.key, i.label]),
      [
        ['N00/x.bmp', 0],
        ['n01/z.webp', 1],
        ['n02/a.JPEG', 2],
        ['n02/b.jpg', 2],
        ['n02/sub/c.png', 2],
        ['n02/sub b/d.png', 2],
      ],
    );
    assert.equal((await ds.items[4].readImage()).toString(), 'n02-sub-c');

    // Names: CLIP_benchmark table (pick the entry), a wnid map, or a 1000-list indexed through wnids.
    put(root, 'names.json', JSON.stringify({ mini: ['zero', 'one', 'two'], other: ['x'] }));
    assert.deepEqual(
      (await readImageFolder(root, { classNames: join(root, 'names.json'), classNamesKey: 'mini' })).classNames,
      ['zero', 'one', 'two'],
    );
    put(root, 'map.json', JSON.stringify({ N00: 'dog', n01: 'cat', n02: 'fish', n99: 'unused' }));
    assert.deepEqual((await readImageFolder(root, { classNames: join(root, 'map.json') })).classNames, [
      'dog',
      'cat',
      'fish',
    ]);
    put(root, 'keras.json', JSON.stringify({ 0: ['n02', 'fish'], 1: ['N00', 'dog'], 2: ['n01', 'cat'] }));
    assert.deepEqual((await readImageFolder(root, { classNames: join(root, 'keras.json') })).classNames, [
      'dog',
      'cat',
      'fish',
    ]);
    const sub = await readImageFolder(root, {
      classNames: ['a', 'DOG', 'b', 'CAT', 'FISH'],
      classNamesWnids: ['w', 'N00', 'v', 'n01', 'n02'],
    });
    assert.deepEqual(sub.classNames, ['DOG', 'CAT', 'FISH']);
    await assert.rejects(
      readImageFolder(root, { classNames: ['only', 'two'] }),
      (e: Error) => e instanceof DatasetError && /2 class names but .* has 3/.test(e.message),
    );

    put(root, 'n03/readme.md', 'no images here');
    await assert.rejects(readImageFolder(root), (e: Error) => e instanceof DatasetError && /n03/.test(e.message));
    await assert.rejects(
      readImageFolder(join(root, 'nope')),
      (e: Error) => e instanceof DatasetError && /nope/.test(e.message),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('ImageFolder follows symlinked class folders', async () => {
  const root = tmp();
  try {
    put(root, 'real/a.jpg', 'x');
    mkdirSync(join(root, 'data'));
    symlinkSync(join(root, 'real'), join(root, 'data', 'cls'));
    const ds = await readImageFolder(join(root, 'data'));
    assert.deepEqual(ds.classes, ['cls']);
    assert.equal(ds.items.length, 1);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('caption datasets: the five annotation layouts', async () => {
  const root = tmp();
  try {
    put(
      root,
      'blip.json',
      JSON.stringify([
        { image: 'img/1.jpg', caption: ['A dog.', 'A brown dog'] },
        { image: 'img/2.jpg', caption: 'A cat' },
      ]),
    );
    const a = await readCaptionDataset(join(root, 'blip.json'));
    assert.deepEqual(a.texts, ['A dog.', 'A brown dog', 'A cat']);
    assert.deepEqual(Array.from(a.textImageIndex), [0, 0, 1]);
    assert.equal(a.images[1].path, join(root, 'img/2.jpg'));
    const ap = await readCaptionDataset(join(root, 'blip.json'), { preCaption: true, imageRoot: '/data' });
    assert.deepEqual(ap.texts, ['a dog', 'a brown dog', 'a cat']);
    assert.equal(ap.images[0].path, '/data/img/1.jpg');

    put(
      root,
      'karpathy.json',
      JSON.stringify({
        images: [
          { filepath: 'val2014', filename: 'a.jpg', split: 'test', sentences: [{ raw: 'one' }, { raw: 'two' }] },
          { filepath: 'train2014', filename: 'b.jpg', split: 'train', sentences: [{ raw: 'three' }] },
          { filename: 'c.jpg', split: 'test', sentences: [{ raw: 'four' }] },
        ],
      }),
    );
    const k = await readCaptionDataset(join(root, 'karpathy.json'));
    assert.deepEqual(
      k.images.map((i) => i.key),
      ['val2014/a.jpg', 'c.jpg'],
    );
    assert.deepEqual(Array.from(k.textImageIndex), [0, 0, 1]);
    assert.equal((await readCaptionDataset(join(root, 'karpathy.json'), { split: null })).images.length, 3);

    put(
      root,
      'coco.json',
      JSON.stringify({
        images: [
          { id: 9, file_name: 'nine.jpg' },
          { id: 3, file_name: 'three.jpg' },
        ],
        annotations: [
          { image_id: 9, caption: 'n1' },
          { image_id: 3, caption: 't1' },
          { image_id: 9, caption: 'n2' },
        ],
      }),
    );
    const c = await readCaptionDataset(join(root, 'coco.json'));
    assert.deepEqual(
      c.images.map((i) => [i.key, i.captions]),
      [
        ['three.jpg', ['t1']],
        ['nine.jpg', ['n1', 'n2']],
      ],
    );

    put(
      root,
      'xtd.json',
      JSON.stringify({
        image_paths: ['val2014/x.jpg', 'train2014/y.jpg'],
        annotations: ['ein Hund', 'eine Katze'],
        indicies: [0, 1],
      }),
    );
    const x = await readCaptionDataset(join(root, 'xtd.json'));
    assert.deepEqual(Array.from(x.textImageIndex), [0, 1]);

    put(
      root,
      'flickr30k_test_karpathy.txt',
      'image,caption\r\n1000.jpg,A man, in a hat.\n2000.jpg,Two dogs\n1000.jpg,Someone outside\n\n',
    );
    const f = await readCaptionDataset(join(root, 'flickr30k_test_karpathy.txt'));
    assert.deepEqual(
      f.images.map((i) => [i.key, i.captions]),
      [
        ['1000.jpg', ['A man, in a hat.', 'Someone outside']],
        ['2000.jpg', ['Two dogs']],
      ],
    );

    put(root, 'bad.json', '{"images": [{"filename": "a.jpg"}]}');
    await assert.rejects(
      readCaptionDataset(join(root, 'bad.json')),
      (e: Error) => e instanceof DatasetError && /bad\.json/.test(e.message),
    );
    put(root, 'broken.json', '[{"image": ');
    await assert.rejects(
      readCaptionDataset(join(root, 'broken.json')),
      (e: Error) =>
        e instanceof DatasetError && /broken\.json.*not valid JSON/.test(e.message) && !e.message.includes('\n'),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('tar reader: ustar, pax and GNU long names; directories are reported', async () => {
  const root = tmp();
  try {
    const long = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(120)}.bin`; // > 100 chars, a 120-char base name
    const mid = `${'p'.repeat(80)}/${'q'.repeat(70)}.bin`; // fits ustar's prefix + name split
    put(root, `src/${long}`, Buffer.alloc(1000, 7));
    put(root, `src/${mid}`, 'mid');
    put(root, 'src/empty.txt', '');
    for (const [format, members] of [
      ['pax', [long, mid, 'empty.txt']],
      ['gnu', [long, mid, 'empty.txt']],
      ['ustar', [mid, 'empty.txt']],
    ] as const) {
      const archive = join(root, `${format}.tar`);
      tarCreate(archive, join(root, 'src'), format, [...members]);
      const entries = (await collect(readTar(archive))).filter((e) => e.type === 'file');
      assert.deepEqual(entries.map((e) => e.name).sort(), [...members].sort(), format);
      for (const e of entries) {
        assert.deepEqual(e.data, readFileSync(join(root, 'src', e.name)), `${format} ${e.name}`);
      }
    }
    const withDirs = join(root, 'dirs.tar');
    tarCreate(withDirs, join(root, 'src'), 'pax', ['.']);
    const all = await collect(readTar(withDirs));
    assert.ok(all.some((e) => e.type === 'directory'));
    assert.equal(all.filter((e) => e.type === 'file').length, 3);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('tar reader: truncated, corrupt and non-tar files are one-line errors naming the file', async () => {
  const root = tmp();
  try {
    put(root, 'src/a.bin', Buffer.alloc(3000, 1));
    const archive = join(root, 'ok.tar');
    tarCreate(archive, join(root, 'src'), 'pax', ['a.bin']);
    const bytes = readFileSync(archive);

    const cut = join(root, 'cut.tar');
    writeFileSync(cut, bytes.subarray(0, 512 * 3 + 100));
    await assert.rejects(
      collect(readTar(cut)),
      (e: Error) => e instanceof DatasetError && /truncated tar file/.test(e.message) && e.message.includes(cut),
    );

    // Whatever follows the end-of-archive blocks is not read, as GNU tar does not read it.
    const trailing = join(root, 'trailing.tar');
    writeFileSync(trailing, Buffer.concat([bytes, Buffer.from('junk after the archive '.repeat(40))]));
    assert.deepEqual(
      (await collect(readTar(trailing))).map((e) => [e.name, e.data.length]),
      [['a.bin', 3000]],
    );

    const bad = join(root, 'bad.tar');
    const flipped = Buffer.from(bytes);
    flipped[3] ^= 0xff;
    writeFileSync(bad, flipped);
    await assert.rejects(
      collect(readTar(bad)),
      (e: Error) => e instanceof DatasetError && e.message.includes(bad) && !e.message.includes('\n'),
    );

    const text = join(root, 'text.tar');
    writeFileSync(text, 'hello '.repeat(200));
    await assert.rejects(collect(readTar(text)), /not a tar file.*text\.tar/);
    await assert.rejects(
      collect(readTar(join(root, 'none.tar'))),
      (e: Error) => e instanceof DatasetError && /none\.tar/.test(e.message),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('webdataset classification export: keys, labels, images, classnames and templates', async () => {
  const root = tmp();
  try {
    const stage = join(root, 'stage');
    put(stage, 's0000000.webp', 'WEBP-0');
    put(stage, 's0000000.cls', '3');
    put(stage, 's0000001.jpg', 'JPG-1');
    put(stage, 's0000001.cls', '1\n');
    put(stage, 's0000001.json', '{"w": 2}');
    put(stage, 's0000002.png', 'PNG-2');
    put(stage, 's0000002.cls', '0');
    put(stage, 's0000003.jpg', 'JPG-3');
    put(stage, 's0000003.cls', '2');
    const ds = join(root, 'wds_mini');
    mkdirSync(join(ds, 'test'), { recursive: true });
    tarCreate(join(ds, 'test', '0.tar'), stage, 'pax', [
      's0000000.webp',
      's0000000.cls',
      's0000001.jpg',
      's0000001.cls',
      's0000001.json',
    ]);
    tarCreate(join(ds, 'test', '1.tar'), stage, 'gnu', [
      's0000002.png',
      's0000002.cls',
      's0000003.cls',
      's0000003.jpg',
    ]);
    writeFileSync(join(ds, 'test', 'nshards.txt'), '2\n');
    writeFileSync(join(ds, 'classnames.txt'), 'zero\none\n  two  \n\nthree\n');
    writeFileSync(join(ds, 'zeroshot_classification_templates.txt'), 'a photo of a {c}.\na {c}.\n');

    const w = await openWebDataset(ds);
    assert.equal(w.type, 'classification');
    assert.deepEqual(w.classnames, ['zero', 'one', 'two', 'three']);
    assert.deepEqual(w.templates, ['a photo of a {c}.', 'a {c}.']);
    assert.deepEqual(w.shards, [join(ds, 'test', '0.tar'), join(ds, 'test', '1.tar')]);
    const items = await collect(w.items());
    assert.deepEqual(
      items.map((i) => [i.key, i.label, i.imageExt, i.image.toString()]),
      [
        ['s0000000', 3, 'webp', 'WEBP-0'],
        ['s0000001', 1, 'jpg', 'JPG-1'],
        ['s0000002', 0, 'png', 'PNG-2'],
        ['s0000003', 2, 'jpg', 'JPG-3'],
      ],
    );
    assert.deepEqual(items[1].json, { w: 2 });

    // Without nshards.txt the .tar files of the split are used in numeric order.
    rmSync(join(ds, 'test', 'nshards.txt'));
    assert.equal((await collect((await openWebDataset(ds)).items())).length, 4);

    // A label outside classnames.txt, a sample without an image, a repeated extension.
    writeFileSync(join(ds, 'classnames.txt'), 'zero\none\n');
    await assert.rejects(
      collect((await openWebDataset(ds)).items()),
      (e: Error) => e instanceof DatasetError && /s0000000.*label 3/.test(e.message),
    );
    put(stage, 'x.cls', '0');
    put(stage, 'dup/x.cls', '1');
    const lonely = join(root, 'lonely.tar');
    tarCreate(lonely, stage, 'pax', ['x.cls']);
    const bad = join(root, 'badsplit');
    mkdirSync(join(bad, 'test'), { recursive: true });
    tarCreate(join(bad, 'test', '0.tar'), stage, 'pax', ['x.cls']);
    await assert.rejects(
      collect((await openWebDataset(bad)).items()),
      (e: Error) => e instanceof DatasetError && /sample x of .*0\.tar has no image/.test(e.message),
    );
    const dup = join(root, 'dup.tar');
    writeFileSync(
      dup,
      ustar([
        ['k.jpg', 'J'],
        ['k.cls', '1'],
        ['k.CLS', '2'],
      ]),
    );
    await assert.rejects(
      collect(readWdsShard(dup)),
      (e: Error) => e instanceof DatasetError && /duplicate member "k\.CLS".*dup\.tar/.test(e.message),
    );
    // Hand-written ustar: keys up to the first dot of the base name, multi-dot extensions, meta files skipped.
    const hand = join(root, 'hand.tar');
    writeFileSync(
      hand,
      ustar([
        ['__meta__', 'x'],
        ['a/b.c/k1.seg.png', 'S'],
        ['a/b.c/k1.jpg', 'J1'],
        ['k2.jpg', 'J2'],
        ['noext', 'n'],
        ['k2.cls', '5'],
      ]),
    );
    const samples = await collect(readWdsShard(hand));
    assert.deepEqual(
      samples.map((x) => [x.key, [...x.files.keys()]]),
      [
        ['a/b.c/k1', ['seg.png', 'jpg']],
        ['k2', ['jpg', 'cls']],
      ],
    );
    await assert.rejects(
      openWebDataset(join(root, 'nowhere')),
      (e: Error) => e instanceof DatasetError && /nowhere/.test(e.message),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('webdataset retrieval export: txt captions split into lines', async () => {
  const root = tmp();
  try {
    const stage = join(root, 'stage');
    put(stage, 's0000000.webp', 'I0');
    put(stage, 's0000000.txt', 'a dog runs\na brown dog\n');
    put(stage, 's0000001.webp', 'I1');
    put(stage, 's0000001.txt', 'one caption');
    const ds = join(root, 'flickr');
    mkdirSync(join(ds, 'test'), { recursive: true });
    tarCreate(join(ds, 'test', '0.tar'), stage, 'pax', [
      's0000000.webp',
      's0000000.txt',
      's0000001.webp',
      's0000001.txt',
    ]);
    writeFileSync(join(ds, 'test', 'nshards.txt'), '1');
    writeFileSync(join(ds, 'dataset_type.txt'), 'retrieval\n');
    const w = await openWebDataset(ds);
    assert.equal(w.type, 'retrieval');
    assert.equal(w.classnames, null);
    const items = await collect(w.items());
    assert.deepEqual(
      items.map((i) => [i.key, i.captions]),
      [
        ['s0000000', ['a dog runs', 'a brown dog']],
        ['s0000001', ['one caption']],
      ],
    );
    writeFileSync(join(ds, 'test', 'nshards.txt'), '3');
    await assert.rejects(
      openWebDataset(ds),
      (e: Error) => e instanceof DatasetError && /missing shard .*1\.tar/.test(e.message),
    );
    // CLIP_benchmark's multilabel kind is refused by name, not read as classification.
    writeFileSync(join(ds, 'test', 'nshards.txt'), '1');
    writeFileSync(join(ds, 'dataset_type.txt'), 'multilabel\n');
    await assert.rejects(
      openWebDataset(ds),
      (e: Error) =>
        e instanceof DatasetError &&
        /flickr: multilabel webdatasets are not evaluated \(dataset_type\.txt/.test(e.message),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
