import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { ImageError } from '../src/core/errors.js';
import {
  centerCrop,
  cropImage,
  DEFAULT_MAX_PIXELS,
  IMAGENET_MEAN,
  IMAGENET_STD,
  loadImage,
  readImageHeaderSize,
  toCHWFloat,
  type RgbImage,
} from '../src/processing/image.js';

const DATA = new URL('./data/', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'internvl-image-test-'));

// ---- tiny PNG writer helpers (test only) ----
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function pngChunk(type: string, data: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
function pngHeaderOnly(width: number, height: number, withData = false): Buffer {
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  const parts = [sig, pngChunk('IHDR', ihdr)];
  if (withData) parts.push(pngChunk('IDAT', deflateSync(Buffer.alloc(64))), pngChunk('IEND', new Uint8Array(0)));
  return Buffer.concat(parts);
}

function px(img: RgbImage, x: number, y: number): [number, number, number] {
  const o = (y * img.width + x) * 3;
  return [img.data[o], img.data[o + 1], img.data[o + 2]];
}

test('loads the fixture photos (JPEG and PNG) as 8-bit RGB', async () => {
  const a = await loadImage(join(DATA, 'fixtures/preprocess/images/image5.jpg'));
  assert.equal(a.width, 889);
  assert.equal(a.height, 500);
  assert.equal(a.data.length, 889 * 500 * 3);
  const b = await loadImage(join(DATA, 'images/chelsea.png'));
  assert.deepEqual([b.width, b.height], [451, 300]);
  // from bytes, too
  const c = await loadImage(readFileSync(join(DATA, 'images/chelsea.png')));
  assert.deepEqual(c.data, b.data);
});

test('greyscale PNG → R = G = B', async () => {
  const grey = Buffer.from([0, 50, 100, 150, 200, 255]);
  const png = await sharp(grey, { raw: { width: 3, height: 2, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toBuffer();
  assert.equal((await sharp(png).metadata()).channels, 1);
  const img = await loadImage(png, { name: 'grey.png' });
  assert.deepEqual([img.width, img.height], [3, 2]);
  for (let i = 0; i < 6; i++) assert.deepEqual(px(img, i % 3, Math.floor(i / 3)), [grey[i], grey[i], grey[i]]);
});

test('greyscale + alpha and RGBA: alpha dropped, colours kept (no compositing, like Pillow convert("RGB"))', async () => {
  const rgba = Buffer.from([10, 20, 30, 0, 200, 100, 50, 128, 255, 255, 255, 255, 1, 2, 3, 4]);
  const png = await sharp(rgba, { raw: { width: 2, height: 2, channels: 4 } })
    .png()
    .toBuffer();
  assert.equal((await sharp(png).metadata()).channels, 4);
  const img = await loadImage(png);
  assert.deepEqual(Array.from(img.data), [10, 20, 30, 200, 100, 50, 255, 255, 255, 1, 2, 3]);

  const la = Buffer.from([7, 0, 99, 255]);
  const png2 = await sharp(la, { raw: { width: 2, height: 1, channels: 2 } })
    .toColourspace('b-w')
    .png()
    .toBuffer();
  assert.equal((await sharp(png2).metadata()).channels, 2);
  const img2 = await loadImage(png2);
  assert.deepEqual(Array.from(img2.data), [7, 7, 7, 99, 99, 99]);

  // the real RGBA photo of the CLIP fixture
  const horse = await loadImage(join(DATA, 'images/horse.png'));
  assert.equal(horse.data.length, 400 * 328 * 3);
});

test('palette PNG and 16-bit PNG → 8-bit RGB', async () => {
  const rgb = Buffer.from([200, 100, 10, 0, 255, 0, 3, 4, 5, 250, 251, 252]);
  const pal = await sharp(rgb, { raw: { width: 2, height: 2, channels: 3 } })
    .png({ palette: true, colours: 16, dither: 0 })
    .toBuffer();
  assert.equal((await sharp(pal).metadata()).isPalette, true);
  const a = await loadImage(pal);
  assert.deepEqual([a.width, a.height], [2, 2]);
  assert.ok(
    Array.from(a.data).every((v, i) => Math.abs(v - rgb[i]) <= 8),
    'palette colours',
  );

  const p16 = await sharp(rgb, { raw: { width: 2, height: 2, channels: 3 } })
    .toColourspace('rgb16')
    .png()
    .toBuffer();
  assert.equal((await sharp(p16).metadata()).depth, 'ushort');
  const b = await loadImage(p16);
  assert.deepEqual(Array.from(b.data), Array.from(rgb));
});

test("CMYK → RGB with Pillow's formula (no ICC)", async () => {
  const cmyk = await sharp({ create: { width: 2, height: 1, channels: 3, background: { r: 200, g: 100, b: 10 } } })
    .toColourspace('cmyk')
    .tiff({ compression: 'none' })
    .toBuffer();
  const ink = await sharp(cmyk).pipelineColourspace('cmyk').toColourspace('cmyk').raw().toBuffer();
  const img = await loadImage(cmyk, { name: 'cmyk.tiff' });
  const nk = 255 - ink[3];
  const expect = [0, 1, 2].map((c) => {
    const t = ink[c] * nk + 128;
    return nk - (((t >> 8) + t) >> 8);
  });
  assert.deepEqual(px(img, 0, 0), expect);
});

test('EXIF orientation 6 is applied by default and can be turned off', async () => {
  // 64×32 stored: left half red, right half blue; orientation 6 = rotate 90° clockwise to display.
  const w = 64;
  const h = 32;
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) raw.set(x < w / 2 ? [255, 0, 0] : [0, 0, 255], (y * w + x) * 3);
  }
  const jpg = await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 95 })
    .withMetadata({ orientation: 6 })
    .toBuffer();
  assert.equal((await sharp(jpg).metadata()).orientation, 6);
  const shown = await loadImage(jpg, { name: 'rotated.jpg' });
  assert.deepEqual([shown.width, shown.height], [32, 64]);
  const top = px(shown, 16, 8);
  const bottom = px(shown, 16, 56);
  assert.ok(top[0] > 200 && top[2] < 60, `top should be red, got ${top}`);
  assert.ok(bottom[2] > 200 && bottom[0] < 60, `bottom should be blue, got ${bottom}`);
  const stored = await loadImage(jpg, { applyExifOrientation: false });
  assert.deepEqual([stored.width, stored.height], [64, 32]);
  assert.ok(px(stored, 8, 16)[0] > 200);
});

