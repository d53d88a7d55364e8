import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { main, registerCommand } from '../src/apps/cli/main.js';
import { ImageError, InternalError } from '../src/core/errors.js';
import { errorLines, inProcess, REPO, runCli } from './helpers/cli.js';

const VERSION = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).version as string;

/** One-line usage error, exit 2, nothing on stdout (when captured). */
function assertUsageError(r: { code: number | null; stdout?: string; stderr: string }, pattern: RegExp): void {
  assert.equal(r.code, 2, r.stderr);
  if (r.stdout !== undefined) assert.equal(r.stdout, '');
  assert.equal(errorLines(r.stderr).length, 1, r.stderr);
  assert.match(r.stderr, /^error: /);
  assert.match(r.stderr, pattern);
}

test('--help lists every command; --version prints the package version', async () => {
  const help = await runCli(['--help']);
  assert.equal(help.code, 0);
  assert.equal(help.stderr, '');
  for (const name of ['verify', 'embed-image', 'bench'])
    assert.match(help.stdout, new RegExp(`^  ${name}\\s+\\S`, 'm'));
  assert.match(help.stdout, /^Usage: internvl <command> \[options\]$/m);
  assert.equal((await runCli(['-h'])).stdout, help.stdout);
  assert.equal((await runCli(['help'])).stdout, help.stdout);

  for (const flag of ['--version', '-V']) {
    const version = await runCli([flag]);
    assert.equal(version.code, 0);
    assert.equal(version.stdout, `${VERSION}\n`);
  }
});

test('internvl <command> --help shows the command usage', async () => {
  for (const args of [
    ['verify', '--help'],
    ['embed-image', '-h'],
    ['bench', '--help'],
    ['bench', 'vision', '--help'],
    ['help', 'verify'],
  ]) {
    const r = await runCli(args);
    assert.equal(r.code, 0, `${args}: ${r.stderr}`);
    assert.match(r.stdout, /^Usage: internvl /, args.join(' '));
    assert.equal(r.stderr, '');
  }
  assert.match((await runCli(['bench', 'vision', '--help'])).stdout, /internvit-6b-224/);
});

test('no arguments: help on stderr, exit 2', async () => {
  const r = await runCli([]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /Usage: internvl <command>/);
});

test('unknown commands and flags → one-line usage error, exit 2', async () => {
  assertUsageError(
    await inProcess(['frobnicate']),
    /unknown command 'frobnicate'; commands: (.*, )?bench, (.*, )?embed-image, (.*, )?verify\b/,
  );
  assertUsageError(await inProcess(['verfiy']), /did you mean 'verify'\?/);
  assertUsageError(await inProcess(['--frobnicate']), /unknown option '--frobnicate'/);
  assertUsageError(
    await inProcess(['verify', '--bogus', 'x']),
    /^error: internvl verify: unknown option '--bogus' \(see 'internvl verify --help'\)$/m,
  );
  assertUsageError(await inProcess(['verify']), /internvl verify: missing argument/);
  assertUsageError(await inProcess(['verify', '--threads', 'two', 'x']), /--threads must be an integer, got 'two'/);
  assertUsageError(
    await inProcess(['verify', '--threads']),
    /internvl verify: Option '--threads <value>' argument missing/,
  );
  assertUsageError(await inProcess(['verify', '--json=yes', 'x']), /Option '--json' does not take an argument/);
  assertUsageError(await inProcess(['bench']), /internvl bench: missing target \(vision(, [a-z]+)+\)/);
  assertUsageError(await inProcess(['bench', 'gpu']), /unknown target 'gpu'/);
  assertUsageError(await inProcess(['bench', 'vision', 'extra']), /unexpected argument 'extra'/);
  assertUsageError(
    await inProcess(['bench', 'vision', '--shape', 'internvit-1t']),
    /--shape must be one of internvit-300m-448, internvit-6b-224, internvit-6b-448; got 'internvit-1t'/,
  );
  assertUsageError(await inProcess(['bench', 'vision', '--batch', '0']), /--batch must be at least 1, got 0/);
  assertUsageError(
    await inProcess(['bench', 'vision', '--dtype', 'int4']),
    /--dtype must be one of float32, float16, bfloat16/,
  );
  assertUsageError(
    await inProcess(['bench', 'vision', '--layers', '30']),
    /--layers 30: internvit-300m-448 has 24 layers/,
  );
  assertUsageError(await inProcess(['embed-image', '--model']), /--model <value>' argument missing/);
});

test('InternVLError → "error: <message>" on one line, exit 2; anything else → stack trace, exit 70', async () => {
  registerCommand({
    name: 'test-user-error',
    summary: 'test',
    run: async () => {
      throw new ImageError('pic.png: bad\nsecond line');
    },
  });
  registerCommand({
    name: 'test-bug',
    summary: 'test',
    run: async () => {
      throw new TypeError('undefined is not a function');
    },
  });
  registerCommand({
    name: 'test-invariant',
    summary: 'test',
    run: async () => {
      throw new InternalError('frame encoder returned 3 embeddings for 4 frames');
    },
  });
  registerCommand({ name: 'test-code', summary: 'test', run: async (args) => Number(args[0]) });
  const user = await inProcess(['test-user-error']);
  const bug = await inProcess(['test-bug']);
  const invariant = await inProcess(['test-invariant']);
  assert.equal(invariant.code, 70, 'an InternalError is a bug, not bad input');
  assert.match(invariant.stderr, /internal error \(this is a bug/);
  assert.match(invariant.stderr, /InternalError: frame encoder returned 3 embeddings for 4 frames\n\s+at /);
  assert.equal(user.code, 2);
  assert.equal(user.stderr, 'error: pic.png: bad second line\n');
  assert.equal(bug.code, 70);
  assert.match(bug.stderr, /internal error \(this is a bug/);
  assert.match(bug.stderr, /TypeError: undefined is not a function\n\s+at /);
  assert.equal(await main(['test-code', '1']), 1, 'commands choose their exit code');
});

test('bench vision runs a timed layer of a real shape and prints the JSON record', async () => {
  const r = await runCli([
    'bench',
    'vision',
    '--shape',
    'internvit-300m-448',
    '--layers',
    '1',
    '--runs',
    '1',
    '--threads',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  for (const key of [
    'shape',
    'dtype',
    'batch',
    'threads',
    'layers_timed',
    'seconds_per_tile',
    'tiles_per_second',
    'peak_rss_mb',
    'session_create_seconds',
  ]) {
    assert.ok(key in result, key);
  }
  assert.equal(result.shape, 'internvit-300m-448');
  assert.equal(result.dtype, 'float32');
  assert.equal(result.threads, 1);
  assert.equal(result.layers_timed, 1);
  assert.equal(result.layers_total, 24);
  assert.equal(result.extrapolated, true);
  assert.equal(result.tokens_per_tile, 1025);
  assert.ok(result.peak_rss_mb > 0);
  // The 0- and 1-layer graphs are timed apart; a busy machine can make the difference meaningless (no time then).
  if (result.contention === undefined) {
    assert.ok(result.seconds_per_tile > 0 && result.tiles_per_second > 0);
    assert.ok(Math.abs(result.seconds_per_tile * result.tiles_per_second - 1) < 0.01);
  } else {
    assert.equal(result.seconds_per_tile, null);
    assert.match(r.stderr, /warning: no extrapolated time: the 1-layer graph timed/);
  }
  assert.match(result.note, /extrapolated/);
  assert.match(r.stderr, /writing random float32 checkpoint \(1 of 24 layers\)/);
});
