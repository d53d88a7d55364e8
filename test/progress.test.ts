/**
 * Progress on stderr (issue 8, item 14): lines in order, one finished stage before the next, nothing on stdout,
 * nothing with --quiet; `classify` over many images shows it too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DATA, runCli } from './helpers/cli.js';
import { createProgressReporter } from '../src/core/progress.js';

const CLIP = path.join(DATA, 'fixtures', 'clip_e2e');
const IMAGES = path.join(DATA, 'images');

interface ProgressLine {
  label: string;
  done: number;
  total: number;
  final: boolean;
}

/** Parses `label  40%  2/5  …` lines (non-TTY output); `final` is the closing `… in 3s` line. */
function progressLines(stderr: string, labels: string[]): ProgressLine[] {
  return stderr
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const label = labels.find((l) => line.startsWith(`${l}  `));
      assert.ok(label, `not a progress line of ${labels.join(' / ')}: ${JSON.stringify(line)}`);
      const amounts = / {2}(\d+)\/(\d+)( {2}|$)/.exec(line);
      assert.ok(amounts, line);
      return {
        label,
        done: Number(amounts[1]),
        total: Number(amounts[2]),
        final: / {2}in \d+(s|m\d\ds)( |$)/.test(line),
      };
    });
}

/** Each label's lines are contiguous, its counts never go back, and it ends with one final line at its total. */
function assertInOrder(lines: ProgressLine[], labels: string[]): void {
  assert.deepEqual([...new Set(lines.map((l) => l.label))], labels, 'stages appear once each, in order');
  for (const label of labels) {
    const own = lines.filter((l) => l.label === label);
    const first = lines.indexOf(own[0]);
    assert.deepEqual(lines.slice(first, first + own.length), own, `${label}: lines are not interleaved`);
    own.forEach(
      (l, i) => i > 0 && assert.ok(l.done >= own[i - 1].done, `${label}: ${l.done} after ${own[i - 1].done}`),
    );
    assert.ok(
      own.slice(0, -1).every((l) => !l.final),
      `${label}: only the last line is final`,
    );
    const last = own[own.length - 1];
    assert.ok(last.final && last.done === last.total, `${label} ends with its total: ${JSON.stringify(last)}`);
  }
}

test('the reporter without a TTY: quarter lines in order, a final line last, log lines between', () => {
  let now = 0;
  const out: string[] = [];
  const progress = createProgressReporter('working', {
    stream: { write: (s: string) => out.push(s) },
    unit: 'items',
    now: () => now,
  });
  for (let done = 1; done <= 40; done++) {
    now += 100;
    progress.update(done, 40);
    if (done === 20) progress.log('warning: half way');
  }
  progress.finish();
  const text = out.join('');
  const warning = text.split('\n').indexOf('warning: half way');
  assert.ok(warning > 0, text);
  const lines = progressLines(text.replace('warning: half way\n', ''), ['working']);
  assertInOrder(lines, ['working']);
  assert.deepEqual(
    lines.map((l) => l.done),
    [1, 10, 20, 30, 40],
  );
  assert.match(text.split('\n').at(-2) ?? '', /^working {2}100% {2}40\/40 {2}10 items\/s {2}in 4s$/);
});

test('classify over many images: prompt and image stages on stderr in order, stdout only the JSON', async () => {
  const images = fs.readdirSync(IMAGES).filter((f) => /\.(png|jpe?g)$/.test(f));
  assert.ok(images.length >= 8);
  // The 80 English templates × 2 labels = 160 prompts: enough for the prompt stage to show.
  const args = ['classify', '--model', CLIP, IMAGES, '--labels', 'cat,rocket', '--json'];
  const result = await runCli(args);
  assert.equal(result.code, 0, result.stderr);
  const output = JSON.parse(result.stdout) as { images: Array<{ image: string; probs: number[] }>; templates: number };
  assert.equal(output.templates, 80);
  assert.deepEqual(
    output.images.map((i) => path.basename(i.image)),
    [...images].sort(),
  );
  const lines = progressLines(result.stderr, ['encoding prompts', 'classifying images']);
  assertInOrder(lines, ['encoding prompts', 'classifying images']);
  assert.equal(lines.find((l) => l.label === 'encoding prompts')?.total, 160);
  assert.equal(lines.find((l) => l.label === 'classifying images')?.total, images.length);

  const quiet = await runCli([...args, '--quiet']);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, '');
  assert.equal(quiet.stdout, result.stdout);
});