test('corrupt file → ImageError naming the file', async () => {
  const f = join(tmp, 'corrupt.png');
  writeFileSync(f, Buffer.from('this is not an image at all, just some text bytes'));
  await assert.rejects(loadImage(f), (e: unknown) => {
    assert.ok(e instanceof ImageError);
    assert.match(e.message, /corrupt\.png/);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  });
  await assert.rejects(loadImage(new Uint8Array(0), { name: 'empty.jpg' }), /empty\.jpg: empty file/);
  await assert.rejects(loadImage(join(tmp, 'missing.jpg')), (e: unknown) => {
    assert.ok(e instanceof ImageError);
    assert.match(e.message, /missing\.jpg: cannot read image file \(file not found\)/);
    return true;
  });
});

test('truncated JPEG → ImageError naming the file', async () => {
  const full = readFileSync(join(DATA, 'fixtures/preprocess/images/image3.jpg'));
  const f = join(tmp, 'truncated.jpg');
  writeFileSync(f, full.subarray(0, Math.floor(full.length / 2)));
  await assert.rejects(loadImage(f), (e: unknown) => {
    assert.ok(e instanceof ImageError);
    assert.match(e.message, /truncated\.jpg: cannot decode image/);
    assert.ok(!e.message.includes('\n'));
    return true;
  });
});

