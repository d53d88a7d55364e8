import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TokenizerError } from '../src/core/errors.js';
import { SentencePieceModel } from '../src/processing/tokenizers/sentencepiece.js';
import { SentencePieceTokenizer, loadSentencePieceTokenizer } from '../src/processing/tokenizers/sentencepiece_hf.js';
import { PieceType, parseModelProto } from '../src/processing/tokenizers/sentencepiece_proto.js';
import { encodeClipTexts, preCaption } from '../src/processing/tokenizers/clip_text.js';

const DATA = join(dirname(fileURLToPath(import.meta.url)), 'data', 'tokenizers');
const MODELS = ['internvl-c-llama-zh', 'internlm2', 'llama2'] as const;
const modelPath = (name: string): string => join(DATA, name, 'tokenizer.model');

const modelCache = new Map<string, SentencePieceModel>();
for (const name of MODELS) modelCache.set(name, await SentencePieceModel.fromFile(modelPath(name)));
function model(name: string): SentencePieceModel {
  return modelCache.get(name)!;
}

interface SentencePieceRef {
  texts: string[];
  ids: Record<string, number[][]>;
}
const spRef = JSON.parse(readFileSync(join(DATA, 'vectors', 'sentencepiece_ref.json'), 'utf8')) as SentencePieceRef;

// ---------------------------------------------------------------------------------------------------------------
// Reference ids

for (const name of MODELS) {
  test(`${name}: sentencepiece library ids for every corpus line`, () => {
    const m = model(name);
    const expected = spRef.ids[name];
    assert.equal(expected.length, spRef.texts.length);
    assert.equal(spRef.texts.length, 48);
    spRef.texts.forEach((text, i) => {
      assert.deepEqual(m.encode(text), expected[i], `${name} #${i} ${JSON.stringify(text)}`);
    });
  });

  test(`${name}: decode(encode(text)) gives the text back`, () => {
    const m = model(name);
    for (const [i, text] of spRef.texts.entries()) {
      assert.equal(m.decode(spRef.ids[name][i]), text, `${name} #${i}`);
    }
  });
}

