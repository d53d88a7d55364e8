/**
 * Video frame sampling never rejects a valid clip: the MSR-VTT rule of test_msrvtt.py where it applies, the chat
 * code's segment rule (`get_index`) where it cannot take F frames from a clip, and short clips (fewer frames than
 * asked) repeat frames as `get_index` does. Clips of the frame counts that used to fail are made with ffmpeg.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { loadVideoFrames, msrvttFrameIndices, sampleChatFrameIndices } from '../src/processing/video.js';
import { DATA, runCli, tempDir } from './helpers/cli.js';

const hasFfmpeg = ['ffmpeg', 'ffprobe'].every((t) => spawnSync(t, ['-version'], { stdio: 'ignore' }).status === 0);
const noFfmpeg = hasFfmpeg ? false : 'ffmpeg/ffprobe are not installed (apt-get install ffmpeg)';

const FIXTURE = path.join(DATA, 'fixtures', 'clip_e2e');
/**
 * Frame counts that failed with --frames 8 (the MSR-VTT rule gives too few ids, or the last one past the end);
 * 31 and 32 fit it (interval 4, ids 2 … 30).
 */
const FAILING = [10, 25, 30, 33, 34, 35, 36, 50, 60, 90];

test('segment sampling picks F in-range frames from every clip length, repeating frames of short clips', () => {
  for (let frames = 1; frames <= 300; frames++) {
    for (let segments = 1; segments <= 32; segments++) {
      const idx = sampleChatFrameIndices(frames, 30, segments);
      assert.equal(idx.length, segments);
      for (const i of idx) assert.ok(Number.isInteger(i) && i >= 0 && i < frames, `${frames} frames, ${segments}`);
      for (let k = 1; k < idx.length; k++) assert.ok(idx[k] >= idx[k - 1]);
    }
  }
  // get_index on 3 frames, 8 segments: seg = 0.25, int(0.125 + round(0.25 k)), round half to even.
  assert.deepEqual(sampleChatFrameIndices(3, 30, 8), [0, 0, 0, 1, 1, 1, 2, 2]);
  // No frame rate declared: still the whole video, not frame 0 eight times.
  assert.deepEqual(sampleChatFrameIndices(16, 0, 4), [1, 5, 9, 12]);
});

test('the MSR-VTT rule gives null exactly where the script would assert', () => {
  for (const n of FAILING) assert.equal(msrvttFrameIndices(n, 8), null, `${n} frames`);
  assert.deepEqual(msrvttFrameIndices(100, 8), [6, 19, 32, 45, 58, 71, 84, 97]);
  assert.deepEqual(msrvttFrameIndices(64, 8), [4, 12, 20, 28, 36, 44, 52, 60]);
  assert.deepEqual(msrvttFrameIndices(31, 8), [2, 6, 10, 14, 18, 22, 26, 30]);
});

const TMP = tempDir('internvl-video-sampling-');
const VIDEOS = path.join(TMP, 'videos');

/** A lossless clip of `frames` distinct frames (ffmpeg's test pattern with a running counter). */
function makeClip(frames: number): string {
  const file = path.join(VIDEOS, `clip${frames}.mkv`);
  if (fs.existsSync(file)) return file;
  fs.mkdirSync(VIDEOS, { recursive: true });
  const r = spawnSync(
    'ffmpeg',
    ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc=size=32x24:rate=25', '-frames:v', String(frames)].concat([
      '-c:v',
      'png',
      file,
    ]),
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return file;
}

/** Every frame of a clip as raw RGB, to check which frames were decoded. */
function allFrames(file: string): Buffer {
  const r = spawnSync('ffmpeg', ['-v', 'error', '-i', file, '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'], {
    maxBuffer: 1 << 26,
  });
  assert.equal(r.status, 0);
  return r.stdout;
}

test('ffmpeg clips of the once-failing lengths and short clips load with both rules', { skip: noFfmpeg }, async () => {
  const size = 32 * 24 * 3;
  for (const n of [...FAILING, 3, 64]) {
    const file = makeClip(n);
    const raw = allFrames(file);
    assert.equal(raw.length, n * size);
    const msrvtt = await loadVideoFrames(file, { sampling: 'msrvtt', numFrames: 8 });
    assert.equal(msrvtt.info.frameCount, n);
    assert.equal(msrvtt.sampling, n === 64 ? 'msrvtt' : 'chat');
    assert.deepEqual(msrvtt.indices, msrvttFrameIndices(n, 8) ?? sampleChatFrameIndices(n, 25, 8));
    const chat = await loadVideoFrames(file, { sampling: 'chat', numFrames: 8 });
    assert.equal(chat.sampling, 'chat');
    assert.deepEqual(chat.indices, sampleChatFrameIndices(n, 25, 8));
    for (const got of [msrvtt, chat]) {
      assert.equal(got.frames.length, 8);
      got.indices.forEach((f, k) =>
        assert.ok(Buffer.from(got.frames[k].data).equals(raw.subarray(f * size, (f + 1) * size)), `${n}: ${f}`),
      );
    }
  }
});

test('classify and eval video-retrieval take every clip with --frames 8', { skip: noFfmpeg }, async () => {
  const lengths = [3, 10, 25, 33, 60, 64];
  const clips = lengths.map(makeClip);
  const classify = await runCli(
    ['classify', '--model', FIXTURE, ...clips, '--labels', 'cat,rocket', '--frames', '8'].concat(['--json']),
  );
  assert.equal(classify.code, 0, classify.stderr);
  const out = JSON.parse(classify.stdout) as { images: { image: string; probs: number[] }[] };
  assert.equal(out.images.length, clips.length);
  for (const v of out.images) assert.ok(Math.abs(v.probs[0] + v.probs[1] - 1) < 1e-5);

  const captions = path.join(TMP, 'captions.json');
  fs.writeFileSync(
    captions,
    JSON.stringify(lengths.map((n) => ({ video: `clip${n}.mkv`, caption: `a test pattern of ${n} frames` }))),
  );
  const evalRun = await runCli(
    ['eval', 'video-retrieval', '--model', FIXTURE, '--videos', VIDEOS, '--captions', captions, '--frames', '8'].concat(
      ['--json', '--quiet', '--no-cache'],
    ),
  );
  assert.equal(evalRun.code, 0, evalRun.stderr);
  const [report] = JSON.parse(evalRun.stdout) as { extra: Record<string, unknown> }[];
  // Only the 64-frame clip fits the MSR-VTT rule; the other five are sampled by segments.
  assert.deepEqual([report.extra.videos, report.extra.videos_segment_sampled], [6, 5]);
});