test('decompression bomb: a 50,000 × 50,000 PNG is refused from its header, before decoding', async () => {
  for (const withData of [false, true]) {
    const png = pngHeaderOnly(50_000, 50_000, withData);
    assert.deepEqual(readImageHeaderSize(png), { format: 'png', width: 50_000, height: 50_000 });
    await assert.rejects(loadImage(png, { name: 'bomb.png' }), (e: unknown) => {
      assert.ok(e instanceof ImageError);
      assert.match(e.message, /^bomb\.png: image is 50000×50000 = 2500000000 pixels, above the limit of 178956970/);
      return true;
    });
  }
  assert.equal(DEFAULT_MAX_PIXELS, 178_956_970);
  // configurable
  const small = await sharp({ create: { width: 100, height: 100, channels: 3, background: '#808080' } })
    .png()
    .toBuffer();
  await assert.rejects(loadImage(small, { name: 's.png', maxPixels: 5000 }), /s\.png: image is 100×100/);
  const ok = await loadImage(small, { maxPixels: 10_000 });
  assert.equal(ok.width, 100);
  // JPEG header sniffing
  const jpg = readFileSync(join(DATA, 'fixtures/preprocess/images/image5.jpg'));
  assert.deepEqual(readImageHeaderSize(jpg), { format: 'jpeg', width: 889, height: 500 });
  await assert.rejects(loadImage(jpg, { name: 'j.jpg', maxPixels: 1000 }), /j\.jpg: image is 889×500/);
});

test('toCHWFloat = torchvision ToTensor + Normalize (float32), channel-major', () => {
  const img: RgbImage = { width: 2, height: 1, data: new Uint8Array([0, 128, 255, 10, 20, 30]) };
  const t = toCHWFloat(img);
  assert.equal(t.length, 6);
  const f = Math.fround;
  const ref = (x: number, c: number): number => f(f(f(x / 255) - f(IMAGENET_MEAN[c])) / f(IMAGENET_STD[c]));
  assert.deepEqual(Array.from(t), [ref(0, 0), ref(10, 0), ref(128, 1), ref(20, 1), ref(255, 2), ref(30, 2)]);
  assert.ok(Math.abs(t[0] - -0.485 / 0.229) < 1e-6);
  // into a bigger buffer at an offset
  const big = new Float32Array(20);
  toCHWFloat(img, IMAGENET_MEAN, IMAGENET_STD, big, 7);
  assert.deepEqual(Array.from(big.subarray(7, 13)), Array.from(t));
  assert.equal(big[6], 0);
  assert.equal(big[13], 0);
});

test('cropImage fills outside with black; centerCrop uses torchvision offsets (round half to even)', () => {
  const w = 7;
  const h = 5;
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) data.set([i, i, i], i * 3);
  const img: RgbImage = { width: w, height: h, data };
  const c = cropImage(img, -1, 4, 3, 2);
  assert.deepEqual(px(c, 0, 0), [0, 0, 0]);
  assert.deepEqual(px(c, 1, 0), [28, 28, 28]);
  assert.deepEqual(px(c, 1, 1), [0, 0, 0]);
  // (7 − 2) / 2 = 2.5 → 2 ; (5 − 2) / 2 = 1.5 → 2
  const cc = centerCrop(img, 2, 2);
  assert.deepEqual(px(cc, 0, 0), [2 * 7 + 2, 2 * 7 + 2, 2 * 7 + 2]);
  // (7 − 4) / 2 = 1.5 → 2 ; (5 − 4) / 2 = 0.5 → 0
  const cc2 = centerCrop(img, 4, 4);
  assert.deepEqual(px(cc2, 0, 0), [2, 2, 2]);
  // larger than the image: padded (left/top get the floor half)
  const big = centerCrop(img, 10, 8);
  assert.deepEqual([big.width, big.height], [10, 8]);
  assert.deepEqual(px(big, 0, 0), [0, 0, 0]); // padding
  assert.deepEqual(px(big, 2, 1), [1, 1, 1]); // image (1, 0) lands at (1 + padL, 0 + padT)
  assert.deepEqual(px(big, 7, 5), [34, 34, 34]); // image (6, 4)
  assert.deepEqual(px(big, 8, 5), [0, 0, 0]); // right padding
});