test('corpus.txt is the reference corpus', () => {
  const lines = readFileSync(join(DATA, 'vectors', 'corpus.txt'), 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  assert.deepEqual(lines, spRef.texts);
});

test('llama2: llama.cpp ggml-vocab-llama-spm cases (no BOS)', () => {
  const inputs = readFileSync(join(DATA, 'vectors', 'ggml-vocab-llama-spm.gguf.inp'), 'utf8').split(
    '\n__ggml_vocab_test__\n',
  );
  const outputs = readFileSync(join(DATA, 'vectors', 'ggml-vocab-llama-spm.gguf.out'), 'utf8').split('\n');
  // Both files end with a separator / newline, which leaves one empty entry that is no case.
  assert.equal(inputs.pop(), '');
  assert.equal(outputs.pop(), '');
  assert.equal(inputs.length, outputs.length);
  assert.equal(inputs.length, 46);
  const m = model('llama2');
  inputs.forEach((text, i) => {
    const expected = outputs[i].trim() === '' ? [] : outputs[i].trim().split(/\s+/).map(Number);
    assert.deepEqual(m.encode(text), expected, `case ${i} ${JSON.stringify(text)}`);
    assert.equal(m.decode(expected), text, `decode case ${i}`);
  });
});

test('model specs are read as the files say', () => {
  const llama = model('llama2');
  assert.equal(llama.size, 32000);
  assert.equal(llama.trainerSpec.modelType, 2);
  assert.equal(llama.trainerSpec.byteFallback, true);
  assert.equal(llama.trainerSpec.padId, -1, 'pad_id -1 is a 10-byte sign-extended varint');
  assert.equal(llama.normalizerSpec.name, 'identity');
  assert.equal(llama.normalizerSpec.addDummyPrefix, true);
  assert.equal(llama.normalizerSpec.removeExtraWhitespaces, false);
  assert.deepEqual([llama.bosId, llama.eosId, llama.padId, llama.unkId], [1, 2, -1, 0]);
  assert.equal(llama.idToPiece(13), '<0x0A>');
  assert.equal(llama.typeOf(13), PieceType.BYTE);

  const zh = model('internvl-c-llama-zh');
  assert.equal(zh.size, 49954);
  assert.equal(zh.idToPiece(49953), '[PAD]');
  assert.equal(zh.idToPiece(30143), '\ufeff', 'a BOM piece survives UTF-8 decoding');

  const lm = model('internlm2');
  assert.equal(lm.size, 92544);
  assert.equal(lm.normalizerSpec.addDummyPrefix, false);
  assert.equal(lm.typeOf(92542), PieceType.USER_DEFINED);
  // User-defined pieces are atomic: the whole string is one id, not a BPE merge.
  assert.deepEqual(lm.encode('x[UNUSED_TOKEN_145]y'), [...lm.encode('x'), 92542, ...lm.encode('y')]);
});

test('long text encodes quickly and consistently', () => {
  const m = model('llama2');
  const line = spRef.texts.join('\n');
  const text = Array.from({ length: 200 }, () => line).join('\n');
  const t0 = performance.now();
  const ids = m.encode(text);
  const ms = performance.now() - t0;
  assert.ok(ms < 5000, `encoding ${text.length} chars took ${ms.toFixed(0)} ms`);
  assert.equal(m.decode(ids), text);
  // A newline has no piece of its own in LLaMA (it falls back to a byte), so no merge crosses it.
  const once = m.encode(line);
  assert.deepEqual(ids.slice(0, once.length), once);
});

// ---------------------------------------------------------------------------------------------------------------
// Hugging Face layer

test('InternVL-C folder: special tokens from tokenizer_config.json and special_tokens_map.json', async () => {
  const tok = await loadSentencePieceTokenizer(join(DATA, 'internvl-c-llama-zh'));
  assert.equal(tok.addBosToken, true);
  assert.equal(tok.addEosToken, false);
  assert.equal(tok.legacy, true);
  assert.deepEqual([tok.bosTokenId, tok.eosTokenId, tok.unkTokenId], [1, 2, 0]);
  assert.equal(tok.padTokenId, 49953, 'pad_token [PAD] from special_tokens_map.json');
  assert.equal(tok.vocabSize, 49954);
  assert.equal(tok.tokenToId('<s>'), 1);
  assert.equal(tok.tokenToId('▁Hello'), 15043);
  assert.equal(tok.tokenToId('no such piece'), undefined);
  assert.equal(tok.idToToken(49953), '[PAD]');

  assert.deepEqual(tok.encode('Hello world'), [1, 15043, 3186]);
  assert.deepEqual(tok.encode('Hello world', { addSpecialTokens: false }), [15043, 3186]);
  // Special tokens in text are single ids; legacy mode encodes each remaining chunk with its own dummy prefix.
  assert.deepEqual(tok.encode('Hello</s> world'), [1, 15043, 2, 29871, 3186]);
  assert.deepEqual(tok.encode('<s>Hi'), [1, 1, 6324]);

  assert.equal(tok.decode([1, 15043, 2, 29871, 3186]), '<s>Hello</s> world');
  assert.equal(tok.decode([1, 15043, 3186, 2], { skipSpecialTokens: true }), 'Hello world');
  assert.equal(tok.decode([1, 15043, 3186, 2, 49953, 49953], { skipSpecialTokens: true }), 'Hello world');
  for (const text of spRef.texts) {
    assert.equal(tok.decode(tok.encode(text), { skipSpecialTokens: true }), text);
    assert.equal(tok.decode(tok.encode(text, { addSpecialTokens: false })), text);
  }
  assert.throws(() => tok.decode([60000]), TokenizerError);
});

async function tempFolder(model: string, files: Record<string, unknown>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'sp-test-'));
  await copyFile(modelPath(model), join(dir, 'tokenizer.model'));
  for (const [name, content] of Object.entries(files)) {
    await writeFile(join(dir, name), typeof content === 'string' ? content : JSON.stringify(content));
  }
  return dir;
}

