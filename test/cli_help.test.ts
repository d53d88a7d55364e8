/**
 * Help, parsing and defaults come from one declaration per option (apps/cli/args.ts): the help shows what the
 * accessors return, and every command's help is rendered from its declarations.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCommandArgs, renderHelp, type CommandSpec } from '../src/apps/cli/args.js';
import { main } from '../src/apps/cli/main.js';

const SPEC = {
  command: 'demo',
  synopsis: 'demo [options] <file>',
  description: 'Does a demo.',
  options: {
    top: { type: 'string', value: 'k', help: 'labels shown', default: 5 },
    mode: { type: 'string', value: 'C|G', help: 'the mode', default: 'C' },
    label: { type: 'string', value: 'a,b', help: 'class names', required: true },
    'a-rather-long-option-name': { type: 'string', value: 'value', help: 'a flag too long for the column' },
    json: { type: 'boolean', help: 'JSON on stdout' },
  },
  positionals: { min: 1, max: 1 },
} as const satisfies CommandSpec;

test('the help is rendered from the declarations: value names, defaults, required, one column', () => {
  assert.equal(
    renderHelp(SPEC),
    `Usage: internvl demo [options] <file>

Does a demo.

Options:
  --top <k>            labels shown (default 5)
  --mode <C|G>         the mode (default C)
  --label <a,b>        class names (required)
  --a-rather-long-option-name <value>
                       a flag too long for the column
  --json               JSON on stdout
  -h, --help           show this help
`,
  );
});

test('the accessors return the declared defaults, and what was given otherwise', () => {
  const absent = parseCommandArgs(SPEC, ['x.png']);
  assert.ok(absent);
  assert.equal(absent.integer('top', { min: 1 }), 5);
  assert.equal(absent.choice('mode', ['C', 'G'] as const), 'C');
  assert.equal(absent.given('mode'), false);
  assert.equal(absent.string('a-rather-long-option-name'), undefined);
  assert.throws(() => absent.required('label'), /internvl demo: --label is required/);
  const given = parseCommandArgs(SPEC, ['x.png', '--top', '3', '--mode', 'G']);
  assert.ok(given);
  assert.equal(given.integer('top', { min: 1 }), 3);
  assert.equal(given.choice('mode', ['C', 'G'] as const), 'G');
  assert.equal(given.given('mode'), true);
  assert.throws(() => given.integer('top', { min: 4 }), /--top must be at least 4, got 3/);
});

test('a default outside its choices is a bug of the declaration, not a user error', () => {
  const parsed = parseCommandArgs(SPEC, ['x.png']);
  assert.ok(parsed);
  assert.throws(
    () => parsed.choice('mode', ['A', 'B'] as const),
    (e: Error) => e.name === 'InternalError' && /the default of --mode is not one of its choices/.test(e.message),
  );
});

test('every command and subcommand renders its help: usage line, options, -h, lines within 118 columns', async () => {
  const commands = [
    ['verify'],
    ['embed-image'],
    ['embed-text'],
    ['classify'],
    ['caption'],
    ['tokenize'],
    ['generate'],
    ['chat'],
    ['index'],
    ['search'],
    ['worker'],
    ['serve'],
    ['web'],
    ['eval', 'zeroshot'],
    ['eval', 'retrieval'],
    ['eval', 'video-retrieval'],
    ...['vision', 'chat', 'clip', 'serve', 'accuracy', 'search', 'web'].map((target) => ['bench', target]),
  ];
  const write = process.stdout.write;
  for (const command of commands) {
    const out: string[] = [];
    // The test runner's own reports go through stdout too, as bytes; the help is written as text.
    process.stdout.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
      if (typeof chunk === 'string') out.push(chunk);
      else return write.call(process.stdout, chunk, ...rest);
      return true;
    }) as typeof process.stdout.write;
    let code: number;
    try {
      code = await main([...command, '--help']);
    } finally {
      process.stdout.write = write;
    }
    const help = out.join('');
    const name = command.join(' ');
    assert.equal(code, 0, name);
    assert.ok(help.startsWith(`Usage: internvl ${name}`), `${name}: ${help.slice(0, 80)}`);
    assert.match(help, /\nOptions:\n(.*\n)* {2}-h, --help +show this help\n/, name);
    for (const line of help.split('\n')) assert.ok(line.length <= 118, `${name}: ${line.length} columns: ${line}`);
  }
});
