import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ImageError, UsageError } from '../src/core/errors.js';
import { roundHalfEven } from '../src/core/python.js';
import { decodeVideoFrames, probeVideo } from '../src/processing/node/video_decode.js';
import { loadVideoFrames, sampleChatFrameIndices, sampleMsrvttFrameIndices } from '../src/processing/video.js';

test('roundHalfEven rounds halves to even, like Python round() and np.round()', () => {
  assert.deepEqual(
    [0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 2.4999, 2.5001].map(roundHalfEven),
    [0, 2, 2, 4, 0, -2, -2, 2, 3],
  );
});

test('chat get_index: 21 frames, 8 segments (banker’s rounding changes segments 1 and 5)', () => {
  // max_frame 20, seg 2.5, seg/2 1.25; round(2.5k) = 0, 2, 5, 8, 10, 12, 15, 18 (2.5→2, 7.5→8, 12.5→12, 17.5→18)
  // idx = int(1.25 + r) = 1 3 6 9 11 13 16 19. Half-up rounding would give 1 4 6 9 11 14 16 19.
  assert.deepEqual(sampleChatFrameIndices(21, 30, 8), [1, 3, 6, 9, 11, 13, 16, 19]);
});

test('chat get_index: 20 frames at 10 fps, default 8 segments', () => {
  // seg 19/8 = 2.375; round(2.375k) = 0 2 5 7 10 12 14 17 (9.5 → 10); idx = int(1.1875 + r).
  assert.deepEqual(sampleChatFrameIndices(20, 10), [1, 3, 6, 8, 11, 13, 15, 18]);
});

test('chat get_index with a bound: start/end use banker’s rounding too', () => {
  // round(0.25·10) = round(2.5) = 2, round(1.25·10) = round(12.5) = 12; seg = 10/4 = 2.5;
  // idx = int(2 + 1.25 + round(2.5k)) = int(3.25 + [0, 2, 5, 8]) = 3 5 8 11.
  assert.deepEqual(sampleChatFrameIndices(100, 10, 4, [0.25, 1.25]), [3, 5, 8, 11]);
  // The end is clipped at the last frame: [0, 1000] s of 50 frames = the whole video.
  assert.deepEqual(sampleChatFrameIndices(50, 25, 4, [0, 1000]), sampleChatFrameIndices(50, 25, 4));
  // One frame, several segments: every index is 0.
  assert.deepEqual(sampleChatFrameIndices(1, 30, 3), [0, 0, 0]);
  assert.throws(() => sampleChatFrameIndices(10, 10, 4, [5, 6]), UsageError);
  assert.throws(() => sampleChatFrameIndices(0, 10), UsageError);
  assert.throws(() => sampleChatFrameIndices(10, NaN), UsageError);
});

test('MSR-VTT sampling: interval = ceil(len/F), ids = arange(0, len, interval) + interval // 2', () => {
  assert.deepEqual(sampleMsrvttFrameIndices(20), [10]);
  assert.deepEqual(sampleMsrvttFrameIndices(20, 4), [2, 7, 12, 17]);
  assert.deepEqual(sampleMsrvttFrameIndices(100, 8), [6, 19, 32, 45, 58, 71, 84, 97]);
  assert.deepEqual(sampleMsrvttFrameIndices(9, 3), [1, 4, 7]);
  // interval 3 gives ids 1 4 7 10 and 10 is past the end: the script's assert fails, so do we.
  assert.throws(() => sampleMsrvttFrameIndices(10, 4), UsageError);
  assert.throws(() => sampleMsrvttFrameIndices(10, 3), UsageError);
});

const hasFfmpeg =
  spawnSync('ffmpeg', ['-version'], { stdio: 'ignore' }).status === 0 &&
  spawnSync('ffprobe', ['-version'], { stdio: 'ignore' }).status === 0;
const noFfmpeg = hasFfmpeg ? false : 'ffmpeg/ffprobe are not installed (apt-get install ffmpeg)';