const INTERNLM2_ADDED: Record<string, string> = {
  '92538': '<|plugin|>',
  '92539': '<|interpreter|>',
  '92540': '<|action_end|>',
  '92541': '<|action_start|>',
  '92542': '<|im_end|>',
  '92543': '<|im_start|>',
};

test('InternLM2 folder: added_tokens_decoder and added_tokens.json', async () => {
  const decoder = Object.fromEntries(
    Object.entries(INTERNLM2_ADDED).map(([id, content]) => [
      id,
      { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    ]),
  );
  const dir = await tempFolder('internlm2', {
    'tokenizer_config.json': {
      add_bos_token: true,
      add_eos_token: false,
      bos_token: '<s>',
      eos_token: '</s>',
      unk_token: '<unk>',
      pad_token: '</s>',
      added_tokens_decoder: decoder,
      tokenizer_class: 'InternLM2Tokenizer',
    },
    'added_tokens.json': { '<img>': 92544, '</img>': 92545, '<IMG_CONTEXT>': 92546 },
  });
  try {
    const tok = await loadSentencePieceTokenizer(dir);
    const m = tok.model;
    assert.equal(tok.tokenToId('<|im_end|>'), 92542);
    assert.equal(tok.tokenToId('[UNUSED_TOKEN_145]'), 92542, 'the underlying piece still maps to its id');
    assert.equal(tok.idToToken(92542), '<|im_end|>');
    assert.equal(tok.tokenToId('<IMG_CONTEXT>'), 92546);
    assert.equal(tok.vocabSize, 92547);
    assert.deepEqual([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.unkTokenId], [1, 2, 2, 0]);

    const prompt = '<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\nWhat is this?<|im_end|>';
    const ids = tok.encode(prompt);
    assert.deepEqual(ids, [
      1,
      92543,
      ...m.encode('user\n'),
      92544,
      92546,
      92546,
      92545,
      ...m.encode('\nWhat is this?'),
      92542,
    ]);
    assert.equal(tok.decode(ids), `<s>${prompt}`);
    assert.equal(
      tok.decode(ids, { skipSpecialTokens: true }),
      'user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\nWhat is this?',
    );
    // Without the folder's added tokens, sentencepiece alone spells the markers out in pieces.
    assert.ok(m.encode('<|im_end|>').length > 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

const PHI3_ADDED = [
  '<|endoftext|>',
  '<|assistant|>',
  '<|placeholder1|>',
  '<|placeholder2|>',
  '<|placeholder3|>',
  '<|placeholder4|>',
  '<|system|>',
  '<|end|>',
  '<|placeholder5|>',
  '<|placeholder6|>',
  '<|user|>',
];

test('Phi-3 style folder (LLaMA vocabulary, legacy false): no prefix space after special tokens', async () => {
  const decoder = Object.fromEntries(
    PHI3_ADDED.map((content, i) => [
      String(32000 + i),
      { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    ]),
  );
  const dir = await tempFolder('llama2', {
    'tokenizer_config.json': {
      add_bos_token: true,
      add_eos_token: false,
      legacy: false,
      bos_token: '<s>',
      eos_token: '<|endoftext|>',
      pad_token: '<|endoftext|>',
      unk_token: '<unk>',
      added_tokens_decoder: decoder,
    },
  });
  try {
    const tok = await loadSentencePieceTokenizer(dir);
    assert.equal(tok.legacy, false);
    assert.equal(tok.eosTokenId, 32000);
    assert.equal(tok.vocabSize, 32011);
    const text = '<|user|>\nHello<|end|>\n<|assistant|>';
    // The lone prefix-space piece before a leading special token is dropped; "\nHello" gets no dummy prefix.
    assert.deepEqual(tok.encode(text), [1, 32010, 13, 10994, 32007, 13, 32001]);
    assert.equal(tok.decode(tok.encode(text)), `<s>${text}`);
    assert.deepEqual(tok.encode('Hello world'), [1, 15043, 3186]);
    assert.deepEqual(tok.encode('Hi <|end|> there', { addSpecialTokens: false }), [6324, 29871, 32007, 727]);
    for (const t of [...spRef.texts, ' x<|end|>  y ', '<|end|>']) {
      assert.equal(tok.decode(tok.encode(t, { addSpecialTokens: false })), t, JSON.stringify(t));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('options: add_eos_token, lstrip/rstrip, tokens outside the vocabulary', async () => {
  const tok = await SentencePieceTokenizer.fromModelFile(modelPath('llama2'), {
    addEosToken: true,
    addedTokens: [{ content: '<IMG_CONTEXT>', special: true, lstrip: true, rstrip: true }, { content: '<note>' }],
  });
  assert.equal(tok.tokenToId('<IMG_CONTEXT>'), 32000);
  assert.equal(tok.tokenToId('<note>'), 32001);
  assert.equal(tok.vocabSize, 32002);
  assert.deepEqual(tok.encode('a <IMG_CONTEXT>  b'), [1, ...tok.model.encode('a'), 32000, ...tok.model.encode('b'), 2]);
  // Non-special added tokens survive skipSpecialTokens.
  assert.equal(tok.decode(tok.encode('x<note>y<IMG_CONTEXT>'), { skipSpecialTokens: true }), 'x<note>y');
  assert.equal(tok.decode(tok.encode('x<note> y')), '<s>x<note> y</s>');
});

// ---------------------------------------------------------------------------------------------------------------
// InternVL-C text pipeline

interface PromptIds {
  classify: { prompts: string[]; input_ids: number[][] };
  retrieval: { captions: string[]; texts: string[]; input_ids: number[][] };
}
const e2e = JSON.parse(
  readFileSync(join(DATA, 'internvl-c-llama-zh', 'clip_e2e_prompt_ids.json'), 'utf8'),
) as PromptIds;

test('InternVL-C prompts: ids of the official InternVLTokenizer (classification)', async () => {
  const tok = await loadSentencePieceTokenizer(join(DATA, 'internvl-c-llama-zh'));
  const { ids, attentionMask } = encodeClipTexts(tok, e2e.classify.prompts);
  assert.equal(ids.length, 15);
  assert.deepEqual(ids, e2e.classify.input_ids);
  for (const [r, row] of ids.entries()) {
    assert.equal(row.length, 80);
    const real = row.lastIndexOf(2) + 1;
    assert.deepEqual(
      attentionMask[r],
      row.map((_, i) => (i < real ? 1 : 0)),
    );
  }
});

test('InternVL-C prompts: pre_caption + ids of the official code (retrieval)', async () => {
  const tok = await loadSentencePieceTokenizer(join(DATA, 'internvl-c-llama-zh'));
  const texts = e2e.retrieval.captions.map((c) => preCaption(c));
  assert.deepEqual(texts, e2e.retrieval.texts);
  assert.deepEqual(encodeClipTexts(tok, texts).ids, e2e.retrieval.input_ids);
});

test('InternVL-C prompts: truncation keeps BOS and EOS, padding and prefix', async () => {
  const tok = await loadSentencePieceTokenizer(join(DATA, 'internvl-c-llama-zh'));
  const long = Array.from({ length: 120 }, (_, i) => `word${i}`).join(' ');
  const { ids, attentionMask } = encodeClipTexts(tok, [long, 'a cat']);
  const content = tok.encode(`summarize:${long}`, { addSpecialTokens: false });
  assert.ok(content.length > 78);
  assert.deepEqual(ids[0], [1, ...content.slice(0, 78), 2]);
  assert.ok(attentionMask[0].every((v) => v === 1));
  assert.deepEqual(ids[1].slice(0, 7), [1, 19138, 675, 29901, 29874, 6635, 2]);
  assert.ok(ids[1].slice(7).every((v) => v === 0));
  const custom = encodeClipTexts(tok, ['a cat'], { maxLength: 6, prefix: '' });
  assert.deepEqual(custom.ids[0], [1, ...tok.encode('a cat', { addSpecialTokens: false }), 2, 0, 0].slice(0, 6));
});

test('preCaption matches clip_benchmark pre_caption', () => {
  assert.equal(
    preCaption('A man (riding) a wave!!  On top: of a "surfboard".'),
    'a man riding a wave on top of a surfboard',
  );
  assert.equal(preCaption('  Hello.World~#*;  \n'), 'hello world');
  // Only runs of two or more whitespace characters are collapsed; a lone tab stays, as in Python's re.sub.
  assert.equal(preCaption('a\tb  c'), 'a\tb c');
  assert.equal(preCaption('one two three four', 2), 'one two');
  assert.equal(preCaption("It's 3-D, isn't it?"), "it's 3-d, isn't it?");
  assert.equal(preCaption('ÉCOLE'), 'école');
});

// ---------------------------------------------------------------------------------------------------------------
// Errors

test('corrupt, truncated and missing model files raise TokenizerError naming the file', async () => {
  const bytes = readFileSync(modelPath('llama2'));
  const dir = await mkdtemp(join(tmpdir(), 'sp-bad-'));
  try {
    const cases: Array<[string, Uint8Array]> = [
      ['truncated.model', bytes.subarray(0, Math.floor(bytes.length / 2))],
      ['garbage.model', new Uint8Array(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) & 0xff))],
      ['empty.model', new Uint8Array(0)],
      ['json.model', new TextEncoder().encode('{"not": "a model"}')],
      // Cut exactly after the last piece: parses as pieces but the specs are gone.
      ['no-specs.model', bytes.subarray(0, lastPieceEnd(bytes))],
    ];
    for (const [name, content] of cases) {
      const path = join(dir, name);
      await writeFile(path, content);
      await assert.rejects(
        () => SentencePieceModel.fromFile(path),
        (err: unknown) => err instanceof TokenizerError && err.message.includes(path),
        name,
      );
    }
    await assert.rejects(
      loadSentencePieceTokenizer(dir),
      (err: unknown) => err instanceof TokenizerError && err.message.includes('tokenizer.model'),
    );
    await copyFile(modelPath('llama2'), join(dir, 'tokenizer.model'));
    await writeFile(join(dir, 'tokenizer_config.json'), '{ "add_bos_token": tru');
    await assert.rejects(
      loadSentencePieceTokenizer(dir),
      (err: unknown) => err instanceof TokenizerError && err.message.includes('tokenizer_config.json'),
    );
    await writeFile(join(dir, 'tokenizer_config.json'), '{ "add_bos_token": "yes" }');
    await assert.rejects(loadSentencePieceTokenizer(dir), /add_bos_token/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** End offset of the last `pieces` field (field 1) at the top level of a ModelProto. */
function lastPieceEnd(bytes: Uint8Array): number {
  let pos = 0;
  let end = 0;
  const varint = (): number => {
    let v = 0;
    let mul = 1;
    for (;;) {
      const b = bytes[pos++];
      v += (b & 0x7f) * mul;
      mul *= 128;
      if (!(b & 0x80)) return v;
    }
  };
  while (pos < bytes.length) {
    const key = varint();
    const len = varint();
    pos += len;
    if (key === (1 << 3) + 2) end = pos;
  }
  return end;
}

// ---------------------------------------------------------------------------------------------------------------
// Synthetic models: behaviours the shipped models do not exercise

const utf8 = new TextEncoder();

function varint(value: number | bigint): number[] {
  let x = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x !== 0n) b |= 0x80;
    out.push(b);
  } while (x !== 0n);
  return out;
}
const vField = (field: number, value: number | bigint | boolean): number[] => [
  ...varint(field * 8),
  ...varint(typeof value === 'boolean' ? Number(value) : value),
];
const bytesField = (field: number, payload: ArrayLike<number>): number[] => [
  ...varint(field * 8 + 2),
  ...varint(payload.length),
  ...Array.from(payload),
];
const strField = (field: number, s: string): number[] => bytesField(field, utf8.encode(s));
function floatField(field: number, x: number): number[] {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, x, true);
  return [...varint(field * 8 + 5), ...b];
}

interface SyntheticModel {
  pieces: Array<[string, number, PieceType?]>;
  modelType: 1 | 2;
  normalizer?: { addDummyPrefix?: boolean; removeExtraWhitespaces?: boolean; charsmap?: Uint8Array };
}

function buildModel(spec: SyntheticModel): Uint8Array {
  const out: number[] = [];
  for (const [piece, score, type] of spec.pieces) {
    out.push(...bytesField(1, [...strField(1, piece), ...floatField(2, score), ...(type ? vField(3, type) : [])]));
  }
  out.push(
    ...bytesField(2, [
      ...vField(3, spec.modelType),
      ...vField(40, 0),
      ...vField(41, 1),
      ...vField(42, 2),
      ...vField(43, -1),
    ]),
  );
  const n = spec.normalizer ?? {};
  out.push(
    ...bytesField(3, [
      ...strField(1, n.charsmap ? 'custom' : 'identity'),
      ...(n.charsmap ? bytesField(2, n.charsmap) : []),
      ...vField(3, n.addDummyPrefix ?? true),
      ...vField(4, n.removeExtraWhitespaces ?? true),
    ]),
  );
  return new Uint8Array(out);
}

const SPECIALS: Array<[string, number, PieceType]> = [
  ['<unk>', 0, PieceType.UNKNOWN],
  ['<s>', 0, PieceType.CONTROL],
  ['</s>', 0, PieceType.CONTROL],
];

test('synthetic BPE: priorities, ties, UNUSED resegmentation, user-defined pieces, unknown runs', () => {
  const bytes = buildModel({
    modelType: 2,
    pieces: [
      ...SPECIALS,
      ['▁', -1],
      ['a', -2],
      ['b', -3],
      ['c', -4],
      ['ab', 10, PieceType.UNUSED],
      ['abc', 5],
      ['▁c', 1],
      ['aa', 2],
      ['<ud>', 0, PieceType.USER_DEFINED],
      ['x', -5],
      ['d>', 20],
    ],
  });
  const m = SentencePieceModel.fromBytes(bytes, 'synthetic-bpe');
  const ids = (s: string): number[] => m.encode(s);
  assert.deepEqual(ids('abc'), [3, 8], 'ab (UNUSED) may be merged through to reach abc');
  assert.deepEqual(ids('ab'), [3, 4, 5], 'a final UNUSED piece is split back into its parts');
  assert.deepEqual(ids('aaa'), [3, 10, 4], 'equal scores: the leftmost pair merges first');
  assert.deepEqual(ids('c'), [9]);
  assert.deepEqual(ids('x<ud>c'), [3, 12, 11, 6], 'user-defined piece is one frozen symbol');
  assert.deepEqual(ids('azzc'), [3, 4, 0, 6], 'a run of unknown characters is one <unk> without byte fallback');
  assert.deepEqual(ids('  a   b  '), [3, 4, 3, 5], 'remove_extra_whitespaces');
  assert.deepEqual(ids('<s>'), [3, 0], 'control pieces are never matched in text');
  assert.deepEqual(ids(''), []);
  assert.equal(m.decode([3, 4, 0, 6]), 'a \u2047 c');
  assert.equal(m.decode([1, 3, 4, 3, 5, 2]), 'a b');
  assert.equal(m.trainerSpec.padId, -1);
});

test('synthetic unigram: Viterbi best path and unknown penalty', () => {
  const bytes = buildModel({
    modelType: 1,
    pieces: [...SPECIALS, ['▁', -2], ['a', -3], ['b', -3], ['▁a', -4], ['ab', -2.5], ['▁ab', -5]],
  });
  const m = SentencePieceModel.fromBytes(bytes, 'synthetic-unigram');
  assert.deepEqual(m.encode('ab'), [3, 7]);
  assert.deepEqual(m.encode('a'), [6]);
  assert.deepEqual(m.encode('abzz b'), [3, 7, 0, 3, 5]);
});

/** A darts-clone double array for `rules` (UTF-8 key → replacement), laid out one 256-unit block per node. */
function buildCharsmap(rules: Record<string, string>): Uint8Array {
  interface Node {
    children: Map<number, Node>;
    value: number | null;
  }
  const root: Node = { children: new Map(), value: null };
  const replacements: number[] = [];
  for (const [key, replacement] of Object.entries(rules)) {
    let node = root;
    for (const b of utf8.encode(key)) {
      let child = node.children.get(b);
      if (!child) {
        child = { children: new Map(), value: null };
        node.children.set(b, child);
      }
      node = child;
    }
    node.value = replacements.length;
    replacements.push(...utf8.encode(replacement), 0);
  }
  const units: number[] = [];
  let nextBlock = 256;
  const place = (node: Node, pos: number, label: number): void => {
    const base = nextBlock;
    nextBlock += 256;
    const hasLeaf = node.value !== null;
    units[pos] = (((pos ^ base) << 10) | (hasLeaf ? 1 << 8 : 0) | label) >>> 0;
    if (hasLeaf) units[base] = (0x80000000 | node.value!) >>> 0;
    for (const [b, child] of node.children) place(child, base ^ b, b);
  };
  place(root, 0, 0);
  const trie = Uint32Array.from({ length: nextBlock }, (_, i) => units[i] ?? 0);
  const blob = new Uint8Array(4 + trie.byteLength + replacements.length);
  const dv = new DataView(blob.buffer);
  dv.setUint32(0, trie.byteLength, true);
  trie.forEach((u, i) => dv.setUint32(4 + 4 * i, u, true));
  blob.set(replacements, 4 + trie.byteLength);
  return blob;
}

test('synthetic precompiled charsmap: longest rule wins, output goes through whitespace handling', () => {
  const charsmap = buildCharsmap({ Ａ: 'A', ﬁ: 'fi', '\t': ' ', ｶﾞ: 'ガ', ｶ: 'カ', '①': ' 1 ' });
  const bytes = buildModel({
    modelType: 2,
    normalizer: { charsmap },
    pieces: [
      ...SPECIALS,
      ['▁', -1],
      ['A', -2],
      ['f', -3],
      ['i', -4],
      ['fi', -1],
      ['ガ', -5],
      ['カ', -6],
      ['1', -7],
      ['▁A', 0],
    ],
  });
  const m = SentencePieceModel.fromBytes(bytes, 'synthetic-charsmap');
  assert.equal(m.normalize('Ａ\t\tﬁ ｶﾞｶ'), '▁A▁fi▁ガカ');
  assert.equal(m.normalize('\t Ａ\t'), '▁A');
  assert.equal(m.normalize('A①A'), '▁A▁1▁A');
  assert.deepEqual(m.encode('Ａ ﬁ'), [11, 3, 7]);
  assert.equal(parseModelProto(bytes, 'x').normalizerSpec.precompiledCharsmap?.length, charsmap.length);
});

test('byte fallback decode: invalid UTF-8 bytes become U+FFFD one byte at a time', () => {
  const m = model('llama2');
  const byte = (b: number): number => m.findPiece(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!;
  assert.equal(m.decode([byte(0xe4), byte(0xbd), byte(0xa0)]), '你');
  assert.equal(m.decode([byte(0xe4), byte(0xbd)]), '\ufffd\ufffd');
  assert.equal(m.decode([byte(0xff), 15043]), '\ufffd Hello');
});

test('a corrupt or truncated .model file is one TokenizerError naming the file and the field', () => {
  const bytes = readFileSync(modelPath('llama2'));
  const parsed = parseModelProto(bytes, 'llama2');
  assert.equal(parsed.pieces.length, 32000);
  assert.equal(parsed.trainerSpec.padId, -1, 'a sign-extended 10-byte int32');
  const cases: Array<[Uint8Array, RegExp]> = [
    [bytes.subarray(0, 1000), /premature EOF in the field at byte 997 of ModelProto\)$/],
    [Uint8Array.from(bytes, (b, i) => (i === 0 ? 0x0d : b)), /field 1 of ModelProto has wire type 5, expected 2\)$/],
    [new TextEncoder().encode('not a model at all'), /corrupt or truncated protobuf: /],
  ];
  for (const [data, message] of cases)
    assert.throws(
      () => parseModelProto(data, 'broken/tokenizer.model'),
      (e: Error) =>
        e instanceof TokenizerError &&
        e.message.startsWith('broken/tokenizer.model: not a valid SentencePiece model (') &&
        message.test(e.message) &&
        !e.message.includes('\n'),
    );
});
