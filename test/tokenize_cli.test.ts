/** `internvl tokenize` reproduces every reference id list (sentencepiece library, Hugging Face, llama.cpp vectors). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DATA, runCli, tempDir } from './helpers/cli.js';

const TOKENIZERS = path.join(DATA, 'tokenizers');
const QWEN2 = path.join(DATA, 'fixtures', 'chat_e2e');

async function tokenize(tokenizer: string, args: string[]): Promise<number[][]> {
  const result = await runCli(['tokenize', tokenizer, ...args, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout) as { ids: number[][] }).ids;
}

test('SentencePiece tokenizers: every corpus line as the sentencepiece library encodes it', async () => {
  const reference = JSON.parse(fs.readFileSync(path.join(TOKENIZERS, 'vectors', 'sentencepiece_ref.json'), 'utf8')) as {
    texts: string[];
    ids: Record<string, number[][]>;
  };
  const corpus = path.join(TOKENIZERS, 'vectors', 'corpus.txt');
  for (const [name, expected] of Object.entries(reference.ids)) {
    const ids = await tokenize(path.join(TOKENIZERS, name), ['--file', corpus]);
    assert.equal(ids.length, reference.texts.length, name);
    ids.forEach((row, i) =>
      assert.deepEqual(row, expected[i], `${name} line ${i}: ${JSON.stringify(reference.texts[i])}`),
    );
  }
});

test('Qwen2 tokenizer: every corpus line as Hugging Face encodes it (special tokens as single ids)', async () => {
  const reference = JSON.parse(fs.readFileSync(path.join(TOKENIZERS, 'qwen2', 'qwen2_ref.json'), 'utf8')) as {
    texts: string[];
    ids: number[][];
  };
  const file = path.join(tempDir(), 'texts.txt');
  fs.writeFileSync(file, `${reference.texts.join('\n')}\n`);
  const ids = await tokenize(QWEN2, ['--file', file]);
  assert.deepEqual(ids, reference.ids);
});

for (const [name, tokenizer, vectors] of [
  ['llama2', path.join(TOKENIZERS, 'llama2'), path.join(TOKENIZERS, 'vectors', 'ggml-vocab-llama-spm.gguf')],
  ['qwen2', QWEN2, path.join(TOKENIZERS, 'qwen2', 'ggml-vocab-qwen2.gguf')],
] as const) {
  test(`${name}: llama.cpp's test vectors (multi-line inputs with --separator)`, async () => {
    const ids = await tokenize(tokenizer, ['--file', `${vectors}.inp`, '--separator', '\\n__ggml_vocab_test__\\n']);
    const expected = fs
      .readFileSync(`${vectors}.out`, 'utf8')
      .split('\n')
      .slice(0, -1)
      .map((line) => (line.trim() ? line.trim().split(/\s+/).map(Number) : []));
    assert.equal(ids.length, expected.length);
    ids.forEach((row, i) => assert.deepEqual(row, expected[i], `case ${i}`));
  });
}

test('--add-special adds BOS (and EOS where the config says) ; --text splits lines', async () => {
  const plain = await tokenize(path.join(TOKENIZERS, 'internvl-c-llama-zh'), [
    '--text',
    'a photo of a cat\nsecond line',
  ]);
  const special = await tokenize(path.join(TOKENIZERS, 'internvl-c-llama-zh'), [
    '--text',
    'a photo of a cat',
    '--add-special',
  ]);
  assert.equal(plain.length, 2);
  assert.deepEqual(special[0], [1, ...plain[0]]);
  const result = await runCli(['tokenize', path.join(TOKENIZERS, 'llama2'), '--text', 'hello world']);
  assert.equal(result.code, 0);
  assert.match(result.stdout, /^\d+(,\d+)*\n$/);
});

test('tokenize errors are one line with exit code 2', async () => {
  for (const args of [
    ['tokenize', '/nonexistent', '--text', 'x'],
    ['tokenize', path.join(TOKENIZERS, 'llama2')],
    ['tokenize', tempDir(), '--text', 'x'],
  ]) {
    const result = await runCli(args);
    assert.equal(result.code, 2, result.stderr);
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    assert.match(result.stderr, /^error: /);
  }
});

test('tokenize --help shows the escapes it understands literally, one option per line', async () => {
  const r = await runCli(['tokenize', '--help']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /newlines \(\\n and \\t are understood\), e\.g\.\n {23}'\\n__ggml_vocab_test__\\n' for/);
  for (const line of r.stdout.split('\n')) assert.ok(line === '' || /^(Usage| {2}|\S)/.test(line), line);
  assert.doesNotMatch(r.stdout, /\t/);
});

test('tokenize --decode prints the text of id lines: Hugging Face decode for Qwen2, round trips for SentencePiece', async () => {
  const qwen2 = JSON.parse(fs.readFileSync(path.join(TOKENIZERS, 'qwen2', 'qwen2_ref.json'), 'utf8')) as {
    ids: number[][];
    decoded: string[];
  };
  const sentencepiece = JSON.parse(
    fs.readFileSync(path.join(TOKENIZERS, 'vectors', 'sentencepiece_ref.json'), 'utf8'),
  ) as { texts: string[]; ids: Record<string, number[][]> };
  const decode = async (tokenizer: string, rows: number[][], extra: string[] = []) => {
    const file = path.join(tempDir(), 'ids.txt');
    fs.writeFileSync(file, `${rows.map((row) => row.join(',')).join('\n')}\n`);
    const result = await runCli(['tokenize', tokenizer, '--decode', '--file', file, '--json', ...extra]);
    assert.equal(result.code, 0, result.stderr);
    return (JSON.parse(result.stdout) as { texts: string[] }).texts;
  };
  assert.deepEqual(await decode(QWEN2, qwen2.ids), qwen2.decoded);
  for (const [name, rows] of Object.entries(sentencepiece.ids))
    assert.deepEqual(await decode(path.join(TOKENIZERS, name), rows), sentencepiece.texts, name);

  // Without --json: the text itself; --skip-special drops BOS/EOS and added special tokens.
  const ids = await tokenize(QWEN2, ['--text', '<|im_start|>user hello<|im_end|>']);
  const plain = await runCli(['tokenize', QWEN2, '--decode', '--text', ids[0].join(' ')]);
  assert.equal(plain.stdout, '<|im_start|>user hello<|im_end|>\n');
  assert.deepEqual(await decode(QWEN2, ids, ['--skip-special']), ['user hello']);

  const bad = await runCli(['tokenize', QWEN2, '--decode', '--text', '1,2\n3,999999']);
  assert.equal(bad.code, 2);
  assert.match(
    bad.stderr,
    /^error: internvl tokenize: --decode: input line 2: '999999' is not a token id of this tokenizer \(0 to \d+\)/,
  );
});
