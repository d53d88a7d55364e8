/**
 * One JSON reader for every config, tokenizer, index, template and dataset file (core/json.ts): a malformed file is
 * one line naming the file, the line, the column and the field, never a quote of its text (issue 8).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { copyFolder, DATA, inProcess, tempDir } from './helpers/cli.js';
import { ConfigError, DatasetError, ModelLoadError, TokenizerError } from '../src/core/errors.js';
import { describeJsonError, locateJsonError, parseJson, snakeCaseKey, stringifySnakeCase } from '../src/core/json.js';
import { Checkpoint } from '../src/core/safetensors.js';
import { readConfig } from '../src/models/config.js';
import { loadTokenizer } from '../src/processing/tokenizers/index.js';
import { loadTemplates } from '../src/tasks/zeroshot_prompts.js';

test('syntax errors are located by line, column and field', () => {
  const cases: Array<[string, string]> = [
    ['{"a": }', "unexpected '}' at line 1, column 7, in field 'a'"],
    ['{"a": 1,}', 'expected a "quoted" property name, found \'}\' at line 1, column 9'],
    ['', 'the file is empty at line 1, column 1'],
    ['{"a": 1', "expected ',' or '}', found the end of the file at line 1, column 8"],
    ['[1 2]', "expected ',' or ']', found '2' at line 1, column 4"],
    ['{"a": "x\ny"}', "a raw control character (newline, tab) inside a string at line 1, column 9, in field 'a'"],
    ['{"a": 1}}', "more text after the JSON value: '}' at line 1, column 9"],
    [
      '{\n  "llm_config": {\n    "vocab_size": 12,\n    "x": [1, 2, tru]\n  }\n}',
      "unexpected 't' at line 4, column 17, in field 'llm_config.x[2]'",
    ],
    ['{"a": "\\q"}', "an invalid escape in a string at line 1, column 8, in field 'a'"],
    ['\ufeff{}', 'the file starts with a byte-order mark (save it as UTF-8 without one) at line 1, column 1'],
  ];
  for (const [text, expected] of cases) {
    assert.throws(() => JSON.parse(text), SyntaxError, JSON.stringify(text));
    assert.equal(describeJsonError(locateJsonError(text)), expected, JSON.stringify(text));
  }
  assert.equal(locateJsonError('{"é": x}').offset, 6);
  assert.throws(
    () => parseJson('{"a":\n 1 2}', 'f.json', { error: DatasetError, what: 'captions file', firstLine: 10 }),
    (e: Error) =>
      e instanceof DatasetError &&
      e.message === "captions file f.json: not valid JSON (expected ',' or '}', found '2' at line 11, column 4)",
  );
  assert.deepEqual(parseJson('{"a": [1, {"b": null}]}', 'f.json', { error: ConfigError }), { a: [1, { b: null }] });
});

/** A copy of `fixture` with `file` replaced by `text`. */
function withFile(fixture: string, file: string, text: string): string {
  const dir = copyFolder(path.join(DATA, fixture));
  fs.writeFileSync(path.join(dir, file), text);
  return dir;
}

const BROKEN = '{\n  "model_type": "internvl_chat",\n  "llm_config": {"vocab_size": 151655,}\n}\n';

test('every kind of JSON file fails with its own error class, one line naming file, line, column and field', async () => {
  const oneLine = (ErrorClass: new (...args: never[]) => Error, pattern: RegExp) => (e: unknown) => {
    assert.ok(e instanceof ErrorClass, String(e));
    assert.match((e as Error).message, pattern);
    assert.doesNotMatch((e as Error).message, /\n|model_type|151655/, 'no quote of the text');
    return true;
  };
  const config = withFile('fixtures/chat_e2e', 'config.json', BROKEN);
  await assert.rejects(
    readConfig(config),
    oneLine(
      ConfigError,
      /config\.json: not valid JSON \(expected a "quoted" property name, found '\}' at line 3, column 39, in field 'llm_config'\)$/,
    ),
  );
  const index = withFile(
    'fixtures/chat_e2e',
    'model.safetensors.index.json',
    '{"weight_map": {"a": "model.safetensors"',
  );
  await assert.rejects(
    Checkpoint.open(index),
    oneLine(ModelLoadError, /model\.safetensors\.index\.json: not valid JSON \(expected ',' or '\}', found the end/),
  );
  const bpeConfig = withFile('fixtures/chat_e2e', 'tokenizer_config.json', '{"add_bos_token": tru}');
  await assert.rejects(
    loadTokenizer(bpeConfig),
    oneLine(
      TokenizerError,
      /tokenizer_config\.json: not valid JSON \(unexpected 't' at line 1, column 19, in field 'add_bos_token'\)$/,
    ),
  );
  const spConfig = withFile('fixtures/clip_e2e', 'special_tokens_map.json', '["<s>"]');
  await assert.rejects(
    loadTokenizer(spConfig),
    oneLine(TokenizerError, /special_tokens_map\.json: expected a JSON object, got an array$/),
  );
  const templates = path.join(tempDir(), 'templates.json');
  fs.writeFileSync(templates, '["a photo of a {c}.",\n "a {c}" "b"]');
  await assert.rejects(
    loadTemplates(templates),
    oneLine(
      DatasetError,
      /^templates file .*templates\.json: not valid JSON \(expected ',' or '\]', found '"' at line 2, column 10\)$/,
    ),
  );
});

test('the CLI prints the reader error as one line, exit 2', async () => {
  const config = withFile('fixtures/chat_e2e', 'config.json', BROKEN);
  const result = await inProcess(['generate', '--model', config, '--input-ids', '1']);
  assert.equal(result.code, 2);
  assert.match(
    result.stderr,
    /^error: .*config\.json: not valid JSON \(expected a "quoted" property name, found '\}' at line 3, column 39, in field 'llm_config'\)\n$/,
  );
});

test('reports on stdout use snake_case keys; keys that are data (tensor names) stay as they are', () => {
  const cases: Array<[string, string]> = [
    ['peakRssMB', 'peak_rss_mb'],
    ['weightsMBTimed', 'weights_mb_timed'],
    ['decodeMsPerTokenP90', 'decode_ms_per_token_p90'],
    ['relativeErrorVsFloat32', 'relative_error_vs_float32'],
    ['imageC', 'image_c'],
    ['shape', 'shape'],
    ['finish_reason', 'finish_reason'],
    ['out.C.ret.scores', 'out.C.ret.scores'],
    ['Image-1', 'Image-1'],
  ];
  for (const [key, expected] of cases) assert.equal(snakeCaseKey(key), expected, key);
  assert.equal(
    stringifySnakeCase({ secondsPerTile: 1, runs: [{ maxRelError: Infinity }], tensors: { 'out.C.x': 2 } }, (_k, v) =>
      v === Infinity ? 'Infinity' : v,
    ),
    '{"seconds_per_tile":1,"runs":[{"max_rel_error":"Infinity"}],"tensors":{"out.C.x":2}}',
  );
});