test('a missing ffmpeg gives an error that says how to install it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ivl-video-'));
  try {
    const f = join(dir, 'x.mp4');
    writeFileSync(f, 'not really a video');
    await assert.rejects(decodeVideoFrames(f, [0], { ffmpeg: join(dir, 'no-such-ffmpeg') }), (e: Error) => {
      assert.ok(e instanceof ImageError);
      assert.match(e.message, /apt-get install ffmpeg/);
      assert.match(e.message, /x\.mp4/);
      return true;
    });
    await assert.rejects(
      probeVideo(f, { ffprobe: join(dir, 'no-such-ffprobe') }),
      /ffprobe was not found.*apt-get install ffmpeg/,
    );
    await assert.rejects(
      probeVideo(join(dir, 'missing.mp4')),
      (e: Error) => e instanceof ImageError && /missing\.mp4/.test(e.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ffmpeg: probe and decode a generated test video', { skip: noFfmpeg }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ivl-video-'));
  try {
    const f = join(dir, 'testsrc.mp4');
    const mk = spawnSync('ffmpeg', [
      '-v',
      'error',
      '-y',
      '-f',
      'lavfi',
      '-i',
      'testsrc=size=64x48:rate=10',
      '-t',
      '2',
      '-pix_fmt',
      'yuv420p',
      f,
    ]);
    assert.equal(mk.status, 0, mk.stderr?.toString());

    const info = await probeVideo(f);
    assert.equal(info.frameCount, 20);
    assert.equal(info.fps, 10);
    assert.equal(info.width, 64);
    assert.equal(info.height, 48);
    assert.ok(Math.abs(info.duration - 2) < 0.05, `duration ${info.duration}`);

    const frames = await decodeVideoFrames(f, [5, 0, 5, 19]);
    assert.equal(frames.length, 4);
    for (const fr of frames) {
      assert.equal(fr.width, 64);
      assert.equal(fr.height, 48);
      assert.equal(fr.data.length, 64 * 48 * 3);
    }
    assert.deepEqual(frames[0].data, frames[2].data);
    assert.notDeepEqual(frames[1].data, frames[0].data); // frame 0 vs frame 5

    // Frame k must be the k-th frame of a plain full decode.
    const all = spawnSync('ffmpeg', ['-v', 'error', '-i', f, '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'], {
      maxBuffer: 1 << 26,
    });
    assert.equal(all.status, 0);
    const size = 64 * 48 * 3;
    assert.equal(all.stdout.length, 20 * size);
    assert.deepEqual(Buffer.from(frames[0].data), all.stdout.subarray(5 * size, 6 * size));
    assert.deepEqual(Buffer.from(frames[3].data), all.stdout.subarray(19 * size, 20 * size));

    await assert.rejects(
      decodeVideoFrames(f, [3, 25]),
      (e: Error) => e instanceof ImageError && /frame 25/.test(e.message) && e.message.includes(f),
    );

    const loaded = await loadVideoFrames(f);
    assert.deepEqual(loaded.indices, [1, 3, 6, 8, 11, 13, 15, 18]);
    assert.equal(loaded.frames.length, 8);
    assert.deepEqual(Buffer.from(loaded.frames[2].data), all.stdout.subarray(6 * size, 7 * size));
    const ms = await loadVideoFrames(f, { sampling: 'msrvtt', numFrames: 4 });
    assert.deepEqual(ms.indices, [2, 7, 12, 17]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ffmpeg without -fps_mode (before 5.1): falls back to -vsync passthrough', { skip: noFfmpeg }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ivl-video-'));
  try {
    const f = join(dir, 'v.mp4');
    const mk = spawnSync('ffmpeg', [
      '-v',
      'error',
      '-y',
      '-f',
      'lavfi',
      '-i',
      'testsrc=size=32x24:rate=10',
      '-t',
      '1',
      '-pix_fmt',
      'yuv420p',
      f,
    ]);
    assert.equal(mk.status, 0, mk.stderr?.toString());
    // A stand-in for an old ffmpeg: rejects -fps_mode the way ffmpeg 4.x does, otherwise runs the real one.
    const old = join(dir, 'old-ffmpeg');
    writeFileSync(
      old,
      '#!/bin/sh\nfor a in "$@"; do if [ "$a" = "-fps_mode" ]; then echo "Unrecognized option \'fps_mode\'." >&2; exit 8; fi; done\nexec ffmpeg "$@"\n',
      { mode: 0o755 },
    );
    const [viaOld] = await decodeVideoFrames(f, [7], { ffmpeg: old });
    const [viaNew] = await decodeVideoFrames(f, [7]);
    assert.deepEqual(viaOld, viaNew);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ffmpeg: a corrupt video is an ImageError naming the file', { skip: noFfmpeg }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ivl-video-'));
  try {
    const f = join(dir, 'broken.mp4');
    writeFileSync(f, Buffer.from('this is not an mp4 file at all, just text'));
    await assert.rejects(probeVideo(f), (e: Error) => e instanceof ImageError && e.message.includes(f));
    await assert.rejects(decodeVideoFrames(f, [0]), (e: Error) => e instanceof ImageError && e.message.includes(f));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
